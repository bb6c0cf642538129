package xdsres

import (
	"testing"

	"github.com/strait-mesh/strait/internal/mesh"
)

// TestNamesRoundTrip: every name the controlplane builds reads back, with the prefix Decode
// strips, as what it was built from.
func TestNamesRoundTrip(t *testing.T) {
	for _, d := range []string{"beta", "a", "domain-with-dashes", "x.y"} {
		got, ok := trimPrefix(PeerCluster(d), "peer/")
		if !ok || got != d {
			t.Errorf("PeerCluster(%q) = %q reads back as %q, %v", d, PeerCluster(d), got, ok)
		}
	}
	for _, td := range []string{"beta.strait.local", "td"} {
		got, ok := trimPrefix(BundleSecret(td), "bundle/")
		if !ok || got != td {
			t.Errorf("BundleSecret(%q) = %q reads back as %q, %v", td, BundleSecret(td), got, ok)
		}
	}
	for _, tc := range []struct {
		p      mesh.Protocol
		family string
	}{
		{mesh.ProtocolGRPC, "rpc/"},
		{mesh.ProtocolTriple, "rpc/"},
		{mesh.ProtocolHTTP, "http/"},
	} {
		const svc = "com.beta.Pay$Inner"
		name := ServiceCluster(tc.p, svc)
		rest, ok := trimPrefix(name, "svc/")
		if !ok {
			t.Fatalf("ServiceCluster(%s) = %q: no svc/ prefix", tc.p, name)
		}
		got, ok := trimPrefix(rest, tc.family)
		if !ok || got != svc {
			t.Errorf("ServiceCluster(%s) = %q reads back as %q, %v", tc.p, name, got, ok)
		}
	}
	// gRPC and Triple share one cluster: their providers serve each other's callers.
	if ServiceCluster(mesh.ProtocolGRPC, "s") != ServiceCluster(mesh.ProtocolTriple, "s") {
		t.Error("gRPC and Triple clusters differ")
	}
	if ServiceCluster(mesh.ProtocolGRPC, "s") == ServiceCluster(mesh.ProtocolHTTP, "s") {
		t.Error("rpc and http clusters are the same")
	}
}

func TestTrimPrefix(t *testing.T) {
	for _, tc := range []struct {
		s, prefix, want string
		ok              bool
	}{
		{"peer/beta", "peer/", "beta", true},
		{"peer/", "peer/", "", false}, // nothing after the prefix is no name
		{"peer", "peer/", "", false},
		{"bundle/x", "peer/", "", false},
		{"", "peer/", "", false},
		{"peer/a/b", "peer/", "a/b", true},
	} {
		got, ok := trimPrefix(tc.s, tc.prefix)
		if got != tc.want || ok != tc.ok {
			t.Errorf("trimPrefix(%q, %q) = %q, %v; want %q, %v", tc.s, tc.prefix, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRoles(t *testing.T) {
	// The roles are the listener and route configuration names, and the node cluster a
	// gateway sends: they must not change without the controlplane changing with them.
	if RoleEgress != "egress" || RoleIngress != "ingress" || MetadataKey != "strait" {
		t.Errorf("roles %q %q, metadata key %q", RoleEgress, RoleIngress, MetadataKey)
	}
}
