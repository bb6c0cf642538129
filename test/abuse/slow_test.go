//go:build linux

package abuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/test/wait"
)

const stallers = 4

// stalledConsumer is a consumer that opened a server-streaming call with a lot to send
// (1000 × 64 KiB), took its first DATA, and then stopped reading its socket. It grants
// the egress every window HTTP/2 allows, so only TCP holds the egress back.
type stalledConsumer struct {
	nc net.Conn
}

func stallConsumer(addr string) (*stalledConsumer, error) {
	nc, err := dialH2C(addr, smallRcvBuf)
	if err != nil {
		return nil, err
	}
	s := &stalledConsumer{nc: nc}
	if err := s.start(addr); err != nil {
		nc.Close()
		return nil, err
	}
	return s, nil
}

func (s *stalledConsumer) start(addr string) error {
	c := newH2Conn(s.nc)
	if err := c.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}); err != nil {
		return err
	}
	if err := c.w.WriteWindowUpdate(0, 1<<31-1-65535); err != nil {
		return err
	}
	req := &testpb.StreamingOutputCallRequest{}
	for range 1000 {
		req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{Size: 64 << 10})
	}
	h := newHenc()
	if err := c.w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true,
		BlockFragment: h.block(grpcRequest("http", addr, "/"+demo.GRPCService+"/StreamingOutputCall"))}); err != nil {
		return err
	}
	if err := c.w.WriteData(1, true, grpcMessage(req)); err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	// Mid-stream: read up to the first DATA of the response, then never again.
	_ = s.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer s.nc.SetReadDeadline(time.Time{})
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			return fmt.Errorf("waiting for the first DATA: %w", err)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			if f.StreamID == 1 && len(f.Data()) > 0 {
				return nil
			}
		case *http2.RSTStreamFrame:
			return fmt.Errorf("stream reset: %v", f.ErrCode)
		case *http2.GoAwayFrame:
			return fmt.Errorf("GOAWAY %v", f.ErrCode)
		}
	}
}

// TestSlowConsumer: four consumers open server-streaming calls through one egress and
// stop reading their sockets mid-stream; meanwhile a well-behaved consumer makes 200
// calls/s on its own connection to the same egress. None of its calls may fail and its
// p99 stays within 2× of the run without the stalled consumers (with p99Floor). Once the
// stalled consumers leave, the egress serves new consumers and the process is back to
// its footprint.
func TestSlowConsumer(t *testing.T) {
	addr := topo.Egress[0]
	base := baseline(t, addr)
	before := settledStats()

	l := newLegit(t, addr)
	var stalled []*stalledConsumer
	defer func() {
		for _, s := range stalled {
			s.nc.Close()
		}
	}()
	for i := range stallers {
		s, err := stallConsumer(addr)
		if err != nil {
			l.close()
			t.Fatalf("stalled consumer %d: %v", i, err)
		}
		stalled = append(stalled, s)
	}
	got := l.run(legitDuration)
	l.close()
	var pending []int
	for _, s := range stalled {
		pending = append(pending, inq(s.nc))
	}
	t.Logf("bytes left unread in the stalled consumers' sockets after the run: %v", pending)
	for _, s := range stalled {
		s.nc.Close()
	}
	stalled = nil
	checkLoad(t, fmt.Sprintf("%d stalled consumers", stallers), base, got)
	recovers(t, addr)
	waitSettled(t, "after the stalled consumers left", before)
}

// slowService is the slow provider's service, exported by beta and routed by alpha for
// TestSlowProvider only.
const slowService = "strait.abuse.v1.SlowService"

// slowProvider is a provider (h2c) that grants every window HTTP/2 allows, reads a
// call's headers and its first DATA, and then never reads its socket again.
type slowProvider struct {
	ln      net.Listener
	stalled atomic.Int32 // connections that stopped reading
	stallCh chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	conns   []net.Conn
	wg      sync.WaitGroup
	closed  sync.Once
}

func startSlowProvider(t *testing.T) *slowProvider {
	t.Helper()
	lc := net.ListenConfig{Control: setRcvBuf(smallRcvBuf)} // accepted sockets inherit it
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProvider{ln: ln, stallCh: make(chan struct{}, 64), done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.wg.Add(1)
			go p.serve(c)
		}
	}()
	return p
}

func (p *slowProvider) serve(nc net.Conn) {
	defer p.wg.Done()
	c := newH2Conn(nc)
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.br, pre); err != nil || string(pre) != http2.ClientPreface {
		return
	}
	_ = c.w.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1000})
	_ = c.w.WriteWindowUpdate(0, 1<<31-1-65535)
	if c.bw.Flush() != nil {
		return
	}
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = c.w.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = c.w.WritePing(true, f.Data)
			}
		case *http2.DataFrame:
			if len(f.Data()) > 0 {
				p.stalled.Add(1)
				select {
				case p.stallCh <- struct{}{}:
				default:
				}
				<-p.done // never read again
				return
			}
		}
		if c.bw.Flush() != nil {
			return
		}
	}
}

