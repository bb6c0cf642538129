// Package gateway is the core both gateway kinds share, after Consul's proxycfg (one
// state machine, a handler per gateway kind): a call is classified once into a Call, from
// the relay's HTTP/2 headers or from net/http's request alike; the gateway kind's Decide
// routes and authorizes it (and, later, applies policy) once per call; and the core
// serves the decision on the data path the call came by: the relay (Route) or the general
// net/http path (ServeHTTP). A new per-call concern is added to Decide and runs on both.
//
// The egress and ingress packages are the kinds: each holds its configuration and answers
// Decide; neither imports the other.
package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/governance"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/proxy"
	"github.com/strait-mesh/strait/internal/relay"
	"github.com/strait-mesh/strait/internal/routing"
	"github.com/strait-mesh/strait/internal/tunnel"
)

// Call is one call as a gateway sees it, whichever data path it came by.
type Call struct {
	// Protocol, Service, Method and the error style, as classified.
	proxy.Call
	// RPC is true when the request has the shape of a gRPC or Triple call (service and
	// method in the path).
	RPC bool
	// HTTPMethod, Host and Path are the request's (Host is :authority over HTTP/2).
	HTTPMethod, Host, Path string
	// Caller is the SPIFFE ID of the immediate caller over a tunnel (a peer's egress or
	// controlplane); zero when it presented none (a consumer at the egress).
	Caller spiffeid.ID
	// App is the calling application as the call declares it (Triple's
	// tri-consumer-appname, Dubbo's remote.application); empty when it declares none.
	App string
	// Relayed is true for a call that came by the relay.
	Relayed bool
}

// Decision is what a gateway kind decides for one call.
type Decision struct {
	// Code is codes.OK to forward the call; any other code refuses it with Message.
	Code    codes.Code
	Message string
	// Warn logs a refusal (at the general path, which answers it).
	Warn bool
	// Call is the call as decided (a plain HTTP route names the call's service).
	Call Call
	// Peer labels the call in metrics and logs: the peer domain at the egress, the
	// calling domain at the ingress.
	Peer string
	// Set is where the call goes: one endpoint is picked per attempt.
	Set *balance.Set
	// Pool is the relay's connections to Set's endpoints; nil keeps the call on the
	// general path (a QUIC peer, plain HTTP).
	Pool *relay.Pool
	// Transport and Scheme reach Set's endpoints on the general path.
	Transport http.RoundTripper
	Scheme    string
	// Metadata adds the tunnel metadata (strait-protocol, strait-service) to the
	// forwarded call.
	Metadata bool
	// Retry lets a call that never reached an endpoint try one other endpoint, within
	// Budget (nil: unbounded).
	Retry  bool
	Budget *governance.RetryBudget
	// Limits are the limits in force for the call.
	Limits *config.Limits
	// Local serves the call in the gateway itself (the ingress' Federation API) rather
	// than forwarding it; general path only.
	Local Local
	// Dubbo reaches Set's endpoints for a classic Dubbo call (the ingress' providers);
	// nil carries it over Transport (the egress' tunnel).
	Dubbo DubboUpstream
	// Deadline is the route's: a default for calls that carry none, a maximum for those
	// that do.
	Deadline routing.Deadline
	// Endpoint, if set, is told each call's outcome on the endpoint that served it.
	Endpoint governance.EndpointObserver
	// Gov are the gateway kind's governance policies: the core admits a call it forwards
	// against them once, on the data path that serves it (nil: none).
	Gov *governance.Policies
}

// mayRetry reports whether a call whose attempt (0 the first) never reached its endpoint
// may try another: once, if there is another, within the retry budget.
func (d *Decision) mayRetry(attempt int) bool {
	return d.Retry && attempt == 0 && d.Set.Len() > 1 && (d.Budget == nil || d.Budget.Withdraw(time.Now().UnixNano()))
}

// govCall is what governance policies match d's call on.
func (d *Decision) govCall() governance.Call {
	return governance.Call{Peer: d.Peer, Service: d.Call.Service.Name, Method: d.Call.Method, Caller: d.Call.App}
}

