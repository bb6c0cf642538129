package registrysync

import (
	"testing"

	"github.com/strait-mesh/strait/internal/mesh"
)

// The catalog (what controlplanes see) holds only protocols Strait proxies: a dubbo://
// provider, which registries and sync jobs carry, never reaches translation.
func TestCatalogLeavesOutDubbo(t *testing.T) {
	c := NewCatalog(nil, nil)
	c.set([]mesh.Instance{
		{Service: mesh.ServiceKey{Name: "a"}, Protocol: mesh.ProtocolTriple, Address: "10.0.0.1:1"},
		{Service: mesh.ServiceKey{Name: "a"}, Protocol: mesh.ProtocolDubbo, Address: "10.0.0.1:2"},
		{Service: mesh.ServiceKey{Name: "b"}, Protocol: mesh.ProtocolDubbo, Address: "10.0.0.1:3"},
	})
	all := c.All()
	if len(all) != 1 || all[0].Protocol != mesh.ProtocolTriple {
		t.Fatalf("catalog: %v", all)
	}
	if c.Generation() != 1 {
		t.Fatalf("generation %d", c.Generation())
	}
}
