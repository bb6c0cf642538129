// Package launch starts a gateway process from its file: the egress or ingress gateway
// with its xDS client, admin listener, metrics and gossip membership. It is the wiring
// layer between cmd/strait and the components. A controlplane process is
// controlplane.Start; the two-domain topology of `strait demo` and the tests is
// launch/demo.
package launch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	egress "github.com/strait-mesh/strait/egress-cluster"
	ingress "github.com/strait-mesh/strait/ingress-cluster"
	"github.com/strait-mesh/strait/internal/admin"
	"github.com/strait-mesh/strait/internal/advertise"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/governance"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/membership"
	"github.com/strait-mesh/strait/internal/proxy"
	"github.com/strait-mesh/strait/internal/xdsclient"
	"github.com/strait-mesh/strait/internal/xdsres"
)

// Gateway is a running gateway instance.
type Gateway struct {
	cfg     *config.Gateway
	log     *slog.Logger
	eg      *egress.Gateway
	ig      *ingress.Gateway
	xds     *xdsclient.Client
	admin   *admin.Server
	metrics *admin.GatewayMetrics
	ln      net.Listener
	// advertised is the address published for the instance.
	advertised string
	pc         net.PacketConn // the ingress' QUIC tunnel socket, on the listener's port
	gossip     *membership.Cluster

	mu      sync.Mutex
	applied *xdsres.GatewayConfig

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	shutdown sync.Once
}

// StartGateway starts the gateway described by gw. It serves at once but reports not ready
// (and answers UNAVAILABLE) until its first configuration arrives from the controlplane.
func StartGateway(gw *config.Gateway, log *slog.Logger) (g *Gateway, err error) {
	return startGateway(gw, nil, log)
}

// StartGatewayOn is StartGateway on a listener already open on gw.Listen, for a caller
// that must know the address before the gateway starts (and must not lose the port to
// another process meanwhile). The gateway owns ln, also if it fails to start.
func StartGatewayOn(gw *config.Gateway, ln net.Listener, log *slog.Logger) (*Gateway, error) {
	g, err := startGateway(gw, ln, log)
	if err != nil {
		ln.Close()
	}
	return g, err
}

