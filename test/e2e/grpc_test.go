package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/test/interopcases"
)

func dialEgress(t *testing.T, i int) *grpc.ClientConn {
	t.Helper()
	return dialAddr(t, topo.Egress[i%len(topo.Egress)])
}

func dialAddr(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20), grpc.MaxCallSendMsgSize(32<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// relayed counts the streams the gateways' relays took on the fast path: alpha's
// egress instances, and beta's ingress instances.
func relayed() (egress, ingress uint64) {
	for _, g := range topo.Gateways {
		if eg := g.Egress(); eg != nil {
			r, _ := eg.RelayStats()
			egress += r
		}
		if ig := g.Ingress(); ig != nil {
			r, _ := ig.RelayStats()
			ingress += r
		}
	}
	return egress, ingress
}

// TestInterop runs grpc-go's interop client cases through egress → tunnel → ingress, on
// the relay (the fast path).
func TestInterop(t *testing.T) {
	e0, i0 := relayed()
	defer func() {
		e1, i1 := relayed()
		if os.Getenv("STRAIT_E2E_DATAPATH") == "http" {
			if e1 != e0 || i1 != i0 {
				t.Errorf("the relay took calls on the general path")
			}
			return
		}
		for _, g := range topo.Gateways {
			resp, err := http.Get("http://" + g.AdminAddr() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(b), `strait_streams_total{path="relay"}`) {
				t.Errorf("%s /metrics lacks strait_streams_total", g.Name())
			}
		}
		if e1 == e0 || i1 == i0 {
			t.Errorf("interop calls relayed: %d by egress, %d by ingress; want both > 0", e1-e0, i1-i0)
		} else {
			t.Logf("streams relayed: %d by egress, %d by ingress", e1-e0, i1-i0)
		}
	}()
	for i := range topo.Egress {
		cc := dialEgress(t, i)
		cases := interopcases.Cases(cc)
		for _, c := range cases {
			t.Run(fmt.Sprintf("egress%d/%s", i+1, c.Name), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c.Run(ctx) // the interop cases end the process on failure
			})
		}
	}
}

// TestLargeMessages sends and receives 8 MiB messages.
func TestLargeMessages(t *testing.T) {
	tc := testgrpc.NewTestServiceClient(dialEgress(t, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const size = 8 << 20
	body := bytes.Repeat([]byte{0xab}, size)
	resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{
		ResponseType: testpb.PayloadType_COMPRESSABLE,
		ResponseSize: size,
		Payload:      &testpb.Payload{Body: body},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetPayload().GetBody()); got != size {
		t.Fatalf("response payload is %d bytes, want %d", got, size)
	}
}

// TestConcurrentStreams keeps hundreds of streams open at once on one client connection.
func TestConcurrentStreams(t *testing.T) {
	tc := testgrpc.NewTestServiceClient(dialEgress(t, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tunnels := func() (n uint64) {
		for _, g := range topo.Gateways {
			if ig := g.Ingress(); ig != nil {
				n += ig.TunnelsEstablished()
			}
		}
		return n
	}
	before := tunnels()
	const n = 300
	streams := make([]testgrpc.TestService_FullDuplexCallClient, n)
	for i := range streams {
		s, err := tc.FullDuplexCall(ctx)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		streams[i] = s
	}
	// Every stream is open; now each does one round trip and closes.
	errs := make(chan error, n)
	for _, s := range streams {
		go func(s testgrpc.TestService_FullDuplexCallClient) {
			if err := s.Send(&testpb.StreamingOutputCallRequest{
				ResponseParameters: []*testpb.ResponseParameters{{Size: 100}},
				Payload:            &testpb.Payload{Body: make([]byte, 100)},
			}); err != nil {
				errs <- err
				return
			}
			if _, err := s.Recv(); err != nil {
				errs <- err
				return
			}
			if err := s.CloseSend(); err != nil {
				errs <- err
				return
			}
			_, err := s.Recv()
			if status.Code(err) != codes.OK && err.Error() != "EOF" {
				errs <- err
				return
			}
			errs <- nil
		}(s)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// One connection per egress→ingress pair carries all of them: at most one new
	// connection to each ingress instance, however many streams.
	if opened := tunnels() - before; opened > uint64(len(topo.Ingress)) {
		t.Fatalf("%d streams opened %d tunnel connections", n, opened)
	}
}
