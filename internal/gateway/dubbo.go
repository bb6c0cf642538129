package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/dubbowire"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/proxy"
)

// The classic Dubbo protocol (dubbo://). A consumer's connection carries many requests at
// once, each with its ID. The egress reads each request frame, decodes only what routing
// needs (service path, version, group, method), asks Decide, and carries the frame as one
// stream over the tunnel (POST /<service>/<method>, content type proxy.ContentTypeDubbo);
// the response frame comes back as the stream's body and is written to the consumer as it
// is. The ingress hands the frame to a pooled, multiplexed connection to a provider
// (Decision.Dubbo), which gives it an ID of that connection's own. Heartbeats are
// answered where they arrive; a oneway request gets no answer. A refusal or a failure is a
// Dubbo response with a status and a message that a Java or Go consumer shows.

// DubboUpstream carries a Dubbo request frame to the provider at addr and returns its
// response frame, with the request's ID (nil for a oneway request). It may modify frame.
// An error that is a *tunnel.DialError means the request was not sent.
type DubboUpstream interface {
	RoundTrip(ctx context.Context, addr string, frame []byte) ([]byte, error)
}

// dubboIdle closes a consumer connection that sent nothing, not even a heartbeat (Dubbo
// consumers send one a minute), for this long: Dubbo's own servers close at three missed
// heartbeats.
const dubboIdle = 3 * time.Minute

// DubboStatus is the Dubbo response status for a refusal or failure code.
func DubboStatus(code codes.Code) dubbowire.Status {
	switch code {
	case codes.OK:
		return dubbowire.StatusOK
	case codes.Unimplemented, codes.NotFound:
		return dubbowire.StatusServiceNotFound
	case codes.DeadlineExceeded:
		return dubbowire.StatusServerTimeout
	case codes.InvalidArgument:
		return dubbowire.StatusBadRequest
	case codes.ResourceExhausted:
		return dubbowire.StatusServerThreadpoolExhausted
	}
	return dubbowire.StatusServiceError
}

// dubboCode is the code a Dubbo response status counts as in metrics.
func dubboCode(s dubbowire.Status) codes.Code {
	switch s {
	case dubbowire.StatusOK:
		return codes.OK
	case dubbowire.StatusServiceNotFound:
		return codes.Unimplemented
	case dubbowire.StatusClientTimeout, dubbowire.StatusServerTimeout:
		return codes.DeadlineExceeded
	case dubbowire.StatusBadRequest:
		return codes.InvalidArgument
	case dubbowire.StatusServerThreadpoolExhausted:
		return codes.ResourceExhausted
	case dubbowire.StatusChannelInactive:
		return codes.Unavailable
	}
	return codes.Internal
}

// dubboConns tracks the consumer connections a core serves, for draining.
type dubboConns struct {
	mu      sync.Mutex
	conns   map[*dubboConn]struct{}
	closing bool
}

// dubboConn is one consumer connection.
type dubboConn struct {
	core   *Core
	nc     net.Conn
	caller spiffeid.ID // the peer gateway, on a Dubbo tunnel connection
	wmu    sync.Mutex
	sem    chan struct{} // bounds the calls in flight
	wg     sync.WaitGroup
	stop   chan struct{} // closed to stop reading (drain)
	once   sync.Once
}

// ServeDubbo serves a consumer connection of the classic Dubbo protocol whose first bytes
// are in br, until the consumer closes it, it idles, it sends what is not Dubbo, or the
// core drains (ShutdownDubbo). It returns once the calls it started have been answered,
// and closes the connection.
func (c *Core) ServeDubbo(nc net.Conn, br *bufio.Reader) { c.serveDubboConn(nc, br, spiffeid.ID{}) }

// ServeDubboTunnel serves a Dubbo tunnel connection (tunnel.ALPNDubbo) from the peer
// gateway whose SPIFFE ID is caller, as ServeDubbo serves a consumer's.
func (c *Core) ServeDubboTunnel(nc net.Conn, caller spiffeid.ID) {
	c.serveDubboConn(nc, bufio.NewReaderSize(nc, 32<<10), caller)
}

