package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/launch/demo"
	"github.com/strait-mesh/strait/test/wait"
)

// TestRateLimitAtIngress: beta limits alpha's EmptyCall of the gRPC sample to 10 calls a
// second, shared by its two ingress instances. 60 calls in a row through alpha's egress:
// those beyond the limit fail with RESOURCE_EXHAUSTED naming it, the admitted ones are no
// more than the buckets allow for the time the calls took, UnaryCall (another method)
// is not limited, and the refusals are counted in strait_ratelimited_total.
func TestRateLimitAtIngress(t *testing.T) {
	setDomains(t, topo, nil, func(b *config.Domain) {
		b.Governance.RateLimits = append(b.Governance.RateLimits, config.RateLimit{
			Name: "alpha-empty", Match: config.Match{Peer: "alpha", Service: demo.GRPCService, Method: "EmptyCall"},
			Rate: 10, Burst: 4,
		})
	})
	tc := testgrpc.NewTestServiceClient(dialEgress(t, 0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The policy reaches both ingress instances: wait for a first refusal.
	wait.ForNil(t, 10*time.Second, "a refusal by alpha-empty", func() error {
		for range 20 {
			if _, err := tc.EmptyCall(ctx, &testgrpc.Empty{}); status.Code(err) == codes.ResourceExhausted {
				return nil
			}
		}
		return status.Error(codes.OK, "20 calls admitted")
	})

	start := time.Now()
	admitted, refused := 0, 0
	for range 60 {
		_, err := tc.EmptyCall(ctx, &testgrpc.Empty{})
		switch status.Code(err) {
		case codes.OK:
			admitted++
		case codes.ResourceExhausted:
			refused++
			if !strings.Contains(status.Convert(err).Message(), `rate limit "alpha-empty"`) {
				t.Fatalf("refusal does not name the limit: %v", err)
			}
		default:
			t.Fatalf("call failed: %v", err)
		}
	}
	took := time.Since(start)
	// Each instance holds at most its burst and earns 10/s, shared or not (two instances
	// without gossip would each admit 10/s: the bound allows for that).
	bound := 2*4 + int(2*10*took.Seconds()) + 1
	t.Logf("60 calls in %v: %d admitted, %d refused (bound %d)", took.Round(time.Millisecond), admitted, refused, bound)
	if refused == 0 || admitted > bound {
		t.Fatalf("%d admitted, %d refused in %v: want refusals and at most %d admitted", admitted, refused, took, bound)
	}
	for range 20 {
		if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("UnaryCall is not limited: %v", err)
		}
	}
	counted := false
	for _, g := range topo.Gateways {
		if g.Ingress() != nil && strings.Contains(metricsText(t, g), `strait_ratelimited_total{peer="alpha",policy="alpha-empty",role="ingress"}`) {
			counted = true
		}
	}
	if !counted {
		t.Fatal("no ingress counts the refusals in strait_ratelimited_total")
	}
}

// TestRouteDeadline: alpha gives its route to the gRPC sample a default deadline of
// 300ms and a maximum of 600ms. A streaming call that would take 5 s ends after about
// 300ms when it carries no deadline of its own, and after about 600ms when it asks for
// 30 s: the gateways carry the route's deadline on to the provider (grpc-timeout), which
// ends the call. (grpc-go's server ends it with RST_STREAM CANCEL, which a client without
// a deadline of its own sees as CANCELLED; one with a longer deadline, the same.)
func TestRouteDeadline(t *testing.T) {
	setDomains(t, topo, func(a *config.Domain) {
		a.Governance.Deadlines = append(a.Governance.Deadlines, config.Deadline{
			Match: config.Match{Service: demo.GRPCService}, Default: config.Duration(300 * time.Millisecond), Max: config.Duration(600 * time.Millisecond),
		})
	}, nil)
	tc := testgrpc.NewTestServiceClient(dialEgress(t, 0))
	slow := &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{
		{Size: 1, IntervalUs: 5e6},
	}}
	for _, c := range []struct {
		name        string
		own         time.Duration
		least, most time.Duration
	}{
		{"no deadline", 0, 250 * time.Millisecond, 3 * time.Second},
		{"30s asked", 30 * time.Second, 550 * time.Millisecond, 3 * time.Second},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		if c.own > 0 {
			ctx, cancel = context.WithTimeout(context.Background(), c.own)
		}
		start := time.Now()
		st, err := tc.StreamingOutputCall(ctx, slow)
		if err == nil {
			_, err = st.Recv()
		}
		took := time.Since(start)
		cancel()
		if code := status.Code(err); code != codes.DeadlineExceeded && code != codes.Canceled || took < c.least || took > c.most {
			t.Fatalf("%s: %v after %v, want the call ended after %v to %v", c.name, err, took, c.least, c.most)
		}
		t.Logf("%s: %v after %v", c.name, status.Code(err), took.Round(time.Millisecond))
	}
}
