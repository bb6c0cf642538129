// Package relay is the gateways' fast data path: an HTTP/2 relay that forwards each
// call's frames from the caller's connection to a connection of the next hop, inline in
// the connection's read loop. There is no goroutine and no request object per call: the
// request headers are decoded once (to route) and re-encoded for the next hop, DATA
// frames are copied from one connection's read buffer into the other's write buffer,
// stream IDs are remapped, flow control is kept per leg, and every connection is written
// once per read pass, by its own writer goroutine (writer.go), so that no connection
// waits on another's socket.
//
// It is also the gateways' HTTP/2 edge: it enforces RFC 9113 (rules.go, and the checks
// of conn.go), bounds what it queues, and cuts floods (abuse.go).
//
// The relay takes the gRPC-style calls (gRPC, and Triple in its gRPC mode) that a Router
// sends to a Pool. Every other stream (plain HTTP, Triple's unary mode, errors, anything
// the router does not route) goes to a fallback http.Handler, served through an adapter
// in a goroutine of its own: the general path, unchanged.
package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/governance"
	"github.com/strait-mesh/strait/internal/proxy"
)

// Request is what a Router sees of a new stream. Info is the value the connection was
// served with (ServeConn).
type Request struct {
	Method, Path, Authority, ContentType string
	// Triple's service version and group headers.
	TriVersion, TriGroup string
	// The tunnel metadata (strait-protocol, strait-service), as the caller sent it.
	Protocol, Service string
	// App is the calling application the caller declares (tri-consumer-appname).
	App string
	// Timeout is the request's grpc-timeout, as sent ("" for none).
	Timeout string
	Info    any
}

// Decision is where a Router sends a stream.
type Decision struct {
	// Pool is the next hop's connections; nil sends the stream to the fallback handler.
	Pool *Pool
	// Set holds the next hop's endpoints; one is picked per stream.
	Set *balance.Set
	// Add are header fields added to the request (lower-case names), after the caller's.
	Add [3]hpack.HeaderField
	// NAdd is how many of Add are used.
	NAdd int
	// Protocol and Peer label the call in metrics.
	Protocol, Peer string
	// Retry lets a stream whose next hop cannot be reached before anything was sent try
	// one other endpoint, within Budget (nil: unbounded).
	Retry  bool
	Budget *governance.RetryBudget
	// Endpoint, if set, is told the outcome of the stream on the endpoint that served it,
	// with Service.
	Endpoint governance.EndpointObserver
	Service  string
	// ReplaceTimeout drops the request's grpc-timeout: the router adds the one to
	// forward among Add (its route's deadline).
	ReplaceTimeout bool
	// Ticket is the call's hold on its governance policies, released when the stream
	// ends with its outcome.
	Ticket governance.Ticket
}

// Router routes a new stream. It runs on the connection's read loop: it must be quick
// and must not block.
type Router interface {
	Route(r *Request) Decision
}

// Options configure a Server.
type Options struct {
	Router Router
	// Fallback serves the streams that Router does not send to a pool.
	Fallback http.Handler
	Observer proxy.Observer
	// DropPrefix: request header fields whose name starts with it (lower case) are not
	// forwarded, e.g. "strait-".
	DropPrefix           string
	MaxConcurrentStreams uint32
	MaxHeaderBytes       int
	// ReadTimeout bounds the wait for the connection preface; IdleTimeout closes a
	// connection without streams.
	ReadTimeout time.Duration
	IdleTimeout time.Duration
	// StallTimeout resets a stream whose caller has not taken its data for that long
	// (default 30s): a caller that stops reading holds its own streams only.
	StallTimeout time.Duration
	// Abuse, if set, counts each connection ended or stream refused for abuse, by kind:
	// rapid_reset, ping, settings, window_update, continuation, control_queue, protocol,
	// overload, stalled.
	Abuse func(kind string)
	// Budget bounds the bytes queued for receivers (nil: one shared by the process).
	Budget *Budget
	// MaxConnQueued bounds the bytes queued in the streams of one caller's connection,
	// waiting for the caller to take them (default 16 MiB): past it, the connection takes
	// no new stream, and a stream whose data would go over is reset.
	MaxConnQueued int64
	Logger        *slog.Logger
}

