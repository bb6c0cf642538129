package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/samples"
	"github.com/strait-mesh/strait/test/interopcases"
	"github.com/strait-mesh/strait/test/ports"
	"github.com/strait-mesh/strait/test/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type routerFunc func(*Request) Decision

func (f routerFunc) Route(r *Request) Decision { return f(r) }

// rig is a relay between a real grpc-go client and grpc-go's interop server: h2c on both
// sides. Paths under /fallback/ and non-gRPC requests go to the fallback handler.
type rig struct {
	srv  *Server
	pool *Pool
	ln   net.Listener
	addr string
	set  *balance.Set
	wg   sync.WaitGroup
	// moved maps a next-hop address to the one it is dialed at now (a next hop that
	// restarted on a port of its own).
	moved sync.Map
}

func newRig(t *testing.T, next string, fallback http.Handler, mod ...func(*Options)) *rig {
	t.Helper()
	r := &rig{set: balance.NewSet([]string{next})}
	r.pool = NewPool(PoolOptions{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		if to, ok := r.moved.Load(addr); ok {
			addr = to.(string)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, DialTimeout: time.Second})
	router := routerFunc(func(q *Request) Decision {
		if !strings.HasPrefix(q.ContentType, "application/grpc") || strings.HasPrefix(q.Path, "/fallback/") {
			return Decision{}
		}
		d := Decision{Pool: r.pool, Set: r.set, Protocol: "grpc", Peer: "test", NAdd: 1}
		d.Add[0].Name, d.Add[0].Value = "x-relayed", "yes"
		return d
	})
	o := Options{Router: router, Fallback: fallback, MaxHeaderBytes: 16 << 10, DropPrefix: "strait-"}
	for _, f := range mod {
		f(&o)
	}
	r.srv = NewServer(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.ln, r.addr = ln, ln.Addr().String()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.srv.ServeConn(context.Background(), c, nil, nil)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		r.wg.Wait()
		r.pool.Close()
		r.pool.Wait()
	})
	return r
}

func provider(t *testing.T) string {
	t.Helper()
	p, err := samples.StartGRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p.Addr()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20), grpc.MaxCallSendMsgSize(32<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestInteropThroughRelay(t *testing.T) {
	r := newRig(t, provider(t), nil)
	cc := dial(t, r.addr)
	for _, c := range interopcases.Cases(cc) {
		t.Run(c.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c.Run(ctx)
		})
	}
	if n, fb := r.srv.Stats(); n == 0 || fb != 0 {
		t.Fatalf("relayed %d, fallback %d", n, fb)
	}
}

// Messages far over every window: the relay queues and drains by flow control.
func TestLargeMessages(t *testing.T) {
	r := newRig(t, provider(t), nil)
	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := bytes.Repeat([]byte{0xcd}, 8<<20)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 8 << 20, Payload: &testpb.Payload{Body: body}})
			if err == nil && len(resp.GetPayload().GetBody()) != 8<<20 {
				err = io.ErrShortBuffer
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestManyStreams(t *testing.T) {
	r := newRig(t, provider(t), nil)
	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- samples.PingPong(ctx, tc, 3)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, r)
}

func waitIdle(t *testing.T, r *rig) {
	t.Helper()
	wait.ForNil(t, 30*time.Second, "no stream active", func() error {
		if n := r.srv.Active(); n != 0 {
			return fmt.Errorf("%d streams still active", n)
		}
		return nil
	})
}

// The relay adds its fields and drops the caller's strait-* fields.
func TestHeaders(t *testing.T) {
	r := newRig(t, provider(t), nil)
	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-user", "u1", "strait-forged", "no")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The interop server echoes x-grpc-test-echo-initial; it cannot echo arbitrary
	// headers, so check the call works and the forged field did not break it.
	var hdr metadata.MD
	if _, err := tc.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-grpc-test-echo-initial", "v"), &testpb.SimpleRequest{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get("x-grpc-test-echo-initial"); len(got) != 1 || got[0] != "v" {
		t.Fatalf("echoed header: %v", got)
	}
}

