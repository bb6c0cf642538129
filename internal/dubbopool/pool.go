// Package dubbopool keeps multiplexed connections for classic Dubbo (dubbo://) requests:
// the ingress' connections to providers, and the egress' Dubbo tunnel connections to a
// peer's ingress instances. One connection per address carries the requests of every
// caller at once, as Dubbo's own consumers share one. Each request gets an ID of the
// connection's own, so that requests from different callers never collide, and its
// response is handed back with the caller's ID. Frames are forwarded as they are; only the
// 8 ID bytes of the header are rewritten. Writes are batched (dubbowire.Writer).
package dubbopool

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/strait-mesh/strait/internal/dubbowire"
	"github.com/strait-mesh/strait/internal/tunnel"
)

// Options configure a Pool.
type Options struct {
	// Dial opens a connection (default: TCP). An error it returns that is not a
	// *tunnel.DialError is wrapped in one.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// DialTimeout bounds opening a connection (default 1.5 s).
	DialTimeout time.Duration
	// MaxBody bounds a response body (default dubbowire.DefaultMaxBody).
	MaxBody int
	// Idle closes a connection that carried no request for this long (default 5 min).
	Idle time.Duration
	// Stall fails a connection whose writes make no progress for this long (default 30 s).
	Stall  time.Duration
	Logger *slog.Logger
}

// ErrClosed is returned for requests to a closed (or draining) pool.
var ErrClosed = errors.New("dubbopool: closed")

// ErrTimeout is returned for a request whose deadline passed before its response came.
var ErrTimeout = fmt.Errorf("dubbopool: no response in time: %w", context.DeadlineExceeded)

// Pool holds one connection per address. Safe for concurrent use.
type Pool struct {
	o      Options
	mu     sync.Mutex
	conns  map[string]*conn
	closed bool
	wg     sync.WaitGroup // the connections' goroutines
}

// New returns an empty pool.
func New(o Options) *Pool {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 1500 * time.Millisecond
	}
	if o.MaxBody <= 0 {
		o.MaxBody = dubbowire.DefaultMaxBody
	}
	if o.Idle <= 0 {
		o.Idle = 5 * time.Minute
	}
	if o.Stall <= 0 {
		o.Stall = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pool{o: o, conns: map[string]*conn{}}
}

// Exchange sends the request in req to the provider at addr and waits for its response,
// until deadline (none if zero) or ctx ends. The response comes back in a buffer the caller
// owns, with the request's own ID; a oneway request returns (nil, nil) once queued.
//
// The pool takes req, except when the error is a *tunnel.DialError (no connection could
// be opened: the request was not sent, and may go elsewhere) or ErrClosed: then req stays
// the caller's.
func (p *Pool) Exchange(ctx context.Context, addr string, req *dubbowire.Buffer, deadline time.Time) (*dubbowire.Buffer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := dubbowire.ParseHeader(req.B)
	if err != nil {
		req.Free()
		return nil, fmt.Errorf("dubbopool: %w", err)
	}
	c, err := p.get(ctx, addr)
	if err != nil {
		return nil, err
	}
	return c.exchange(ctx, req, h, deadline)
}

// RoundTrip is Exchange for a frame in a byte slice, which it copies.
func (p *Pool) RoundTrip(ctx context.Context, addr string, frame []byte) ([]byte, error) {
	req := dubbowire.NewBuffer()
	req.B = append(req.B, frame...)
	var deadline time.Time
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	resp, err := p.Exchange(ctx, addr, req, deadline)
	if err != nil {
		var de *tunnel.DialError
		if errors.As(err, &de) || errors.Is(err, ErrClosed) {
			req.Free()
		}
		return nil, err
	}
	if resp == nil {
		return nil, nil
	}
	out := append([]byte(nil), resp.B...)
	resp.Free()
	return out, nil
}

// Close closes every connection; requests waiting on them fail.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[string]*conn{}
	p.mu.Unlock()
	for _, c := range conns {
		c.fail(ErrClosed)
	}
	p.wg.Wait()
}

