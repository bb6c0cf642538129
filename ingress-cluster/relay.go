package ingress

import (
	"crypto/tls"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/gateway"
	"github.com/strait-mesh/strait/internal/governance"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/xdsres"
)

// relayFor sends the tunnels of peer egress instances to the relay; a peer
// controlplane's (federation) takes the general path. The connection's value is the
// peer's SPIFFE ID, parsed once.
func relayFor(cs *tls.ConnectionState) (any, bool) {
	id, err := identity.PeerID(cs)
	if err != nil || strings.HasPrefix(id.Path(), "/"+identity.RoleControlplane+"/") {
		return nil, false
	}
	return id, true
}

type setKey struct {
	k mesh.ServiceKey
	p mesh.Protocol
}

// maxCachedSets bounds the cache of provider sets (the keys come from callers).
const maxCachedSets = 4096

func newState(cfg *xdsres.GatewayConfig, peers map[spiffeid.TrustDomain]string, l config.Limits, ejector func(string) *governance.Ejector) *state {
	st := &state{cfg: cfg, peers: peers, limits: l, ejector: ejector}
	m := map[setKey]*balance.Set{}
	st.sets.Store(&m)
	return st
}

// set returns the providers of k in the family of p as a balancing set, cached for the
// life of this configuration.
func (st *state) set(k mesh.ServiceKey, p mesh.Protocol) *balance.Set {
	key := setKey{k, p}
	if s, ok := (*st.sets.Load())[key]; ok {
		return s
	}
	st.setMu.Lock()
	defer st.setMu.Unlock()
	old := *st.sets.Load()
	if s, ok := old[key]; ok {
		return s
	}
	eps := st.cfg.Endpoints(k, p)
	addrs := make([]string, len(eps))
	for i, e := range eps {
		addrs[i] = e.Address
	}
	s := balance.NewSet(addrs)
	st.ejected(k.Name, s)
	if len(old) >= maxCachedSets {
		return s
	}
	m := make(map[setKey]*balance.Set, len(old)+1)
	for kk, v := range old {
		m[kk] = v
	}
	m[key] = s
	st.sets.Store(&m)
	return s
}

// RelayStats counts the tunnel streams the relay forwarded and those it handed to the
// general path (zeros with the relay off).
func (g *Gateway) RelayStats() (relayed, fallback uint64) {
	if g.relay == nil {
		return 0, 0
	}
	return g.relay.Stats()
}

var _ gateway.Kind = (*Gateway)(nil)

// ejected keeps the endpoints of s that are ejected (outlier detection) out of picks
// for the rest of their ejection, and tells the service's ejector the set's size.
func (st *state) ejected(service string, s *balance.Set) {
	if st.ejector == nil {
		return
	}
	e := st.ejector(service)
	e.SetSize(s.Len())
	now := time.Now().UnixNano()
	s.Each(func(ep *balance.Endpoint) {
		if es := e.Endpoint(ep.Addr); es.Ejected(now) {
			ep.MarkDown(time.Duration(es.Until() - now))
		}
	})
}
