// Package egress is the egress gateway: it accepts calls of local consumers (gRPC,
// Triple, plain HTTP, over HTTP/1.1 or h2c on one port), classifies them from their
// headers, finds the peer domain in the route table, and forwards each as one stream over
// the mutual-TLS tunnel to one of that peer's ingress instances.
package egress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// Config configures a Gateway. Routes and peers arrive later, through Apply.
type Config struct {
	Domain   string
	Instance string
	// SVID is the egress' identity, presented to peer ingress instances.
	SVID x509svid.Source
	// Observer records every call (metrics); nil records nothing.
	Observer proxy.Observer
	// Limits of the consumer listener (header size, timeouts, streams) are fixed at start;
	// body size and call timeout follow each Apply.
	Limits config.Limits
	// DataPath is "relay" (the default: gRPC-style calls over h2c take the relay) or
	// "http" (every call takes the general net/http path).
	DataPath string
	Logger   *slog.Logger
	// Governance is told of refusals and breaker changes (metrics, logs); nil: nobody.
	Governance governance.Observer
}

type peer struct {
	domain string
	key    string // what the tunnel client was built from
	tc     tunnelClient
	rt     http.RoundTripper
	// pool carries the relay's calls (nil over QUIC: those take the general path).
	pool *relay.Pool
	// dubbo carries classic Dubbo calls on Dubbo tunnel connections (tunnel.ALPNDubbo;
	// nil over QUIC: those ride HTTP/3 streams).
	dubbo *dubbopool.Pool
	addrs string
	set   *balance.Set
}

// Gateway is one egress instance.
type Gateway struct {
	// budget bounds what the relay holds for receivers that do not read (the gateway
	// file's limits, fixed at start).
	budget *relay.Budget
	domain string
	svid   x509svid.Source
	routes *routing.Store
	limits atomic.Pointer[config.Limits]
	log    *slog.Logger
	peers  atomic.Pointer[map[string]*peer]
	ready  atomic.Bool
	srv    *http.Server
	// relay serves h2c connections (the fast path); nil serves every connection with srv.
	relay *relay.Server
	// sniffer tells h2c connections (the relay's, or srv's without it) from HTTP/1.1 ones
	// (srv's) and Dubbo ones (the core's).
	sniffer *gateway.Sniffer
	mu      sync.Mutex
	retired []*relay.Pool // replaced pools, closed as their calls end
	obs     proxy.Observer
	// core classifies calls once and serves Decide's decisions on both data paths.
	core *gateway.Core
	// gov are the governance policies in force (compiled at each Apply).
	gov    atomic.Pointer[governance.Policies]
	govObs governance.Observer
	// share is how many live instances of the cluster share cluster-wide rate limits.
	share atomic.Int64
}

