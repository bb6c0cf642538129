package java

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/test/wait"
)

// appGroup is the group of the application-level providers of
// TestImportedMetadataInfoMatchesProvider: a group of their own, so that the imported
// MetadataInfo's entry for it comes from them alone.
const appGroup = "g3"

// appEntry is an application instance as a registry holds it, with the MetadataInfo of its
// revision from the metadata report.
type appEntry struct {
	App, Address string
	// Metadata is the instance's metadata (dubbo.metadata.revision, dubbo.endpoints, …).
	Metadata map[string]string
	// Info is the MetadataInfo document of the instance's revision.
	Info metadataInfo
	// RawInstance and RawInfo are the documents as the registry holds them.
	RawInstance, RawInfo string
}

// metadataInfo and serviceInfo are Dubbo's MetadataInfo document (Java Dubbo 3.3's JSON).
type metadataInfo struct {
	App      string                  `json:"app"`
	Revision string                  `json:"revision"`
	Services map[string]*serviceInfo `json:"services"`
}

type serviceInfo struct {
	Name     string            `json:"name"`
	Group    string            `json:"group"`
	Version  string            `json:"version"`
	Protocol string            `json:"protocol"`
	Port     int               `json:"port"`
	Path     string            `json:"path"`
	Params   map[string]string `json:"params"`
}

// TestImportedMetadataInfoMatchesProvider: per protocol (Triple, dubbo) and registry kind,
// a Java provider (1.0.0, group g3) registers in beta's registry at application level with
// its MetadataInfo in the metadata report (metadata-type remote), so that both are in the
// registry server as Java wrote them. The application instances alpha's controlplane
// imported into alpha's registry (application strait-beta, one per egress instance) list
// the service under the key the provider's MetadataInfo uses, with the same name, group,
// version, protocol and path, the egress's port, and the same parameters except what an
// import changes (as TestImportedEntryMatchesProvider: application, pid, strait.*, and over
// dubbo the serialization; and REGISTRY_CLUSTER, the provider's name of its registry). The
// instances' metadata name the revision, the storage type and the endpoints as the
// provider's do: the imported endpoints list the egress's port for the provider's protocol
// (and the egress's other protocols). The provider's instance metadata also hold meta-v
// (its MetadataService's version, unused with remote storage) and timestamp (its start),
// which an import has no use for.
func TestImportedMetadataInfoMatchesProvider(t *testing.T) {
	var reqs []providerReq
	for _, protocol := range protocols {
		for _, kind := range kinds {
			reqs = append(reqs, providerReq{kind, providerSpec{protocol: protocol, mode: "instance", version: "1.0.0", group: appGroup, metadataType: "remote"}})
		}
	}
	ps := providers(t, reqs...)
	for _, p := range ps {
		protocol, kind := p.spec.protocol, p.spec.kind
		t.Run(protocol+"-"+kind, func(t *testing.T) {
			e := getEnv(t, kind)
			e.waitImported(t, p)
			app := "java-provider-" + p.spec.String()
			key := serviceKey(echoService, appGroup, "1.0.0", protocol)
			provs, err := e.appEntries(e.beta.Addr, app)
			if err != nil {
				t.Fatal(err)
			}
			var prov *appEntry
			for i := range provs {
				if provs[i].Address == p.Addr() {
					prov = &provs[i]
				}
			}
			if prov == nil {
				t.Fatalf("beta's %s has no instance of application %s at %s: %v", kind, app, p.Addr(), appAddresses(provs))
			}
			t.Logf("beta's %s: the Java provider's instance:\n%s\nits MetadataInfo:\n%s", kind, prov.RawInstance, prov.RawInfo)
			ps := prov.Info.Services[key]
			if ps == nil {
				t.Fatalf("beta's %s: the provider's MetadataInfo has no service %s: %s", kind, key, prov.RawInfo)
			}

			var imported []appEntry
			// The import's MetadataInfo is written once the instance is: wait for both.
			wait.ForNil(t, 30*time.Second, fmt.Sprintf("alpha's %s lists application strait-beta at each egress %v with %s", kind, e.topo.Egress, key), func() error {
				var err error
				if imported, err = e.appEntries(e.alpha.Addr, "strait-beta"); err != nil {
					return err
				}
				if !sameSet(appAddresses(imported), e.topo.Egress) || !allList(imported, key) {
					return fmt.Errorf("instances there: %v", describeApps(imported))
				}
				return nil
			})
			for _, imp := range imported {
				t.Logf("alpha's %s: the imported instance at %s:\n%s\nits MetadataInfo:\n%s", kind, imp.Address, imp.RawInstance, imp.RawInfo)
				if diffs := compareApps(*prov, imp, key, protocol); len(diffs) > 0 {
					t.Errorf("alpha's %s: the application instance imported at %s differs from the provider's beyond what an import changes:\n  %s",
						kind, imp.Address, strings.Join(diffs, "\n  "))
				}
			}
		})
	}
}

