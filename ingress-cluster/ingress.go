// Package ingress is the ingress gateway: it terminates tunnels from peer egress
// instances, knows the calling domain from the peer's SPIFFE ID, authorizes the call
// (source domain × service × method) against the domain's exports, and forwards it to a
// local provider found in the registry, in the provider's own protocol.
package ingress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/dubbopool"
	"github.com/strait-mesh/strait/internal/gateway"
	"github.com/strait-mesh/strait/internal/governance"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/proxy"
	"github.com/strait-mesh/strait/internal/relay"
	"github.com/strait-mesh/strait/internal/routing"
	"github.com/strait-mesh/strait/internal/tunnel"
	"github.com/strait-mesh/strait/internal/xdsres"
)

// Config configures a Gateway. Exports, providers and peers arrive later, through Apply.
type Config struct {
	Domain   string
	Instance string
	// SVID is the ingress' identity, presented to peer egress instances.
	SVID x509svid.Source
	// Observer records every call (metrics); nil records nothing.
	Observer proxy.Observer
	// Controlplane is where federation calls of peer controlplanes go: the domain's
	// controlplane, reached with Transport (the gateway's mutual TLS to it, or h2c).
	Controlplane proxy.Upstream
	// Limits of the tunnel listener (header size, timeouts, streams) are fixed at start;
	// body size and call timeout follow each Apply.
	Limits config.Limits
	// DataPath is "relay" (the default: gRPC-style calls from peer egress take the relay)
	// or "http" (every call takes the general net/http path).
	DataPath string
	Logger   *slog.Logger
	// Governance is told of refusals and breaker changes (metrics, logs); nil: nobody.
	Governance governance.Observer
}

// state is what one Apply installs; calls read it without locks.
type state struct {
	cfg    *xdsres.GatewayConfig
	peers  map[spiffeid.TrustDomain]string
	limits config.Limits
	// sets caches the relay's provider sets per service, built on first use.
	sets  atomic.Pointer[map[setKey]*balance.Set]
	setMu sync.Mutex
	// ejector returns the outlier state of a service's providers (nil: none).
	ejector func(service string) *governance.Ejector
}

// Gateway is one ingress instance.
type Gateway struct {
	domain  string
	state   atomic.Pointer[state]
	bundles *x509bundle.Set
	log     *slog.Logger
	srv     *tunnel.Server
	quic    *tunnel.QUICServer
	h2c     http.RoundTripper
	h1      http.RoundTripper
	obs     proxy.Observer
	// core classifies calls once and serves Decide's decisions on both data paths.
	core *gateway.Core
	// gov are the governance policies in force (compiled at each Apply).
	gov    atomic.Pointer[governance.Policies]
	govObs governance.Observer
	// share is how many live instances of the cluster share cluster-wide rate limits.
	share atomic.Int64
	// ejectors hold the outlier state of each service's provider endpoints (by service
	// name, copy on write), kept across configurations; ejectCfg is their rule.
	ejectors atomic.Pointer[map[string]*governance.Ejector]
	ejectMu  sync.Mutex
	ejectCfg atomic.Pointer[governance.EjectConfig]
	cp       proxy.Upstream
	// relay and pool are the fast path (nil with DataPath "http"): the relay serves the
	// tunnel connections of peer egress instances, pool holds h2c connections to providers.
	relay *relay.Server
	pool  *relay.Pool
	// dubbo holds multiplexed connections to classic Dubbo (dubbo://) providers.
	dubbo *dubbopool.Pool
	// federation streams live as long as the peer keeps them; a drain ends them, and the
	// peer's controlplane resumes through another instance.
	fedCtx    context.Context
	fedCancel context.CancelFunc
}