// New returns an egress gateway. Serve starts it; it answers UNAVAILABLE until the first
// Apply.
func New(c Config) (*Gateway, error) {
	if c.SVID == nil {
		return nil, errors.New("egress: no SVID")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	l := c.Limits.WithDefaults()
	if c.Observer == nil {
		c.Observer = proxy.NopObserver{}
	}
	g := &Gateway{
		obs:    c.Observer,
		domain: c.Domain,
		svid:   c.SVID,
		routes: routing.NewStore(routing.NewTable(nil, nil)),
		log:    c.Logger.With("domain", c.Domain, "instance", c.Instance),
	}
	g.govObs = c.Governance
	g.share.Store(1)
	g.core = gateway.New(gateway.Options{Kind: g, Observer: g.obs, Logger: g.log, Limits: g.limits.Load})
	g.budget = relay.NewBudget(l.MaxQueuedBytes)
	g.limits.Store(&l)
	empty := map[string]*peer{}
	g.peers.Store(&empty)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	g.srv = &http.Server{
		Handler:           g,
		Protocols:         &protos,
		ReadHeaderTimeout: l.ReadHeaderTimeout.D(),
		IdleTimeout:       l.IdleTimeout.D(),
		MaxHeaderBytes:    l.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: int(l.MaxConcurrentStreams),
			MaxReadFrameSize:     16 << 10, // the protocol's initial value, as the relay (RFC 9113 §4.2)
		},
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	if c.DataPath != "http" {
		g.relay = relay.NewServer(relay.Options{
			Router:               g.core,
			Fallback:             g.core,
			Observer:             g.obs,
			MaxConcurrentStreams: l.MaxConcurrentStreams,
			MaxHeaderBytes:       l.MaxHeaderBytes,
			ReadTimeout:          l.ReadHeaderTimeout.D(),
			IdleTimeout:          l.IdleTimeout.D(),
			Abuse:                relay.AbuseFunc(g.obs),
			Budget:               g.budget,
			StallTimeout:         l.StallTimeout.D(),
			Logger:               g.log,
		})
	}
	g.sniffer = gateway.NewSniffer(g.relay, g.srv, g.core.ServeDubbo, l.ReadHeaderTimeout.D(), g.log)
	return g, nil
}

// Apply installs a configuration atomically: routes, peers, limits. Calls in flight keep
// what they started with; tunnel connections to peers whose identity settings did not
// change are kept.
func (g *Gateway) Apply(cfg *xdsres.GatewayConfig) error {
	if cfg.Role != xdsres.RoleEgress || cfg.Table == nil {
		return fmt.Errorf("egress: not an egress configuration (role %q)", cfg.Role)
	}
	old := *g.peers.Load()
	next := make(map[string]*peer, len(cfg.Peers))
	l := cfg.Limits.WithDefaults()
	for d, p := range cfg.Peers {
		if len(p.Bundle) == 0 {
			continue // its trust bundle has not arrived: not reachable yet
		}
		sum := sha256.Sum256(p.Bundle)
		key := p.TrustDomain + "|" + p.Transport + "|" + hex.EncodeToString(sum[:]) + "|" + l.DialTimeout.D().String()
		addrs := strings.Join(p.Ingress, ",")
		np := &peer{domain: d, key: key, addrs: addrs}
		if o := old[d]; o != nil && o.key == key {
			np.tc, np.rt, np.pool, np.dubbo = o.tc, o.rt, o.pool, o.dubbo
		} else {
			tc, pool, dubbo, err := g.tunnelClient(p, l)
			if err != nil {
				return err
			}
			np.tc, np.rt, np.pool, np.dubbo = tc, tc, pool, dubbo
		}
		if o := old[d]; o != nil && o.addrs == addrs {
			np.set = o.set
		} else {
			np.set = balance.NewSet(p.Ingress)
		}
		next[d] = np
	}
	g.limits.Store(&l)
	g.applyGovernance(cfg)
	g.routes.Set(cfg.Table)
	g.peers.Store(&next)
	g.ready.Store(true)
	for d, o := range old {
		if n := next[d]; n == nil || n.tc != o.tc {
			o.tc.Close() // idle connections now; busy ones when their calls end
			if o.dubbo != nil {
				o.dubbo.Drain() // its connections close as their calls end
			}
			if o.pool != nil {
				o.pool.Close()
				g.mu.Lock()
				g.retired = append(g.retired, o.pool)
				g.mu.Unlock()
			}
		}
	}
	return nil
}

// tunnelClient carries calls to one peer: HTTP/2 over TLS or HTTP/3 over QUIC.
type tunnelClient interface {
	http.RoundTripper
	Close()
}

// tunnelClient returns the general path's client to peer p and, over HTTP/2, the pool of
// Dubbo tunnel connections and, with the relay on, the relay's pool of tunnel connections.
func (g *Gateway) tunnelClient(p xdsres.Peer, l config.Limits) (tunnelClient, *relay.Pool, *dubbopool.Pool, error) {
	td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("egress: peer %s: %w", p.Domain, err)
	}
	b, err := x509bundle.Parse(td, p.Bundle)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("egress: peer %s bundle: %w", p.Domain, err)
	}
	o := tunnel.ClientOptions{DialTimeout: l.DialTimeout.D(), MaxHeaderBytes: uint32(l.MaxHeaderBytes)}
	if p.Transport == "quic" {
		return tunnel.NewQUICClient(identity.ClientConfig(g.svid, b, td, tunnel.ALPNQUIC), o), nil, nil, nil
	}
	conf := identity.ClientConfig(g.svid, b, td, tunnel.ALPN)
	dialTimeout := l.DialTimeout.D()
	dubbo := dubbopool.New(dubbopool.Options{
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return tunnel.DialTLSProto(ctx, addr, conf, dialTimeout, tunnel.ALPNDubbo)
		},
		DialTimeout: dialTimeout,
		// Shorter than the ingress' idle close (3 min), so that the egress closes first
		// and never sends on a connection the ingress is closing.
		Idle:   time.Minute,
		Logger: g.log.With("peer", p.Domain),
	})
	var pool *relay.Pool
	if g.relay != nil {
		timeout := l.DialTimeout.D()
		pool = relay.NewPool(relay.PoolOptions{
			Dial: func(ctx context.Context, addr string) (net.Conn, error) {
				return tunnel.DialTLS(ctx, addr, conf, timeout)
			},
			DialTimeout:    timeout,
			MaxHeaderBytes: l.MaxHeaderBytes,
			Abuse:          relay.AbuseFunc(g.obs),
			Budget:         g.budget,
			Logger:         g.log.With("peer", p.Domain),
		})
	}
	return tunnel.NewClient(conf, o), pool, dubbo, nil
}

// Ready reports whether the gateway has a configuration.
func (g *Gateway) Ready() bool { return g.ready.Load() }

// Routes is the route table in force.
func (g *Gateway) Routes() *routing.Table { return g.routes.Table() }

// Serve accepts consumer connections on ln until Shutdown: h2c connections go to the
// relay (the general path with the relay off), HTTP/1.1 ones to the general path, Dubbo
// ones to the core's Dubbo server.
func (g *Gateway) Serve(ln net.Listener) error { return g.sniffer.Serve(ln) }