func (c *Core) serveDubboConn(nc net.Conn, br *bufio.Reader, caller spiffeid.ID) {
	l := c.limits()
	dc := &dubboConn{core: c, nc: nc, caller: caller, sem: make(chan struct{}, max(1, int(l.MaxConcurrentStreams))), stop: make(chan struct{})}
	c.dubbo.mu.Lock()
	if c.dubbo.closing {
		c.dubbo.mu.Unlock()
		nc.Close()
		return
	}
	if c.dubbo.conns == nil {
		c.dubbo.conns = map[*dubboConn]struct{}{}
	}
	c.dubbo.conns[dc] = struct{}{}
	c.dubbo.mu.Unlock()
	defer func() {
		c.dubbo.mu.Lock()
		delete(c.dubbo.conns, dc)
		c.dubbo.mu.Unlock()
	}()
	defer nc.Close()
	defer dc.wg.Wait() // every call answered before the connection closes
	dc.readLoop(br)
}

// ShutdownDubbo drains the Dubbo consumer connections: they stop reading, their calls in
// flight are answered until ctx ends, then they close.
func (c *Core) ShutdownDubbo(ctx context.Context) {
	c.dubbo.mu.Lock()
	c.dubbo.closing = true
	conns := make([]*dubboConn, 0, len(c.dubbo.conns))
	for dc := range c.dubbo.conns {
		conns = append(conns, dc)
	}
	c.dubbo.mu.Unlock()
	for _, dc := range conns {
		dc.once.Do(func() { close(dc.stop) })
		_ = dc.nc.SetReadDeadline(time.Now()) // wakes the read loop
	}
	for _, dc := range conns {
		done := make(chan struct{})
		go func() { dc.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			dc.nc.Close()
			<-done
		}
	}
}

func (dc *dubboConn) stopping() bool {
	select {
	case <-dc.stop:
		return true
	default:
		return false
	}
}

func (dc *dubboConn) readLoop(br *bufio.Reader) {
	c := dc.core
	var parser dubbowire.RequestParser
	for {
		if dc.stopping() {
			return
		}
		l := c.limits()
		_ = dc.nc.SetReadDeadline(time.Now().Add(dubboIdle))
		frame, h, err := dubbowire.ReadFrame(br, int(l.MaxBodyBytes), nil)
		if err != nil {
			var big *dubbowire.BodyTooLargeError
			if errors.As(err, &big) && big.Header.IsRequest() && big.Header.TwoWay() {
				dc.write(dubbowire.AppendErrorResponse(nil, big.Header.ID(), dubbowire.StatusBadRequest,
					fmt.Sprintf("strait: request body of %d bytes is over the limit of %d", big.Header.BodyLen(), big.Max)))
			}
			if !errors.Is(err, io.EOF) && !dc.stopping() {
				c.log.Debug("dubbo connection ended", "err", err)
			}
			return
		}
		if !h.IsRequest() {
			continue // a response to nothing we sent (a heartbeat's)
		}
		if h.Event() {
			if h.TwoWay() {
				dc.write(dubbowire.AppendHeartbeatResponse(nil, h.ID()))
			}
			continue
		}
		var req dubbowire.Request
		if err := parser.Parse(frame, &req); err != nil {
			if h.TwoWay() {
				dc.write(dubbowire.AppendErrorResponse(nil, h.ID(), dubbowire.StatusBadRequest, "strait: "+err.Error()))
			}
			continue
		}
		call := Call{
			Call: proxy.Call{Protocol: mesh.ProtocolDubbo, Style: proxy.StyleDubbo, Method: req.Method,
				Service: mesh.ServiceKey{Name: req.Path, Version: dubboVersion(req.Version), Group: req.Group()}},
			RPC: true, HTTPMethod: http.MethodPost, Path: "/" + req.Path + "/" + req.Method, Caller: dc.caller,
		}
		timeout := l.CallTimeout.D()
		if ms, err := strconv.Atoi(req.Attachments["timeout"]); err == nil && ms > 0 && (timeout <= 0 || time.Duration(ms)*time.Millisecond < timeout) {
			timeout = time.Duration(ms) * time.Millisecond
		}
		select {
		case dc.sem <- struct{}{}:
		case <-dc.stop:
			if h.TwoWay() {
				dc.write(dubbowire.AppendErrorResponse(nil, h.ID(), dubbowire.StatusChannelInactive, "strait: the gateway is shutting down"))
			}
			return
		}
		dc.wg.Add(1)
		go func() {
			defer dc.wg.Done()
			defer func() { <-dc.sem }()
			resp := c.dubboCall(call, frame, h, timeout)
			if resp != nil && h.TwoWay() {
				dc.write(resp)
			}
		}()
	}
}

