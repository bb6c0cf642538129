// Package controlplane turns a domain's configuration into what its gateways need. In this
// release it translates the domain file into the route table that egress and ingress
// consult; serving it over xDS, federation and the built-in CA come next.
package controlplane

import (
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/routing"
)

// RouteTable translates a validated domain into its route table: Routes for the egress,
// Exports for the ingress. It is a pure function.
func RouteTable(d *config.Domain) *routing.Table {
	routes := make([]routing.Route, 0, len(d.Routes))
	for _, r := range d.Routes {
		routes = append(routes, routing.Route{
			Service:    mesh.ServiceKey{Name: r.Service, Version: r.Version, Group: r.Group},
			Protocol:   r.Protocol,
			Peer:       r.Peer,
			Host:       r.Host,
			PathPrefix: r.PathPrefix,
		})
	}
	exports := make([]routing.Export, 0, len(d.Exports))
	for _, e := range d.Exports {
		x := routing.Export{
			Service:  mesh.ServiceKey{Name: e.Service, Version: e.Version, Group: e.Group},
			Protocol: e.Protocol,
			Peers:    make(map[string]bool, len(e.To)),
		}
		for _, to := range e.To {
			x.Peers[to] = true
		}
		if len(e.Methods) > 0 {
			x.Methods = make(map[string]bool, len(e.Methods))
			for _, m := range e.Methods {
				x.Methods[m] = true
			}
		}
		exports = append(exports, x)
	}
	return routing.NewTable(routes, exports)
}
