// Package dubbopool keeps the connections an ingress holds to classic Dubbo (dubbo://)
// providers: one multiplexed TCP connection per provider address, as Dubbo's own
// consumers share one, carrying the requests of every tunnel stream at once. Each request
// gets an ID of the connection's own, so that requests from different callers never
// collide, and its response is handed back with the caller's ID. Frames are forwarded as
// they are; only the 8 ID bytes of the header are rewritten.
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
	// Dial opens a connection (default: TCP with DialTimeout). An error it returns that is
	// not a *tunnel.DialError is wrapped in one.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// DialTimeout bounds opening a connection (default 1.5 s).
	DialTimeout time.Duration
	// MaxBody bounds a response body (default dubbowire.DefaultMaxBody).
	MaxBody int
	// Idle closes a connection that carried no request for this long (default 5 min).
	Idle   time.Duration
	Logger *slog.Logger
}

// ErrClosed is returned by RoundTrip once the pool is closed.
var ErrClosed = errors.New("dubbopool: closed")

// Pool holds one connection per provider address. Safe for concurrent use.
type Pool struct {
	o      Options
	mu     sync.Mutex
	conns  map[string]*conn
	closed bool
	wg     sync.WaitGroup // the connections' read loops
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
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pool{o: o, conns: map[string]*conn{}}
}

// RoundTrip sends a request frame to the provider at addr and returns its response frame,
// with the request's own ID; for a oneway request it returns (nil, nil) once the frame is
// written. frame is modified (its ID) and must not be used by the caller meanwhile. A
// connection that cannot be opened is a *tunnel.DialError: the request was not sent, and
// may go to another provider. ctx bounds the wait for the response.
func (p *Pool) RoundTrip(ctx context.Context, addr string, frame []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := dubbowire.ParseHeader(frame)
	if err != nil {
		return nil, fmt.Errorf("dubbopool: %w", err)
	}
	c, err := p.get(ctx, addr)
	if err != nil {
		return nil, err
	}
	return c.roundTrip(ctx, frame, h)
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
// it are answered (or fail); it does not wait.
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
	c := &conn{pool: p, addr: addr, nc: nc, pending: map[uint64]chan []byte{}, done: make(chan struct{})}
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
	p.wg.Add(1)
	c.last = time.Now()
	c.idle = time.AfterFunc(p.o.Idle, c.checkIdle)
	p.mu.Unlock()
	go c.readLoop()
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

// conn is one multiplexed connection to a provider.
type conn struct {
	pool *Pool
	addr string
	nc   net.Conn

	wmu sync.Mutex // one frame written at a time

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan []byte
	err     error         // why the connection ended
	done    chan struct{} // closed when it ends
	last    time.Time     // last request written
	idle    *time.Timer   // closes the connection once idle
	// draining: the pool is draining; the connection closes when nothing is pending.
	draining bool
}

// checkIdle closes the connection if no request was written for the pool's Idle and none
// waits for its response; else it looks again when that could be so.
func (c *conn) checkIdle() {
	idle := c.pool.o.Idle
	c.mu.Lock()
	since := time.Since(c.last)
	busy := len(c.pending) > 0 || since < idle
	if busy && c.err == nil {
		next := idle - since
		if next <= 0 {
			next = idle
		}
		c.idle.Reset(next)
	}
	c.mu.Unlock()
	if !busy {
		c.fail(fmt.Errorf("dubbopool: connection to %s closed after %s idle", c.addr, idle))
	}
}

func (c *conn) roundTrip(ctx context.Context, frame []byte, h dubbowire.Header) ([]byte, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	var ch chan []byte
	if h.TwoWay() {
		ch = make(chan []byte, 1)
		c.pending[id] = ch
	}
	c.last = time.Now()
	c.mu.Unlock()
	binary.BigEndian.PutUint64(frame[4:12], id)

	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetWriteDeadline(dl)
	} else {
		_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	}
	_, err := c.nc.Write(frame)
	c.wmu.Unlock()
	binary.BigEndian.PutUint64(frame[4:12], h.ID())
	if err != nil {
		c.fail(fmt.Errorf("dubbopool: write to %s: %w", c.addr, err))
		c.forget(id)
		return nil, fmt.Errorf("dubbopool: write to %s: %w", c.addr, err)
	}
	if ch == nil {
		return nil, nil
	}
	select {
	case resp := <-ch:
		binary.BigEndian.PutUint64(resp[4:12], h.ID())
		return resp, nil
	case <-ctx.Done():
		c.forget(id)
		return nil, ctx.Err()
	case <-c.done:
		c.forget(id)
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
}

func (c *conn) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	done := c.draining && len(c.pending) == 0
	c.mu.Unlock()
	if done {
		c.fail(ErrClosed)
	}
}

// fail ends the connection with err (the first error wins).
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		close(c.done)
		if c.idle != nil {
			c.idle.Stop()
		}
	}
	c.mu.Unlock()
	c.nc.Close()
	c.pool.drop(c)
}

// readLoop hands responses to their callers and answers the provider's heartbeats, until
// the connection fails or is closed (by Close, or idle: checkIdle).
func (c *conn) readLoop() {
	defer c.pool.wg.Done()
	br := bufio.NewReaderSize(c.nc, 32<<10)
	for {
		frame, h, err := dubbowire.ReadFrame(br, c.pool.o.MaxBody, nil)
		if err != nil {
			c.fail(fmt.Errorf("dubbopool: read from %s: %w", c.addr, err))
			return
		}
		if h.IsRequest() {
			// A provider's heartbeat (Dubbo servers send them on idle channels).
			if h.Event() && h.TwoWay() {
				c.wmu.Lock()
				_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, err := c.nc.Write(dubbowire.AppendHeartbeatResponse(nil, h.ID()))
				c.wmu.Unlock()
				if err != nil {
					c.fail(fmt.Errorf("dubbopool: write to %s: %w", c.addr, err))
					return
				}
			}
			continue
		}
		c.mu.Lock()
		ch := c.pending[h.ID()]
		delete(c.pending, h.ID())
		done := c.draining && len(c.pending) == 0
		c.mu.Unlock()
		if ch != nil {
			ch <- frame
		}
		if done {
			c.fail(ErrClosed)
			return
		}
	}
}

// Conns counts the open connections.
func (p *Pool) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}