// Local serves a call that a gateway answers itself.
type Local interface {
	ServeCall(w http.ResponseWriter, r *http.Request, d *Decision) (outcome string)
}

// Kind is what one gateway kind adds to the core.
type Kind interface {
	// Decide routes and authorizes a call. It runs once per call, on either data path;
	// on the relay's it runs on a connection's read loop, so it must be quick and must
	// not block. A call the relay does not take is decided again by the general path,
	// which answers it.
	Decide(c Call) Decision
}

// Options configure a Core.
type Options struct {
	Kind Kind
	// Tunnel: calls arrive over a tunnel, so their protocol is the tunnel metadata's
	// (strait-protocol, strait-service) and their caller is the peer's certificate.
	Tunnel   bool
	Observer proxy.Observer
	Logger   *slog.Logger
	// Limits gives the limits in force before a call is decided (a Dubbo connection's
	// frame size and calls in flight); the defaults if nil.
	Limits func() *config.Limits
}

// Core serves a gateway kind's decisions on both data paths: it is the relay's Router
// and the general path's http.Handler.
type Core struct {
	kind   Kind
	tunnel bool
	obs    proxy.Observer
	log    *slog.Logger
	// inflight counts general-path calls being served, for draining.
	inflight atomic.Int64
	limitsFn func() *config.Limits
	dubbo    dubboConns
}

