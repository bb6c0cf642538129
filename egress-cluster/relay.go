package egress

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/strait-mesh/strait/internal/gateway"
	"github.com/strait-mesh/strait/internal/relay"
	"github.com/strait-mesh/strait/internal/tunnel"
)

// serveSniffed accepts consumer connections and tells them apart by their first bytes:
// the HTTP/2 preface goes to the relay, anything else to the HTTP/1.1 server.
func (g *Gateway) serveSniffed(ln net.Listener) error {
	g.snMu.Lock()
	if g.snStopped {
		g.snMu.Unlock()
		return nil
	}
	g.ln = ln
	g.snMu.Unlock()
	g.snWG.Add(1)
	go func() {
		defer g.snWG.Done()
		if err := g.srv.Serve(g.h1); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			g.log.Warn("http/1.1 server ended", "err", err)
		}
	}()
	timeout := g.limits.Load().ReadHeaderTimeout.D()
	stopped := func() bool {
		g.snMu.Lock()
		defer g.snMu.Unlock()
		return g.snStopped
	}
	return tunnel.AcceptLoop(ln, stopped, func(c net.Conn) bool {
		g.snMu.Lock()
		defer g.snMu.Unlock()
		if g.snStopped {
			c.Close()
			return false
		}
		g.sniffing[c] = struct{}{}
		g.snWG.Add(1)
		go g.sniff(c, timeout)
		return true
	})
}

func (g *Gateway) sniff(c net.Conn, timeout time.Duration) {
	defer g.snWG.Done()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReaderSize(c, 64<<10)
	b, err := br.Peek(3)
	g.snMu.Lock()
	delete(g.sniffing, c)
	stopped := g.snStopped
	g.snMu.Unlock()
	if err != nil || stopped {
		c.Close()
		return
	}
	if string(b) == relay.Preface[:3] {
		g.relay.ServeConn(context.Background(), c, br, nil)
		return
	}
	if !http1RequestLine(br) {
		// Neither HTTP/2 nor HTTP/1: closed without an answer (an HTTP/1.1 400 would
		// read as garbage to a client that meant HTTP/2).
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	g.h1.push(&sniffedConn{Conn: c, r: br})
}

// http1RequestLine reports whether the connection starts with an HTTP/1 request line
// ("METHOD target HTTP/1.x"), reading (within the sniffing deadline) until its end, at
// most maxRequestLine bytes.
func http1RequestLine(br *bufio.Reader) bool {
	const maxRequestLine = 8 << 10
	for n := br.Buffered(); ; n = br.Buffered() + 1 {
		b, err := br.Peek(n) // n-1 bytes are there: it waits for one more, at most
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line := bytes.TrimSuffix(b[:i], []byte("\r"))
			sp := bytes.LastIndexByte(line, ' ')
			return sp > 0 && bytes.HasPrefix(line[sp+1:], []byte("HTTP/1.")) && bytes.IndexByte(line, ' ') < sp
		}
		if err != nil || n >= maxRequestLine {
			return err == nil // a very long request line: net/http answers it
		}
	}
}

// stopSniffers closes the listener and the connections not yet told apart.
func (g *Gateway) stopSniffers() {
	g.snMu.Lock()
	defer g.snMu.Unlock()
	g.snStopped = true
	if g.ln != nil {
		g.ln.Close()
	}
	for c := range g.sniffing {
		c.Close()
	}
}

func (g *Gateway) waitSniffers() { g.snWG.Wait() }

// sniffedConn replays what sniffing read.
type sniffedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *sniffedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener hands sniffed connections to an http.Server.
type connListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) stop()          { l.once.Do(func() { close(l.done) }) }
func (l *connListener) Close() error   { l.stop(); return nil }
func (l *connListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// RelayStats counts the consumer streams the relay forwarded and those it handed to the
// general path (zeros with the relay off).
func (g *Gateway) RelayStats() (relayed, fallback uint64) {
	if g.relay == nil {
		return 0, 0
	}
	return g.relay.Stats()
}

var _ gateway.Kind = (*Gateway)(nil)
