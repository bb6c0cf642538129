package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/launch/demo"
	"github.com/strait-mesh/strait/test/ports"
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

// TestBreakerOpensAndCloses: alpha's egress breaks calls to beta's gRPC sample when half
// of them fail (window 2s, at least 10 calls). The provider fails every call that asks
// it to (UnaryCall with a response status): after at most a window of failing calls, calls
// fail at once with UNAVAILABLE naming the breaker (p99 under 5ms) without reaching the
// provider; once open for 500ms it lets probes through, and good calls close it. Every
// call is counted.
func TestBreakerOpensAndCloses(t *testing.T) {
	setDomains(t, topo, func(a *config.Domain) {
		a.Governance.Breakers = append(a.Governance.Breakers, config.Breaker{
			Name: "sample", Match: config.Match{Service: demo.GRPCService},
			ErrorRatio: 0.5, MinCalls: 10, Window: config.Duration(2 * time.Second),
			OpenFor: config.Duration(500 * time.Millisecond), Probes: 2,
		})
	}, nil)
	tc := testgrpc.NewTestServiceClient(dialEgress(t, 0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	failing := &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.Internal), Message: "provider broke"}}

	// Failing calls until the breaker answers instead of the provider.
	providerFailures, breaker := 0, 0
	for i := 0; i < 200 && breaker == 0; i++ {
		_, err := tc.UnaryCall(ctx, failing)
		switch {
		case status.Code(err) == codes.Internal:
			providerFailures++
		case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), `breaker "sample" is open`):
			breaker++
		default:
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if breaker == 0 || providerFailures < 10 {
		t.Fatalf("%d provider failures, %d breaker refusals: want it open after at least 10 calls", providerFailures, breaker)
	}
	// Open: 50 calls that would succeed fail fast.
	var took []time.Duration
	for range 50 {
		start := time.Now()
		_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		took = append(took, time.Since(start))
		if status.Code(err) != codes.Unavailable {
			if err == nil {
				break // it went half-open already (a slow machine): fine, stop measuring
			}
			t.Fatalf("open breaker: %v", err)
		}
	}
	slices.Sort(took)
	p99 := took[len(took)*99/100]
	t.Logf("after %d provider failures: %d refusals measured, p50 %v p99 %v", providerFailures, len(took), took[len(took)/2], p99)
	if p99 > 5*time.Millisecond {
		t.Errorf("refusals by the open breaker: p99 %v, want under 5ms", p99)
	}
	// After OpenFor, good calls are probes and close it.
	closed := wait.ForNil(t, 10*time.Second, "the breaker closing on good calls", func() error {
		for range 5 {
			if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("closed %v after the last refusal", closed.Round(time.Millisecond))
	m := ""
	for _, g := range topo.Gateways {
		if g.Egress() != nil {
			m += metricsText(t, g)
		}
	}
	// /debug/config lists the breaker, closed again, with its window's counts.
	resp, err := http.Get("http://" + egressGateways()[0].AdminAddr() + "/debug/config")
	if err != nil {
		t.Fatal(err)
	}
	var dbg struct {
		Governance struct {
			Breakers []struct{ Policy, Peer, Service, State string }
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&dbg)
	resp.Body.Close()
	if err != nil || len(dbg.Governance.Breakers) != 1 || dbg.Governance.Breakers[0].Policy != "sample" || dbg.Governance.Breakers[0].State != "closed" {
		t.Errorf("/debug/config breakers: %+v (%v)", dbg.Governance.Breakers, err)
	}
	for _, want := range []string{`strait_breaker_refused_total{peer="beta",policy="sample",role="egress"}`, `strait_breaker_transitions_total{policy="sample",role="egress",to="open"}`, `strait_breaker_transitions_total{policy="sample",role="egress",to="closed"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestConcurrencyLimit: alpha's egress lets at most 2 calls of the gRPC sample run at
// once (per peer and service). With 2 slow streams open, a third call is refused at once
// with RESOURCE_EXHAUSTED naming the limit; with a queue of 5s it waits for a slot and
// succeeds once a stream ends.
func TestConcurrencyLimit(t *testing.T) {
	for _, queue := range []time.Duration{0, 5 * time.Second} {
		t.Run("queue="+queue.String(), func(t *testing.T) {
			setDomains(t, topo, func(a *config.Domain) {
				a.Governance.Concurrency = append(a.Governance.Concurrency, config.Concurrency{
					Name: "two-at-once", Gateway: config.AtEgress, Match: config.Match{Service: demo.GRPCService}, Max: 2, Queue: config.Duration(queue),
				})
			}, nil)
			tc := testgrpc.NewTestServiceClient(dialEgress(t, 0))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// Two streams that hold their slots until they end: each answers once
			// after 400ms, then the caller closes it.
			hold := &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1, IntervalUs: 400e3}}}
			var streams []testgrpc.TestService_StreamingOutputCallClient
			for range 2 {
				st, err := tc.StreamingOutputCall(ctx, hold)
				if err != nil {
					t.Fatal(err)
				}
				streams = append(streams, st)
			}
			// The streams' headers reach the egress before the third call: wait until
			// a call is refused or queued (both streams hold their slots).
			wait.For(t, 5*time.Second, "both streams admitted", func() bool {
				return inflight(t, 0) >= 2
			})
			start := time.Now()
			_, err := tc.EmptyCall(ctx, &testgrpc.Empty{})
			took := time.Since(start)
			for _, st := range streams {
				if _, err := st.Recv(); err != nil {
					t.Fatalf("held stream: %v", err)
				}
			}
			if queue == 0 {
				if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), `concurrency limit "two-at-once"`) {
					t.Fatalf("third call: %v, want RESOURCE_EXHAUSTED naming the limit", err)
				}
				if took > 200*time.Millisecond {
					t.Errorf("refused after %v, want at once", took)
				}
				return
			}
			if err != nil || took < 200*time.Millisecond {
				t.Fatalf("queued call: %v after %v, want success after a stream ended (400ms)", err, took)
			}
			t.Logf("queued call admitted after %v", took.Round(time.Millisecond))
		})
	}
}

// inflight is the number of calls alpha's egress i has in flight (strait_inflight_calls).
func inflight(t *testing.T, i int) int {
	t.Helper()
	for _, line := range strings.Split(metricsText(t, egressGateways()[i]), "\n") {
		if v, ok := strings.CutPrefix(line, `strait_inflight_calls{role="egress"} `); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// TestOutlierEjection: beta's registry lists a second provider of the gRPC sample that
// fails every call (INTERNAL). With outlier detection (3 consecutive failures), each
// ingress instance ejects it after its third failure in a row: a few calls fail at first,
// then every call succeeds on the good provider.
func TestOutlierEjection(t *testing.T) {
	ln := ports.Listen(t)
	bad := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		return status.Error(codes.Internal, "broken provider")
	}))
	go bad.Serve(ln)
	t.Cleanup(bad.Stop)
	inst := mesh.Instance{Service: mesh.ServiceKey{Name: demo.GRPCService}, Protocol: mesh.ProtocolGRPC, Address: ln.Addr().String()}
	ctx := context.Background()
	if err := topo.BetaRegistry.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.BetaRegistry.Deregister(context.Background(), inst) })
	setDomains(t, topo, nil, func(b *config.Domain) {
		b.Governance.OutlierDetection = config.OutlierDetection{ConsecutiveErrors: 3, BaseEjection: config.Duration(time.Minute)}
	})
	wait.For(t, 30*time.Second, "both providers on every ingress", func() bool {
		for _, g := range topo.Gateways {
			if ig := g.Ingress(); ig != nil && len(ig.Endpoints(mesh.ServiceKey{Name: demo.GRPCService}, mesh.ProtocolGRPC)) < 2 {
				return false
			}
		}
		return true
	})
	tc := testgrpc.NewTestServiceClient(dialEgress(t, 0))
	failed, lastFailure := 0, -1
	for i := range 100 {
		if _, err := tc.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
			if status.Code(err) != codes.Internal {
				t.Fatalf("call %d: %v", i, err)
			}
			failed++
			lastFailure = i
		}
	}
	t.Logf("%d of 100 calls failed, the last at call %d", failed, lastFailure)
	// Each of the 2 ingress instances sees at most 3 failures in a row before it ejects.
	if failed > 2*3+2 || lastFailure >= 50 {
		t.Fatalf("%d calls failed, the last at %d: the failing provider was not ejected", failed, lastFailure)
	}
}

// TestIngressBreakerPerEndpoint: beta's ingress keeps a breaker per provider endpoint. The
// gRPC sample's only provider fails calls until the breaker of that endpoint opens on
// each ingress instance; calls then fail at once with UNAVAILABLE naming it (every
// endpoint's breaker is open). After openFor, good calls are its probes and close it.
func TestIngressBreakerPerEndpoint(t *testing.T) {
	setDomains(t, topo, nil, func(b *config.Domain) {
		b.Governance.Breakers = append(b.Governance.Breakers, config.Breaker{
			Name: "provider", Gateway: config.AtIngress, Match: config.Match{Service: demo.GRPCService},
			ErrorCount: 3, MinCalls: 3, Window: config.Duration(5 * time.Second), OpenFor: config.Duration(500 * time.Millisecond), Probes: 1,
		})
	})
	tc := testgrpc.NewTestServiceClient(dialEgress(t, 0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	failing := &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.Internal), Message: "provider broke"}}
	fromProvider, fromBreaker := 0, 0
	for i := 0; i < 100 && fromBreaker < 5; i++ {
		_, err := tc.UnaryCall(ctx, failing)
		switch {
		case status.Code(err) == codes.Internal:
			fromProvider++
		case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), `breaker "provider" is open for every provider`):
			fromBreaker++
		default:
			t.Fatalf("call %d: %v", i, err)
		}
	}
	t.Logf("%d failures from the provider, then %d refusals by the open breakers", fromProvider, fromBreaker)
	// Each of the two ingress instances opens its own after 3 failures.
	if fromBreaker < 5 || fromProvider > 2*3 {
		t.Fatalf("%d provider failures, %d breaker refusals", fromProvider, fromBreaker)
	}
	wait.ForNil(t, 10*time.Second, "the breakers closing on good calls", func() error {
		for range 4 {
			if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestBreakerOpensOnSlowCalls: alpha's egress breaks calls to beta's gRPC sample when 80%
// of at least 5 calls take longer than 100ms. Streams that answer after 200ms open it;
// then calls fail at once with UNAVAILABLE naming it.
func TestBreakerOpensOnSlowCalls(t *testing.T) {
	setDomains(t, topo, func(a *config.Domain) {
		a.Governance.Breakers = append(a.Governance.Breakers, config.Breaker{
			Name: "slow-sample", Match: config.Match{Service: demo.GRPCService},
			SlowRatio: 0.8, SlowCall: config.Duration(100 * time.Millisecond), MinCalls: 5,
			Window: config.Duration(10 * time.Second), OpenFor: config.Duration(time.Minute),
		})
	}, nil)
	tc := testgrpc.NewTestServiceClient(dialEgress(t, 0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	slow := &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1, IntervalUs: 200e3}}}
	for i := range 5 {
		st, err := tc.StreamingOutputCall(ctx, slow)
		if err == nil {
			for err == nil {
				_, err = st.Recv()
			}
		}
		if err != io.EOF {
			t.Fatalf("slow call %d: %v", i, err)
		}
	}
	start := time.Now()
	_, err := tc.EmptyCall(ctx, &testgrpc.Empty{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), `breaker "slow-sample" is open`) {
		t.Fatalf("after 5 slow calls: %v, want UNAVAILABLE naming the breaker", err)
	}
	t.Logf("refused in %v after 5 calls slower than 100ms", time.Since(start))
}

// TestFederationQuota: beta exports 300 services (one pattern export; their provider is a
// gRPC server that answers any call) while alpha's quota of beta is 100 services. Alpha
// keeps 100 and refuses 200: its registry lists only the 100, a kept one is called
// through alpha's egress, a refused one is unknown there, and the controlplane's metrics
// count the refusal.
func TestFederationQuota(t *testing.T) {
	ln := ports.Listen(t)
	any := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
		var m emptypb.Empty
		if err := st.RecvMsg(&m); err != nil {
			return err
		}
		return st.SendMsg(&m)
	}))
	go any.Serve(ln)
	t.Cleanup(any.Stop)
	ctx := context.Background()
	const total, quota = 300, 100
	var insts []mesh.Instance
	for i := range total {
		insts = append(insts, mesh.Instance{Service: mesh.ServiceKey{Name: fmt.Sprintf("com.flood.S%03d", i)}, Protocol: mesh.ProtocolGRPC, Address: ln.Addr().String()})
	}
	for _, in := range insts {
		if err := topo.BetaRegistry.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, in := range insts {
			_ = topo.BetaRegistry.Deregister(context.Background(), in)
		}
	})
	setDomains(t, topo, func(a *config.Domain) {
		a.Peers = slices.Clone(a.Peers) // the file in force shares the old slice
		for i := range a.Peers {
			if a.Peers[i].Domain == "beta" {
				a.Peers[i].Quota = config.Quota{Services: quota}
			}
		}
	}, func(b *config.Domain) {
		b.Exports = append(b.Exports, config.Export{Service: "com.flood.*", Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}})
	})
	var im controlplane.Import
	wait.ForNil(t, 30*time.Second, "alpha's import of beta within its quota", func() error {
		im = topo.AlphaCP.Imports()["beta"]
		// beta's own samples, imported before, stay among the 100.
		if len(im.Services) != quota || im.Refused.Services < total-quota {
			return fmt.Errorf("%d kept, %d refused", len(im.Services), im.Refused.Services)
		}
		return nil
	})
	// The registry: only what was kept.
	wait.ForNil(t, 30*time.Second, "alpha's registry to list only the kept services", func() error {
		all, err := topo.AlphaCP.Registry().List(ctx)
		if err != nil {
			return err
		}
		names := map[string]bool{}
		for _, i := range all {
			if strings.HasPrefix(i.Service.Name, "com.flood.") {
				names[i.Service.Name] = true
			}
		}
		kept := 0
		for _, s := range im.Services {
			if strings.HasPrefix(s.GetName(), "com.flood.") {
				kept++
			}
		}
		if len(names) != kept || names[fmt.Sprintf("com.flood.S%03d", total-1)] {
			return fmt.Errorf("alpha's registry lists %d flood services, %d kept", len(names), kept)
		}
		return nil
	})
	t.Logf("alpha keeps %d services of beta (quota %d), refuses %d (sample %v)", len(im.Services), quota, im.Refused.Services, im.Refused.Sample)
	cc := dialEgress(t, 0)
	call := func(svc string) error {
		return cc.Invoke(ctx, "/"+svc+"/Ping", &emptypb.Empty{}, &emptypb.Empty{})
	}
	wait.ForNil(t, 30*time.Second, "a kept service called through alpha's egress", func() error { return call("com.flood.S000") })
	// The egress follows the import once the controlplane pushed the routes (the import
	// held all 300 before the quota applied).
	wait.ForNil(t, 30*time.Second, "a refused service unknown at alpha's egress", func() error {
		if err := call(fmt.Sprintf("com.flood.S%03d", total-1)); status.Code(err) != codes.Unimplemented {
			return fmt.Errorf("call: %v, want UNIMPLEMENTED", err)
		}
		return nil
	})
	resp, err := http.Get("http://" + topo.AlphaCP.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `strait_federation_refused{kind="services",peer="beta"}`) {
		t.Error("the controlplane's metrics lack strait_federation_refused")
	}
}
