package routing

import (
	"testing"

	"github.com/strait-mesh/strait/internal/mesh"
)

func TestLookupRPCPrefersSpecific(t *testing.T) {
	tb := NewTable([]Route{
		{Service: mesh.ServiceKey{Name: "a.S"}, Protocol: mesh.ProtocolTriple, Peer: "any"},
		{Service: mesh.ServiceKey{Name: "a.S", Version: "2.0"}, Protocol: mesh.ProtocolTriple, Peer: "v2"},
	}, nil)
	for _, c := range []struct {
		k    mesh.ServiceKey
		peer string
		ok   bool
	}{
		{mesh.ServiceKey{Name: "a.S", Version: "2.0"}, "v2", true},
		{mesh.ServiceKey{Name: "a.S", Version: "1.0"}, "any", true},
		{mesh.ServiceKey{Name: "a.S"}, "any", true},
		{mesh.ServiceKey{Name: "b.S"}, "", false},
	} {
		r, ok := tb.LookupRPC(c.k)
		if ok != c.ok || r.Peer != c.peer {
			t.Errorf("%v: got %q %v, want %q %v", c.k, r.Peer, ok, c.peer, c.ok)
		}
	}
}

func TestLookupHTTP(t *testing.T) {
	tb := NewTable([]Route{
		{Protocol: mesh.ProtocolHTTP, PathPrefix: "/api", Peer: "api"},
		{Protocol: mesh.ProtocolHTTP, PathPrefix: "/api/v2", Peer: "v2"},
		{Protocol: mesh.ProtocolHTTP, Host: "Echo.Beta", Peer: "host"},
	}, nil)
	for _, c := range []struct{ host, path, peer string }{
		{"x", "/api/users", "api"},
		{"x", "/api", "api"},
		{"x", "/apix", ""},
		{"x", "/api/v2/users", "v2"},
		{"echo.beta:8080", "/api/users", "host"},
		{"other", "/", ""},
	} {
		r, _ := tb.LookupHTTP(c.host, c.path)
		if r.Peer != c.peer {
			t.Errorf("%s%s: got %q, want %q", c.host, c.path, r.Peer, c.peer)
		}
	}
}

func TestAuthorize(t *testing.T) {
	tb := NewTable(nil, []Export{
		{Service: mesh.ServiceKey{Name: "a.S", Version: "1.0"}, Protocol: mesh.ProtocolTriple, Peers: map[string]bool{"alpha": true}, Methods: map[string]bool{"Get": true}},
		{Service: mesh.ServiceKey{Name: "web"}, Protocol: mesh.ProtocolHTTP, Peers: map[string]bool{"alpha": true}},
	})
	for _, c := range []struct {
		src    string
		p      mesh.Protocol
		k      mesh.ServiceKey
		method string
		want   Decision
	}{
		{"alpha", mesh.ProtocolGRPC, mesh.ServiceKey{Name: "a.S", Version: "1.0"}, "Get", Allowed},
		{"alpha", mesh.ProtocolTriple, mesh.ServiceKey{Name: "a.S", Version: "1.0"}, "Put", Forbidden},
		{"gamma", mesh.ProtocolTriple, mesh.ServiceKey{Name: "a.S", Version: "1.0"}, "Get", Forbidden},
		{"alpha", mesh.ProtocolTriple, mesh.ServiceKey{Name: "a.S", Version: "2.0"}, "Get", UnknownService},
		{"alpha", mesh.ProtocolHTTP, mesh.ServiceKey{Name: "a.S", Version: "1.0"}, "", UnknownService},
		{"alpha", mesh.ProtocolHTTP, mesh.ServiceKey{Name: "web"}, "", Allowed},
		{"alpha", mesh.ProtocolGRPC, mesh.ServiceKey{Name: "web"}, "X", UnknownService},
	} {
		if _, got := tb.Authorize(c.src, c.p, c.k, c.method); got != c.want {
			t.Errorf("%s %s %v %s: got %v, want %v", c.src, c.p, c.k, c.method, got, c.want)
		}
	}
}
