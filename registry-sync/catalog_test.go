package registrysync

import (
	"testing"

	"github.com/strait-mesh/strait/internal/mesh"
)

// The catalog (what controlplanes see) holds only protocols Strait proxies: gRPC, Triple,
// Dubbo and HTTP, each service's providers by address; another protocol never reaches
// translation.
func TestCatalogProtocols(t *testing.T) {
	c := NewCatalog(nil, nil)
	c.set([]mesh.Instance{
		{Service: mesh.ServiceKey{Name: "a"}, Protocol: mesh.ProtocolTriple, Address: "10.0.0.1:1"},
		{Service: mesh.ServiceKey{Name: "a"}, Protocol: mesh.ProtocolDubbo, Address: "10.0.0.1:2"},
		{Service: mesh.ServiceKey{Name: "b"}, Protocol: "rmi", Address: "10.0.0.1:3"},
	})
	all := c.All()
	if len(all) != 2 || all[0].Protocol != mesh.ProtocolTriple || all[1].Protocol != mesh.ProtocolDubbo {
		t.Fatalf("catalog: %v", all)
	}
	if d := c.Endpoints(mesh.ServiceKey{Name: "a"}, mesh.ProtocolDubbo); len(d) != 1 || d[0].Address != "10.0.0.1:2" {
		t.Fatalf("dubbo endpoints of a: %v", d)
	}
	if c.Generation() != 1 {
		t.Fatalf("generation %d", c.Generation())
	}
}