// New returns an ingress gateway. Serve starts it; until the first Apply it admits no
// peer, since it trusts no peer bundle.
func New(c Config) (*Gateway, error) {
	if c.SVID == nil {
		return nil, errors.New("ingress: no SVID")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	l := c.Limits.WithDefaults()
	if c.Observer == nil {
		c.Observer = proxy.NopObserver{}
	}
	fedCtx, fedCancel := context.WithCancel(context.Background())
	g := &Gateway{
		fedCtx:    fedCtx,
		fedCancel: fedCancel,
		cp:        c.Controlplane,
		obs:       c.Observer,
		domain:    c.Domain,
		bundles:   x509bundle.NewSet(),
		log:       c.Logger.With("domain", c.Domain, "instance", c.Instance),
		h2c:       proxy.NewH2CTransport(l.DialTimeout.D(), uint32(l.MaxHeaderBytes)),
		h1:        proxy.NewHTTP1Transport(l.DialTimeout.D(), int64(l.MaxHeaderBytes)),
	}
	g.dubbo = dubbopool.New(dubbopool.Options{DialTimeout: l.DialTimeout.D(), Logger: g.log})
	g.govObs = c.Governance
	g.share.Store(1)
	g.ejectors.Store(&map[string]*governance.Ejector{})
	g.core = gateway.New(gateway.Options{Kind: g, Tunnel: true, Observer: g.obs, Logger: g.log,
		Limits: func() *config.Limits { return &g.state.Load().limits }})
	g.state.Store(newState(nil, map[spiffeid.TrustDomain]string{}, l, nil))
	// The handshake admits a peer only if its trust domain is a configured peer and its
	// certificate chains to that trust domain's own bundle; both follow Apply.
	tlsConf := identity.ServerConfig(c.SVID, g.bundles, nil, tunnel.ALPN)
	tlsConf.VerifyPeerCertificate = tlsconfig.VerifyPeerCertificate(g.bundles, func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if _, ok := g.state.Load().peers[id.TrustDomain()]; !ok {
			return fmt.Errorf("ingress: %s: trust domain %q is not a peer", id, id.TrustDomain())
		}
		return nil
	})
	// Until it has a configuration the ingress refuses handshakes (over TCP and QUIC), so
	// a dialer moves on to another instance before sending a call.
	tlsConf.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if !g.Ready() {
			return nil, errors.New("ingress: not configured yet")
		}
		return nil, nil
	}
	g.quic = tunnel.NewQUICServer(tlsConf, g, tunnel.ServerOptions{
		IdleTimeout:          l.IdleTimeout.D(),
		MaxHeaderBytes:       l.MaxHeaderBytes,
		MaxConcurrentStreams: l.MaxConcurrentStreams,
		Logger:               g.log,
	})
	so := tunnel.ServerOptions{
		HandshakeTimeout:     l.ReadHeaderTimeout.D(),
		IdleTimeout:          l.IdleTimeout.D(),
		MaxHeaderBytes:       l.MaxHeaderBytes,
		MaxConcurrentStreams: l.MaxConcurrentStreams,
		Logger:               g.log,
		// Dubbo tunnel connections: their frames are served as a Dubbo server serves a
		// consumer's, the peer's SPIFFE ID as each call's caller.
		Dubbo: func(nc net.Conn, cs *tls.ConnectionState) {
			id, err := identity.PeerID(cs)
			if err != nil {
				g.log.Warn("dubbo tunnel without a peer identity", "err", err)
				return
			}
			g.core.ServeDubboTunnel(nc, id)
		},
	}
	if c.DataPath != "http" {
		budget := relay.NewBudget(l.MaxQueuedBytes)
		g.relay = relay.NewServer(relay.Options{
			Router:               g.core,
			Fallback:             g.core,
			Observer:             g.obs,
			DropPrefix:           "strait-",
			MaxConcurrentStreams: l.MaxConcurrentStreams,
			MaxHeaderBytes:       l.MaxHeaderBytes,
			ReadTimeout:          l.ReadHeaderTimeout.D(),
			IdleTimeout:          l.IdleTimeout.D(),
			Abuse:                relay.AbuseFunc(g.obs),
			Budget:               budget,
			StallTimeout:         l.StallTimeout.D(),
			// A tunnel carries many consumers' calls, over a WAN link that may be
			// congested: it may hold more than one consumer's connection.
			MaxConnQueued: 64 << 20,
			Logger:        g.log,
		})
		dialTimeout := l.DialTimeout.D()
		g.pool = relay.NewPool(relay.PoolOptions{
			Dial: func(ctx context.Context, addr string) (net.Conn, error) {
				d := net.Dialer{Timeout: dialTimeout}
				return d.DialContext(ctx, "tcp", addr)
			},
			DialTimeout:    dialTimeout,
			MaxHeaderBytes: l.MaxHeaderBytes,
			Abuse:          relay.AbuseFunc(g.obs),
			Budget:         budget,
			Logger:         g.log,
		})
		so.Relay, so.RelayFor = g.relay, relayFor
	}
	g.srv = tunnel.NewServer(tlsConf, g, so)
	return g, nil
}

