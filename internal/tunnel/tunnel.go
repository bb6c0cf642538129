// Package tunnel carries calls between the egress of one domain and the ingress of another:
// HTTP/2 over TLS 1.3 with mutual SPIFFE authentication and the ALPN value ALPN. One TLS
// connection per egress→ingress pair carries all concurrent calls as HTTP/2 streams.
package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// ALPN names version 1 of the tunnel protocol. A peer that does not offer it is refused.
const ALPN = "strait/1"

// ClientOptions tune a Client.
type ClientOptions struct {
	DialTimeout    time.Duration
	MaxHeaderBytes uint32
	// PingInterval is how long a connection may be silent before it is health-checked
	// with a PING; PingTimeout how long the PING may take before the connection is closed.
	PingInterval time.Duration
	PingTimeout  time.Duration
}

// Client dials the tunnel listeners of one peer domain. It keeps one multiplexed
// connection per listener address and is safe for concurrent use.
type Client struct {
	t *http2.Transport
}

// NewClient returns a client that authenticates with tlsConf (see identity.ClientConfig).
func NewClient(tlsConf *tls.Config, o ClientOptions) *Client {
	if o.DialTimeout == 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.PingInterval == 0 {
		o.PingInterval = 15 * time.Second
	}
	if o.PingTimeout == 0 {
		o.PingTimeout = 5 * time.Second
	}
	conf := tlsConf.Clone()
	conf.NextProtos = []string{ALPN}
	t := &http2.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, network, addr, conf, o.DialTimeout)
		},
		MaxHeaderListSize:          o.MaxHeaderBytes,
		ReadIdleTimeout:            o.PingInterval,
		PingTimeout:                o.PingTimeout,
		StrictMaxConcurrentStreams: false,
		// Payloads pass through untouched; never ask the peer to compress.
		DisableCompression: true,
	}
	return &Client{t: t}
}

// DialTLS opens one tunnel connection to addr: TCP, the TLS handshake with conf (its
// NextProtos replaced by ALPN) and the ALPN check. Other protocols that ride the tunnel
// port (the Federation API's gRPC client) use it as their dialer.
func DialTLS(ctx context.Context, addr string, conf *tls.Config, timeout time.Duration) (net.Conn, error) {
	return DialTLSProto(ctx, addr, conf, timeout, ALPN)
}

// ALPNDubbo names the Dubbo tunnel: the same mutual TLS as the HTTP/2 tunnel, carrying
// classic Dubbo frames as they are (the ingress reads them as a Dubbo server does).
const ALPNDubbo = "strait-dubbo/1"

// DialTLSProto is DialTLS for the tunnel protocol alpn (ALPN or ALPNDubbo).
func DialTLSProto(ctx context.Context, addr string, conf *tls.Config, timeout time.Duration, alpn string) (net.Conn, error) {
	c := conf.Clone()
	c.NextProtos = []string{alpn}
	return dial(ctx, "tcp", addr, c, timeout)
}

func dial(ctx context.Context, network, addr string, conf *tls.Config, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Err: err}
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, &DialError{Addr: addr, Err: fmt.Errorf("handshake: %w", err)}
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != conf.NextProtos[0] {
		tc.Close()
		return nil, &DialError{Addr: addr, Err: fmt.Errorf("negotiated protocol %q, want %q", p, conf.NextProtos[0])}
	}
	return tc, nil
}

// DialError is a failure to open a connection: the call it was for was never sent, so it
// may be retried on another instance.
type DialError struct {
	Addr string
	Err  error
}

func (e *DialError) Error() string { return "dial " + e.Addr + ": " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Dialer opens plain TCP connections as a DialError on failure; providers use it.
func Dialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &DialError{Addr: addr, Err: err}
		}
		return c, nil
	}
}

// RoundTrip sends req over the tunnel to req.URL.Host. The URL's scheme must be https.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.t.RoundTrip(req)
}

// Close closes idle connections. Connections with calls in flight close when those end.
func (c *Client) Close() { c.t.CloseIdleConnections() }

var _ http.RoundTripper = (*Client)(nil)

// ServerOptions tune a Server.
type ServerOptions struct {
	HandshakeTimeout     time.Duration
	IdleTimeout          time.Duration
	MaxHeaderBytes       int
	MaxConcurrentStreams uint32
	Logger               *slog.Logger
	// Relay, if set, serves the connections for which RelayFor says so (its value is
	// passed to Relay with the connection); the others are served by net/http's HTTP/2.
	Relay    ConnServer
	RelayFor func(*tls.ConnectionState) (info any, ok bool)
	// Dubbo, if set, serves the connections that negotiate ALPNDubbo (the peer is
	// authenticated, as for ALPN); it returns when the connection is done with.
	Dubbo func(nc net.Conn, cs *tls.ConnectionState)
}

// ConnServer serves whole HTTP/2 connections (the relay).
type ConnServer interface {
	ServeConn(ctx context.Context, nc net.Conn, br *bufio.Reader, info any)
	Shutdown(ctx context.Context) error
	Close()
}

