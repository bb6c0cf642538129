package controlplane

import (
	"context"
	"time"

	"github.com/strait-mesh/strait/internal/membership"
	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// republish asks publishImports for a pass (coalesced).
func (c *Server) republish() {
	if c.republishCh == nil {
		return
	}
	select {
	case c.republishCh <- struct{}{}:
	default:
	}
}

// publishImports keeps the registry's managed entries equal to the imported gRPC, Triple and Dubbo
// services × the live egress instances, until ctx ends. A stale peer's services stay (calls
// keep flowing); a withdrawn service or a dead egress leaves.
func (c *Server) publishImports(ctx context.Context, domain string) {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			// Withdraw what we published: nothing may outlive its owner.
			wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.publisher.Set(wctx, nil)
			cancel()
			return
		case <-c.republishCh:
		case <-retry.C:
		}
		var egress []membership.Member
		for _, m := range membership.Serving(c.gossip["egress"].Members()) {
			if m.Meta.Addr != "" {
				egress = append(egress, m)
			}
		}
		var desired []mesh.Instance
		native := map[string]bool{}
		for _, i := range c.cp.Providers() {
			if !registrysync.Managed(i) {
				native[i.Service.Name] = true
			}
		}
		for peer, im := range c.Imports() {
			for _, s := range im.Services {
				p := mesh.Protocol(s.GetProtocol())
				if !p.Routed() || native[s.GetName()] {
					continue
				}
				for _, m := range egress {
					md := map[string]string{}
					for k, v := range s.GetMetadata() {
						md[k] = v
					}
					md[registrysync.MetaManaged] = "true"
					md[registrysync.MetaOrigin] = peer
					// Consumers see one application per origin domain, as at application
					// level (registrysync.AppName); Dubbo's routers want one.
					md["application"] = "strait-" + peer
					md[registrysync.MetaOwner] = domain + "/controlplane"
					md[registrysync.MetaGateway] = m.Name // one name per start
					if p == mesh.ProtocolDubbo {
						// The egress reads hessian2 bodies only: a Java Dubbo 3.2+
						// consumer would otherwise pick fastjson2, the provider's first
						// preference.
						md["prefer.serialization"] = "hessian2"
						md["serialization"] = "hessian2"
					}
					desired = append(desired, mesh.Instance{
						Service:  mesh.ServiceKey{Name: s.GetName(), Version: s.GetVersion(), Group: s.GetGroup()},
						Protocol: p, Address: m.Meta.Addr, Metadata: md,
					})
				}
			}
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.publisher.Set(sctx, desired)
		cancel()
		if err != nil {
			c.log.Warn("publishing imports; retrying", "err", err)
			retry.Reset(time.Second)
		}
	}
}