// Shutdown stops accepting and sends GOAWAY, lets calls in flight finish until ctx ends,
// then closes every connection: an idle client connection does not hold it up.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.sniffer.Stop()
	var rerr chan error
	if g.relay != nil {
		rerr = make(chan error, 1)
		go func() { rerr <- g.relay.Shutdown(ctx) }()
	}
	dubbo := make(chan struct{})
	go func() { g.core.ShutdownDubbo(ctx); close(dubbo) }()
	err := g.core.ShutdownHTTP(ctx, g.srv)
	if rerr != nil {
		if e := <-rerr; err == nil {
			err = e
		}
	}
	<-dubbo
	g.sniffer.Wait()
	g.closePeers(false)
	return err
}

// closePeers closes the tunnels: at once if kill, else as their calls end.
func (g *Gateway) closePeers(kill bool) {
	g.mu.Lock()
	pools := g.retired
	g.retired = nil
	g.mu.Unlock()
	for _, p := range *g.peers.Load() {
		p.tc.Close()
		if p.dubbo != nil {
			p.dubbo.Close()
		}
		if p.pool != nil {
			pools = append(pools, p.pool)
		}
	}
	for _, p := range pools {
		if kill {
			p.Kill()
		} else {
			p.Close()
		}
		p.Wait()
	}
}

// Close stops at once: the listener and every connection close, calls in flight fail.
func (g *Gateway) Close() {
	g.sniffer.Stop()
	if g.relay != nil {
		g.relay.Close()
	}
	g.core.CloseDubbo()
	g.srv.Close()
	g.sniffer.Wait()
	g.closePeers(true)
}

// AnnounceDrain tells the consumers that can hear it that this instance drains (Dubbo's
// readonly event); it keeps serving.
func (g *Gateway) AnnounceDrain() { g.core.AnnounceDubboDrain() }

// ServeHTTP serves one consumer call on the general path.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.core.ServeHTTP(w, r) }

// Decide routes one consumer call: by service for gRPC and Triple, by host and path for
// plain HTTP; to its peer domain's ingress instances. Both data paths ask it (see
// internal/gateway).
func (g *Gateway) Decide(c gateway.Call) gateway.Decision {
	if !g.ready.Load() {
		return gateway.Refuse(c, "", codes.Unavailable, "strait: egress has no configuration yet")
	}
	t := g.routes.Table()
	var (
		route routing.Route
		found bool
	)
	switch {
	case c.Protocol == mesh.ProtocolDubbo:
		route, found = t.LookupDubbo(c.Service)
	case c.RPC:
		route, found = t.LookupRPC(c.Service)
	}
	if !found && c.Style != proxy.StyleGRPC && c.Style != proxy.StyleDubbo {
		// Not a gRPC or Triple call we know: perhaps plain HTTP that happens to POST JSON.
		if route, found = t.LookupHTTP(c.Host, c.Path); found {
			c.Call = proxy.Call{Protocol: mesh.ProtocolHTTP, Service: route.Service, Style: proxy.StyleHTTP}
		}
	}
	if !found {
		if c.Style == proxy.StyleHTTP {
			return gateway.Refuse(c, "", codes.Unimplemented, fmt.Sprintf("strait: no route for host %q path %q", c.Host, c.Path))
		}
		return gateway.Refuse(c, "", codes.Unimplemented, fmt.Sprintf("strait: unknown service %q", c.Service.String()))
	}
	p := (*g.peers.Load())[route.Peer]
	if p == nil || p.set.Len() == 0 {
		return gateway.Refuse(c, route.Peer, codes.Unavailable, fmt.Sprintf("strait: peer domain %q has no reachable ingress", route.Peer))
	}
	gov := g.gov.Load()
	d := gateway.Decision{
		Code: codes.OK, Call: c, Peer: p.domain,
		Set: p.set, Pool: p.pool, Transport: p.rt, Scheme: "https",
		Metadata: true, Retry: gov.Retries(), Budget: gov.Budget(p.domain), Limits: g.limits.Load(), Gov: gov,
		Deadline: route.Deadline,
	}
	if c.Protocol == mesh.ProtocolDubbo && p.dubbo != nil {
		d.Dubbo = p.dubbo
	}
	return d
}

var _ http.Handler = (*Gateway)(nil)

// RelayStats counts the consumer streams the relay forwarded and those it handed to the
// general path (zeros with the relay off).
func (g *Gateway) RelayStats() (relayed, fallback uint64) {
	if g.relay == nil {
		return 0, 0
	}
	return g.relay.Stats()
}

var _ gateway.Kind = (*Gateway)(nil)

// SetClusterSize sets how many live instances of the gateway's cluster share its
// cluster-wide rate limits (from its gossip membership; at least 1).
func (g *Gateway) SetClusterSize(n int) {
	g.share.Store(int64(max(n, 1)))
	g.gov.Load().SetShare(n)
}

// Governance is the policies in force (nil before the first Apply).
func (g *Gateway) Governance() *governance.Policies { return g.gov.Load() }

// applyGovernance compiles the policies of cfg, carrying over the state of those in force.
func (g *Gateway) applyGovernance(cfg *xdsres.GatewayConfig) {
	p := governance.Compile(cfg.Governance, g.gov.Load(), g.govObs)
	p.SetShare(int(g.share.Load()))
	g.gov.Store(p)
}
