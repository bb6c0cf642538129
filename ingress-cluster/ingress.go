// Package ingress is the ingress gateway: it terminates tunnels from peer egress
// instances, knows the calling domain from the peer's SPIFFE ID, authorizes the call
// (source domain × service × method) against the domain's exports, and forwards it to a
// local provider found in the registry, in the provider's own protocol.
package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/proxy"
	"github.com/strait-mesh/strait/internal/routing"
	"github.com/strait-mesh/strait/internal/tunnel"
)

// Endpoints gives the live provider instances of a service. Implementations are safe for
// concurrent use (registrysync.Catalog is one).
type Endpoints interface {
	Endpoints(k mesh.ServiceKey, p mesh.Protocol) []mesh.Instance
}

// Config configures a Gateway.
type Config struct {
	Domain   string
	Instance string
	// TLS is the tunnel listener's configuration (identity.ServerConfig): it admits only
	// SVIDs of peer trust domains.
	TLS       *tls.Config
	Routes    routing.Source
	Endpoints Endpoints
	// PeerDomains maps each peer trust domain to the peer's domain name.
	PeerDomains map[spiffeid.TrustDomain]string
	Limits      config.Limits
	Logger      *slog.Logger
}

// Gateway is one ingress instance.
type Gateway struct {
	domain string
	routes routing.Source
	eps    Endpoints
	peers  map[spiffeid.TrustDomain]string
	limits config.Limits
	log    *slog.Logger
	srv    *tunnel.Server
	h2c    http.RoundTripper
	h1     http.RoundTripper
	rr     atomic.Uint64
}

// New returns an ingress gateway. Serve starts it.
func New(c Config) (*Gateway, error) {
	if c.TLS == nil || c.Routes == nil || c.Endpoints == nil {
		return nil, errors.New("ingress: TLS, Routes and Endpoints are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	l := c.Limits.WithDefaults()
	g := &Gateway{
		domain: c.Domain,
		routes: c.Routes,
		eps:    c.Endpoints,
		peers:  c.PeerDomains,
		limits: l,
		log:    c.Logger.With("domain", c.Domain, "instance", c.Instance),
		h2c:    proxy.NewH2CTransport(l.DialTimeout.D(), uint32(l.MaxHeaderBytes)),
		h1:     proxy.NewHTTP1Transport(l.DialTimeout.D(), int64(l.MaxHeaderBytes)),
	}
	g.srv = tunnel.NewServer(c.TLS, g, tunnel.ServerOptions{
		HandshakeTimeout:     l.ReadHeaderTimeout.D(),
		IdleTimeout:          l.IdleTimeout.D(),
		MaxHeaderBytes:       l.MaxHeaderBytes,
		MaxConcurrentStreams: l.MaxConcurrentStreams,
		Logger:               g.log,
	})
	return g, nil
}

// Serve accepts tunnel connections on ln until Shutdown or Close.
func (g *Gateway) Serve(ln net.Listener) error { return g.srv.Serve(ln) }

// Shutdown sends GOAWAY on every tunnel and waits for calls in flight until ctx ends.
func (g *Gateway) Shutdown(ctx context.Context) error {
	err := g.srv.Shutdown(ctx)
	g.closeIdle()
	return err
}

// TunnelsEstablished counts the tunnel connections peers have opened to this instance.
func (g *Gateway) TunnelsEstablished() uint64 { return g.srv.Established() }

// Close stops at once.
func (g *Gateway) Close() error {
	err := g.srv.Close()
	g.closeIdle()
	return err
}

func (g *Gateway) closeIdle() {
	type idler interface{ CloseIdleConnections() }
	for _, t := range []http.RoundTripper{g.h2c, g.h1} {
		if i, ok := t.(idler); ok {
			i.CloseIdleConnections()
		}
	}
}

// ServeHTTP authorizes and forwards one call that arrived over a tunnel.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call := classify(r)
	id, err := identity.PeerID(r.TLS)
	src, known := g.peers[id.TrustDomain()]
	if err != nil || !known {
		// The handshake admits only peer trust domains; this is a second line.
		proxy.WriteError(w, call.Style, codes.PermissionDenied, "strait: caller is not a peer domain")
		return
	}
	if call.Service.Name == "" {
		proxy.WriteError(w, call.Style, codes.InvalidArgument, "strait: call names no service")
		return
	}
	_, decision := g.routes.Table().Authorize(src, call.Protocol, call.Service, call.Method)
	switch decision {
	case routing.UnknownService:
		proxy.WriteError(w, call.Style, codes.Unimplemented, fmt.Sprintf("strait: unknown service %q in domain %s", call.Service.String(), g.domain))
		return
	case routing.Forbidden:
		g.log.Warn("call refused", "peer", src, "service", call.Service.Name, "method", call.Method)
		proxy.WriteError(w, call.Style, codes.PermissionDenied, fmt.Sprintf("strait: domain %s may not call %s/%s", src, call.Service.String(), call.Method))
		return
	}
	if !proxy.LimitBody(w, r, call, g.limits.MaxBodyBytes) {
		return
	}
	eps := g.eps.Endpoints(call.Service, call.Protocol)
	if len(eps) == 0 {
		proxy.WriteError(w, call.Style, codes.Unavailable, fmt.Sprintf("strait: no live provider of %s in domain %s", call.Service.String(), g.domain))
		return
	}
	rt := g.h2c
	if call.Protocol == mesh.ProtocolHTTP {
		rt = g.h1
	}
	ctx, cancel := proxy.CallContext(r, call, g.limits.CallTimeout.D())
	defer cancel()
	start := int(g.rr.Add(1))
	attempts := min(len(eps), 2)
	for a := 0; a < attempts; a++ {
		inst := eps[(start+a)%len(eps)]
		err := proxy.Forward(ctx, w, r, call, proxy.Upstream{Transport: rt, Scheme: "http", Addr: inst.Address}, true, nil)
		if err == nil {
			return
		}
		if proxy.NotSent(err) && a+1 < attempts {
			g.log.Warn("provider unreachable, trying another", "peer", src, "service", call.Service.Name, "instance", inst.Address, "err", err)
			continue
		}
		g.log.Warn("call failed", "peer", src, "service", call.Service.Name, "method", call.Method, "instance", inst.Address, "err", err)
		proxy.ForwardError(ctx, w, call, "provider "+inst.Address, err)
		return
	}
}

// classify reads the tunnel metadata the peer egress attached.
func classify(r *http.Request) proxy.Call {
	p := mesh.Protocol(r.Header.Get(proxy.HeaderProtocol))
	if p == mesh.ProtocolHTTP || !p.Valid() {
		return proxy.Call{Protocol: mesh.ProtocolHTTP, Style: proxy.StyleHTTP, Service: mesh.ServiceKey{Name: r.Header.Get(proxy.HeaderService)}}
	}
	c, _ := proxy.Classify(r)
	c.Protocol = p
	if c.Style == proxy.StyleHTTP {
		c.Style = proxy.StyleTripleUnary
	}
	return c
}

var _ http.Handler = (*Gateway)(nil)