// New returns a core for o.Kind.
func New(o Options) *Core {
	if o.Observer == nil {
		o.Observer = proxy.NopObserver{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Core{kind: o.Kind, tunnel: o.Tunnel, obs: o.Observer, log: o.Logger, limitsFn: o.Limits}
}

// Inflight counts the general-path calls being served.
func (c *Core) Inflight() int64 { return c.inflight.Load() }

// ShutdownHTTP shuts srv down, the general path's server: it stops accepting, lets the
// calls in flight finish until ctx ends, and closes srv once no call has been in flight
// for 50 ms, so that an idle client connection (which http.Server.Shutdown would wait
// for) does not hold the drain up.
func (c *Core) ShutdownHTTP(ctx context.Context, srv *http.Server) error {
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var idleSince time.Time
	for {
		select {
		case err := <-done:
			if err != nil {
				srv.Close()
			}
			return err
		case <-t.C:
			if c.Inflight() > 0 {
				idleSince = time.Time{}
				continue
			}
			if idleSince.IsZero() {
				idleSince = time.Now()
			} else if time.Since(idleSince) >= 50*time.Millisecond {
				srv.Close()
				if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
					return err
				}
				return nil
			}
		}
	}
}

// classify describes a call from the parts of its request both data paths read.
func (c *Core) classify(method, path, host, contentType, triVersion, triGroup, tunnelProtocol, tunnelService, app string) Call {
	pc, rpc := proxy.ClassifyParts(method, path, contentType, triVersion, triGroup)
	call := Call{Call: pc, RPC: rpc, HTTPMethod: method, Host: host, Path: path, App: app}
	if !c.tunnel {
		return call
	}
	// Over a tunnel the peer's egress already classified the call: its metadata says
	// what it is.
	p := mesh.Protocol(tunnelProtocol)
	if p == mesh.ProtocolHTTP || !p.Valid() {
		call.Call = proxy.Call{Protocol: mesh.ProtocolHTTP, Style: proxy.StyleHTTP, Service: mesh.ServiceKey{Name: tunnelService}}
		return call
	}
	call.Protocol = p
	if call.Style == proxy.StyleHTTP {
		call.Style = proxy.StyleTripleUnary
	}
	return call
}

// Route is the relay's Router: a gRPC-style call that the kind allows and that has a
// relay pool goes to it; everything else (plain HTTP, Triple's unary mode, refusals,
// QUIC peers, federation) takes the general path, which decides it again and answers.
func (c *Core) Route(r *relay.Request) relay.Decision {
	call := c.classify(r.Method, r.Path, r.Authority, r.ContentType, r.TriVersion, r.TriGroup, r.Protocol, r.Service, r.App)
	if call.Style != proxy.StyleGRPC || call.Service.Name == "" {
		return relay.Decision{}
	}
	call.Relayed = true
	if id, ok := r.Info.(spiffeid.ID); ok {
		call.Caller = id
	}
	d := c.kind.Decide(call)
	if d.Code != codes.OK || d.Pool == nil || d.Local != nil || d.Set == nil || d.Set.Len() == 0 {
		return relay.Decision{}
	}
	rd := relay.Decision{Pool: d.Pool, Set: d.Set, Protocol: string(d.Call.Protocol), Peer: d.Peer, Retry: d.Retry, Budget: d.Budget,
		Endpoint: d.Endpoint, Service: d.Call.Service.Name}
	if d.Metadata {
		rd.Add[0] = hpack.HeaderField{Name: "strait-protocol", Value: string(d.Call.Protocol)}
		rd.Add[1] = hpack.HeaderField{Name: "strait-service", Value: d.Call.Service.Name}
		rd.NAdd = 2
	}
	if dl := d.Deadline; dl.Default > 0 || dl.Max > 0 {
		own, hasOwn := proxy.ParseGRPCTimeout(r.Timeout)
		if t, ok := proxy.RouteDeadline(own, hasOwn, dl.Default, dl.Max); ok && (!hasOwn || t != own) {
			rd.Add[rd.NAdd] = hpack.HeaderField{Name: "grpc-timeout", Value: proxy.EncodeGRPCTimeout(t)}
			rd.NAdd++
			rd.ReplaceTimeout = true
		}
	}
	if !d.Gov.Empty() {
		gc := d.govCall()
		if ref := d.Gov.Admit(&gc, &rd.Ticket); ref.Refused() {
			// The general path answers the refusal, or queues the call for a slot.
			return relay.Decision{}
		}
	}
	return rd
}

// ServeHTTP is the general path: it decides and serves one call.
func (c *Core) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.inflight.Add(1)
	defer c.inflight.Add(-1)
	start := time.Now()
	c.obs.CallStarted()
	defer c.obs.CallEnded()
	call := c.classify(r.Method, r.URL.Path, r.Host, r.Header.Get("Content-Type"), r.Header.Get(proxy.HeaderTriVersion), r.Header.Get(proxy.HeaderTriGroup),
		r.Header.Get(proxy.HeaderProtocol), r.Header.Get(proxy.HeaderService), r.Header.Get(proxy.HeaderTriApp))
	if c.tunnel {
		if id, err := identity.PeerID(tunnel.ConnectionState(r)); err == nil {
			call.Caller = id
		}
	}
	d := c.kind.Decide(call)
	outcome := c.serve(w, r, &d)
	c.obs.Observe(string(d.Call.Protocol), d.Peer, outcome, time.Since(start))
}