func (p *slowProvider) close() {
	p.closed.Do(func() {
		close(p.done)
		p.ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}

// withRoutes applies changed copies of both domains' configurations through their
// controlplanes for the test's duration, and restores them after.
func withRoutes(t *testing.T, alpha func(*config.Domain), beta func(*config.Domain)) {
	t.Helper()
	restore, err := topo.ChangeDomains(context.Background(), alpha, beta)
	t.Cleanup(func() {
		if err := restore(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitEndpoints waits until every ingress knows a provider of svc.
func waitEndpoints(t *testing.T, svc string) {
	t.Helper()
	wait.For(t, 30*time.Second, svc+" on every ingress", func() bool {
		known := 0
		for _, g := range topo.Gateways {
			if ig := g.Ingress(); ig != nil && len(ig.Endpoints(mesh.ServiceKey{Name: svc}, mesh.ProtocolGRPC)) > 0 {
				known++
			}
		}
		return known == len(topo.Ingress)
	})
}

// uploader is a consumer of the slow provider: a client-streaming call on a connection
// of its own that sends 64 KiB messages as fast as flow control lets it (at most 64 MiB).
type uploader struct {
	cc     *grpc.ClientConn
	cancel context.CancelFunc
	sent   atomic.Int64
	err    error
	done   chan struct{}
}

func startUploader(t *testing.T, addr string) *uploader {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	u := &uploader{cc: cc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		st, err := cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "Sink", ClientStreams: true}, "/"+slowService+"/Sink")
		if err != nil {
			u.err = err
			return
		}
		msg := &testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 64<<10)}}
		for range 1024 {
			if err := st.SendMsg(msg); err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					u.err = err
				}
				return
			}
			u.sent.Add(64 << 10)
		}
	}()
	return u
}

func (u *uploader) stop() {
	u.cancel()
	<-u.done
	u.cc.Close()
}

// TestSlowProvider: a provider in beta stops reading its request streams mid-call while
// four consumers keep sending to it through one egress; meanwhile a well-behaved consumer
// makes 200 calls/s to another service (the interop TestService) through the same egress,
// so over the same tunnel connections. Same assertions as TestSlowConsumer.
func TestSlowProvider(t *testing.T) {
	addr := topo.Egress[0]
	base := baseline(t, addr)

	p := startSlowProvider(t)
	defer p.close()
	inst := mesh.Instance{Service: mesh.ServiceKey{Name: slowService}, Protocol: mesh.ProtocolGRPC, Address: p.ln.Addr().String()}
	ctx := context.Background()
	if err := topo.BetaRegistry.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.BetaRegistry.Deregister(ctx, inst) })
	withRoutes(t,
		func(a *config.Domain) {
			a.Routes = append(a.Routes, config.Route{Service: slowService, Protocol: mesh.ProtocolGRPC, Peer: "beta"})
		},
		func(b *config.Domain) {
			b.Exports = append(b.Exports, config.Export{Service: slowService, Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}})
		})
	waitEndpoints(t, slowService)
	before := settledStats()

	l := newLegit(t, addr)
	var ups []*uploader
	defer func() {
		for _, u := range ups {
			u.stop()
		}
	}()
	for range stallers {
		ups = append(ups, startUploader(t, addr))
	}
	// Stalled: the provider stopped reading, and the uploaders' progress stopped (flow
	// control and full sockets hold them) or they sent 64 MiB between them.
	sent := func() int64 {
		var n int64
		for _, u := range ups {
			n += u.sent.Load()
		}
		return n
	}
	select {
	case <-p.stallCh:
	case <-time.After(30 * time.Second): // a bound against a hang
		l.close()
		t.Fatal("the slow provider never got a call's DATA")
	}
	// A stall announces nothing: it is the uploaders' progress standing still (300 ms
	// without a byte), or 64 MiB sent. Past the bound the measurement runs all the same.
	last, quiet := sent(), time.Now()
	took, _ := wait.Until(context.Background(), 30*time.Second, func() error {
		if n := sent(); n != last {
			last, quiet = n, time.Now()
		}
		if time.Since(quiet) < 300*time.Millisecond && last < 64<<20 {
			return fmt.Errorf("%.1f MiB sent, still moving", mib(last))
		}
		return nil
	})
	t.Logf("stalled: the provider stopped reading on %d connection(s); the uploaders sent %.1f MiB before their progress stopped (%v)",
		p.stalled.Load(), mib(last), took.Round(time.Millisecond))

	got := l.run(legitDuration)
	l.close()
	t.Logf("the uploaders sent %.1f MiB in all; the provider stopped reading on %d connection(s)", mib(sent()), p.stalled.Load())
	for _, u := range ups {
		u.stop()
		if u.err != nil {
			t.Logf("an uploader's stream ended: %v", u.err)
		}
	}
	ups = nil
	p.close()
	checkLoad(t, fmt.Sprintf("a provider that stopped reading %d streams", stallers), base, got)
	recovers(t, addr)
	waitSettled(t, "after the slow provider's calls ended", before)
}