// serviceKey is Dubbo's key of a service in MetadataInfo.services:
// [group/]interface[:version]:protocol.
func serviceKey(name, group, version, protocol string) string {
	k := name
	if group != "" {
		k = group + "/" + k
	}
	if version != "" {
		k += ":" + version
	}
	return k + ":" + protocol
}

// allList reports whether each of apps' MetadataInfo lists the service key.
func allList(apps []appEntry, key string) bool {
	for _, a := range apps {
		if a.Info.Services[key] == nil {
			return false
		}
	}
	return true
}

func appAddresses(apps []appEntry) []string {
	out := make([]string, 0, len(apps))
	for _, a := range apps {
		out = append(out, a.Address)
	}
	sort.Strings(out)
	return out
}

func describeApps(apps []appEntry) []string {
	out := make([]string, 0, len(apps))
	for _, a := range apps {
		keys := make([]string, 0, len(a.Info.Services))
		for k := range a.Info.Services {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out = append(out, fmt.Sprintf("%s %v", a.Address, keys))
	}
	return out
}

// compareApps lists how imp, an imported application instance, differs from prov, the
// provider's, for the service key, beyond what an import changes. The service's entries
// in the two MetadataInfo documents: name, group, version, protocol and path equal, port
// the imported instance's, params as compareEntries. The instances' metadata: a revision
// naming the instance's MetadataInfo, the provider's storage type, and endpoints that
// list the instance's port for the protocol.
func compareApps(prov, imp appEntry, key, protocol string) []string {
	var diffs []string
	ps, is := prov.Info.Services[key], imp.Info.Services[key]
	if is == nil {
		return []string{"MetadataInfo: no service " + key}
	}
	_, port, _ := net.SplitHostPort(imp.Address)
	for _, f := range []struct{ name, prov, imp, want string }{
		{"name", ps.Name, is.Name, ps.Name},
		{"group", ps.Group, is.Group, ps.Group},
		{"version", ps.Version, is.Version, ps.Version},
		{"protocol", ps.Protocol, is.Protocol, ps.Protocol},
		{"path", ps.Path, is.Path, ps.Path},
		{"port", strconv.Itoa(ps.Port), strconv.Itoa(is.Port), port},
	} {
		if f.imp != f.want {
			diffs = append(diffs, fmt.Sprintf("MetadataInfo %s: provider %q, import %q, want %q", f.name, f.prov, f.imp, f.want))
		}
	}
	if imp.Info.App != imp.App {
		diffs = append(diffs, fmt.Sprintf("MetadataInfo app: %q, want the instance's application %q", imp.Info.App, imp.App))
	}
	if imp.Info.Revision != imp.Metadata["dubbo.metadata.revision"] {
		diffs = append(diffs, fmt.Sprintf("MetadataInfo revision %q, the instance's dubbo.metadata.revision %q", imp.Info.Revision, imp.Metadata["dubbo.metadata.revision"]))
	}
	// REGISTRY_CLUSTER names the registry configuration the provider registered with
	// ("default" for an unnamed one): the provider's own, not the service's.
	provParams := maps.Clone(ps.Params)
	delete(provParams, "REGISTRY_CLUSTER")
	for _, d := range compareEntries(entry{Params: provParams}, entry{Params: is.Params}, protocol) {
		diffs = append(diffs, "MetadataInfo params: "+d)
	}
	if p, i := prov.Metadata["dubbo.metadata.storage-type"], imp.Metadata["dubbo.metadata.storage-type"]; p != i {
		diffs = append(diffs, fmt.Sprintf("instance metadata dubbo.metadata.storage-type: provider %q, import %q", p, i))
	}
	var eps []struct {
		Port     int    `json:"port"`
		Protocol string `json:"protocol"`
	}
	raw := imp.Metadata["dubbo.endpoints"]
	found := false
	if err := json.Unmarshal([]byte(raw), &eps); err == nil {
		for _, ep := range eps {
			if strconv.Itoa(ep.Port) == port && ep.Protocol == protocol {
				found = true
			}
		}
	}
	if !found {
		diffs = append(diffs, fmt.Sprintf("instance metadata dubbo.endpoints %q: no %s endpoint on port %s (provider's: %q)", raw, protocol, port, prov.Metadata["dubbo.endpoints"]))
	}
	return diffs
}

// appEntries reads the instances of application app, and the MetadataInfo of each one's
// revision, from the registry server at addr (alpha's or beta's), where Java Dubbo keeps
// them: ZooKeeper /services/<app>/<host:port> (Curator's JSON) and
// /dubbo/metadata/<app>/<revision>; Nacos' service <app> (DEFAULT_GROUP) and config dataId
// <app>, group <revision>.
func (e *env) appEntries(addr, app string) ([]appEntry, error) {
	var out []appEntry
	var err error
	if e.kind == "nacos" {
		out, err = nacosApps(addr, app)
	} else {
		out, err = zkApps(addr, app)
	}
	if err != nil {
		return nil, err
	}
	for i := range out {
		if err := json.Unmarshal([]byte(out[i].RawInfo), &out[i].Info); err != nil {
			return nil, fmt.Errorf("%s %s: MetadataInfo of %s at %s: %w: %s", e.kind, addr, app, out[i].Address, err, out[i].RawInfo)
		}
	}
	return out, nil
}

// zkApps reads the instances of app from the ZooKeeper at addr, each with its MetadataInfo.
func zkApps(addr, app string) ([]appEntry, error) {
	conn, err := zkConnect(addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	dir := "/services/" + app
	children, _, err := conn.Children(dir)
	if err != nil {
		return nil, fmt.Errorf("zookeeper %s: %s: %w", addr, dir, err)
	}
	var out []appEntry
	for _, c := range children {
		data, _, err := conn.Get(dir + "/" + c)
		if err != nil {
			return nil, fmt.Errorf("zookeeper %s: %s/%s: %w", addr, dir, c, err)
		}
		var node struct {
			Address string `json:"address"`
			Port    int    `json:"port"`
			Payload struct {
				Metadata map[string]string `json:"metadata"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(data, &node); err != nil {
			return nil, fmt.Errorf("zookeeper %s: %s/%s: %w: %s", addr, dir, c, err, data)
		}
		a := appEntry{App: app, Address: net.JoinHostPort(node.Address, strconv.Itoa(node.Port)), Metadata: node.Payload.Metadata, RawInstance: string(data)}
		p := "/dubbo/metadata/" + app + "/" + a.Metadata["dubbo.metadata.revision"]
		info, _, err := conn.Get(p)
		if err != nil {
			return nil, fmt.Errorf("zookeeper %s: %s: %w", addr, p, err)
		}
		a.RawInfo = string(info)
		out = append(out, a)
	}
	return out, nil
}

// nacosApps reads the instances of app from the Nacos server whose HTTP API is at addr,
// each with its MetadataInfo, with Nacos' open API.
func nacosApps(addr, app string) ([]appEntry, error) {
	insts, err := nacosEntries(addr, app)
	if err != nil {
		return nil, err
	}
	var out []appEntry
	for _, in := range insts {
		a := appEntry{App: app, Address: in.Address, Metadata: in.Params, RawInstance: in.Raw}
		info, err := nacosConfig(addr, app, a.Metadata["dubbo.metadata.revision"])
		if err != nil {
			return nil, err
		}
		a.RawInfo = info
		out = append(out, a)
	}
	return out, nil
}

// nacosConfig reads the config dataId/group (public namespace) from the Nacos server whose
// HTTP API is at addr.
func nacosConfig(addr, dataID, group string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := url.Values{"dataId": {dataID}, "group": {group}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/nacos/v1/cs/configs?"+q.Encode(), nil)
	if err != nil {
		return "", fmt.Errorf("nacos %s: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("nacos %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("nacos %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("nacos %s: config %s/%s: %s: %s", addr, dataID, group, resp.Status, body)
	}
	return string(body), nil
}
