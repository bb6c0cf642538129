package relay

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Dialer opens a connection to a next hop that speaks HTTP/2 on it: TLS with ALPN
// already negotiated, or plain TCP for h2c.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// PoolOptions configure a Pool.
type PoolOptions struct {
	Dial           Dialer
	DialTimeout    time.Duration
	MaxHeaderBytes int
	// Abuse, if set, counts a next hop's connection ended for abuse (see Options.Abuse).
	Abuse func(kind string)
	// Budget bounds the bytes queued for receivers (nil: one shared by the process).
	Budget *Budget
	Logger *slog.Logger
}

// Pool holds the connections to a set of next hops, several streams on each: a new
// connection is opened when the others are full (their peer's SETTINGS_MAX_CONCURRENT_STREAMS,
// or too much queued for them) or going away. Lookups are lock-free. Dials (and TLS
// handshakes) run on goroutines of their own: a stream that needs a new connection waits
// for it, at most the dial timeout, and a read loop never does.
type Pool struct {
	o      PoolOptions
	log    *slog.Logger
	mu     sync.Mutex
	eps    atomic.Pointer[map[string]*poolEP]
	closed bool
	conns  sync.WaitGroup // connections and dials
	ctx    context.Context
	cancel context.CancelFunc
}

type poolEP struct {
	addr  string
	mu    sync.Mutex // guards dialing and waiters
	conns atomic.Pointer[[]*conn]
	// dialing: a dial is under way; waiters are the streams it will serve.
	dialing bool
	waiters []*stream
}

// NewPool returns an empty pool.
func NewPool(o PoolOptions) *Pool {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 64 << 10
	}
	p := &Pool{o: o, log: o.Logger}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	m := map[string]*poolEP{}
	p.eps.Store(&m)
	return p
}

func (p *Pool) endpoint(addr string) (*poolEP, error) {
	if ep := (*p.eps.Load())[addr]; ep != nil {
		return ep, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errClosed
	}
	old := *p.eps.Load()
	if ep := old[addr]; ep != nil {
		return ep, nil
	}
	m := make(map[string]*poolEP, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	ep := &poolEP{addr: addr}
	ep.conns.Store(&[]*conn{})
	m[addr] = ep
	p.eps.Store(&m)
	return ep, nil
}

// acquire returns a connection to addr with a stream slot reserved. If none is ready it
// returns nil: s joins the waiters of a dial (started if none is under way), and is
// attached to the new connection, or failed, off the caller's read loop.
func (p *Pool) acquire(addr string, s *stream) (*conn, error) {
	ep, err := p.endpoint(addr)
	if err != nil {
		return nil, err
	}
	for _, c := range *ep.conns.Load() {
		if c.reserve() {
			return c, nil
		}
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	for _, c := range *ep.conns.Load() {
		if c.reserve() {
			return c, nil
		}
	}
	p.mu.Lock()
	closed := p.closed
	if !closed && !ep.dialing {
		p.conns.Add(1)
	}
	p.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	ep.waiters = append(ep.waiters, s)
	if !ep.dialing {
		ep.dialing = true
		go p.dial(ep)
	}
	return nil, nil
}

// dial opens a connection to ep and hands it to the streams waiting for it.
func (p *Pool) dial(ep *poolEP) {
	defer p.conns.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.o.DialTimeout)
	nc, err := p.o.Dial(ctx, ep.addr)
	cancel()
	var c *conn
	if err == nil {
		c, err = p.start(ep, nc)
	}
	ep.mu.Lock()
	waiters := ep.waiters
	ep.waiters, ep.dialing = nil, false
	ep.mu.Unlock()
	var lp loop
	for _, s := range waiters {
		if err != nil {
			s.dialFailed(&lp, ep.addr, err)
			continue
		}
		if c.reserve() {
			s.attach(&lp, c)
			continue
		}
		// More waiters than the new connection takes: they go round again.
		uc, aerr := p.acquire(ep.addr, s)
		switch {
		case aerr != nil:
			s.dialFailed(&lp, ep.addr, aerr)
		case uc != nil:
			s.attach(&lp, uc)
		}
	}
	lp.flush()
}

// start makes nc a pooled connection to ep and starts serving it.
func (p *Pool) start(ep *poolEP, nc net.Conn) (*conn, error) {
	c := newConn(nc, nil, 1, p.o.MaxHeaderBytes, p.log)
	c.pool, c.ep = p, ep
	c.onAbuse = p.o.Abuse
	if p.o.Budget != nil {
		c.budget = p.o.Budget
	}
	c.wbuf = append(c.wbuf, Preface...)
	c.writeSettings(0, p.o.MaxHeaderBytes)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		nc.Close()
		return nil, errClosed
	}
	p.conns.Add(1)
	p.mu.Unlock()
	ep.mu.Lock()
	old := *ep.conns.Load()
	next := make([]*conn, 0, len(old)+1)
	next = append(append(next, old...), c)
	ep.conns.Store(&next)
	ep.mu.Unlock()
	go func() {
		defer p.conns.Done()
		c.serve()
	}()
	return c, nil
}

// forget takes c out of the pool: no new streams go to it.
func (p *Pool) forget(c *conn) {
	ep := c.ep
	if ep == nil {
		return
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	old := *ep.conns.Load()
	next := make([]*conn, 0, len(old))
	for _, x := range old {
		if x != c {
			next = append(next, x)
		}
	}
	ep.conns.Store(&next)
}

// Close stops new streams: idle connections close now, busy ones when their streams end.
// It does not wait; Wait does.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	eps := *p.eps.Load()
	p.mu.Unlock()
	for _, ep := range eps {
		ep.mu.Lock()
		for _, c := range *ep.conns.Load() {
			c.goaway.Store(true)
			if c.active.Load() == 0 {
				c.nc.Close()
			}
		}
		ep.mu.Unlock()
	}
}

// Kill closes every connection at once, and stops dials; their streams fail.
func (p *Pool) Kill() {
	p.Close()
	p.cancel()
	for _, ep := range *p.eps.Load() {
		for _, c := range *ep.conns.Load() {
			c.nc.Close()
		}
	}
}

// Wait waits until every connection and dial of a closed pool has ended.
func (p *Pool) Wait() {
	p.conns.Wait()
	p.cancel()
}

// String names the pool's endpoints, for logs.
func (p *Pool) String() string { return fmt.Sprintf("relay pool (%d endpoints)", len(*p.eps.Load())) }