// DefaultStallTimeout is how long a stream may wait for its receiver to read.
const DefaultStallTimeout = 30 * time.Second

// Server relays the streams of the connections it is given.
type Server struct {
	o     Options
	obs   proxy.Observer
	drop  string
	log   *slog.Logger
	mu    sync.Mutex
	conns map[*conn]struct{}
	drain bool
	wg    sync.WaitGroup // fallback handlers

	relayed, fellBack atomic.Uint64

	stopSweep, sweepDone  chan struct{}
	sweepOnce, sweepStart sync.Once
}

// Stats counts the streams relayed and those served by the fallback handler.
func (s *Server) Stats() (relayed, fallback uint64) { return s.relayed.Load(), s.fellBack.Load() }

// NewServer returns a relay server.
func NewServer(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Observer == nil {
		o.Observer = proxy.NopObserver{}
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 1000
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 10 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.MaxConnQueued <= 0 {
		o.MaxConnQueued = maxConnPend
	}
	s := &Server{o: o, obs: o.Observer, drop: o.DropPrefix, log: o.Logger, conns: map[*conn]struct{}{},
		stopSweep: make(chan struct{}), sweepDone: make(chan struct{})}
	return s
}

// startSweep starts the idle sweep with the first connection (a server that never serves
// has no goroutine to stop).
func (s *Server) startSweep() {
	s.sweepStart.Do(func() {
		if s.o.IdleTimeout > 0 {
			go s.sweep(s.o.IdleTimeout)
		} else {
			close(s.sweepDone)
		}
	})
}

// sweep closes connections that have had no stream for the idle timeout: GOAWAY first
// (a stream that crossed it is refused, and its caller retries elsewhere), then the close.
func (s *Server) sweep(idle time.Duration) {
	defer close(s.sweepDone)
	t := time.NewTicker(min(max(idle/4, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		s.mu.Lock()
		var idleConns []*conn
		for c := range s.conns {
			if c.active.Load() == 0 && (c.goaway.Load() || now-c.idleSince.Load() >= int64(idle)) {
				idleConns = append(idleConns, c)
			}
		}
		s.mu.Unlock()
		for _, c := range idleConns {
			// The GOAWAY goes first; the connection closes on a later pass, once the
			// caller has seen it (or a second has passed): a stream it opened meanwhile is
			// refused, for it to retry elsewhere, not lost with the connection.
			if c.goAway() == 0 && c.goAwaySeen(now) {
				c.closeGracefully()
			}
		}
	}
}

func (s *Server) stopSweeping() {
	s.sweepOnce.Do(func() { close(s.stopSweep) })
	s.sweepStart.Do(func() { close(s.sweepDone) }) // never started
	<-s.sweepDone
}

// Preface is what an HTTP/2 connection starts with.
const Preface = http2.ClientPreface

// ServeConn serves one HTTP/2 connection (TLS or h2c prior knowledge) until it ends. br,
// if not nil, is a reader of nc that may hold bytes already read (the preface, when the
// caller sniffed it). ctx is the base context of fallback requests; info is given to the
// router with every stream.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn, br *bufio.Reader, info any) {
	c := newConn(nc, br, 0, s.o.MaxHeaderBytes, s.log)
	c.srv = s
	c.stall, c.onAbuse, c.maxPend = s.o.StallTimeout, s.o.Abuse, s.o.MaxConnQueued
	if s.o.Budget != nil {
		c.budget = s.o.Budget
	}
	c.info = info
	c.idleSince.Store(time.Now().UnixNano())
	c.ctx, c.stop = context.WithCancel(ctx)
	s.mu.Lock()
	if s.drain {
		s.mu.Unlock()
		c.stop()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.startSweep()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()

	_ = nc.SetReadDeadline(time.Now().Add(s.o.ReadTimeout))
	var pre [len(Preface)]byte
	// An HTTP/1 request is refused on its first bytes, not after the read timeout.
	if _, err := io.ReadFull(c.br, pre[:3]); err == nil && string(pre[:3]) == Preface[:3] {
		_, err = io.ReadFull(c.br, pre[3:])
	}
	if string(pre[:]) != Preface {
		c.stop()
		nc.Close()
		close(c.done)
		return
	}
	_ = nc.SetReadDeadline(time.Time{})
	c.writeSettings(s.o.MaxConcurrentStreams, s.o.MaxHeaderBytes)
	c.serve()
}

// newStream starts a stream the caller opened with HEADERS f.
func (s *Server) newStream(lp *loop, c *conn, f *headerBlock) {
	id := f.StreamID
	c.mu.Lock()
	c.openedLocked(id)
	refuse := c.goaway.Load() || uint32(c.active.Load()) >= s.o.MaxConcurrentStreams
	c.mu.Unlock()
	if refuse || f.reject {
		code := http2.ErrCodeRefusedStream
		if f.reject {
			code = http2.ErrCodeProtocol
		}
		c.wmu.Lock()
		if !c.dead {
			c.wbuf = appendRST(c.wbuf, id, code)
			c.controlLocked()
		}
		c.wmu.Unlock()
		lp.mark(c)
		c.closedAs(id, closedByUs)
		return
	}
	end := f.StreamEnded()
	if f.Truncated {
		c.wmu.Lock()
		if !c.dead {
			c.writeHeadersLocked(id, []hpack.HeaderField{{Name: ":status", Value: "431"}}, "", false, nil, true)
			if !end {
				c.wbuf = appendRST(c.wbuf, id, http2.ErrCodeNo)
			}
		}
		c.wmu.Unlock()
		lp.mark(c)
		c.closedAs(id, closedByUs)
		return
	}
	req := Request{Info: c.info}
	cl, err := checkRequest(f.Fields, &req)
	if err == nil && end && cl > 0 {
		err = errBodyLength
	}
	if err != nil {
		// A malformed request (§8.1.1): a stream error.
		c.abused("protocol")
		c.streamError(lp, id, http2.ErrCodeProtocol)
		c.closedAs(id, closedByUs)
		return
	}
	st := &stream{srv: s}
	st.code.Store(-1)
	l0 := &st.legs[0]
	l0.s, l0.c, l0.id, l0.idx = st, c, id, 0
	l0.recvWin = streamWindow
	l0.recvEnd = end
	l0.bodyLeft = cl
	c.wmu.Lock()
	l0.sendWin = c.peerInitWin
	c.wmu.Unlock()
	c.addStream(l0)

	if c.pendBytes.Load() > c.maxPend || c.budget.over() {
		// Too much is queued, for this caller (which does not read) or in the process:
		// new streams are shed until it drains.
		c.abused("overload")
		s.shed(lp, c, l0, req.ContentType, end)
		return
	}

	var d Decision
	if s.o.Router != nil {
		d = s.o.Router.Route(&req)
	}
	if d.Pool == nil || d.Set == nil || d.Set.Len() == 0 {
		s.fellBack.Add(1)
		s.fallback(lp, c, l0, f.Fields, end)
		return
	}
	s.relayed.Add(1)
	st.proto, st.peer, st.start = d.Protocol, d.Peer, time.Now()
	st.ticket = d.Ticket
	st.skipTimeout = d.ReplaceTimeout
	st.retry, st.budget = d.Retry, d.Budget
	st.epObs, st.svc = d.Endpoint, d.Service
	if d.Budget != nil {
		d.Budget.Deposit(st.start.UnixNano())
	}
	s.obs.CallStarted()

	ep := d.Set.Pick(nil)
	st.ep = ep
	// While the stream may wait for a dial, what it needs is kept aside; a stream whose
	// next hop is ready (the usual case) drops it at once.
	st.wait = waitState{set: d.Set, pool: d.Pool, nAdd: d.NAdd, earlyEnd: end}
	st.waiting.Store(true)
	// amu is held until the headers are kept: a dial that ends at once attaches the
	// stream only then.
	st.amu.Lock()
	uc, err := d.Pool.acquire(ep.Addr, st)
	if err != nil {
		st.amu.Unlock()
		st.dialFailed(lp, ep.Addr, err)
		return
	}
	if uc == nil {
		// It waits for a dial: keep a copy of the headers (the block's fields are
		// reused by the next block).
		st.wait.fields = append(append(make([]hpack.HeaderField, 0, len(f.Fields)+d.NAdd), f.Fields...), d.Add[:d.NAdd]...)
		st.amu.Unlock()
		return
	}
	st.wait = waitState{}
	st.waiting.Store(false)
	st.amu.Unlock()
	st.open(lp, uc, f.Fields, d.Add[:d.NAdd], end)
}

// open starts the stream's leg on next-hop connection uc, where a slot is reserved for
// it, with the request headers. It reports false (and fails the caller's leg) if uc is
// gone.
func (st *stream) open(lp *loop, uc *conn, fields, add []hpack.HeaderField, end bool) bool {
	s := st.srv
	l1 := &st.legs[1]
	uc.wmu.Lock()
	if uc.dead {
		uc.wmu.Unlock()
		uc.release()
		l0 := &st.legs[0]
		st.code.Store(int32(codes.Unavailable))
		// Nothing of it went out: refused, as a next hop's GOAWAY would have it, so that
		// the caller (gRPC's transparent retry) sends it again.
		l0.c.resetLeg(lp, l0, http2.ErrCodeRefusedStream, true)
		st.halves.Store(3)
		st.finish(lp)
		return false
	}
	l1.s, l1.idx = st, 1
	l1.recvWin = streamWindow
	l1.bodyLeft = -1
	l1.id = uc.nextID
	uc.nextID += 2
	if uc.nextID >= 1<<31-1 {
		uc.goaway.Store(true) // stream IDs run out: new streams go to a new connection
		uc.pool.forget(uc)
	}
	l1.sendWin = uc.peerInitWin
	if uc.stall == 0 || s.o.StallTimeout < uc.stall {
		// A next hop's connection resets streams stalled for the shortest stall time
		// of the servers whose streams it carries.
		uc.stall = s.o.StallTimeout
	}
	uc.mu.Lock()
	uc.streams[l1.id] = l1
	uc.mu.Unlock()
	l1.c = uc
	uc.writeHeadersLocked(l1.id, fields, s.drop, st.skipTimeout, add, end)
	if end {
		l1.sentEnd = true
	}
	uc.wmu.Unlock()
	lp.mark(uc)
	if end {
		st.halfDone(lp, 0)
	}
	return true
}

// attach starts a stream that waited for a dial on the new connection uc (a slot
// reserved), with what the caller sent meanwhile. It runs on the dialing goroutine.
func (st *stream) attach(lp *loop, uc *conn) {
	st.amu.Lock()
	defer st.amu.Unlock()
	w := st.wait
	if !st.waiting.Load() || st.done.Load() {
		uc.release() // the caller gave up meanwhile
		return
	}
	st.legs[0].c.budget.add(-len(w.early))
	st.wait = waitState{}
	fields, add := w.fields[:len(w.fields)-w.nAdd], w.fields[len(w.fields)-w.nAdd:]
	onlyHeaders := w.earlyEnd && len(w.early) == 0 && !w.hasTrl
	if !st.open(lp, uc, fields, add, onlyHeaders) {
		st.waiting.Store(false)
		return
	}
	l0, l1 := &st.legs[0], &st.legs[1]
	if !onlyHeaders {
		uc.wmu.Lock()
		sent, endSent := uc.sendDataLocked(l1, w.early, w.earlyEnd && !w.hasTrl)
		if w.hasTrl {
			switch {
			case l1.reset || l1.sentEnd || uc.dead:
			case len(l1.pend) > 0:
				l1.pendTrl, l1.hasTrl, l1.pendEnd = w.trl, true, true
			default:
				uc.writeHeadersLocked(l1.id, w.trl, st.srv.drop, false, nil, true)
				l1.sentEnd = true
				endSent = true
			}
		}
		uc.wmu.Unlock()
		lp.mark(uc)
		if sent > 0 {
			l0.c.credit(lp, l0, sent)
		}
		if endSent {
			st.halfDone(lp, 0)
		}
	}
	st.waiting.Store(false)
}

// dialFailed: the next hop the stream waited for cannot be reached. It is marked down
// for a second and the stream tries one other, if the set has one; else the caller
// gets UNAVAILABLE.
func (st *stream) dialFailed(lp *loop, addr string, err error) {
	st.amu.Lock()
	w := &st.wait
	if !st.waiting.Load() || st.done.Load() {
		st.amu.Unlock()
		return
	}
	st.srv.log.Warn("next hop unreachable", "peer", st.peer, "instance", addr, "err", err)
	ep := st.ep
	ep.MarkDown(time.Second)
	if w.tries == 0 && w.set.Len() > 1 && err != errClosed && st.retry && (st.budget == nil || st.budget.Withdraw(time.Now().UnixNano())) {
		w.tries++
		next := w.set.Pick(ep)
		ep.Done()
		st.ep = next
		pool := w.pool
		st.amu.Unlock()
		uc, aerr := pool.acquire(next.Addr, st)
		switch {
		case aerr != nil:
			st.dialFailed(lp, next.Addr, aerr)
		case uc != nil:
			st.attach(lp, uc)
		}
		return
	}
	st.dropWaitLocked()
	st.amu.Unlock()
	l0 := &st.legs[0]
	st.code.Store(int32(codes.Unavailable))
	l0.c.failLeg(lp, l0, false, codes.Unavailable, fmt.Sprintf("strait: %s: %v", st.peer, err))
	st.halves.Store(3)
	st.finish(lp)
}

// shed refuses a new stream for overload: RESOURCE_EXHAUSTED for gRPC, 503 otherwise.
func (s *Server) shed(lp *loop, c *conn, l *leg, contentType string, end bool) {
	const msg = "strait: overloaded: too much data queued; retry later"
	if strings.HasPrefix(contentType, "application/grpc") {
		c.failLeg(lp, l, false, codes.ResourceExhausted, msg)
	} else {
		c.wmu.Lock()
		if !c.dead {
			c.writeHeadersLocked(l.id, []hpack.HeaderField{{Name: ":status", Value: "503"}, {Name: "retry-after", Value: "1"}}, "", false, nil, true)
			l.sentEnd = true
			if !end {
				c.wbuf = appendRST(c.wbuf, l.id, http2.ErrCodeNo)
				l.reset = true
			}
			lp.mark(c)
		}
		c.wmu.Unlock()
	}
	c.removeStream(l)
}

// Shutdown sends GOAWAY on every connection, waits for their streams to end (or ctx),
// then closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	conns := s.stopServing()
	for _, c := range conns {
		c.goAway()
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	var err error
	for _, c := range conns {
	wait:
		for (c.active.Load() > 0 || !c.goAwaySeen(time.Now().UnixNano())) && err == nil {
			select {
			case <-ctx.Done():
				err = ctx.Err()
			case <-t.C:
			case <-c.done:
				break wait
			}
		}
		if err == nil {
			c.closeGracefully()
		} else {
			c.nc.Close()
		}
	}
	for _, c := range conns {
		<-c.done
	}
	s.wg.Wait()
	return err
}

// Close closes every connection at once.
func (s *Server) Close() {
	conns := s.stopServing()
	for _, c := range conns {
		c.nc.Close()
	}
	for _, c := range conns {
		<-c.done
	}
	s.wg.Wait()
}

// stopServing takes no new connection and stops the idle sweep; it returns the
// connections being served.
func (s *Server) stopServing() []*conn {
	s.stopSweeping()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drain = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// Active counts the streams being served, fallback ones included.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		n += int(c.active.Load())
	}
	return n
}

var errClosed = errors.New("relay: closed")
