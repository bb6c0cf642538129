package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/membership"
	"github.com/strait-mesh/strait/launch"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/test/wait"
)

// dialAllEgress is a consumer that knows every egress address (as it would from its
// registry) and balances over them.
func dialAllEgress(t *testing.T) *grpc.ClientConn {
	t.Helper()
	r := manual.NewBuilderWithScheme("egress")
	var addrs []resolver.Address
	for _, e := range topo.Egress {
		addrs = append(addrs, resolver.Address{Addr: e})
	}
	r.InitialState(resolver.State{Addresses: addrs})
	cc, err := grpc.NewClient(r.Scheme()+":///alpha", grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A consumer that reconnects promptly to an instance that came back.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second}, MinConnectTimeout: time.Second}),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// timedLoad makes unary calls at about rate/s and records when each failure happened.
type timedLoad struct {
	ok       atomic.Int64
	streak   atomic.Int64 // calls that succeeded since the last failure
	mu       sync.Mutex
	failures []time.Time
	errs     []string
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func startTimedLoad(t *testing.T, cc *grpc.ClientConn, rate int) *timedLoad {
	l := &timedLoad{stop: make(chan struct{})}
	const workers = 8
	tc := testgrpc.NewTestServiceClient(cc)
	per := time.Duration(workers) * time.Second / time.Duration(rate)
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(per)
			defer tick.Stop()
			for {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 256, Payload: &testpb.Payload{Body: make([]byte, 256)}})
				cancel()
				if err != nil {
					l.streak.Store(0)
					l.mu.Lock()
					l.failures = append(l.failures, time.Now())
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
					l.streak.Add(1)
				}
			}
		}()
	}
	t.Cleanup(func() { l.end() }) // if the test ended before its end
	return l
}

func (l *timedLoad) end() (ok int64, failures []time.Time, errs []string) {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.ok.Load(), l.failures, l.errs
}

// TestKillIngress: one ingress instance dies abruptly (kill -9) under 1,000 calls/s. Only
// calls in flight on it may fail: the load has 8 workers, each with at most one call in
// flight, so at most 8; the calls that follow, sent to it before anyone knows it is gone,
// never reached it and are retried on the other instance. Then every call succeeds (how
// soon is logged, not asserted).
func TestKillIngress(t *testing.T) {
	l := startTimedLoad(t, dialAllEgress(t), 1000)
	moreOK(t, &l.ok, 50, "the load running")
	idx := -1
	for i, g := range topo.Gateways {
		if g.Ingress() != nil {
			idx = i
			break
		}
	}
	killed := time.Now()
	topo.Gateways[idx].Kill()
	gone := wait.For(t, 30*time.Second, "beta's controlplane to see one ingress member less", func() bool {
		return len(topo.BetaCP.Members("ingress")) == len(topo.Ingress)-1
	})
	// Recovered: 1,000 calls in a row (a second of load) succeeded after the last failure.
	wait.For(t, 30*time.Second, "every call to succeed again", func() bool { return l.streak.Load() >= 1000 })
	ok, failures, errs := l.end()
	var last time.Duration
	for _, f := range failures {
		last = max(last, f.Sub(killed))
	}
	t.Logf("kill -9 of an ingress: seen by beta's controlplane after %v; %d calls ok, %d failed, the last %v after the kill; %v",
		gone.Round(time.Millisecond), ok, len(failures), last.Round(time.Millisecond), errs)
	if len(failures) > 8 {
		t.Errorf("%d calls failed: more than were in flight (at most 8)", len(failures))
	}
	// Bring it back for the tests that follow.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := topo.RestartGateway(ctx, idx, true, nil); err != nil {
		t.Fatal(err)
	}
}