func (c *Core) serve(w http.ResponseWriter, r *http.Request, d *Decision) (outcome string) {
	call := d.Call
	if call.Style == proxy.StyleDubbo && d.Local == nil {
		return c.serveDubbo(w, r, d)
	}
	if d.Code != codes.OK {
		if d.Warn {
			c.log.Warn("call refused", "peer", d.Peer, "service", call.Service.Name, "method", call.Method, "reason", d.Message)
		}
		return proxy.Fail(w, call.Call, d.Code, d.Message)
	}
	if d.Local != nil {
		return d.Local.ServeCall(w, r, d)
	}
	if !d.Gov.Empty() {
		gc := d.govCall()
		var t governance.Ticket
		if ref := d.Gov.AdmitWait(r.Context(), &gc, &t); ref.Refused() {
			return refuse(w, call.Call, ref, &gc)
		}
		start := time.Now()
		defer func() { t.Done(failedOutcome(outcome), time.Since(start)) }()
	}
	if !proxy.LimitBody(w, r, call.Call, d.Limits.MaxBodyBytes) {
		return proxy.Outcome(call.Style, codes.ResourceExhausted)
	}
	ctx, cancel, timeout, timed := proxy.DeadlineContext(r, call.Call, d.Limits.CallTimeout.D(), d.Deadline.Default, d.Deadline.Max)
	defer cancel()
	var meta func(http.Header)
	routeDeadline := timed && (d.Deadline.Default > 0 || d.Deadline.Max > 0)
	if d.Metadata || routeDeadline {
		meta = func(h http.Header) {
			if d.Metadata {
				h.Set(proxy.HeaderProtocol, string(call.Protocol))
				h.Set(proxy.HeaderService, call.Service.Name)
			}
			if routeDeadline {
				// The remaining time under the route's deadline travels on.
				left := timeout
				if dl, ok := ctx.Deadline(); ok {
					left = time.Until(dl)
				}
				proxy.SetTimeoutHeader(h, call.Call, left)
			}
		}
	}
	if d.Budget != nil {
		d.Budget.Deposit(time.Now().UnixNano())
	}
	var tried *balance.Endpoint
	for attempt := 0; ; attempt++ {
		ep := d.Set.Pick(tried)
		began := time.Now()
		outcome, err := proxy.Forward(ctx, w, r, call.Call, proxy.Upstream{Transport: d.Transport, Scheme: d.Scheme, Addr: ep.Addr}, true, meta)
		ep.Done()
		if d.Endpoint != nil {
			d.Endpoint.EndpointDone(ep, call.Service.Name, err != nil || failedOutcome(outcome), time.Since(began))
		}
		if err == nil {
			return outcome
		}
		if proxy.NotSent(err) {
			// Unreachable: keep it out of picks for a second, try another at once.
			ep.MarkDown(time.Second)
			if d.mayRetry(attempt) {
				c.log.Warn("next hop unreachable, trying another", "peer", d.Peer, "service", call.Service.Name, "instance", ep.Addr, "err", err)
				tried = ep
				continue
			}
		}
		c.log.Warn("call failed", "peer", d.Peer, "service", call.Service.Name, "method", call.Method, "instance", ep.Addr, "err", err)
		return proxy.ForwardError(ctx, w, call.Call, nextHop(d, ep.Addr), err)
	}
}

// refuse answers a call a governance policy refused: RESOURCE_EXHAUSTED or UNAVAILABLE
// for gRPC and Triple; for plain HTTP 429 with Retry-After (a rate limit) or 503.
func refuse(w http.ResponseWriter, call proxy.Call, ref governance.Refusal, gc *governance.Call) string {
	msg := ref.Message(gc)
	if ref.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ref.RetryAfter.Seconds()))))
	}
	if call.Style != proxy.StyleHTTP {
		return proxy.Fail(w, call, ref.Code, msg)
	}
	status := http.StatusServiceUnavailable
	if ref.Kind == governance.KindRateLimit {
		status = http.StatusTooManyRequests
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
	return proxy.StatusClass(status)
}

// failedOutcome reports whether a call's outcome (a gRPC code name, or an HTTP status
// class) is a failure of the service a breaker counts: the server's own errors, not the
// caller's (invalid argument, not found, …) nor a refusal by a limit.
func failedOutcome(outcome string) bool {
	switch outcome {
	case "Unknown", "DeadlineExceeded", "Internal", "Unavailable", "DataLoss", "5xx":
		return true
	}
	return false
}

// nextHop names the next hop in an error message.
func nextHop(d *Decision, addr string) string {
	if d.Metadata {
		return "peer " + d.Peer
	}
	return "provider " + addr
}

// Refuse is a refusal.
func Refuse(c Call, peer string, code codes.Code, msg string) Decision {
	return Decision{Code: code, Message: msg, Call: c, Peer: peer}
}

// IsFederation reports whether a path is the Federation API's, which a peer's
// controlplane calls through the tunnel.
func IsFederation(path string) bool { return strings.HasPrefix(path, FederationPrefix) }

// FederationPrefix is the path prefix of the Federation API.
const FederationPrefix = "/strait.federation.v1.Federation/"