// Apply installs a configuration atomically: exports, providers, peers and their bundles.
// Calls in flight keep what they started with; established tunnels stay open.
func (g *Gateway) Apply(cfg *xdsres.GatewayConfig) error {
	if cfg.Role != xdsres.RoleIngress || cfg.Table == nil {
		return fmt.Errorf("ingress: not an ingress configuration (role %q)", cfg.Role)
	}
	peers := map[spiffeid.TrustDomain]string{}
	var bundles []*x509bundle.Bundle
	for d, p := range cfg.Peers {
		if len(p.Bundle) == 0 {
			continue // not admitted until its bundle arrives
		}
		td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
		if err != nil {
			return fmt.Errorf("ingress: peer %s: %w", d, err)
		}
		b, err := x509bundle.Parse(td, p.Bundle)
		if err != nil {
			return fmt.Errorf("ingress: peer %s bundle: %w", d, err)
		}
		peers[td] = d
		bundles = append(bundles, b)
	}
	for _, b := range bundles {
		g.bundles.Add(b)
	}
	g.applyGovernance(cfg)
	g.state.Store(newState(cfg, peers, cfg.Limits.WithDefaults(), g.ejector))
	for _, b := range g.bundles.Bundles() {
		if _, ok := peers[b.TrustDomain()]; !ok {
			g.bundles.Remove(b.TrustDomain())
		}
	}
	return nil
}

// Ready reports whether the gateway has a configuration.
func (g *Gateway) Ready() bool { return g.state.Load().cfg != nil }

// Serve accepts tunnel connections on ln until Shutdown or Close.
func (g *Gateway) Serve(ln net.Listener) error { return g.srv.Serve(ln) }

// ServeQUIC accepts QUIC tunnel connections on pc until Shutdown or Close.
func (g *Gateway) ServeQUIC(pc net.PacketConn) error { return g.quic.Serve(pc) }

// Shutdown sends GOAWAY on every tunnel and waits for calls in flight until ctx ends.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.fedCancel()
	qerr := make(chan error, 1)
	go func() { qerr <- g.quic.Shutdown(ctx) }()
	dubbo := make(chan struct{})
	go func() { g.core.ShutdownDubbo(ctx); close(dubbo) }()
	err := g.srv.Shutdown(ctx)
	<-dubbo
	if qe := <-qerr; err == nil && qe != nil && !errors.Is(qe, context.DeadlineExceeded) {
		err = qe
	}
	g.closeIdle()
	if g.pool != nil {
		g.pool.Close()
		g.pool.Wait()
	}
	g.dubbo.Close()
	return err
}

// TunnelsEstablished counts the tunnel connections peers have opened to this instance.
func (g *Gateway) TunnelsEstablished() uint64 { return g.srv.Established() + g.quic.Established() }

// QUICTunnelsEstablished counts the QUIC tunnel connections peers have opened.
func (g *Gateway) QUICTunnelsEstablished() uint64 { return g.quic.Established() }

// AnnounceDrain tells the peer egress instances on Dubbo tunnel connections that this
// instance drains (Dubbo's readonly event: they open new connections); it keeps serving.
func (g *Gateway) AnnounceDrain() { g.core.AnnounceDubboDrain() }

// Close stops at once.
func (g *Gateway) Close() error {
	g.fedCancel()
	err := g.srv.Close()
	_ = g.quic.Close()
	g.closeIdle()
	if g.pool != nil {
		g.pool.Kill()
		g.pool.Wait()
	}
	g.dubbo.Close()
	return err
}

