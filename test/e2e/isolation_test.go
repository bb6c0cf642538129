package e2e

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/launch/demo"
)

// paced makes n calls at rate a second (open loop: each call starts on its tick, in its
// own goroutine, whatever the others do) and returns each call's outcome and latency.
func paced(ctx context.Context, n int, rate float64, call func(context.Context) error) (outcomes []codes.Code, lat []time.Duration) {
	outcomes, lat, _ = pacedAt(ctx, n, rate, call)
	return outcomes, lat
}

// pacedAt is paced, with when each call started (since the first tick).
func pacedAt(ctx context.Context, n int, rate float64, call func(context.Context) error) (outcomes []codes.Code, lat, at []time.Duration) {
	outcomes = make([]codes.Code, n)
	lat = make([]time.Duration, n)
	at = make([]time.Duration, n)
	began := time.Now()
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i := range n {
		select {
		case <-tick.C:
		case <-ctx.Done():
			wg.Wait()
			return outcomes[:i], lat[:i], at[:i]
		}
		wg.Go(func() {
			start := time.Now()
			at[i] = start.Sub(began)
			err := call(ctx)
			lat[i] = time.Since(start)
			outcomes[i] = status.Code(err)
		})
	}
	wg.Wait()
	return outcomes, lat, at
}

// ownTopology starts a topology of the test's own (alpha: one egress, beta: two ingress
// instances; gamma too if asked), on the data path of the suite, closed at the test's
// end. It skips the test with -short.
func ownTopology(t *testing.T, ctx context.Context, gamma bool) *demo.Topology {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a topology of its own")
	}
	tp, err := demo.StartTopology(ctx, demo.TopologyOptions{Gamma: gamma, Egress: 1, Ingress: 2, DataPath: topo.DataPath()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.Close)
	return tp
}

func p99(lat []time.Duration) time.Duration {
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[len(s)*99/100]
}