// dubboVersion is the service version a request names: Java consumers write "0.0.0" for
// none.
func dubboVersion(v string) string {
	if v == "0.0.0" {
		return ""
	}
	return v
}

// write writes one frame; a failed write closes the connection (its reader ends).
func (dc *dubboConn) write(frame []byte) {
	dc.wmu.Lock()
	defer dc.wmu.Unlock()
	_ = dc.nc.SetWriteDeadline(time.Now().Add(dc.core.limits().StallTimeout.D()))
	if _, err := dc.nc.Write(frame); err != nil {
		dc.nc.Close()
	}
}

// dubboCall decides and forwards one consumer request; it returns the response frame to
// write (nil for none).
func (c *Core) dubboCall(call Call, frame []byte, h dubbowire.Header, timeout time.Duration) []byte {
	start := time.Now()
	c.obs.CallStarted()
	defer c.obs.CallEnded()
	d := c.kind.Decide(call)
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	resp, code := c.forwardDubbo(ctx, &d, frame, h, timeout)
	c.obs.Observe(string(mesh.ProtocolDubbo), d.Peer, code.String(), time.Since(start))
	return resp
}

// forwardDubbo serves a decision for a Dubbo request frame: a refusal or a failure as a
// Dubbo error response, else the upstream's response frame (nil for a oneway request).
func (c *Core) forwardDubbo(ctx context.Context, d *Decision, frame []byte, h dubbowire.Header, timeout time.Duration) ([]byte, codes.Code) {
	call := d.Call
	fail := func(code codes.Code, msg string) ([]byte, codes.Code) {
		if !h.TwoWay() {
			return nil, code
		}
		return dubbowire.AppendErrorResponse(nil, h.ID(), DubboStatus(code), msg), code
	}
	if d.Code != codes.OK {
		if d.Warn {
			c.log.Warn("call refused", "peer", d.Peer, "service", call.Service.Name, "method", call.Method, "reason", d.Message)
		}
		return fail(d.Code, d.Message)
	}
	up := d.Dubbo
	if up == nil {
		if d.Transport == nil {
			return fail(codes.Internal, "strait: no way to the next hop for a dubbo call")
		}
		up = &tunnelDubbo{rt: d.Transport, scheme: d.Scheme, call: call, timeout: timeout, meta: d.Metadata}
	}
	var tried *balance.Endpoint
	for attempt := 0; ; attempt++ {
		ep := d.Set.Pick(tried)
		resp, err := up.RoundTrip(ctx, ep.Addr, frame)
		ep.Done()
		if err == nil {
			if resp == nil {
				return nil, codes.OK
			}
			rh, perr := dubbowire.ParseHeader(resp)
			if perr != nil {
				return fail(codes.Internal, fmt.Sprintf("strait: %s answered what is not a Dubbo response: %v", nextHop(d, ep.Addr), perr))
			}
			return resp, dubboCode(rh.Status())
		}
		if proxy.NotSent(err) {
			ep.MarkDown(time.Second)
			if d.Retry && attempt == 0 && d.Set.Len() > 1 {
				c.log.Warn("next hop unreachable, trying another", "peer", d.Peer, "service", call.Service.Name, "instance", ep.Addr, "err", err)
				tried = ep
				continue
			}
		}
		c.log.Warn("call failed", "peer", d.Peer, "service", call.Service.Name, "method", call.Method, "instance", ep.Addr, "err", err)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fail(codes.DeadlineExceeded, fmt.Sprintf("strait: %s did not answer %s/%s within %s", nextHop(d, ep.Addr), call.Service.String(), call.Method, timeout))
		}
		return fail(codes.Unavailable, fmt.Sprintf("strait: %s: %v", nextHop(d, ep.Addr), err))
	}
}