func (g *Gateway) closeIdle() {
	type idler interface{ CloseIdleConnections() }
	for _, t := range []http.RoundTripper{g.h2c, g.h1, g.cp.Transport} {
		if i, ok := t.(idler); ok {
			i.CloseIdleConnections()
		}
	}
}

// ServeHTTP serves one call that arrived over a tunnel, on the general path.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.core.ServeHTTP(w, r) }

// Decide authorizes one call that arrived over a tunnel: the calling domain is the
// trust domain of the peer's certificate, and it must be allowed the service and method
// by the domain's exports; the call goes to the service's live providers. Both data paths
// ask it (see internal/gateway).
func (g *Gateway) Decide(c gateway.Call) gateway.Decision {
	st := g.state.Load()
	if st.cfg == nil {
		return gateway.Refuse(c, "", codes.Unavailable, "strait: ingress has no configuration yet")
	}
	src, known := st.peers[c.Caller.TrustDomain()]
	if c.Caller.IsZero() || !known {
		// The handshake admits only peer trust domains; this is a second line.
		return gateway.Refuse(c, "", codes.PermissionDenied, "strait: caller is not a peer domain")
	}
	if gateway.IsFederation(c.Path) {
		c.Call = proxy.Call{Protocol: mesh.ProtocolGRPC, Style: proxy.StyleGRPC, Service: mesh.ServiceKey{Name: "strait.federation.v1.Federation"}}
		return gateway.Decision{Code: codes.OK, Call: c, Peer: src, Local: (*federation)(g)}
	}
	if c.Service.Name == "" {
		return gateway.Refuse(c, src, codes.InvalidArgument, "strait: call names no service")
	}
	export, decision := st.cfg.Table.Authorize(src, c.Protocol, c.Service, c.Method)
	switch decision {
	case routing.UnknownService:
		return gateway.Refuse(c, src, codes.Unimplemented, fmt.Sprintf("strait: unknown service %q in domain %s", c.Service.String(), g.domain))
	case routing.Forbidden:
		d := gateway.Refuse(c, src, codes.PermissionDenied, fmt.Sprintf("strait: domain %s may not call %s/%s", src, c.Service.String(), c.Method))
		d.Warn = true
		return d
	}
	set := st.set(c.Service, c.Protocol)
	if set.Len() == 0 {
		return gateway.Refuse(c, src, codes.Unavailable, fmt.Sprintf("strait: no live provider of %s in domain %s", c.Service.String(), g.domain))
	}
	gov := g.gov.Load()
	if gov.EndpointBreakers() && set.AllDown(time.Now().UnixNano()) {
		if name := gov.OpenForAll(c.Service.Name, set); name != "" {
			return gateway.Refuse(c, src, codes.Unavailable, fmt.Sprintf("strait: breaker %q is open for every provider of %s in domain %s", name, c.Service.String(), g.domain))
		}
	}
	d := gateway.Decision{
		Code: codes.OK, Call: c, Peer: src,
		Set: set, Pool: g.pool, Transport: g.h2c, Scheme: "http",
		Retry: gov.Retries(), Budget: gov.Budget(c.Service.Name), Limits: &st.limits, Gov: gov,
		Endpoint: g,
		Deadline: export.Deadline,
	}
	switch c.Protocol {
	case mesh.ProtocolHTTP:
		d.Pool, d.Transport = nil, g.h1
	case mesh.ProtocolDubbo:
		d.Pool, d.Transport, d.Dubbo = nil, nil, g.dubbo
	}
	return d
}

// federation forwards a peer controlplane's Federation call to this domain's
// controlplane, naming the peer domain its SVID proved.
type federation Gateway