// Drain closes the pool to new requests and each connection once the requests waiting on
// it are answered (or time out); it does not wait.
func (p *Pool) Drain() {
	p.mu.Lock()
	p.closed = true
	conns := make([]*conn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.draining = true
		idle := len(c.pending) == 0
		c.mu.Unlock()
		if idle {
			c.fail(ErrClosed)
		}
	}
}

// Conns counts the open connections.
func (p *Pool) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// get returns the live connection to addr, opening one if there is none.
func (p *Pool) get(ctx context.Context, addr string) (*conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if c := p.conns[addr]; c != nil {
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	nc, err := p.dial(ctx, addr)
	if err != nil {
		var de *tunnel.DialError
		if errors.As(err, &de) {
			return nil, err
		}
		return nil, &tunnel.DialError{Addr: addr, Err: err}
	}
	c := &conn{pool: p, addr: addr, nc: nc, pending: map[uint64]*waiter{}, done: make(chan struct{}), last: time.Now()}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		nc.Close()
		return nil, ErrClosed
	}
	if other := p.conns[addr]; other != nil {
		// Another caller opened one meanwhile: use it.
		p.mu.Unlock()
		nc.Close()
		return other, nil
	}
	p.conns[addr] = c
	c.w = dubbowire.NewWriter(nc, p.o.Stall, 0)
	p.wg.Add(2)
	p.mu.Unlock()
	go c.readLoop()
	go c.sweep()
	return c, nil
}