// TestIsolationFromFlood: beta limits each calling domain to 100 calls a second of the
// gRPC sample (by peer, cluster-wide over its two ingress instances; and, in the second
// case, per method). Gamma floods at 5× that (500/s for 2 s) while alpha calls at 40/s:
// none of alpha's calls fails, gamma gets RESOURCE_EXHAUSTED naming the limit for the
// excess, and what gamma gets through stays near the limit. Alpha's p99 with and without
// the flood is logged (the ratio is a benchmark figure, not asserted here: make bench).
func TestIsolationFromFlood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp := ownTopology(t, ctx, true)
	alpha := testgrpc.NewTestServiceClient(dialAddr(t, tp.Egress[0]))
	gamma := testgrpc.NewTestServiceClient(dialAddr(t, tp.GammaEgress[0]))
	empty := func(c testgrpc.TestServiceClient) func(context.Context) error {
		return func(ctx context.Context) error { _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); return err }
	}

	for _, limit := range []config.RateLimit{
		{Name: "per-domain", Match: config.Match{Service: demo.GRPCService}, By: []string{config.KeyPeer}, Rate: 100, Burst: 20},
		{Name: "per-method", Match: config.Match{Service: demo.GRPCService, Method: "EmptyCall"}, By: []string{config.KeyPeer}, Rate: 100, Burst: 20},
	} {
		t.Run(limit.Name, func(t *testing.T) {
			restore, err := tp.ChangeDomains(ctx, nil, func(b *config.Domain) {
				b.Governance.RateLimits = []config.RateLimit{limit}
			})
			t.Cleanup(func() {
				if err := restore(context.Background()); err != nil {
					t.Error(err)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			// Without the flood.
			codes0, lat0 := paced(ctx, 80, 40, empty(alpha))
			// With it: gamma at 500/s for 2 s beside alpha at 40/s.
			var gcodes []codes.Code
			var wg sync.WaitGroup
			wg.Go(func() { gcodes, _ = paced(ctx, 1000, 500, empty(gamma)) })
			codes1, lat1 := paced(ctx, 80, 40, empty(alpha))
			wg.Wait()

			for i, c := range append(codes0, codes1...) {
				if c != codes.OK {
					t.Fatalf("alpha's call %d: %v", i, c)
				}
			}
			ok, refused := 0, 0
			for _, c := range gcodes {
				switch c {
				case codes.OK:
					ok++
				case codes.ResourceExhausted:
					refused++
				default:
					t.Fatalf("gamma's call: %v", c)
				}
			}
			// 2 s at 100/s plus the bursts: at most ~240, with room for a slow machine
			// spreading the flood over more time.
			t.Logf("gamma: %d admitted, %d refused; alpha p99 %v alone, %v beside the flood (×%.2f)",
				ok, refused, p99(lat0), p99(lat1), float64(p99(lat1))/float64(p99(lat0)))
			if refused < 500 || ok > 400 {
				t.Fatalf("gamma: %d admitted, %d refused of %d: want the excess refused", ok, refused, len(gcodes))
			}
			var msg error
			_, msg = gamma.EmptyCall(ctx, &testgrpc.Empty{})
			if msg != nil && !strings.Contains(msg.Error(), `rate limit "`+limit.Name+`"`) {
				t.Fatalf("gamma's refusal does not name the limit: %v", msg)
			}
		})
	}
}

// TestClusterWideRateAccuracy: beta's two ingress instances share a limit of 200 calls a
// second (STRAIT_GOV_RATE). Offered twice that for 5 s (1 + STRAIT_GOV_SECONDS), they
// admit 200/s ±10% (after the first second, which holds the bursts); once one of them
// leaves (its gossip says so), the other admits the whole 200/s ±10% from a second after
// it left.
func TestClusterWideRateAccuracy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp := ownTopology(t, ctx, false)
	// make bench-governance runs it at the scale: 2,000/s, measured over 10 s.
	rate, secs := envInt(t, "STRAIT_GOV_RATE", 200), envInt(t, "STRAIT_GOV_SECONDS", 4)
	window := time.Duration(secs) * time.Second
	if _, err := tp.ChangeDomains(ctx, nil, func(b *config.Domain) {
		b.Governance.RateLimits = []config.RateLimit{{Name: "shared", Match: config.Match{Service: demo.GRPCService}, Rate: float64(rate), Burst: float64(rate) / 10}}
	}); err != nil {
		t.Fatal(err)
	}
	c := testgrpc.NewTestServiceClient(dialAddr(t, tp.Egress[0]))
	empty := func(ctx context.Context) error { _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); return err }
	// admitted is the rate of calls admitted among those started in [from, to).
	admitted := func(outcomes []codes.Code, at []time.Duration, from, to time.Duration) float64 {
		n := 0
		for i, o := range outcomes {
			if o == codes.OK && at[i] >= from && at[i] < to {
				n++
			}
		}
		return float64(n) / (to - from).Seconds()
	}
	within := func(got float64) bool { return got >= 0.9*float64(rate) && got <= 1.1*float64(rate) }
	n := 2 * rate * (secs + 1)

	outcomes, _, at := pacedAt(ctx, n, float64(2*rate), empty)
	both := admitted(outcomes, at, time.Second, time.Second+window)
	t.Logf("two instances: %.0f/s admitted (limit %d/s)", both, rate)
	if !within(both) {
		t.Fatalf("two instances admitted %.0f/s, want %d/s ±10%%", both, rate)
	}

	// One instance leaves; the other takes the whole rate within 5 s.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	err := tp.Gateways[0].Shutdown(sctx)
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	outcomes, _, at = pacedAt(ctx, n, float64(2*rate), empty)
	one := admitted(outcomes, at, time.Second, time.Second+window)
	t.Logf("one instance, 1 to %v after the other left: %.0f/s admitted", time.Second+window, one)
	if !within(one) {
		t.Fatalf("one instance admitted %.0f/s, want %d/s ±10%%", one, rate)
	}
}

