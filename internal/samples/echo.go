// Package samples holds the sample providers that `strait demo` runs in its provider domain
// and that the end-to-end tests call through the gateways: a gRPC provider of the standard
// interop service grpc.testing.TestService, a Dubbo Triple provider built with dubbo-go,
// and a plain HTTP/1.1 echo provider.
package samples

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"google.golang.org/grpc/interop"
)

// EchoProvider is an HTTP/1.1 server that answers every request with the request body,
// unchanged, and the request headers as response headers.
type EchoProvider struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// StartEcho starts an echo provider on addr ("127.0.0.1:0" picks a port).
func StartEcho(addr string) (*EchoProvider, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	e := &EchoProvider{ln: ln, done: make(chan struct{})}
	e.srv = &http.Server{Handler: http.HandlerFunc(echo), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(e.done)
		_ = e.srv.Serve(ln)
	}()
	return e, nil
}

func echo(w http.ResponseWriter, r *http.Request) {
	_ = http.NewResponseController(w).EnableFullDuplex()
	h := w.Header()
	for k, vv := range r.Header {
		switch k {
		case "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
			continue
		}
		h[k] = vv
	}
	if r.ContentLength >= 0 {
		h.Set("Content-Length", itoa(r.ContentLength))
	}
	h.Set("X-Echo-Method", r.Method)
	h.Set("X-Echo-Path", r.URL.RequestURI())
	h.Set("X-Echo-Host", r.Host)
	_, _ = io.Copy(w, r.Body)
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// Addr is the host:port the provider listens on.
func (e *EchoProvider) Addr() string { return e.ln.Addr().String() }

// Close stops the provider, waiting for calls in flight until ctx ends.
func (e *EchoProvider) Close(ctx context.Context) error {
	err := e.srv.Shutdown(ctx)
	if err != nil {
		e.srv.Close()
	}
	<-e.done
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// GRPCProvider serves grpc.testing.TestService with grpc-go's interop implementation.
type GRPCProvider struct {
	srv  *grpc.Server
	ln   net.Listener
	done chan struct{}
}

// MaxMessageBytes is the largest message the sample providers accept and send.
const MaxMessageBytes = 16 << 20

// StartGRPC starts the interop TestService on addr.
func StartGRPC(addr string) (*GRPCProvider, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes))
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	p := &GRPCProvider{srv: s, ln: ln, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		_ = s.Serve(ln)
	}()
	return p, nil
}

// Addr is the host:port the provider listens on.
func (p *GRPCProvider) Addr() string { return p.ln.Addr().String() }

// Close stops the provider gracefully, or at once when ctx ends.
func (p *GRPCProvider) Close(ctx context.Context) error {
	stopped := make(chan struct{})
	go func() { p.srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		p.srv.Stop()
		<-stopped
	}
	<-p.done
	return nil
}

// PingPong makes one bidi-streaming call of the interop TestService: rounds messages each
// way, then a clean end of stream.
func PingPong(ctx context.Context, tc testgrpc.TestServiceClient, rounds int) error {
	s, err := tc.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	for range rounds {
		if err := s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 64}}}); err != nil {
			return err
		}
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("stream end: %v", err)
	}
	return nil
}
