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
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/dubbopool"
	"github.com/strait-mesh/strait/internal/dubbowire"
	"github.com/strait-mesh/strait/internal/governance"
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

// DubboUpstream carries a Dubbo request frame to addr and returns its response frame, with
// the request's ID (nil for a oneway request), waiting until deadline (none if zero) or
// ctx ends. It takes req, except when the error is a *tunnel.DialError (the request was
// not sent and stays the caller's, to try elsewhere) or dubbopool.ErrClosed.
// dubbopool.Pool is one.
type DubboUpstream interface {
	Exchange(ctx context.Context, addr string, req *dubbowire.Buffer, deadline time.Time) (*dubbowire.Buffer, error)
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
	w      *dubbowire.Writer
	sem    chan struct{} // bounds the calls in flight
	wg     sync.WaitGroup
	stop   chan struct{} // closed to stop reading (drain)
	once   sync.Once
	// lastRead is when the last request arrived (Unix nanoseconds).
	lastRead atomic.Int64
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
	dc := &dubboConn{core: c, nc: nc, caller: caller, sem: make(chan struct{}, max(1, int(l.MaxConcurrentStreams))), stop: make(chan struct{}),
		w: dubbowire.NewWriter(nc, l.StallTimeout.D(), 0)}
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
	defer dc.w.Close() // what is queued is written before the connection closes
	defer dc.wg.Wait() // every call answered first
	dc.readLoop(br)
}

// dubboQuiet is how long a draining connection must send no request before it stops
// reading: a consumer that got the readonly event may still have requests on the way.
const dubboQuiet = 200 * time.Millisecond

// dubboDrainMax bounds how long a drain waits for its connections to fall quiet.
const dubboDrainMax = 5 * time.Second

// AnnounceDubboDrain sends the readonly event to every Dubbo connection, which keeps being
// served: Java consumers send their new calls to another provider (gateway instance).
func (c *Core) AnnounceDubboDrain() {
	c.dubbo.mu.Lock()
	conns := make([]*dubboConn, 0, len(c.dubbo.conns))
	for dc := range c.dubbo.conns {
		conns = append(conns, dc)
	}
	c.dubbo.mu.Unlock()
	for i, dc := range conns {
		b := dubbowire.NewBuffer()
		b.B = dubbowire.AppendReadonlyEvent(b.B, uint64(i+1))
		_ = dc.w.WriteNow(b)
	}
}

// ShutdownDubbo drains the Dubbo connections, as a Dubbo server shuts down: each is sent
// the readonly event (Java consumers then send new calls to another provider, here
// another gateway instance) and is still served until it has sent nothing for
// dubboQuiet; then it stops reading, its calls in flight are answered until ctx ends, and
// it closes.
func (c *Core) ShutdownDubbo(ctx context.Context) {
	c.dubbo.mu.Lock()
	c.dubbo.closing = true
	conns := make([]*dubboConn, 0, len(c.dubbo.conns))
	for dc := range c.dubbo.conns {
		conns = append(conns, dc)
	}
	c.dubbo.mu.Unlock()
	for i, dc := range conns {
		b := dubbowire.NewBuffer()
		b.B = dubbowire.AppendReadonlyEvent(b.B, uint64(i+1))
		_ = dc.w.WriteNow(b)
	}
	quiet := time.NewTicker(dubboQuiet / 4)
	limit := time.NewTimer(dubboDrainMax)
	for busy := len(conns) > 0; busy; {
		select {
		case <-ctx.Done():
			busy = false
		case <-limit.C:
			busy = false
		case now := <-quiet.C:
			busy = false
			for _, dc := range conns {
				if now.Sub(time.Unix(0, dc.lastRead.Load())) < dubboQuiet {
					busy = true
				}
			}
		}
	}
	quiet.Stop()
	limit.Stop()
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
	var (
		parser dubbowire.RequestParser
		req    dubbowire.Request
	)
	for {
		if dc.stopping() {
			return
		}
		l := c.limits()
		_ = dc.nc.SetReadDeadline(time.Now().Add(dubboIdle))
		b, h, err := dubbowire.ReadBuffer(br, int(l.MaxBodyBytes))
		if err != nil {
			var big *dubbowire.BodyTooLargeError
			if errors.As(err, &big) && big.Header.IsRequest() && big.Header.TwoWay() {
				dc.fail(big.Header.ID(), dubbowire.StatusBadRequest,
					fmt.Sprintf("strait: request body of %d bytes is over the limit of %d", big.Header.BodyLen(), big.Max))
			}
			if !errors.Is(err, io.EOF) && !dc.stopping() {
				c.log.Debug("dubbo connection ended", "err", err)
			}
			return
		}
		if !h.IsRequest() {
			b.Free()
			continue // a response to nothing we sent (a heartbeat's)
		}
		dc.lastRead.Store(time.Now().UnixNano())
		if h.Event() {
			b.Free()
			if h.TwoWay() {
				hb := dubbowire.NewBuffer()
				hb.B = dubbowire.AppendHeartbeatResponse(hb.B, h.ID())
				_ = dc.w.WriteNow(hb)
			}
			continue
		}
		if err := parser.Parse(b.B, &req); err != nil {
			b.Free()
			if h.TwoWay() {
				dc.fail(h.ID(), dubbowire.StatusBadRequest, "strait: "+err.Error())
			}
			continue
		}
		call := Call{
			Call: proxy.Call{Protocol: mesh.ProtocolDubbo, Style: proxy.StyleDubbo, Method: req.Method,
				Service: mesh.ServiceKey{Name: req.Path, Version: dubboVersion(req.Version), Group: req.Group()}},
			RPC: true, HTTPMethod: http.MethodPost, Caller: dc.caller, App: req.Attachments["remote.application"],
		}
		timeout := l.CallTimeout.D()
		if ms, err := strconv.Atoi(req.Attachments["timeout"]); err == nil && ms > 0 && (timeout <= 0 || time.Duration(ms)*time.Millisecond < timeout) {
			timeout = time.Duration(ms) * time.Millisecond
		}
		select {
		case dc.sem <- struct{}{}:
		case <-dc.stop:
			b.Free()
			if h.TwoWay() {
				dc.fail(h.ID(), dubbowire.StatusChannelInactive, "strait: the gateway is shutting down")
			}
			return
		}
		dc.wg.Add(1)
		go func() {
			defer dc.wg.Done()
			defer func() { <-dc.sem }()
			if resp := c.dubboCall(call, b, h, timeout); resp != nil {
				_ = dc.w.Write(resp)
			}
		}()
	}
}

