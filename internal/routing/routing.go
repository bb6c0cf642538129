// Package routing holds the route table a gateway consults for every call: which peer
// domain serves a service (egress) and which peer domains may call a local service
// (ingress). A Table is immutable; a Store swaps whole tables atomically, so a lookup
// never takes a lock and an update never disturbs a call in flight.
package routing

import (
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
)

// Route sends calls of one service to a peer domain.
type Route struct {
	Service  mesh.ServiceKey
	Protocol mesh.Protocol
	Peer     string
	// Host and PathPrefix match plain HTTP requests.
	Host       string
	PathPrefix string
	// Deadline bounds the route's calls.
	Deadline Deadline
}

// Deadline bounds the calls of a route or export: a call that carries no deadline gets
// Default, one that carries a longer one than Max is cut to Max (0: not set).
type Deadline struct {
	Default, Max time.Duration
}

// Export lets some peer domains call one local service.
type Export struct {
	Service  mesh.ServiceKey
	Protocol mesh.Protocol
	// Peers are the allowed source domains.
	Peers map[string]bool
	// Methods is the allow-list of methods; nil allows all.
	Methods map[string]bool
	// Deadline bounds the export's calls.
	Deadline Deadline
}

// Table is an immutable route table.
type Table struct {
	rpc     map[string][]Route // gRPC, Triple and Dubbo, by service name, most specific first
	http    []Route            // most specific first
	exports map[string][]Export
}

// NewTable builds a table. Routes and exports are matched most specific first: a route
// with a version or group beats one without; a longer HTTP path prefix beats a shorter.
func NewTable(routes []Route, exports []Export) *Table {
	t := &Table{rpc: map[string][]Route{}, exports: map[string][]Export{}}
	for _, r := range routes {
		if r.Protocol == mesh.ProtocolHTTP {
			r.Host = strings.ToLower(r.Host)
			t.http = append(t.http, r)
			continue
		}
		t.rpc[r.Service.Name] = append(t.rpc[r.Service.Name], r)
	}
	for _, rs := range t.rpc {
		sort.SliceStable(rs, func(i, j int) bool { return specificity(rs[i].Service) > specificity(rs[j].Service) })
	}
	sort.SliceStable(t.http, func(i, j int) bool {
		a, b := t.http[i], t.http[j]
		if (a.Host != "") != (b.Host != "") {
			return a.Host != ""
		}
		return len(a.PathPrefix) > len(b.PathPrefix)
	})
	for _, e := range exports {
		t.exports[e.Service.Name] = append(t.exports[e.Service.Name], e)
	}
	for _, es := range t.exports {
		sort.SliceStable(es, func(i, j int) bool { return specificity(es[i].Service) > specificity(es[j].Service) })
	}
	return t
}

func specificity(k mesh.ServiceKey) int {
	n := 0
	if k.Version != "" {
		n++
	}
	if k.Group != "" {
		n++
	}
	return n
}

// matches reports whether a configured key (empty version or group = any) matches a call's key.
func matches(conf, call mesh.ServiceKey) bool {
	return (conf.Version == "" || conf.Version == call.Version) && (conf.Group == "" || conf.Group == call.Group)
}

// LookupRPC finds the route of a gRPC or Triple call. A Triple route also serves gRPC
// callers and the other way round: both frame messages the same way.
func (t *Table) LookupRPC(k mesh.ServiceKey) (Route, bool) { return t.lookup("rpc", k) }

// LookupDubbo finds the route of a call over the classic Dubbo protocol.
func (t *Table) LookupDubbo(k mesh.ServiceKey) (Route, bool) { return t.lookup("dubbo", k) }

func (t *Table) lookup(family string, k mesh.ServiceKey) (Route, bool) {
	for _, r := range t.rpc[k.Name] {
		if r.Protocol.Family() == family && matches(r.Service, k) {
			return r, true
		}
	}
	return Route{}, false
}

// LookupHTTP finds the route of a plain HTTP request by host (port ignored) and path.
func (t *Table) LookupHTTP(host, path string) (Route, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, r := range t.http {
		if r.Host != "" && !strings.EqualFold(r.Host, host) {
			continue
		}
		if r.PathPrefix != "" && !pathHasPrefix(path, r.PathPrefix) {
			continue
		}
		return r, true
	}
	return Route{}, false
}

func pathHasPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// Decision is the outcome of an authorization.
type Decision int

// Decisions of Authorize.
const (
	Allowed Decision = iota
	// UnknownService: the service is not exported at all (or not with this protocol family).
	UnknownService
	// Forbidden: exported, but not to this peer or not this method.
	Forbidden
)

// Authorize decides whether source domain src may call method of service k over protocol p.
// It returns the matching export when allowed.
func (t *Table) Authorize(src string, p mesh.Protocol, k mesh.ServiceKey, method string) (Export, Decision) {
	found := false
	for _, e := range t.exports[k.Name] {
		if e.Protocol.Family() != p.Family() || !matches(e.Service, k) {
			continue
		}
		found = true
		if !e.Peers[src] {
			continue
		}
		if e.Methods != nil && !e.Methods[method] {
			continue
		}
		return e, Allowed
	}
	if found {
		return Export{}, Forbidden
	}
	return Export{}, UnknownService
}

// Source gives the table in force. Implementations are safe for concurrent use.
type Source interface {
	Table() *Table
}

// Store holds the table in force and swaps it atomically.
type Store struct {
	p atomic.Pointer[Table]
}

// NewStore returns a store holding t.
func NewStore(t *Table) *Store {
	s := &Store{}
	s.p.Store(t)
	return s
}

// Table returns the table in force.
func (s *Store) Table() *Table { return s.p.Load() }

// Set replaces the table in force.
func (s *Store) Set(t *Table) { s.p.Store(t) }

var _ Source = (*Store)(nil)

// Routes returns the table's routes, most specific first (for inspection).
func (t *Table) Routes() []Route {
	var out []Route
	for _, rs := range t.rpc {
		out = append(out, rs...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Service.String() < out[j].Service.String() })
	return append(out, t.http...)
}

// Exports returns the table's exports (for inspection).
func (t *Table) Exports() []Export {
	var out []Export
	for _, es := range t.exports {
		out = append(out, es...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Service.String() < out[j].Service.String() })
	return out
}
