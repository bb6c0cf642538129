// Package egress is the egress gateway: it accepts calls of local consumers (gRPC,
// Triple, plain HTTP, over HTTP/1.1 or h2c on one port), classifies them from their
// headers, finds the peer domain in the route table, and forwards each as one stream over
// the mutual-TLS tunnel to one of that peer's ingress instances.
package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/proxy"
	"github.com/strait-mesh/strait/internal/routing"
)

// Peer is a peer domain as the egress reaches it.
type Peer struct {
	Domain string
	// Tunnel carries calls to the peer's ingress listeners (see tunnel.Client).
	Tunnel http.RoundTripper
	// Ingress lists host:port of the peer's ingress tunnel listeners.
	Ingress []string
}

// Config configures a Gateway.
type Config struct {
	Domain   string
	Instance string
	Routes   routing.Source
	Peers    []Peer
	Limits   config.Limits
	Logger   *slog.Logger
}

type peer struct {
	domain string
	rt     http.RoundTripper
	set    *balance.Set
}

// Gateway is one egress instance.
type Gateway struct {
	domain string
	routes routing.Source
	limits config.Limits
	log    *slog.Logger
	peers  atomic.Pointer[map[string]*peer]
	srv    *http.Server
}

// New returns an egress gateway. Serve starts it.
func New(c Config) (*Gateway, error) {
	if c.Routes == nil {
		return nil, errors.New("egress: no route source")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		domain: c.Domain,
		routes: c.Routes,
		limits: c.Limits.WithDefaults(),
		log:    c.Logger.With("domain", c.Domain, "instance", c.Instance),
	}
	g.SetPeers(c.Peers)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	g.srv = &http.Server{
		Handler:           g,
		Protocols:         &protos,
		ReadHeaderTimeout: g.limits.ReadHeaderTimeout.D(),
		IdleTimeout:       g.limits.IdleTimeout.D(),
		MaxHeaderBytes:    g.limits.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: int(g.limits.MaxConcurrentStreams),
			MaxReadFrameSize:     1 << 20,
		},
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	return g, nil
}

// SetPeers replaces the peer domains. Calls in flight keep the peer they started with.
func (g *Gateway) SetPeers(ps []Peer) {
	m := make(map[string]*peer, len(ps))
	for _, p := range ps {
		m[p.Domain] = &peer{domain: p.Domain, rt: p.Tunnel, set: balance.NewSet(p.Ingress)}
	}
	g.peers.Store(&m)
}

// Serve accepts consumer connections on ln until Shutdown.
func (g *Gateway) Serve(ln net.Listener) error {
	err := g.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets calls in flight finish until ctx ends, then closes.
func (g *Gateway) Shutdown(ctx context.Context) error {
	err := g.srv.Shutdown(ctx)
	if err != nil {
		g.srv.Close()
	}
	return err
}

// ServeHTTP routes and forwards one consumer call.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call, rpc := proxy.Classify(r)
	t := g.routes.Table()
	var (
		route routing.Route
		found bool
	)
	if rpc {
		route, found = t.LookupRPC(call.Service)
	}
	if !found && call.Style != proxy.StyleGRPC {
		// Not a gRPC or Triple call we know: perhaps plain HTTP that happens to POST JSON.
		if route, found = t.LookupHTTP(r.Host, r.URL.Path); found {
			call = proxy.Call{Protocol: mesh.ProtocolHTTP, Service: route.Service, Style: proxy.StyleHTTP}
		}
	}
	if !found {
		if call.Style == proxy.StyleHTTP {
			proxy.WriteError(w, call.Style, codes.Unimplemented, fmt.Sprintf("strait: no route for host %q path %q", r.Host, r.URL.Path))
		} else {
			proxy.WriteError(w, call.Style, codes.Unimplemented, fmt.Sprintf("strait: unknown service %q", call.Service.String()))
		}
		return
	}
	if !proxy.LimitBody(w, r, call, g.limits.MaxBodyBytes) {
		return
	}
	p := (*g.peers.Load())[route.Peer]
	if p == nil || p.set.Len() == 0 {
		proxy.WriteError(w, call.Style, codes.Unavailable, fmt.Sprintf("strait: peer domain %q has no reachable ingress", route.Peer))
		return
	}
	ctx, cancel := proxy.CallContext(r, call, g.limits.CallTimeout.D())
	defer cancel()
	meta := func(h http.Header) {
		h.Set(proxy.HeaderProtocol, string(call.Protocol))
		h.Set(proxy.HeaderService, route.Service.Name)
	}
	var tried *balance.Endpoint
	for attempt := 0; ; attempt++ {
		ep := p.set.Pick(tried)
		err := proxy.Forward(ctx, w, r, call, proxy.Upstream{Transport: p.rt, Scheme: "https", Addr: ep.Addr}, true, meta)
		ep.Done()
		if err == nil {
			return
		}
		if proxy.NotSent(err) && attempt == 0 && p.set.Len() > 1 {
			g.log.Warn("ingress unreachable, trying another", "peer", p.domain, "service", call.Service.Name, "err", err)
			tried = ep
			continue
		}
		g.log.Warn("call failed", "peer", p.domain, "service", call.Service.Name, "method", call.Method, "err", err)
		proxy.ForwardError(ctx, w, call, "peer "+p.domain, err)
		return
	}
}

var _ http.Handler = (*Gateway)(nil)
