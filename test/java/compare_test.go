package java

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// entry is one provider entry of a registry, as stored there.
type entry struct {
	// Address is host:port.
	Address string
	// Scheme and Path are the URL's (ZooKeeper; empty for Nacos, whose instances have
	// none).
	Scheme, Path string
	// Params are the URL's parameters (ZooKeeper) or the instance's metadata (Nacos).
	Params map[string]string
	// Raw is the entry as the registry holds it: the URL-decoded node name (ZooKeeper),
	// the instance's JSON (Nacos).
	Raw string
}

// TestImportedEntryMatchesProvider: per protocol (Triple, dubbo) and registry kind, a Java
// provider (1.0.0, group g1, interface level) registers in beta's registry; the entries
// alpha's controlplane imported into alpha's registry for it (one per egress instance, of
// the provider's protocol) carry the same parameters, except the address (an egress
// instance), application (strait-beta), pid (absent) and Strait's own strait.* marks
// (added); over dubbo also prefer.serialization and serialization, which say hessian2 (the
// only serialization the egress reads). ZooKeeper: the URL nodes under
// /dubbo/org.strait.interop.EchoService/providers; Nacos: the instance metadata of service
// providers:org.strait.interop.EchoService:1.0.0:g1.
func TestImportedEntryMatchesProvider(t *testing.T) {
	var reqs []providerReq
	for _, protocol := range protocols {
		for _, kind := range kinds {
			reqs = append(reqs, providerReq{kind, providerSpec{protocol: protocol, mode: "interface", version: "1.0.0", group: "g1"}})
		}
	}
	ps := providers(t, reqs...)
	for _, p := range ps {
		protocol, kind := p.spec.protocol, p.spec.kind
		t.Run(protocol+"-"+kind, func(t *testing.T) {
			e := getEnv(t, kind)
			e.waitImported(t, p)
			beta, err := e.interfaceEntries(e.beta.Addr, "1.0.0", "g1")
			if err != nil {
				t.Fatal(err)
			}
			var prov *entry
			for i := range beta {
				if beta[i].Address == p.Addr() {
					prov = &beta[i]
				}
			}
			if prov == nil {
				t.Fatalf("beta's %s has no entry of the provider at %s: %v", kind, p.Addr(), addresses(beta))
			}
			if got := prov.protocol(); got != protocol {
				t.Fatalf("beta's %s: the provider at %s registered protocol %q, want %q: %s", kind, p.Addr(), got, protocol, prov.Raw)
			}
			t.Logf("beta's %s: the Java provider's entry:\n%s\n%s", kind, prov.Raw, formatParams(prov.Params))

			alpha, err := e.interfaceEntries(e.alpha.Addr, "1.0.0", "g1")
			if err != nil {
				t.Fatal(err)
			}
			var imported []entry
			for _, en := range alpha {
				if en.Params["strait.managed"] == "true" && en.protocol() == protocol {
					imported = append(imported, en)
				}
			}
			if got := addresses(imported); !sameSet(got, e.topo.Egress) {
				t.Fatalf("alpha's %s: imported %s entries of %s 1.0.0/g1 at %v, want one per egress instance %v (all entries: %v)",
					kind, protocol, echoService, got, e.topo.Egress, describeEntries(alpha))
			}
			for _, imp := range imported {
				t.Logf("alpha's %s: the imported entry at %s:\n%s\n%s", kind, imp.Address, imp.Raw, formatParams(imp.Params))
				if diffs := compareEntries(*prov, imp, protocol); len(diffs) > 0 {
					t.Errorf("alpha's %s: the %s entry imported at %s differs from the provider's in beta beyond what an import changes:\n  %s",
						kind, protocol, imp.Address, strings.Join(diffs, "\n  "))
				}
			}
		})
	}
}

// protocol is the entry's protocol as Dubbo names it: the URL's scheme (ZooKeeper), the
// protocol parameter (Nacos).
func (e entry) protocol() string {
	if e.Scheme != "" {
		return e.Scheme
	}
	return e.Params["protocol"]
}

// describeEntries lists entries as protocol://address.
func describeEntries(es []entry) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.protocol()+"://"+e.Address)
	}
	sort.Strings(out)
	return out
}

// hessian2Only are the parameters an import of a dubbo service sets to hessian2, whatever
// the provider registered: the egress reads hessian2 bodies only.
var hessian2Only = []string{"prefer.serialization", "serialization"}