func (f *federation) ServeCall(w http.ResponseWriter, r *http.Request, d *gateway.Decision) string {
	g := (*Gateway)(f)
	call := d.Call.Call
	if !strings.HasPrefix(d.Call.Caller.Path(), "/"+identity.RoleControlplane+"/") {
		return proxy.Fail(w, call, codes.PermissionDenied, "strait: only a peer's controlplane may call the Federation API")
	}
	if g.cp.Transport == nil {
		return proxy.Fail(w, call, codes.Unavailable, "strait: this ingress does not reach its controlplane")
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(g.fedCtx, cancel)
	defer stop()
	outcome, err := proxy.Forward(ctx, w, r, call, g.cp, true, func(h http.Header) { h.Set(peerDomainHeader, d.Peer) })
	if err != nil {
		return proxy.ForwardError(ctx, w, call, "controlplane", err)
	}
	return outcome
}

// peerDomainHeader carries the authenticated peer domain to the controlplane
// (controlplane.PeerDomainHeader).
const peerDomainHeader = "Strait-Peer-Domain"

var _ http.Handler = (*Gateway)(nil)

// Endpoints returns the providers this instance knows for a service (empty before the
// first Apply).
func (g *Gateway) Endpoints(k mesh.ServiceKey, p mesh.Protocol) []mesh.Instance {
	st := g.state.Load()
	if st.cfg == nil {
		return nil
	}
	return st.cfg.Endpoints(k, p)
}

// SetClusterSize sets how many live instances of the gateway's cluster share its
// cluster-wide rate limits (from its gossip membership; at least 1).
func (g *Gateway) SetClusterSize(n int) {
	g.share.Store(int64(max(n, 1)))
	g.gov.Load().SetShare(n)
}

// Governance is the policies in force (nil before the first Apply).
func (g *Gateway) Governance() *governance.Policies { return g.gov.Load() }

// applyGovernance compiles the policies of cfg, carrying over the state of those in
// force; at the ingress breakers are kept per provider endpoint. A changed outlier rule
// starts its counts afresh.
func (g *Gateway) applyGovernance(cfg *xdsres.GatewayConfig) {
	p := governance.Compile(cfg.Governance, g.gov.Load(), g.govObs)
	p.BreakPerEndpoint()
	p.SetShare(int(g.share.Load()))
	g.gov.Store(p)
	o := cfg.Governance.OutlierDetection.WithDefaults()
	ec := governance.EjectConfig{ConsecutiveErrors: o.ConsecutiveErrors, BaseEjection: o.BaseEjection.D(), MaxEjection: o.MaxEjection.D(), MaxEjectionPercent: o.MaxEjectionPercent}
	if old := g.ejectCfg.Load(); old == nil || *old != ec {
		g.ejectCfg.Store(&ec)
		g.ejectMu.Lock()
		g.ejectors.Store(&map[string]*governance.Ejector{})
		g.ejectMu.Unlock()
	}
}

// ejector returns the outlier state of service's providers.
func (g *Gateway) ejector(service string) *governance.Ejector {
	if e, ok := (*g.ejectors.Load())[service]; ok {
		return e
	}
	g.ejectMu.Lock()
	defer g.ejectMu.Unlock()
	old := *g.ejectors.Load()
	if e, ok := old[service]; ok {
		return e
	}
	e := governance.NewEjector(*g.ejectCfg.Load())
	next := make(map[string]*governance.Ejector, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[strings.Clone(service)] = e
	g.ejectors.Store(&next)
	return e
}

// EndpointDone counts a call's outcome on the provider endpoint that served it: outlier
// detection (consecutive failures eject it for a growing time, never more than the
// rule's share of the service's endpoints) and the per-endpoint breakers. An ejected
// endpoint or one whose breaker is open is kept out of picks meanwhile.
func (g *Gateway) EndpointDone(ep *balance.Endpoint, service string, failed bool, elapsed time.Duration) {
	now := time.Now().UnixNano()
	st := g.ejector(service).Endpoint(ep.Addr)
	if st.Record(now, failed) {
		d := time.Duration(st.Until() - now)
		ep.MarkDown(d)
		g.log.Warn("provider ejected after consecutive failures", "service", service, "instance", ep.Addr, "for", d.String())
	}
	if d := g.gov.Load().EndpointDone(service, ep.Addr, now, failed, elapsed); d > 0 {
		ep.MarkDown(d)
	}
}
