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
	Logger         *slog.Logger
}

// Pool holds the connections to a set of next hops, several streams on each: a new
// connection is opened when the others are full (their peer's SETTINGS_MAX_CONCURRENT_STREAMS)
// or going away. Lookups are lock-free.
type Pool struct {
	o      PoolOptions
	log    *slog.Logger
	mu     sync.Mutex
	eps    atomic.Pointer[map[string]*poolEP]
	closed bool
	conns  sync.WaitGroup
}

type poolEP struct {
	addr  string
	mu    sync.Mutex // held while dialing
	conns atomic.Pointer[[]*conn]
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

// conn returns a connection to addr with a stream slot reserved, dialing one if needed.
func (p *Pool) conn(addr string) (*conn, error) {
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
	ctx, cancel := context.WithTimeout(context.Background(), p.o.DialTimeout)
	nc, err := p.o.Dial(ctx, addr)
	cancel()
	if err != nil {
		return nil, err
	}
	c := newConn(nc, nil, 1, p.o.MaxHeaderBytes, p.log)
	c.pool, c.ep = p, ep
	c.wbuf = append(c.wbuf, Preface...)
	c.writeSettings(0, p.o.MaxHeaderBytes)
	c.flush()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		nc.Close()
		return nil, errClosed
	}
	p.conns.Add(1)
	p.mu.Unlock()
	c.active.Add(1)
	old := *ep.conns.Load()
	next := make([]*conn, 0, len(old)+1)
	next = append(append(next, old...), c)
	ep.conns.Store(&next)
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

// Kill closes every connection at once; their streams fail.
func (p *Pool) Kill() {
	p.Close()
	for _, ep := range *p.eps.Load() {
		for _, c := range *ep.conns.Load() {
			c.nc.Close()
		}
	}
}

// Wait waits until every connection of a closed pool has ended.
func (p *Pool) Wait() { p.conns.Wait() }

// String names the pool's endpoints, for logs.
func (p *Pool) String() string { return fmt.Sprintf("relay pool (%d endpoints)", len(*p.eps.Load())) }