func startGateway(gw *config.Gateway, ln net.Listener, log *slog.Logger) (g *Gateway, err error) {
	if err := gw.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g = &Gateway{cfg: gw, log: log.With("domain", gw.Domain, "role", gw.Role, "instance", gw.Instance)}
	svid, err := identity.LoadSVID(identity.Files{Cert: gw.Identity.Cert, Key: gw.Identity.Key})
	if err != nil {
		return nil, err
	}
	// With the own trust domain's bundle, the link to the controlplane is mutual TLS.
	var xdsTLS *tls.Config
	if gw.Identity.Bundle != "" {
		bundles, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: svid.ID.TrustDomain().Name(), File: gw.Identity.Bundle}})
		if err != nil {
			return nil, err
		}
		xdsTLS = identity.ControlplaneClientConfig(svid, bundles, svid.ID.TrustDomain())
	} else {
		g.log.Warn("the controlplane is reached without TLS: set identity.bundle outside a single host")
	}
	adm, err := admin.New(admin.Options{Addr: gw.Admin, Logger: g.log})
	if err != nil {
		return nil, err
	}
	g.admin = adm
	defer func() {
		if err != nil {
			_ = adm.Shutdown(context.Background())
		}
	}()
	g.metrics = admin.NewGatewayMetrics(g.admin.Registry(), gw.Role)
	if err := g.admin.Registry().Register(retryCollector{g}); err != nil {
		return nil, fmt.Errorf("%s: metrics: %w", gw.Role, err)
	}
	if ln != nil {
		g.ln = ln
	} else if g.ln, err = net.Listen("tcp", gw.Listen); err != nil {
		return nil, fmt.Errorf("%s: listen: %w", gw.Role, err)
	}
	guessed := false
	if g.advertised, guessed, err = advertise.Resolve(gw.Advertise, g.ln.Addr(), advertise.DefaultRouteIP); err != nil {
		g.ln.Close()
		return nil, fmt.Errorf("%s: %w", gw.Role, err)
	}
	if guessed {
		g.log.Warn("the listener is on a wildcard address: publishing the address of the interface with the default route; set advertise to the address consumers and peers dial",
			"listen", g.ln.Addr().String(), "advertise", g.advertised)
	}
	var apply func(*xdsres.GatewayConfig) error
	var serve func(net.Listener) error
	switch gw.Role {
	case xdsres.RoleEgress:
		g.eg, err = egress.New(egress.Config{Domain: gw.Domain, Instance: gw.Instance, SVID: svid, Limits: gw.Limits, DataPath: gw.DataPath, Logger: g.log, Observer: g.metrics, Governance: govObserver{g.metrics, g.log}})
		if err == nil {
			apply, serve = g.eg.Apply, g.eg.Serve
		}
	case xdsres.RoleIngress:
		// Peer controlplanes' federation calls go on to this domain's controlplane.
		cp := proxy.Upstream{Transport: proxy.NewH2CTransport(10*time.Second, 64<<10), Scheme: "http", Addr: gw.Controlplane.XDS}
		if xdsTLS != nil {
			cp = proxy.Upstream{Transport: &http2.Transport{TLSClientConfig: xdsTLS, ReadIdleTimeout: 15 * time.Second, PingTimeout: 5 * time.Second}, Scheme: "https", Addr: gw.Controlplane.XDS}
		}
		g.ig, err = ingress.New(ingress.Config{Domain: gw.Domain, Instance: gw.Instance, SVID: svid, Limits: gw.Limits, DataPath: gw.DataPath, Logger: g.log, Observer: g.metrics, Controlplane: cp, Governance: govObserver{g.metrics, g.log}})
		if err == nil {
			apply, serve = g.ig.Apply, g.ig.Serve
			// QUIC tunnels arrive on UDP at the same port number.
			g.pc, err = net.ListenPacket("udp", g.ln.Addr().String())
			if err != nil {
				err = fmt.Errorf("ingress: quic listen: %w", err)
			}
		}
	}
	if err != nil {
		g.ln.Close()
		return nil, err
	}
	// Which data path took the calls: the relay (gRPC-style calls over HTTP/2) or the
	// general net/http path (everything else).
	for _, path := range []string{"relay", "general"} {
		stat := func() float64 {
			var r, f uint64
			if g.eg != nil {
				r, f = g.eg.RelayStats()
			} else {
				r, f = g.ig.RelayStats()
			}
			if path == "relay" {
				return float64(r)
			}
			return float64(f)
		}
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "strait_streams_total", Help: "Streams the gateway's HTTP/2 listener took, by data path (general: handed by the relay to net/http).",
			ConstLabels: prometheus.Labels{"path": path},
		}, stat)
		if err := g.admin.Registry().Register(c); err != nil {
			g.ln.Close()
			return nil, fmt.Errorf("%s: metrics: %w", gw.Role, err)
		}
	}
	g.xds = xdsclient.New(xdsclient.Options{
		Addr: gw.Controlplane.XDS, Role: gw.Role, NodeID: gw.Domain + "/" + gw.Role + "/" + gw.Instance, Logger: g.log, TLS: xdsTLS,
		Apply: func(cfg *xdsres.GatewayConfig, v string) error {
			if err := apply(cfg); err != nil {
				g.metrics.ConfigNack()
				return err
			}
			g.mu.Lock()
			g.applied = cfg
			g.mu.Unlock()
			g.metrics.ConfigAck()
			g.metrics.SetConfigVersion(v)
			g.admin.SetReady(true, "")
			return nil
		},
	})
	g.admin.SetReady(false, "waiting for the first configuration from the controlplane")
	g.admin.SetConfigSource(g.debugConfig)
	if gw.Gossip != nil {
		// A node name per incarnation: a restarted instance is a new member at once, while
		// a crashed one is still being declared dead.
		g.gossip, err = membership.JoinConfigured(gw.Gossip, gw.Domain, gw.Role, g.Name()+"-"+strconv.FormatInt(time.Now().UnixNano()%(1<<30), 36), membership.Meta{
			Domain: gw.Domain, Role: membership.Role(gw.Role), Instance: gw.Instance, Addr: g.advertised,
		}, false, g.log)
		if err != nil {
			g.ln.Close()
			return nil, err
		}
		// Cluster-wide rate limits are shared among the cluster's serving instances.
		g.gossip.Watch(func(ms []membership.Member) {
			n := 0
			for _, m := range ms {
				if m.Meta.Domain == gw.Domain && string(m.Meta.Role) == gw.Role && m.Meta.State == membership.StateServing {
					n++
				}
			}
			if g.eg != nil {
				g.eg.SetClusterSize(n)
			} else {
				g.ig.SetClusterSize(n)
			}
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.goRun(func() { g.xds.Run(ctx) })
	g.goRun(func() {
		if err := g.admin.Serve(); err != nil {
			g.log.Error("admin listener stopped", "err", err)
		}
	})
	g.goRun(func() {
		defer g.ln.Close()
		if g.eg != nil {
			// A new egress waits briefly for its first configuration before it takes
			// consumers: a restarted instance then does not answer "no configuration yet"
			// to calls that its peer instances would have served. Without a configuration
			// after firstConfigWait it serves anyway, and answers UNAVAILABLE.
			deadline := time.Now().Add(firstConfigWait)
			for !g.eg.Ready() && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if err := serve(g.ln); err != nil {
			g.log.Error("listener stopped", "err", err)
		}
	})
	if g.pc != nil {
		g.goRun(func() {
			if err := g.ig.ServeQUIC(g.pc); err != nil {
				g.log.Error("quic listener stopped", "err", err)
			}
		})
	}
	return g, nil
}

func (g *Gateway) goRun(f func()) {
	g.wg.Add(1)
	go func() { defer g.wg.Done(); f() }()
}

// Addr is the serving listener's address (consumers for egress, tunnels for ingress).
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// Advertised is the address published for the instance (gossip, and from there the
// registry and peer domains): the gateway file's advertise, completed from the listener.
func (g *Gateway) Advertised() string { return g.advertised }

// AdminAddr is the admin listener's address.
func (g *Gateway) AdminAddr() string { return g.admin.Addr() }

// Name is domain-role-instance.
func (g *Gateway) Name() string { return g.cfg.Domain + "-" + g.cfg.Role + "-" + g.cfg.Instance }

// Ready reports whether the gateway has a configuration.
func (g *Gateway) Ready() bool {
	if g.eg != nil {
		return g.eg.Ready()
	}
	return g.ig.Ready()
}

// XDS is the gateway's xDS client (its version, NACKs).
func (g *Gateway) XDS() *xdsclient.Client { return g.xds }

// Ingress returns the ingress gateway, or nil for an egress.
func (g *Gateway) Ingress() *ingress.Gateway { return g.ig }

// firstConfigWait bounds how long a new egress waits for its first configuration before
// it accepts consumers.
const firstConfigWait = 2 * time.Second

// Egress is the egress gateway (nil for an ingress).
func (g *Gateway) Egress() *egress.Gateway { return g.eg }

// Shutdown drains: the gateway reports not ready, stops taking new calls, lets calls in
// flight finish until ctx ends, then stops everything.
func (g *Gateway) Shutdown(ctx context.Context) error {
	var err error
	g.shutdown.Do(func() {
		g.admin.SetReady(false, "draining")
		if g.gossip != nil {
			// Tell the cluster first, then leave: nobody should count on us any more.
			m := membership.Meta{Domain: g.cfg.Domain, Role: membership.Role(g.cfg.Role), Instance: g.cfg.Instance, Addr: g.advertised, State: membership.StateDraining}
			if err := g.gossip.UpdateMeta(m); err != nil {
				g.log.Warn("gossip: announce draining", "err", err)
			}
		}
		if d := g.cfg.DrainDelay.D(); d > 0 {
			// Still serving, new connections too, while consumers learn that we go: the
			// controlplane has withdrawn us from the registry, Dubbo consumers are told.
			if g.eg != nil {
				g.eg.AnnounceDrain()
			} else {
				g.ig.AnnounceDrain()
			}
			g.log.Info("draining: serving for the drain delay", "delay", d.String())
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		if g.gossip != nil {
			_ = g.gossip.Close()
		}
		if g.eg != nil {
			err = g.eg.Shutdown(ctx)
		} else {
			err = g.ig.Shutdown(ctx)
		}
		g.cancel()
		actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = g.admin.Shutdown(actx)
		cancel()
		if g.pc != nil {
			g.pc.Close()
		}
		g.wg.Wait()
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: drain timed out; calls still in flight were cut: %w", g.Name(), err)
	}
	return err
}

// Kill stops at once, as if the process died: listener and connections close, calls in
// flight fail. Tests use it for kill -9.
func (g *Gateway) Kill() {
	g.shutdown.Do(func() {
		if g.gossip != nil {
			// No goodbye: the cluster finds out by failure detection.
			_ = g.gossip.Abandon()
			_ = g.gossip.Close()
		}
		if g.eg != nil {
			g.eg.Close()
		} else {
			_ = g.ig.Close()
		}
		g.cancel()
		actx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = g.admin.Shutdown(actx)
		cancel()
		if g.pc != nil {
			g.pc.Close()
		}
		g.wg.Wait()
	})
}

// Config is the gateway's own file.
func (g *Gateway) Config() config.Gateway { return *g.cfg }

type debugRoute struct {
	Protocol   string   `json:"protocol"`
	Service    string   `json:"service"`
	Version    string   `json:"version,omitempty"`
	Group      string   `json:"group,omitempty"`
	Peer       string   `json:"peer,omitempty"`
	Host       string   `json:"host,omitempty"`
	PathPrefix string   `json:"pathPrefix,omitempty"`
	Allow      []string `json:"allow,omitempty"`
	Methods    []string `json:"methods,omitempty"`
}

// debugConfig is /debug/config: the configuration in force and its xDS version.
func (g *Gateway) debugConfig() any {
	g.mu.Lock()
	cfg := g.applied
	g.mu.Unlock()
	out := map[string]any{
		"domain": g.cfg.Domain, "role": g.cfg.Role, "instance": g.cfg.Instance,
		"listen": g.Addr(), "advertise": g.advertised,
		"version": g.xds.Version(), "connected": g.xds.Connected(), "nacks": g.xds.NACKs(), "lastNack": g.xds.LastNACK(),
	}
	if g.gossip != nil {
		out["members"] = membership.Views(g.gossip.Members())
	}
	if cfg == nil {
		return out
	}
	var routes []debugRoute
	for _, r := range cfg.Table.Routes() {
		routes = append(routes, debugRoute{Protocol: string(r.Protocol), Service: r.Service.Name, Version: r.Service.Version, Group: r.Service.Group, Peer: r.Peer, Host: r.Host, PathPrefix: r.PathPrefix})
	}
	for _, e := range cfg.Table.Exports() {
		d := debugRoute{Protocol: string(e.Protocol), Service: e.Service.Name, Version: e.Service.Version, Group: e.Service.Group}
		for p := range e.Peers {
			d.Allow = append(d.Allow, p)
		}
		for m := range e.Methods {
			d.Methods = append(d.Methods, m)
		}
		sort.Strings(d.Allow)
		sort.Strings(d.Methods)
		routes = append(routes, d)
	}
	peers := map[string]any{}
	for d, p := range cfg.Peers {
		peers[d] = map[string]any{"trustDomain": p.TrustDomain, "ingress": p.Ingress, "bundle": len(p.Bundle) > 0}
	}
	out["routes"] = routes
	out["peers"] = peers
	out["limits"] = cfg.Limits
	gov := map[string]any{"policies": cfg.Governance}
	if g.eg != nil {
		gov["breakers"] = g.eg.Governance().Breakers()
	} else {
		gov["breakers"] = g.ig.Governance().Breakers()
	}
	out["governance"] = gov
	if g.ig != nil {
		prov := map[string][]string{}
		for c, is := range cfg.Providers {
			for _, i := range is {
				prov[c] = append(prov[c], i.Address)
			}
		}
		out["providers"] = prov
	}
	return out
}

// govObserver reports governance events: refusals to the metrics, breaker transitions
// to the metrics and the log.
type govObserver struct {
	m   *admin.GatewayMetrics
	log *slog.Logger
}

func (o govObserver) Refused(kind, policy, peer, service string) {
	o.m.Refused(kind, policy, peer, service)
}

func (o govObserver) BreakerChanged(policy, peer, service string, from, to governance.State) {
	o.m.BreakerChanged(policy, peer, service, int(to), to.String())
	level := slog.LevelInfo
	if to == governance.Open {
		level = slog.LevelWarn
	}
	o.log.Log(context.Background(), level, "breaker "+to.String(), "policy", policy, "peer", peer, "service", service, "from", from.String())
}

var retriesDesc = prometheus.NewDesc("strait_retries_total",
	"Calls that never reached their next hop, by next-hop cluster (a peer at the egress, a service at the ingress) and result: retried within the retry budget, or refused by it; and the calls counted into the budget (result calls).",
	[]string{"role", "cluster", "result"}, nil)

// retryCollector reports the retry budgets' counts at scrape time.
type retryCollector struct{ g *Gateway }

func (c retryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- retriesDesc }

func (c retryCollector) Collect(ch chan<- prometheus.Metric) {
	var gov *governance.Policies
	switch {
	case c.g.eg != nil:
		gov = c.g.eg.Governance()
	case c.g.ig != nil:
		gov = c.g.ig.Governance()
	}
	for k, st := range gov.Budgets() {
		ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(st.Calls), c.g.cfg.Role, k, "calls")
		ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(st.Retries), c.g.cfg.Role, k, "retried")
		ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(st.Refused), c.g.cfg.Role, k, "over_budget")
	}
}
