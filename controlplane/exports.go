package controlplane

import (
	"sort"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// ResolveExports returns the domain's exports as concrete services, resolved against the
// providers of its registry: an export naming a service stays as it is; a pattern export
// becomes one export per service name of the registry it matches (same protocol family,
// version and group when the export sets them), with the pattern export's peers, methods
// and metadata allow-list. A name some export names exactly is not taken by a pattern, and
// among patterns the first in the document wins. Only native providers count: a service
// whose providers Strait registered for another domain (managed) never matches a pattern,
// so an import is never exported again. A resolved export takes its providers' protocol
// when they all speak one (so a peer publishes a Triple service as tri://), else the
// export's. It is a pure function; the result is in a stable order: exact exports in
// document order, then resolved services by name.
func ResolveExports(d *config.Domain, providers []mesh.Instance) []config.Export {
	var patterns []int
	for i, e := range d.Exports {
		if e.IsPattern() {
			patterns = append(patterns, i)
		}
	}
	if len(patterns) == 0 {
		return d.Exports
	}
	out := make([]config.Export, 0, len(d.Exports))
	type fam struct {
		family, name string
	}
	exact := map[fam]bool{}
	for _, e := range d.Exports {
		if !e.IsPattern() {
			out = append(out, e)
			exact[fam{e.Protocol.Family(), e.Service}] = true
		}
	}
	byName := nativeByName(providers)
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		insts := byName[name]
		for _, family := range []string{"rpc", "dubbo", "http"} {
			if exact[fam{family, name}] {
				continue
			}
			for _, pi := range patterns {
				e := d.Exports[pi]
				if e.Protocol.Family() != family || !e.MatchService(name) {
					continue
				}
				proto, ok := commonProtocol(insts, mesh.ServiceKey{Name: name, Version: e.Version, Group: e.Group}, e.Protocol)
				if !ok {
					continue
				}
				r := e
				r.Service, r.Protocol = name, proto
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// nativeByName groups the providers that are not managed by service name.
func nativeByName(providers []mesh.Instance) map[string][]mesh.Instance {
	m := map[string][]mesh.Instance{}
	for _, p := range providers {
		if !registrysync.Managed(p) {
			m[p.Service.Name] = append(m[p.Service.Name], p)
		}
	}
	return m
}

// commonProtocol reports whether some instance serves k in p's family, and the protocol
// they all speak (p when they differ).
func commonProtocol(insts []mesh.Instance, k mesh.ServiceKey, p mesh.Protocol) (mesh.Protocol, bool) {
	var got mesh.Protocol
	found := false
	for _, i := range insts {
		if !i.Serves(k, p) {
			continue
		}
		if !found {
			got, found = i.Protocol, true
		} else if got != i.Protocol {
			got = p
		}
	}
	return got, found
}