func TestUnreachableNextHop(t *testing.T) {
	// A port held for this test and released: nobody listens there.
	dead := ports.Reserve(t, 1)[0]
	dead.Release()
	r := newRig(t, dead.Addr(), nil)
	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := tc.EmptyCall(ctx, &testpb.Empty{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "strait:") {
		t.Fatalf("got %v, want UNAVAILABLE from strait", err)
	}
	t.Logf("%v after %v", err, time.Since(start))
	waitIdle(t, r)
}

// The next hop dies while calls are open: they end with UNAVAILABLE, and the relay keeps
// serving once the next hop is back.
func TestNextHopLost(t *testing.T) {
	p, err := samples.StartGRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := p.Addr()
	r := newRig(t, addr, nil)
	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 8}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(context.Background())
	kcancel()
	_ = p.Close(kctx) // not graceful
	_, err = s.Recv()
	if c := status.Code(err); c != codes.Unavailable && c != codes.Canceled {
		t.Fatalf("open stream after the next hop died: %v", err)
	}
	// The next hop comes back (on a port of its own: the relay dials it for the old
	// address, as it would a restarted provider).
	p2, err := samples.StartGRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close(context.Background())
	r.moved.Store(addr, p2.Addr())
	wait.ForNil(t, 30*time.Second, "a call after the next hop came back", func() error {
		_, err := tc.EmptyCall(ctx, &testpb.Empty{})
		return err
	})
	waitIdle(t, r)
}

func TestCancelReachesNextHop(t *testing.T) {
	r := newRig(t, provider(t), nil)
	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := tc.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 8}}})
		_, _ = s.Recv()
		cancel()
	}
	waitIdle(t, r)
	// Every next-hop stream was reset too: the pool's connection has no stream left.
	wait.ForNil(t, 30*time.Second, "no next-hop stream left", func() error {
		n := int32(0)
		for _, ep := range *r.pool.eps.Load() {
			for _, c := range *ep.conns.Load() {
				n += c.active.Load()
			}
		}
		if n != 0 {
			return fmt.Errorf("%d next-hop streams left", n)
		}
		return nil
	})
}

// Streams the router does not take are served by the fallback handler, bodies and
// trailers included.
func TestFallback(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("X-Path", r.URL.Path)
		w.WriteHeader(201)
		_, _ = w.Write(b)
		w.Header().Set(http.TrailerPrefix+"X-Sum", "done")
	})
	r := newRig(t, provider(t), h)
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	body := bytes.Repeat([]byte("x"), 1<<20)
	resp, err := (&http.Client{Transport: tr}).Post("http://"+r.addr+"/fallback/a?b=c", "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 201 || !bytes.Equal(got, body) || resp.Header.Get("X-Path") != "/fallback/a" || resp.Trailer.Get("X-Sum") != "done" {
		t.Fatalf("status %d, %d bytes, path %q, trailer %q", resp.StatusCode, len(got), resp.Header.Get("X-Path"), resp.Trailer.Get("X-Sum"))
	}
	if _, fb := r.srv.Stats(); fb != 1 {
		t.Fatalf("fallback streams: %d", fb)
	}
	waitIdle(t, r)
}

// A header block over the limit is refused; the connection keeps serving.
func TestHeaderLimit(t *testing.T) {
	r := newRig(t, provider(t), nil)
	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	big := metadata.AppendToOutgoingContext(ctx, "x-big", strings.Repeat("a", 20<<10))
	if _, err := tc.EmptyCall(big, &testpb.Empty{}); err == nil {
		t.Fatal("a 20 KiB header went through a 16 KiB limit")
	}
	if _, err := tc.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatalf("after an oversized header: %v", err)
	}
}

// Garbage instead of a preface closes that connection only.
func TestGarbage(t *testing.T) {
	r := newRig(t, provider(t), nil)
	for _, junk := range []string{"GET / HTTP/1.1\r\n\r\n", Preface + "\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x01" + strings.Repeat("\xff", 64)} {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(junk))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := tc.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
}

// Shutdown lets an open stream finish; the caller is told to go away.
func TestShutdownDrains(t *testing.T) {
	r := newRig(t, provider(t), nil)
	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 8}}}
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.srv.Shutdown(ctx) }()
	// The caller answered the PING that follows the GOAWAY: it has the GOAWAY, and a
	// Shutdown that did not wait for the open stream would be over.
	wait.For(t, 30*time.Second, "the caller to answer the GOAWAY's PING", func() bool {
		r.srv.mu.Lock()
		defer r.srv.mu.Unlock()
		for c := range r.srv.conns {
			if !c.goawayAcked.Load() {
				return false
			}
		}
		return len(r.srv.conns) > 0
	})
	select {
	case err := <-done:
		t.Fatalf("shutdown returned with a stream open: %v", err)
	default:
	}
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatalf("open stream during shutdown: %v", err)
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A connection without streams closes after the idle timeout, with GOAWAY first.
func TestIdleTimeout(t *testing.T) {
	r := newRig(t, provider(t), nil, func(o *Options) { o.IdleTimeout = 100 * time.Millisecond })
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(Preface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(io.Discard, c)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a bound against a hang
	start := time.Now()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before the close: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeNo {
				t.Fatalf("GOAWAY %v", g.ErrCode)
			}
			break
		}
	}
	t.Logf("idle connection (timeout 100ms) told to go away after %v", time.Since(start).Round(time.Millisecond))
}