// fail answers request id with an error status.
func (dc *dubboConn) fail(id uint64, st dubbowire.Status, msg string) {
	b := dubbowire.NewBuffer()
	b.B = dubbowire.AppendErrorResponse(b.B, id, st, msg)
	_ = dc.w.Write(b)
}

// dubboVersion is the service version a request names: Java consumers write "0.0.0" for
// none.
func dubboVersion(v string) string {
	if v == "0.0.0" {
		return ""
	}
	return v
}

// dubboCall decides and forwards one request (it takes req); it returns the response
// frame to write (nil for none).
func (c *Core) dubboCall(call Call, req *dubbowire.Buffer, h dubbowire.Header, timeout time.Duration) *dubbowire.Buffer {
	start := time.Now()
	c.obs.CallStarted()
	defer c.obs.CallEnded()
	d := c.kind.Decide(call)
	resp, code := c.forwardDubbo(context.Background(), &d, req, h, timeout)
	c.obs.Observe(string(mesh.ProtocolDubbo), d.Peer, code.String(), time.Since(start))
	return resp
}

// forwardDubbo serves a decision for a Dubbo request frame (it takes req): a refusal or a
// failure as a Dubbo error response, else the upstream's response frame (nil for a oneway
// request).
func (c *Core) forwardDubbo(ctx context.Context, d *Decision, req *dubbowire.Buffer, h dubbowire.Header, timeout time.Duration) (_ *dubbowire.Buffer, code codes.Code) {
	call := d.Call
	fail := func(code codes.Code, msg string) (*dubbowire.Buffer, codes.Code) {
		if !h.TwoWay() {
			return nil, code
		}
		b := dubbowire.NewBuffer()
		b.B = dubbowire.AppendErrorResponse(b.B, h.ID(), DubboStatus(code), msg)
		return b, code
	}
	if d.Code != codes.OK {
		req.Free()
		if d.Warn {
			c.log.Warn("call refused", "peer", d.Peer, "service", call.Service.Name, "method", call.Method, "reason", d.Message)
		}
		return fail(d.Code, d.Message)
	}
	if !d.Gov.Empty() {
		gc := d.govCall()
		var t governance.Ticket
		if ref := d.Gov.AdmitWait(ctx, &gc, &t); ref.Refused() {
			req.Free()
			return fail(ref.Code, ref.Message(&gc))
		}
		start := time.Now()
		defer func() { t.Done(governance.Failed(code), time.Since(start)) }()
	}
	if m := d.Deadline.Max; m > 0 && (timeout <= 0 || timeout > m) {
		// The route's maximum: the gateway gives up then (the request's own timeout
		// attachment travels unchanged, as the payload is never re-encoded).
		timeout = m
	}
	up := d.Dubbo
	if up == nil {
		if d.Transport == nil {
			req.Free()
			return fail(codes.Internal, "strait: no way to the next hop for a dubbo call")
		}
		up = &tunnelDubbo{rt: d.Transport, scheme: d.Scheme, call: call, timeout: timeout, meta: d.Metadata}
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if d.Budget != nil {
		d.Budget.Deposit(time.Now().UnixNano())
	}
	var tried *balance.Endpoint
	for attempt := 0; ; attempt++ {
		ep := d.Set.Pick(tried)
		began := time.Now()
		resp, err := up.Exchange(ctx, ep.Addr, req, deadline)
		ep.Done()
		if d.Endpoint != nil {
			failed := err != nil
			if resp != nil {
				if rh, perr := dubbowire.ParseHeader(resp.B); perr != nil || governance.Failed(dubboCode(rh.Status())) {
					failed = true
				}
			}
			d.Endpoint.EndpointDone(ep, call.Service.Name, failed, time.Since(began))
		}
		if err == nil {
			if resp == nil {
				return nil, codes.OK
			}
			rh, perr := dubbowire.ParseHeader(resp.B)
			if perr != nil {
				resp.Free()
				return fail(codes.Internal, fmt.Sprintf("strait: %s answered what is not a Dubbo response: %v", nextHop(d, ep.Addr), perr))
			}
			return resp, dubboCode(rh.Status())
		}
		notSent := proxy.NotSent(err)
		if notSent {
			ep.MarkDown(time.Second)
			if d.mayRetry(attempt) {
				c.log.Warn("next hop unreachable, trying another", "peer", d.Peer, "service", call.Service.Name, "instance", ep.Addr, "err", err)
				tried = ep
				continue
			}
		}
		if notSent || errors.Is(err, dubbopool.ErrClosed) {
			req.Free() // not taken
		}
		c.log.Warn("call failed", "peer", d.Peer, "service", call.Service.Name, "method", call.Method, "instance", ep.Addr, "err", err)
		if errors.Is(err, context.DeadlineExceeded) {
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
	req := dubbowire.NewBuffer()
	var err error
	req.B, err = readAllInto(req.B, io.LimitReader(r.Body, dubbowire.HeaderLen+l.MaxBodyBytes+1))
	if err != nil {
		req.Free()
		return proxy.Fail(w, d.Call.Call, codes.InvalidArgument, "strait: reading the dubbo request: "+err.Error())
	}
	h, err := dubbowire.ParseHeader(req.B)
	if err != nil || !h.IsRequest() || h.Event() || len(req.B) != dubbowire.HeaderLen+h.BodyLen() {
		n := len(req.B)
		req.Free()
		return proxy.Fail(w, d.Call.Call, codes.InvalidArgument, fmt.Sprintf("strait: the body is not one dubbo request frame (%d bytes)", n))
	}
	ctx, cancel := proxy.CallContext(r, d.Call.Call, l.CallTimeout.D())
	defer cancel()
	timeout := l.CallTimeout.D()
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl).Round(time.Millisecond)
	}
	resp, code := c.forwardDubbo(ctx, d, req, h, timeout)
	if resp == nil {
		w.WriteHeader(http.StatusNoContent)
		return code.String()
	}
	defer resp.Free()
	w.Header().Set("Content-Type", proxy.ContentTypeDubbo)
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.B)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(resp.B)
	return code.String()
}

