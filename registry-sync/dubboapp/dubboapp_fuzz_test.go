package dubboapp_test

import (
	"encoding/json"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubboapp"
)

// FuzzInstances: whatever a registry holds (a MetadataInfo document, an instance's host,
// port and metadata), reading it never panics and gives only providers Strait can call:
// a service name, a protocol it speaks, host:port with a valid port, the application set,
// and none of Dubbo's own keys in the metadata.
func FuzzInstances(f *testing.F) {
	f.Add([]byte(`{"app":"shop","revision":"r1","services":{"a.A:tri":{"name":"a.A","protocol":"tri","port":50051,"params":{"side":"provider","zone":"z"}},"b.B:dubbo":{"name":"b.B","protocol":"dubbo"}}}`),
		"shop", "10.0.0.2", 20000, `[{"port":20000,"protocol":"dubbo"},{"port":50051,"protocol":"tri"}]`, "id", "x")
	f.Add([]byte(`{"services":{"a":null,"b":{"name":""},"c":{"name":"c.C","protocol":"grpc"}}}`), "", "::1", 0, "", "dubbo.x", "y")
	f.Add([]byte(`{"services":{"c":{"name":"c.C","protocol":"triple","version":"1","group":"g"}}}`), "app", "h", 70000, `[{"port":-1,"protocol":"triple"},{"port":65536,"protocol":"triple"}]`, "zone", "z")
	f.Add([]byte(`{"services":{"c":{"name":"c.C","protocol":"http"}}}`), "app", "h", 80, `not json`, "application", "other")
	f.Add([]byte(`null`), "a", "h", 1, `[]`, "", "")
	f.Add([]byte(`{"services":[]}`), "a", "h", 1, `{}`, "", "")
	f.Add([]byte("\xff"), "a", "h", 1, "", "", "")
	f.Fuzz(func(t *testing.T, doc []byte, app, host string, port int, endpoints, mk, mv string) {
		mi, err := dubboapp.ParseInfo(doc)
		if err != nil {
			if mi != nil {
				t.Fatalf("value and error %v", err)
			}
			return
		}
		md := map[string]string{mk: mv}
		if endpoints != "" {
			md[dubboapp.MetaEndpoints] = endpoints
		}
		for _, i := range dubboapp.Instances(app, host, port, md, mi) {
			if i.Service.Name == "" || !i.Protocol.Valid() {
				t.Fatalf("provider %+v", i)
			}
			h, p, err := net.SplitHostPort(i.Address)
			n, perr := strconv.Atoi(p)
			if err != nil || perr != nil || h == "" || h != host || n <= 0 || n > 65535 {
				t.Fatalf("provider address %q (host %q port %d)", i.Address, host, port)
			}
			if i.Metadata["application"] != app {
				t.Fatalf("provider %+v: application", i)
			}
			for k := range i.Metadata {
				if k == "id" || strings.HasPrefix(k, "dubbo.") || k == "interface" || k == "path" || k == "version" || k == "group" || k == "side" {
					t.Fatalf("provider %+v: metadata %q", i, k)
				}
			}
		}
		// Instances(nil) and a MetadataInfo that was never filled in are no providers.
		if got := dubboapp.Instances(app, host, port, md, nil); got != nil {
			t.Fatalf("no MetadataInfo: %+v", got)
		}
	})
}