// TestLimitChangeUnderLoad: under a steady 200 calls a second, beta's limit on them goes
// from 1,000/s (nothing refused) to 50/s. No call fails but those the limit refuses
// (RESOURCE_EXHAUSTED); none is refused before the change; from 100ms after the change
// was applied (the controlplane pushed it and both ingress instances acknowledged it),
// the rate admitted is the new one.
func TestLimitChangeUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp := ownTopology(t, ctx, false)
	limit := func(rate float64) func(*config.Domain) {
		return func(b *config.Domain) {
			b.Governance.RateLimits = []config.RateLimit{{Name: "live", Match: config.Match{Service: demo.GRPCService}, Rate: rate, Burst: 10}}
		}
	}
	if _, err := tp.ChangeDomains(ctx, nil, limit(1000)); err != nil {
		t.Fatal(err)
	}
	c := testgrpc.NewTestServiceClient(dialAddr(t, tp.Egress[0]))
	began := time.Now()
	var (
		outcomes    []codes.Code
		at          []time.Duration
		wg          sync.WaitGroup
		changeStart time.Duration
		changed     time.Duration
	)
	wg.Go(func() {
		outcomes, _, at = pacedAt(ctx, 1200, 200, func(ctx context.Context) error { _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); return err })
	})
	time.Sleep(2 * time.Second) // the load runs at the old limit for a while
	changeStart = time.Since(began)
	if _, err := tp.ChangeDomains(ctx, nil, limit(50)); err != nil {
		t.Fatal(err)
	}
	changed = time.Since(began)
	wg.Wait()
	from, to := changed+100*time.Millisecond+time.Second/5, 6*time.Second // past the new burst
	n, before := 0, 0
	for i, o := range outcomes {
		switch o {
		case codes.OK:
			if at[i] >= from && at[i] < to {
				n++
			}
		case codes.ResourceExhausted:
			if at[i] < changeStart {
				before++
			}
		default:
			t.Fatalf("call %d (at %v): %v", i, at[i], o)
		}
	}
	got := float64(n) / (to - from).Seconds()
	t.Logf("change took %v; admitted %.0f/s from %v (limit 50/s); %d refused before it", (changed - changeStart).Round(time.Millisecond), got, from.Round(time.Millisecond), before)
	if before > 0 || got < 40 || got > 60 {
		t.Fatalf("%d refused under the old limit; %.0f/s admitted under the new one, want 50/s ±20%%", before, got)
	}
}

// TestRetryBudgetWhenAllDown: both of beta's ingress instances are gone, so no call of
// alpha's reaches a next hop. Each call tries one instance and, within the retry budget
// (20% of calls plus a reserve of 10 a second over 10 s), one other: over 300 calls the
// retries stay within the budget, the rest are refused by it, and every call fails fast
// with UNAVAILABLE. strait_retries_total counts both.
func TestRetryBudgetWhenAllDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp := ownTopology(t, ctx, false)
	c := testgrpc.NewTestServiceClient(dialAddr(t, tp.Egress[0]))
	if _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	for _, g := range tp.Gateways[:2] {
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		err := g.Shutdown(sctx)
		scancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	egress := tp.Gateways[2].Egress()
	before := egress.Governance().Budget("beta").Stats()
	const n = 300
	outcomes, lat := paced(ctx, n, 100, func(ctx context.Context) error { _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); return err })
	after := egress.Governance().Budget("beta").Stats()
	for i, o := range outcomes {
		if o != codes.Unavailable {
			t.Fatalf("call %d: %v, want UNAVAILABLE", i, o)
		}
	}
	calls, retried, refused := after.Calls-before.Calls, after.Retries-before.Retries, after.Refused-before.Refused
	// The budget: 20% of the calls plus the reserve (10/s over the 10 s window).
	limit := uint64(0.2*float64(calls)) + 10*10 + 1
	t.Logf("%d calls, %d next-hop attempts: %d retried, %d refused by the budget (at most %d may retry); p99 %v",
		calls, calls+retried, retried, refused, limit, p99(lat))
	if calls != n || retried == 0 || retried > limit || refused == 0 {
		t.Fatalf("%d calls, %d retried, %d refused: want %d calls, 1 to %d retried, the rest refused", calls, retried, refused, n, limit)
	}
	if m := metricsText(t, tp.Gateways[2]); !strings.Contains(m, `strait_retries_total{cluster="beta",result="over_budget",role="egress"}`) {
		t.Error("strait_retries_total does not count the refused retries")
	}
}

// envInt is the environment variable name as a positive number, or def.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