// serveDubbo is the general path of a Dubbo call that came over a tunnel: the request
// frame is the body, the response frame the answer's body (HTTP 200), none for a oneway
// request (HTTP 204).
func (c *Core) serveDubbo(w http.ResponseWriter, r *http.Request, d *Decision) string {
	l := c.limits()
	if d.Limits != nil {
		l = d.Limits
	}
	frame, err := io.ReadAll(io.LimitReader(r.Body, dubbowire.HeaderLen+l.MaxBodyBytes+1))
	if err != nil {
		return proxy.Fail(w, d.Call.Call, codes.InvalidArgument, "strait: reading the dubbo request: "+err.Error())
	}
	h, err := dubbowire.ParseHeader(frame)
	if err != nil || !h.IsRequest() || h.Event() || len(frame) != dubbowire.HeaderLen+h.BodyLen() {
		return proxy.Fail(w, d.Call.Call, codes.InvalidArgument, fmt.Sprintf("strait: the body is not one dubbo request frame (%d bytes)", len(frame)))
	}
	ctx, cancel := proxy.CallContext(r, d.Call.Call, l.CallTimeout.D())
	defer cancel()
	timeout := l.CallTimeout.D()
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl).Round(time.Millisecond)
	}
	resp, code := c.forwardDubbo(ctx, d, frame, h, timeout)
	if resp == nil {
		w.WriteHeader(http.StatusNoContent)
		return code.String()
	}
	w.Header().Set("Content-Type", proxy.ContentTypeDubbo)
	w.Header().Set("Content-Length", strconv.Itoa(len(resp)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(resp)
	return code.String()
}

// tunnelDubbo carries a Dubbo request over a tunnel to a peer's ingress.
type tunnelDubbo struct {
	rt      http.RoundTripper
	scheme  string
	call    Call
	timeout time.Duration
	meta    bool
}

func (t *tunnelDubbo) RoundTrip(ctx context.Context, addr string, frame []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.scheme+"://"+addr+t.call.Path, bytes.NewReader(frame))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", proxy.ContentTypeDubbo)
	if t.call.Service.Version != "" {
		req.Header.Set(proxy.HeaderTriVersion, t.call.Service.Version)
	}
	if t.call.Service.Group != "" {
		req.Header.Set(proxy.HeaderTriGroup, t.call.Service.Group)
	}
	if t.timeout > 0 {
		req.Header.Set("Triple-Timeout-Ms", strconv.FormatInt(t.timeout.Milliseconds(), 10))
	}
	if t.meta {
		req.Header.Set(proxy.HeaderProtocol, string(mesh.ProtocolDubbo))
		req.Header.Set(proxy.HeaderService, t.call.Service.Name)
	}
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, dubbowire.HeaderLen+dubbowire.DefaultMaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return nil, nil
	case resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != proxy.ContentTypeDubbo:
		msg := string(bytes.TrimSpace(body))
		if len(msg) > 512 {
			msg = msg[:512]
		}
		return nil, fmt.Errorf("answered HTTP %d: %s", resp.StatusCode, msg)
	}
	return body, nil
}

// limits returns the limits in force.
func (c *Core) limits() *config.Limits {
	if c.limitsFn != nil {
		if l := c.limitsFn(); l != nil {
			return l
		}
	}
	return &defaultLimits
}

var defaultLimits = config.Limits{}.WithDefaults()

// CloseDubbo closes the Dubbo consumer connections at once; their calls in flight fail.
func (c *Core) CloseDubbo() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.ShutdownDubbo(ctx)
}