// FuzzRenderRoundTrip: an application instance rendered the way a registry stores it
// (instance metadata, and the MetadataInfo as JSON in the metadata report) reads back as
// the same providers: service keys, protocols, address, and metadata (the service's, then
// the instance's, without the layout keys; application set to the app).
func FuzzRenderRoundTrip(f *testing.F) {
	f.Add("strait-beta", "10.0.0.1", uint16(17110), "com.beta.Pay", "1.0.0", "g", uint8(0), "zone", "z1", "other.Svc", uint8(1), registrysync.MetaManaged, "true")
	f.Add("shop", "::1", uint16(1), "a.A", "", "", uint8(2), "version", "9", "a.A", uint8(0), "id", "i")
	f.Add("shop", "h", uint16(65535), "a.A", "0.0.0", "", uint8(1), "application", "x", "a.A", uint8(1), dubboapp.MetaEndpoints, "[]")
	f.Add("a:b", "h", uint16(1), "a.A", "", "", uint8(0), "", "", "b", uint8(0), "", "")
	f.Add("app", "", uint16(0), "", "", "", uint8(3), "", "", "", uint8(3), "", "")
	f.Fuzz(func(t *testing.T, app, host string, port uint16, name, version, group string, proto uint8, sk, sv, name2 string, proto2 uint8, ik, iv string) {
		for _, s := range []string{app, host, name, version, group, sk, sv, name2, ik, iv} {
			if !utf8.ValidString(s) {
				return // JSON (the metadata report) carries text only
			}
		}
		protos := []mesh.Protocol{mesh.ProtocolTriple, mesh.ProtocolGRPC, mesh.ProtocolHTTP, mesh.ProtocolDubbo}
		addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
		a := registrysync.AppInstance{App: app, Address: addr, Metadata: map[string]string{ik: iv}, Services: []mesh.Instance{
			{Service: mesh.ServiceKey{Name: name, Version: version, Group: group}, Protocol: protos[int(proto)%len(protos)], Address: addr, Metadata: map[string]string{sk: sv}},
			{Service: mesh.ServiceKey{Name: name2}, Protocol: protos[int(proto2)%len(protos)], Address: addr},
		}}
		rd, err := dubboapp.Render(a)
		if err != nil {
			return
		}
		if rd.Metadata[dubboapp.MetaRevision] != rd.Info.Revision || rd.Info.Revision != dubboapp.Revision(rd.Info) {
			t.Fatalf("revision %q, metadata %v", rd.Info.Revision, rd.Metadata)
		}
		again, err := dubboapp.Render(a)
		if err != nil || again.Info.Revision != rd.Info.Revision {
			t.Fatalf("rendered twice: revision %q then %q (%v)", rd.Info.Revision, again.Info.Revision, err)
		}
		doc, err := json.Marshal(rd.Info)
		if err != nil {
			t.Fatal(err)
		}
		mi, err := dubboapp.ParseInfo(doc)
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if dubboapp.Revision(*mi) != rd.Info.Revision {
			t.Fatalf("revision changed through the metadata report: %s", doc)
		}
		got := dubboapp.Instances(a.App, rd.Host, rd.Port, rd.Metadata, mi)

		// What should come back: one provider per distinct Dubbo key (the last rendered wins).
		want := map[string]mesh.Instance{}
		for _, s := range a.Services {
			md := map[string]string{}
			for k, v := range s.Metadata {
				switch k {
				case "interface", "path", "version", "group", "side":
				default:
					md[k] = v
				}
			}
			for k, v := range a.Metadata {
				if k != "id" && !strings.HasPrefix(k, "dubbo.") {
					md[k] = v
				}
			}
			md["application"] = a.App
			s.Metadata = md
			s.Address = net.JoinHostPort(rd.Host, strconv.Itoa(rd.Port))
			want[key(s)] = s
		}
		if len(got) != len(want) {
			t.Fatalf("rendered %+v, read back %+v", a, got)
		}
		for _, g := range got {
			w, ok := want[key(g)]
			if !ok || w.Service != g.Service || w.Protocol != g.Protocol || !maps.Equal(w.Metadata, g.Metadata) {
				t.Fatalf("read back %+v, want %+v (of %+v)", g, w, slices.Collect(maps.Values(want)))
			}
		}
	})
}

// key is Dubbo's key of a provider (version 0.0.0 is no version) at its address.
func key(i mesh.Instance) string {
	sc := string(i.Protocol)
	if i.Protocol == mesh.ProtocolTriple {
		sc = "tri"
	}
	return dubboapp.MatchKey(i.Service.Name, i.Service.Group, i.Service.Version, sc) + "|" + i.Address
}

// FuzzMergeApps: a mapping value read, extended with an application and read again holds
// the applications it held, in order, then the new one once.
func FuzzMergeApps(f *testing.F) {
	for _, s := range [][2]string{{"", "a"}, {"a,b", "c"}, {"a, b ,,a", "b"}, {" , ", "x"}, {"a", "a"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, old, app string) {
		if app == "" || strings.Contains(app, ",") || strings.TrimSpace(app) != app {
			return // not an application name (Render refuses ',')
		}
		before := dubboapp.ParseApps(old)
		merged, changed := dubboapp.MergeApps(old, app)
		after := dubboapp.ParseApps(merged)
		if changed == slices.Contains(before, app) {
			t.Fatalf("MergeApps(%q, %q) changed=%v, had %q", old, app, changed, before)
		}
		want := before
		if changed {
			want = append(slices.Clone(before), app)
		} else if merged != old {
			t.Fatalf("MergeApps(%q, %q) = %q unchanged", old, app, merged)
		}
		if !slices.Equal(after, want) {
			t.Fatalf("MergeApps(%q, %q) = %q: %q, want %q", old, app, merged, after, want)
		}
		for _, a := range after {
			if a == "" || strings.Contains(a, ",") || strings.TrimSpace(a) != a {
				t.Fatalf("ParseApps(%q) has %q", merged, a)
			}
		}
	})
}
