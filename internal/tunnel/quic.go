package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// ALPNQUIC names version 1 of the tunnel protocol over QUIC (HTTP/3 framing).
const ALPNQUIC = "strait-h3/1"

func quicConfig(maxStreams int64) *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:       30 * time.Second,
		KeepAlivePeriod:      10 * time.Second,
		MaxIncomingStreams:   maxStreams,
		HandshakeIdleTimeout: 5 * time.Second,
	}
}

// QUICClient dials the QUIC tunnel listeners of one peer domain: one QUIC connection per
// listener carries every call as an HTTP/3 stream, with the same identities as the HTTP/2
// tunnel.
type QUICClient struct {
	t *http3.Transport
}

// NewQUICClient returns a client that authenticates with tlsConf (identity.ClientConfig).
func NewQUICClient(tlsConf *tls.Config, o ClientOptions) *QUICClient {
	if o.DialTimeout == 0 {
		o.DialTimeout = 2 * time.Second
	}
	conf := tlsConf.Clone()
	t := &http3.Transport{
		QUICConfig:             quicConfig(1000),
		DisableCompression:     true,
		MaxResponseHeaderBytes: int(o.MaxHeaderBytes),
		Dial: func(ctx context.Context, addr string, _ *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
			defer cancel()
			c := conf.Clone()
			c.NextProtos = []string{ALPNQUIC}
			conn, err := quic.DialAddr(ctx, addr, c, qc)
			if err != nil {
				return nil, &DialError{Addr: addr, Err: err}
			}
			if p := conn.ConnectionState().TLS.NegotiatedProtocol; p != ALPNQUIC {
				_ = conn.CloseWithError(0, "wrong protocol")
				return nil, &DialError{Addr: addr, Err: fmt.Errorf("negotiated protocol %q, want %q", p, ALPNQUIC)}
			}
			return conn, nil
		},
	}
	return &QUICClient{t: t}
}

// RoundTrip sends req over the tunnel to req.URL.Host (scheme https).
func (c *QUICClient) RoundTrip(req *http.Request) (*http.Response, error) { return c.t.RoundTrip(req) }

// Close closes the client's connections.
func (c *QUICClient) Close() { _ = c.t.Close() }

var _ http.RoundTripper = (*QUICClient)(nil)

// QUICServer serves the tunnel over QUIC: TLS 1.3 with the peer's SVID verified during the
// handshake, ALPN ALPNQUIC, HTTP/3 streams to the handler (Request.TLS holds the peer).
type QUICServer struct {
	conf        *tls.Config
	srv         *http3.Server
	log         *slog.Logger
	ln          atomic.Pointer[quic.Listener]
	established atomic.Uint64
}

// NewQUICServer returns a QUIC tunnel server with tlsConf (identity.ServerConfig).
func NewQUICServer(tlsConf *tls.Config, h http.Handler, o ServerOptions) *QUICServer {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	conf := tlsConf.Clone()
	conf.NextProtos = []string{ALPNQUIC}
	streams := int64(o.MaxConcurrentStreams)
	if streams == 0 {
		streams = 1000
	}
	return &QUICServer{
		conf: conf,
		log:  o.Logger,
		srv: &http3.Server{
			Handler:        h,
			QUICConfig:     quicConfig(streams),
			MaxHeaderBytes: o.MaxHeaderBytes,
			IdleTimeout:    o.IdleTimeout,
		},
	}
}

// Serve accepts QUIC connections on pc until Shutdown or Close; it returns nil then.
func (s *QUICServer) Serve(pc net.PacketConn) error {
	ln, err := quic.Listen(pc, s.conf, s.srv.QUICConfig)
	if err != nil {
		return fmt.Errorf("tunnel: quic listen: %w", err)
	}
	s.ln.Store(ln)
	defer ln.Close()
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			if errors.Is(err, quic.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("tunnel: quic accept: %w", err)
		}
		s.established.Add(1)
		go func() {
			if err := s.srv.ServeQUICConn(conn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Debug("quic tunnel ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// Established counts the QUIC tunnel connections that completed their handshake.
func (s *QUICServer) Established() uint64 { return s.established.Load() }

// Shutdown sends GOAWAY and waits for calls in flight until ctx ends.
func (s *QUICServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if ln := s.ln.Load(); ln != nil {
		ln.Close()
	}
	return err
}

// Close stops at once.
func (s *QUICServer) Close() error {
	err := s.srv.Close()
	if ln := s.ln.Load(); ln != nil {
		ln.Close()
	}
	return err
}