// readAllInto appends what r holds to b.
func readAllInto(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// tunnelDubbo carries a Dubbo request as an HTTP/2 or HTTP/3 stream over a tunnel to a
// peer's ingress (for QUIC peers; HTTP/2 peers get Dubbo tunnel connections).
type tunnelDubbo struct {
	rt      http.RoundTripper
	scheme  string
	call    Call
	timeout time.Duration
	meta    bool
}

func (t *tunnelDubbo) Exchange(ctx context.Context, addr string, req *dubbowire.Buffer, deadline time.Time) (*dubbowire.Buffer, error) {
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, t.scheme+"://"+addr+"/"+t.call.Service.Name+"/"+t.call.Method, bytes.NewReader(req.B))
	if err != nil {
		req.Free()
		return nil, err
	}
	hr.Header.Set("Content-Type", proxy.ContentTypeDubbo)
	if t.call.Service.Version != "" {
		hr.Header.Set(proxy.HeaderTriVersion, t.call.Service.Version)
	}
	if t.call.Service.Group != "" {
		hr.Header.Set(proxy.HeaderTriGroup, t.call.Service.Group)
	}
	if t.timeout > 0 {
		hr.Header.Set("Triple-Timeout-Ms", strconv.FormatInt(t.timeout.Milliseconds(), 10))
	}
	if t.meta {
		hr.Header.Set(proxy.HeaderProtocol, string(mesh.ProtocolDubbo))
		hr.Header.Set(proxy.HeaderService, t.call.Service.Name)
	}
	resp, err := t.rt.RoundTrip(hr)
	if err != nil {
		if !proxy.NotSent(err) {
			req.Free()
		}
		return nil, err
	}
	req.Free()
	defer resp.Body.Close()
	out := dubbowire.NewBuffer()
	out.B, err = readAllInto(out.B, io.LimitReader(resp.Body, dubbowire.HeaderLen+dubbowire.DefaultMaxBody+1))
	if err != nil {
		out.Free()
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		out.Free()
		return nil, nil
	case resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != proxy.ContentTypeDubbo:
		msg := string(bytes.TrimSpace(out.B))
		out.Free()
		if len(msg) > 512 {
			msg = msg[:512]
		}
		return nil, fmt.Errorf("answered HTTP %d: %s", resp.StatusCode, msg)
	}
	return out, nil
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
