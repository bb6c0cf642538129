package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"

	"github.com/strait-mesh/strait/internal/tunnel"
)

// NewH2CTransport returns a transport to gRPC and Triple providers: HTTP/2 without TLS
// (prior knowledge), one multiplexed connection per provider, dead connections detected
// by PING.
func NewH2CTransport(dialTimeout time.Duration, maxHeaderBytes uint32) *http2.Transport {
	dial := tunnel.Dialer(dialTimeout)
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, network, addr)
		},
		MaxHeaderListSize:  maxHeaderBytes,
		ReadIdleTimeout:    15 * time.Second,
		PingTimeout:        5 * time.Second,
		DisableCompression: true,
	}
}

// NewHTTP1Transport returns a transport to plain HTTP/1.1 providers with kept-alive
// connections.
func NewHTTP1Transport(dialTimeout time.Duration, maxHeaderBytes int64) *http.Transport {
	return &http.Transport{
		DialContext:            tunnel.Dialer(dialTimeout),
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: maxHeaderBytes,
		DisableCompression:     true,
		ForceAttemptHTTP2:      false,
	}
}

// NotSent reports whether err means the request never left: the connection could not be
// opened, so the call may be retried elsewhere.
func NotSent(err error) bool {
	var de *tunnel.DialError
	return errors.As(err, &de)
}