// TestRollingRestart restarts every gateway of both clusters, one after the other, under
// steady load: no call fails.
func TestRollingRestart(t *testing.T) {
	l := startTimedLoad(t, dialAllEgress(t), 400)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	moreOK(t, &l.ok, 50, "the load running")
	start := time.Now()
	for i := range topo.Gateways {
		name := topo.Gateways[i].Name()
		t0 := time.Now()
		g, err := topo.RestartGateway(ctx, i, false, nil)
		if err != nil {
			l.end()
			t.Fatalf("restart %s: %v", name, err)
		}
		// Consumers (for an egress) or the egress instances (for an ingress) found the new
		// instance again before the next one goes: it carries calls.
		back := wait.For(t, 30*time.Second, name+" carrying calls after its restart", func() bool { return calls(t, g) > 0 })
		t.Logf("restarted %s in %v; carrying calls %v later", name, time.Since(t0).Round(time.Millisecond), back.Round(time.Millisecond))
	}
	ok, failures, errs := l.end()
	t.Logf("rolling restart of %d gateways in %v: %d calls ok, %d failed %v", len(topo.Gateways), time.Since(start), ok, len(failures), errs)
	if len(failures) > 0 {
		t.Fatalf("%d calls failed during the rolling restart: %v", len(failures), errs)
	}
}

// TestControlplaneSeesMembers: each controlplane observes its domain's gateway cluster
// through gossip, and a gateway with the wrong gossip key cannot join.
func TestControlplaneSeesMembers(t *testing.T) {
	members := func(cp *controlplane.Server, role string, want int) {
		t.Helper()
		wait.ForNil(t, 30*time.Second, role+" members", func() error {
			if ms := cp.Members(role); len(ms) != want {
				return fmt.Errorf("%v, want %d", ms, want)
			}
			return nil
		})
	}
	members(topo.BetaCP, "ingress", len(topo.Ingress))
	members(topo.AlphaCP, "egress", len(topo.Egress))
	addrs := map[string]bool{}
	for _, m := range topo.BetaCP.Members("ingress") {
		addrs[m.Meta.Addr] = true
	}
	for _, a := range topo.Ingress {
		if !addrs[a] {
			t.Fatalf("ingress %s not among members %v", a, topo.BetaCP.Members("ingress"))
		}
	}

	// A gateway whose gossip key differs is refused at start.
	var ing *launch.Gateway
	for _, g := range topo.Gateways {
		if g.Ingress() != nil {
			ing = g
			break
		}
	}
	cfg := ing.Config()
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	k, _ := membership.GenerateKey()
	os.WriteFile(wrong, []byte(base64.StdEncoding.EncodeToString(k)), 0o600)
	g := *cfg.Gossip
	g.KeyFile = wrong
	cfg.Gossip, cfg.Listen, cfg.Admin, cfg.Instance = &g, "127.0.0.1:0", "127.0.0.1:0", "intruder"
	if gw, err := launch.StartGateway(&cfg, nil); err == nil {
		gw.Shutdown(context.Background())
		t.Fatal("a gateway with the wrong gossip key joined")
	} else {
		t.Logf("refused: %v", err)
	}
	members(topo.BetaCP, "ingress", len(topo.Ingress))
}

// TestKilledEgressLeavesRegistry: an egress that dies stops being published as a provider
// of the imported services in alpha's registry; when it comes back, so do its entries.
func TestKilledEgressLeavesRegistry(t *testing.T) {
	idx := -1
	for i, g := range topo.Gateways {
		if g.Ingress() == nil {
			idx = i
			break
		}
	}
	addr := topo.Gateways[idx].Addr()
	published := func() bool {
		all, err := topo.AlphaCP.Registry().List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range all {
			if registrysync.Managed(i) && i.Address == addr {
				return true
			}
		}
		return false
	}
	waitFor := func(want bool) time.Duration {
		t.Helper()
		return wait.For(t, 30*time.Second, fmt.Sprintf("egress %s published=%v", addr, want), func() bool { return published() == want })
	}
	waitFor(true)
	topo.Gateways[idx].Kill()
	t.Logf("a killed egress left alpha's registry in %v", waitFor(false))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := topo.RestartGateway(ctx, idx, true, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("and came back in %v", waitFor(true))
}
