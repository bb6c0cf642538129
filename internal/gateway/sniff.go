package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/strait-mesh/strait/internal/relay"
	"github.com/strait-mesh/strait/internal/tunnel"
)

// Sniffer serves HTTP/2 (the relay), HTTP/1.1 (net/http) and the classic Dubbo protocol
// on one port.
type Sniffer struct {
	relay   *relay.Server
	srv     *http.Server
	dubbo   func(net.Conn, *bufio.Reader)
	timeout time.Duration
	log     *slog.Logger
	// h1 hands HTTP/1.1 connections to srv.
	h1       *connListener
	mu       sync.Mutex
	stopped  bool
	ln       net.Listener
	sniffing map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// NewSniffer returns a sniffer that hands HTTP/2 connections to rs (to srv if rs is nil),
// HTTP/1.1 ones to srv, and Dubbo ones to dubbo (closed if it is nil); a connection must
// show which it is within timeout.
func NewSniffer(rs *relay.Server, srv *http.Server, dubbo func(net.Conn, *bufio.Reader), timeout time.Duration, log *slog.Logger) *Sniffer {
	return &Sniffer{relay: rs, srv: srv, dubbo: dubbo, timeout: timeout, log: log, h1: newConnListener(), sniffing: map[net.Conn]struct{}{}}
}

// Serve accepts connections on ln until Stop, and tells them apart by their first
// bytes: the HTTP/2 preface goes to the relay, an HTTP/1 request line to the HTTP/1.1
// server, Dubbo's magic (0xdabb) to the Dubbo handler; anything else is closed.
func (s *Sniffer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(s.h1); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Warn("http/1.1 server ended", "err", err)
		}
	}()
	timeout := s.timeout
	stopped := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.stopped
	}
	return tunnel.AcceptLoop(ln, stopped, func(c net.Conn) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.stopped {
			c.Close()
			return false
		}
		s.sniffing[c] = struct{}{}
		s.wg.Add(1)
		go s.sniff(c, timeout)
		return true
	})
}

func (s *Sniffer) sniff(c net.Conn, timeout time.Duration) {
	defer s.wg.Done()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReaderSize(c, 64<<10)
	b, err := br.Peek(3)
	s.mu.Lock()
	delete(s.sniffing, c)
	stopped := s.stopped
	s.mu.Unlock()
	if err != nil || stopped {
		c.Close()
		return
	}
	if string(b) == relay.Preface[:3] {
		if s.relay == nil {
			_ = c.SetReadDeadline(time.Time{})
			s.h1.push(&sniffedConn{Conn: c, r: br})
			return
		}
		s.relay.ServeConn(context.Background(), c, br, nil)
		return
	}
	if b[0] == 0xda && b[1] == 0xbb {
		if s.dubbo == nil {
			c.Close()
			return
		}
		s.dubbo(c, br)
		return
	}
	if !http1RequestLine(br) {
		// Neither HTTP/2 nor HTTP/1: closed without an answer (an HTTP/1.1 400 would
		// read as garbage to a client that meant HTTP/2).
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	s.h1.push(&sniffedConn{Conn: c, r: br})
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

// Stop closes the listener and the connections not yet told apart; the HTTP/1.1
// server gets no more connections.
func (s *Sniffer) Stop() {
	s.h1.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.sniffing {
		c.Close()
	}
}

// Wait waits for the connections being told apart and for the HTTP/1.1 server's
// Serve to return (after its Shutdown or Close).
func (s *Sniffer) Wait() { s.wg.Wait() }

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
