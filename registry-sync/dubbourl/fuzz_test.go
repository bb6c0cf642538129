package dubbourl_test

import (
	"maps"
	"net"
	"regexp"
	"strconv"
	"testing"

	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

// layout are the query parameters the URL codec writes from the service key itself: they
// are not an instance's metadata.
var layout = map[string]bool{"interface": true, "version": true, "group": true, "side": true}

func sameInstance(a, b mesh.Instance) bool {
	return a.Service == b.Service && a.Protocol == b.Protocol && a.Address == b.Address && maps.Equal(a.Metadata, b.Metadata)
}

// FuzzParseURL: any string gives an instance or an error, never a panic; an instance read
// from a provider URL is written back to a URL that reads as the same instance.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"tri://127.0.0.1:20000/org.Greeter?interface=org.Greeter&side=provider&version=1.0.0",
		"dubbo://1.2.3.4:20880/org.Legacy?interface=org.Legacy&side=provider&application=x&group=g",
		"grpc://[::1]:50051/a.B", "http://h:80/svc?path=/x&weight=10",
		"tri://[fe80::1%25eth0]:1/a.B?interface=a.B", "tri://h:1/?interface=", "tri://h:1/a?interface=b&interface=c",
		"rest://1.2.3.4:1/x", "tri://nohost/x", "tri://1.2.3.4:5/", "%zz", "tri://h:1/a?;=;", "", "://",
		"tri://1.2.3.4:/x", "tri://:1/x", "tri://h:0/x", "tri://h:65536/x", "tri://[::%25\x91]:1/0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		i, err := dubbourl.Parse(s)
		if err != nil {
			return
		}
		if !i.Protocol.Registered() || i.Service.Name == "" {
			t.Fatalf("%q read as %+v", s, i)
		}
		h, p, err := net.SplitHostPort(i.Address)
		if n, perr := strconv.ParseUint(p, 10, 16); err != nil || perr != nil || n == 0 || h == "" {
			t.Fatalf("%q read with address %q", s, i.Address)
		}
		for k := range i.Metadata {
			if layout[k] {
				t.Fatalf("%q read with metadata %q", s, k)
			}
		}
		u := dubbourl.Format(i)
		j, err := dubbourl.Parse(u)
		if err != nil {
			t.Fatalf("%q → %+v → %q: %v", s, i, u, err)
		}
		if !sameInstance(i, j) {
			t.Fatalf("%q → %+v → %q → %+v", s, i, u, j)
		}
	})
}

var plainHost = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// FuzzURLRoundTrip: an instance written as a provider URL reads back as itself: service key,
// protocol, address, and its metadata without the codec's own keys (interface, version,
// group, side), which never override the service key.
func FuzzURLRoundTrip(f *testing.F) {
	f.Add("org.apache.Greeter", "1.0.0", "g1", uint8(0), "10.0.0.1", uint16(20000), "application", "demo")
	f.Add("a.B", "", "", uint8(1), "::1", uint16(1), "strait.origin", "beta")
	f.Add("legacy.L", "", "", uint8(3), "host-1.example", uint16(20880), "", "")
	f.Add("x", "", "", uint8(2), "h", uint16(80), "version", "9.9.9")
	f.Add("x", "1", "", uint8(0), "h", uint16(80), "group", "other")
	f.Add("a/b?c#d e%", "v&x=y", "g=h", uint8(0), "h", uint16(1), "k&=", "v?#")
	f.Add("", "", "", uint8(0), "h", uint16(1), "", "")
	f.Fuzz(func(t *testing.T, name, version, group string, proto uint8, host string, port uint16, mk, mv string) {
		protos := []mesh.Protocol{mesh.ProtocolTriple, mesh.ProtocolGRPC, mesh.ProtocolHTTP, mesh.ProtocolDubbo}
		in := mesh.Instance{
			Service:  mesh.ServiceKey{Name: name, Version: version, Group: group},
			Protocol: protos[int(proto)%len(protos)],
			Address:  net.JoinHostPort(host, strconv.Itoa(int(port))),
			Metadata: map[string]string{mk: mv},
		}
		u := dubbourl.Format(in)
		out, err := dubbourl.Parse(u)
		if err != nil {
			ip := net.ParseIP(host)
			if name != "" && port != 0 && (plainHost.MatchString(host) || ip != nil) {
				t.Fatalf("%+v → %q: %v", in, u, err)
			}
			return
		}
		want := in
		want.Metadata = map[string]string{}
		if !layout[mk] {
			want.Metadata[mk] = mv
		}
		if !sameInstance(want, out) {
			t.Fatalf("%+v → %q → %+v", in, u, out)
		}
	})
}