// Server serves tunnel connections: it completes the TLS handshake (with a deadline),
// insists on ALPN, and serves HTTP/2 streams to the handler. The peer's connection state
// is available to the handler as Request.TLS.
type Server struct {
	conf    *tls.Config
	handler http.Handler
	o       ServerOptions
	log     *slog.Logger
	h1      *http.Server // carries the graceful-shutdown hook of h2
	h2      *http2.Server

	established atomic.Uint64

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewServer returns a server using tlsConf (see identity.ServerConfig).
func NewServer(tlsConf *tls.Config, h http.Handler, o ServerOptions) *Server {
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	conf := tlsConf.Clone()
	conf.NextProtos = []string{ALPN}
	if o.Dubbo != nil {
		conf.NextProtos = append(conf.NextProtos, ALPNDubbo)
	}
	s := &Server{
		conf:    conf,
		handler: h,
		o:       o,
		log:     o.Logger,
		h1:      &http.Server{MaxHeaderBytes: o.MaxHeaderBytes},
		h2: &http2.Server{
			MaxConcurrentStreams: o.MaxConcurrentStreams,
			IdleTimeout:          o.IdleTimeout,
			MaxReadFrameSize:     16 << 10, // the protocol's initial value, as the relay (RFC 9113 §4.2)
		},
		conns: map[net.Conn]struct{}{},
	}
	if err := http2.ConfigureServer(s.h1, s.h2); err != nil {
		// ConfigureServer fails only on a TLS config that requires old ciphers; ours does not.
		s.log.Error("tunnel: configure http2", "err", err)
	}
	return s
}

// Serve accepts connections on ln until Close or Shutdown. It returns nil after those.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("tunnel: server closed")
	}
	s.ln = ln
	s.mu.Unlock()
	stopped := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed
	}
	err := AcceptLoop(ln, stopped, func(c net.Conn) bool {
		if !s.track(c, true) {
			c.Close()
			return false
		}
		s.wg.Add(1)
		go s.serveConn(c)
		return true
	})
	if err != nil {
		return fmt.Errorf("tunnel: %w", err)
	}
	return nil
}

// AcceptLoop accepts connections on ln and gives each to handle, until handle returns
// false or Accept fails. A timeout is retried with backoff (up to a second). After
// another error it returns nil if stopped reports that the owner closed ln, else the
// error.
func AcceptLoop(ln net.Listener, stopped func() bool, handle func(net.Conn) bool) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if stopped() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		delay = 0
		if !handle(c) {
			return nil
		}
	}
}

func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

func (s *Server) serveConn(raw net.Conn) {
	defer s.wg.Done()
	defer s.track(raw, false)
	defer raw.Close()
	tc := tls.Server(raw, s.conf)
	ctx, cancel := context.WithTimeout(context.Background(), s.o.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.log.Warn("tunnel handshake refused", "remote", raw.RemoteAddr().String(), "err", err)
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol == ALPNDubbo && s.o.Dubbo != nil {
		s.established.Add(1)
		s.o.Dubbo(tc, &cs)
		return
	}
	if p := cs.NegotiatedProtocol; p != ALPN {
		s.log.Warn("tunnel handshake refused", "remote", raw.RemoteAddr().String(), "err", fmt.Sprintf("protocol %q is not %q", p, ALPN))
		return
	}
	s.established.Add(1)
	// The connection's TLS state travels in the requests' context: Request.TLS is not set
	// for every client on connections served with ServeConn.
	ctx = context.WithValue(context.Background(), connStateKey{}, &cs)
	if s.o.Relay != nil && s.o.RelayFor != nil {
		if info, ok := s.o.RelayFor(&cs); ok {
			s.o.Relay.ServeConn(ctx, tc, nil, info)
			return
		}
	}
	s.h2.ServeConn(tc, &http2.ServeConnOpts{Context: ctx, BaseConfig: s.h1, Handler: s.handler})
}

type connStateKey struct{}

// ConnectionState returns the TLS state of the tunnel connection r arrived on.
func ConnectionState(r *http.Request) *tls.ConnectionState {
	if cs, ok := r.Context().Value(connStateKey{}).(*tls.ConnectionState); ok {
		return cs
	}
	return r.TLS
}

// Established counts the tunnel connections that completed their handshake since start.
func (s *Server) Established() uint64 { return s.established.Load() }

// Shutdown stops accepting, sends GOAWAY on every connection and waits for their calls to
// end, or for ctx; then it closes whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopAccepting()
	var rerr chan error
	if s.o.Relay != nil {
		rerr = make(chan error, 1)
		go func() { rerr <- s.o.Relay.Shutdown(ctx) }()
	}
	_ = s.h1.Shutdown(ctx) // runs the GOAWAY hook; it has no listeners of its own
	if rerr != nil {
		<-rerr
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.closeConns()
		<-done
		return ctx.Err()
	}
}

// Close stops at once: listener and connections are closed, calls in flight fail.
func (s *Server) Close() error {
	s.stopAccepting()
	if s.o.Relay != nil {
		s.o.Relay.Close()
	}
	s.closeConns()
	s.wg.Wait()
	return nil
}

func (s *Server) stopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}