func (p *Pool) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.o.DialTimeout)
	defer cancel()
	if p.o.Dial != nil {
		return p.o.Dial(ctx, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// drop forgets c if it is addr's connection.
func (p *Pool) drop(c *conn) {
	p.mu.Lock()
	if p.conns[c.addr] == c {
		delete(p.conns, c.addr)
	}
	p.mu.Unlock()
}

// waiter is a request waiting for its response.
type waiter struct {
	ch       chan *dubbowire.Buffer // the response; nil sent when the request failed
	deadline time.Time
	id       uint64 // the caller's ID
}

var waiters = sync.Pool{New: func() any { return &waiter{ch: make(chan *dubbowire.Buffer, 1)} }}

// conn is one multiplexed connection.
type conn struct {
	pool *Pool
	addr string
	nc   net.Conn
	w    *dubbowire.Writer

	mu       sync.Mutex
	nextID   uint64
	pending  map[uint64]*waiter
	err      error         // why the connection ended
	done     chan struct{} // closed when it ends
	last     time.Time     // last request queued
	draining bool          // the pool drains: close once nothing is pending
}

func (c *conn) exchange(ctx context.Context, req *dubbowire.Buffer, h dubbowire.Header, deadline time.Time) (*dubbowire.Buffer, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		req.Free()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	var wt *waiter
	if h.TwoWay() {
		wt = waiters.Get().(*waiter)
		wt.deadline, wt.id = deadline, h.ID()
		c.pending[id] = wt
	}
	c.last = time.Now()
	c.mu.Unlock()
	binary.BigEndian.PutUint64(req.B[4:12], id)
	if err := c.w.Write(req); err != nil {
		c.fail(fmt.Errorf("dubbopool: write to %s: %w", c.addr, err))
		return nil, c.wait(ctx, id, wt)
	}
	if wt == nil {
		return nil, nil
	}
	resp, err := c.waitResponse(ctx, id, wt)
	return resp, err
}

// waitResponse waits for the response to request id.
func (c *conn) waitResponse(ctx context.Context, id uint64, wt *waiter) (*dubbowire.Buffer, error) {
	select {
	case resp := <-wt.ch:
		callerID := wt.id
		waiters.Put(wt)
		if resp == nil {
			return nil, c.failure()
		}
		binary.BigEndian.PutUint64(resp.B[4:12], callerID)
		return resp, nil
	case <-ctx.Done():
		if !c.forget(id) {
			// Answered (or failed) meanwhile: the value is in the channel.
			if resp := <-wt.ch; resp != nil {
				resp.Free()
			}
		}
		waiters.Put(wt)
		return nil, ctx.Err()
	}
}

// wait collects a waiter after a failed write; it returns the connection's failure.
func (c *conn) wait(ctx context.Context, id uint64, wt *waiter) error {
	if wt != nil {
		if _, err := c.waitResponse(ctx, id, wt); err != nil {
			return err
		}
	}
	return c.failure()
}

// failure is why the connection ended, or ErrTimeout for a request it timed out.
func (c *conn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return ErrTimeout
}

// forget removes request id; it reports whether it was still pending (its waiter is then
// the caller's again).
func (c *conn) forget(id uint64) bool {
	c.mu.Lock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	done := c.draining && len(c.pending) == 0
	c.mu.Unlock()
	if done {
		c.fail(ErrClosed)
	}
	return ok
}

// fail ends the connection with err (the first error wins): every pending request fails.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.done)
	pending := c.pending
	c.pending = map[uint64]*waiter{}
	c.mu.Unlock()
	for _, wt := range pending {
		wt.ch <- nil
	}
	c.nc.Close()
	c.pool.drop(c)
}

// sweep fails the requests whose deadline passed, and closes the connection once it has
// been idle (no request queued, none pending) for the pool's Idle.
func (c *conn) sweep() {
	defer c.pool.wg.Done()
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	var late []*waiter
	for {
		select {
		case <-c.done:
			c.w.Close()
			return
		case now := <-t.C:
			c.mu.Lock()
			for id, wt := range c.pending {
				if !wt.deadline.IsZero() && now.After(wt.deadline) {
					delete(c.pending, id)
					late = append(late, wt)
				}
			}
			idle := len(c.pending) == 0 && now.Sub(c.last) >= c.pool.o.Idle
			drained := c.draining && len(c.pending) == 0
			c.mu.Unlock()
			for _, wt := range late {
				wt.ch <- nil
			}
			clear(late)
			late = late[:0]
			if idle {
				c.fail(fmt.Errorf("dubbopool: connection to %s closed after %s idle", c.addr, c.pool.o.Idle))
			} else if drained {
				c.fail(ErrClosed)
			}
		}
	}
}

// readLoop hands responses to their callers and answers the peer's heartbeats, until the
// connection fails or is closed.
func (c *conn) readLoop() {
	defer c.pool.wg.Done()
	br := bufio.NewReaderSize(c.nc, 32<<10)
	for {
		b, h, err := dubbowire.ReadBuffer(br, c.pool.o.MaxBody)
		if err != nil {
			c.fail(fmt.Errorf("dubbopool: read from %s: %w", c.addr, err))
			return
		}
		if h.IsRequest() {
			readonly := dubbowire.IsReadonlyEvent(b.B)
			b.Free()
			if readonly {
				// The peer shuts down: new requests go to a new connection (to another
				// instance, if this one no longer accepts), this one closes once its
				// requests are answered.
				c.pool.drop(c)
				c.mu.Lock()
				c.draining = true
				idle := len(c.pending) == 0
				c.mu.Unlock()
				if idle {
					c.fail(ErrClosed)
					return
				}
				continue
			}
			// A heartbeat (Dubbo servers send them on idle channels).
			if h.Event() && h.TwoWay() {
				hb := dubbowire.NewBuffer()
				hb.B = dubbowire.AppendHeartbeatResponse(hb.B, h.ID())
				if err := c.w.WriteNow(hb); err != nil {
					c.fail(fmt.Errorf("dubbopool: write to %s: %w", c.addr, err))
					return
				}
			}
			continue
		}
		c.mu.Lock()
		wt := c.pending[h.ID()]
		delete(c.pending, h.ID())
		done := c.draining && len(c.pending) == 0
		c.mu.Unlock()
		if wt != nil {
			wt.ch <- b
		} else {
			b.Free() // the answer to a request that timed out, or a heartbeat's
		}
		if done {
			c.fail(ErrClosed)
			return
		}
	}
}