// compareEntries lists how imp, an imported entry of protocol (tri or dubbo), differs from
// prov, the provider's own, beyond what an import changes: the address, application
// (strait-beta), pid (absent) and the strait.* marks (added; strait.managed=true among
// them); over dubbo, prefer.serialization and serialization (hessian2).
func compareEntries(prov, imp entry, protocol string) []string {
	var diffs []string
	if prov.Scheme != imp.Scheme {
		diffs = append(diffs, fmt.Sprintf("(scheme): provider %q, import %q", prov.Scheme, imp.Scheme))
	}
	if prov.Path != imp.Path {
		diffs = append(diffs, fmt.Sprintf("(path): provider %q, import %q", prov.Path, imp.Path))
	}
	keys := map[string]bool{}
	for k := range prov.Params {
		keys[k] = true
	}
	for k := range imp.Params {
		keys[k] = true
	}
	if protocol == "dubbo" {
		for _, k := range hessian2Only {
			keys[k] = true
		}
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		pv, inProv := prov.Params[k]
		iv, inImp := imp.Params[k]
		switch {
		case k == "application":
			if iv != "strait-beta" {
				diffs = append(diffs, fmt.Sprintf("application: import %s, want \"strait-beta\" (provider %s)", show(iv, inImp), show(pv, inProv)))
			}
		case k == "pid":
			if inImp {
				diffs = append(diffs, fmt.Sprintf("pid: import %q, want none (provider %s)", iv, show(pv, inProv)))
			}
		case strings.HasPrefix(k, "strait."):
			if inProv {
				diffs = append(diffs, fmt.Sprintf("%s: set by the provider itself (%q)", k, pv))
			}
		case protocol == "dubbo" && slices.Contains(hessian2Only, k):
			if iv != "hessian2" {
				diffs = append(diffs, fmt.Sprintf("%s: import %s, want \"hessian2\" (provider %s)", k, show(iv, inImp), show(pv, inProv)))
			}
		case !inImp || !inProv || pv != iv:
			diffs = append(diffs, fmt.Sprintf("%s: provider %s, import %s", k, show(pv, inProv), show(iv, inImp)))
		}
	}
	if imp.Params["strait.managed"] != "true" {
		diffs = append(diffs, "strait.managed: import "+show(imp.Params["strait.managed"], true)+", want \"true\"")
	}
	return diffs
}

// show is v quoted, or "absent".
func show(v string, ok bool) string {
	if !ok {
		return "absent"
	}
	return strconv.Quote(v)
}

// formatParams lists params one per line, sorted.
func formatParams(params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s=%s\n", k, params[k])
	}
	return b.String()
}

func addresses(es []entry) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.Address)
	}
	sort.Strings(out)
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}

// zkConnect connects to the ZooKeeper at addr and waits (15 s at most) for its session:
// Connect returns before it is established.
func zkConnect(addr string) (*zk.Conn, error) {
	conn, events, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogger(zkQuiet{}))
	if err != nil {
		return nil, fmt.Errorf("zookeeper %s: %w", addr, err)
	}
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for conn.State() != zk.StateHasSession {
		select {
		case <-events:
		case <-deadline.C:
			conn.Close()
			return nil, fmt.Errorf("zookeeper %s: no session within 15s", addr)
		}
	}
	return conn, nil
}

// zkEntries reads the provider URLs of service under /dubbo/<service>/providers in the
// ZooKeeper at addr.
func zkEntries(addr, service string) ([]entry, error) {
	conn, err := zkConnect(addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	dir := "/dubbo/" + service + "/providers"
	children, _, err := conn.Children(dir)
	if err != nil {
		return nil, fmt.Errorf("zookeeper %s: %s: %w", addr, dir, err)
	}
	var out []entry
	for _, c := range children {
		raw, err := url.QueryUnescape(c)
		if err != nil {
			return nil, fmt.Errorf("zookeeper %s: node %q: %w", addr, c, err)
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("zookeeper %s: node %q: %w", addr, raw, err)
		}
		out = append(out, entry{Address: u.Host, Scheme: u.Scheme, Path: u.Path, Params: dubboParams(u.RawQuery), Raw: raw})
	}
	return out, nil
}

// dubboParams splits a URL's query as Java Dubbo does (URLStrParser.parseDecodedStr, on
// the node name decoded once): on '&' and the first '=', without decoding the values again,
// so that a value the registry holds still escaped ("a%2Cb") differs from its plain form
// ("a,b"), as it does for a Java consumer.
func dubboParams(query string) map[string]string {
	params := map[string]string{}
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		params[k] = v
	}
	return params
}

// nacosEntries reads the instances of service (group DEFAULT_GROUP, public namespace) from
// the Nacos server whose HTTP API is at addr, with Nacos' open API.
func nacosEntries(addr, service string) ([]entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := url.Values{"serviceName": {service}, "groupName": {"DEFAULT_GROUP"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/nacos/v1/ns/instance/list?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("nacos %s: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("nacos %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("nacos %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("nacos %s: instance list of %s: %s: %s", addr, service, resp.Status, body)
	}
	var list struct {
		Hosts []json.RawMessage `json:"hosts"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("nacos %s: instance list of %s: %w", addr, service, err)
	}
	var out []entry
	for _, raw := range list.Hosts {
		var h struct {
			IP       string            `json:"ip"`
			Port     int               `json:"port"`
			Metadata map[string]string `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &h); err != nil {
			return nil, fmt.Errorf("nacos %s: instance of %s: %w", addr, service, err)
		}
		out = append(out, entry{Address: net.JoinHostPort(h.IP, strconv.Itoa(h.Port)), Params: h.Metadata, Raw: string(raw)})
	}
	return out, nil
}
