package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/samples"
	"github.com/strait-mesh/strait/launch"
	"github.com/strait-mesh/strait/test/wait"
)

// load makes mixed unary and bidi-streaming calls through both egress instances at about
// rate calls/s until stop is closed, and counts them.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	wg         sync.WaitGroup
	stop       chan struct{}
	stopOnce   sync.Once
}

// end stops the load and waits for its workers.
func (l *load) end() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

func startLoad(t *testing.T, rate int) *load {
	t.Helper()
	l := &load{stop: make(chan struct{})}
	t.Cleanup(l.end) // if the test ended before finish
	const workers = 8
	per := time.Duration(workers) * time.Second / time.Duration(rate)
	for w := range workers {
		tc := testgrpc.NewTestServiceClient(dialEgress(t, w))
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(per)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				var err error
				if i%4 == 3 {
					err = samples.PingPong(ctx, tc, 2)
				} else {
					_, err = tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 512, Payload: &testpb.Payload{Body: make([]byte, 512)}})
				}
				cancel()
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		}()
	}
	return l
}

// finish stops the load and fails the test if any call failed, or if far too few were
// made for the load to mean anything.
func (l *load) finish(t *testing.T, d time.Duration, minRate int) {
	t.Helper()
	l.end()
	ok, failed := l.ok.Load(), l.failed.Load()
	t.Logf("load: %d calls ok, %d failed in %v (%.0f/s)", ok, failed, d, float64(ok+failed)/d.Seconds())
	if failed > 0 {
		t.Fatalf("%d calls failed, first: %v", failed, l.errs)
	}
	// The rate is not what is tested (a loaded CI machine may not reach it): only that
	// real load ran while things changed, and that none of it failed.
	if want := float64(minRate) * d.Seconds() / 5; float64(ok) < want {
		t.Fatalf("only %d calls in %v (%.0f/s), want at least %.0f: the load did not run", ok, d, float64(ok)/d.Seconds(), want)
	}
}

// TestConfigChangeUnderLoad changes both domains' configurations every 100 ms while
// 500 calls/s flow: no call fails and every gateway follows every change.
func TestConfigChangeUnderLoad(t *testing.T) {
	ctx := context.Background()
	baseA, baseB := topo.AlphaCP.Core().Domain(), topo.BetaCP.Core().Domain()
	t.Cleanup(func() {
		topo.SetDomain(ctx, baseB)
		topo.SetDomain(ctx, baseA)
	})
	start := time.Now()
	l := startLoad(t, 500)
	for i := range 20 {
		a, b := *baseA, *baseB
		a.Routes = append([]config.Route(nil), baseA.Routes...)
		b.Exports = append([]config.Export(nil), baseB.Exports...)
		// A route and export that come and go, and limits that change.
		if i%2 == 0 {
			b.Exports = append(b.Exports, config.Export{Service: "grpc.testing.ReconnectService", Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}})
			a.Routes = append(a.Routes, config.Route{Service: "grpc.testing.ReconnectService", Protocol: mesh.ProtocolGRPC, Peer: "beta"})
		}
		a.Limits.CallTimeout = config.Duration(time.Duration(30+i) * time.Second)
		b.Limits.MaxBodyBytes = int64(1<<20 + i)
		if _, err := topo.SetDomain(ctx, &b); err != nil {
			t.Fatal(err)
		}
		if _, err := topo.SetDomain(ctx, &a); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // pacing: a change every 100 ms under load is the test
	}
	l.finish(t, time.Since(start), 500)
	for _, g := range topo.Gateways {
		if n := g.XDS().NACKs(); n != 0 {
			t.Errorf("%s refused %d updates: %s", g.Name(), n, g.XDS().LastNACK())
		}
	}
}

// TestBadUpdateRefused: invalid and inconsistent resources reach the gateways; they refuse
// them (NACK) and keep serving on the last good configuration.
func TestBadUpdateRefused(t *testing.T) {
	cp := topo.AlphaCP.Core()
	good := cp.Version()
	res, err := controlplane.Translate(controlplane.Inputs{Domain: cp.Domain(), Bundles: map[string][]byte{demo.BetaTrustDomain: mustRead(t, topo.Certs.BetaBundle)}})
	if err != nil {
		t.Fatal(err)
	}
	egresses := egressGateways()
	nacks := func() (n uint64) {
		for _, g := range egresses {
			n += g.XDS().NACKs()
		}
		return n
	}
	t.Cleanup(func() {
		// Put the real configuration back and wait for it.
		if _, err := topo.SetDomain(context.Background(), cp.Domain()); err != nil {
			t.Error(err)
		}
	})

	for _, bad := range []struct {
		name   string
		mutate func(r *controlplane.Resources)
		reason string
	}{
		{"a trust bundle that is not PEM", func(r *controlplane.Resources) {
			s := proto.Clone(r.Egress[resource.SecretType][0]).(*tlsv3.Secret)
			s.GetValidationContext().TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("garbage")}}
			r.Egress[resource.SecretType] = []types.Resource{s}
		}, "no PEM certificate"},
		{"a route to a cluster that does not exist", func(r *controlplane.Resources) {
			rc := proto.Clone(r.Egress[resource.RouteType][0]).(*routev3.RouteConfiguration)
			rt := rc.VirtualHosts[len(rc.VirtualHosts)-1].Routes[0]
			rt.Action = &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "peer/nowhere"}}}
			r.Egress[resource.RouteType] = []types.Resource{rc}
		}, "unknown cluster"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			before := nacks()
			r := &controlplane.Resources{Egress: copyRes(res.Egress), Ingress: res.Ingress}
			bad.mutate(r)
			l := startLoad(t, 200)
			start := time.Now()
			if _, err := cp.XDS().Publish(r); err != nil {
				t.Fatal(err)
			}
			wait.ForNil(t, 30*time.Second, "one refusal per egress", func() error {
				if got := nacks() - before; got < uint64(len(topo.Egress)) {
					return fmt.Errorf("%d refusals", got)
				}
				return nil
			})
			// Calls go on, on the last good configuration.
			moreOK(t, &l.ok, 50, "50 calls after the refusals")
			l.finish(t, time.Since(start), 200)
			for _, g := range egresses {
				if !strings.Contains(g.XDS().LastNACK(), bad.reason) {
					t.Errorf("%s: reason %q lacks %q", g.Name(), g.XDS().LastNACK(), bad.reason)
				}
			}
			// Restore, so the next case starts from good resources.
			if _, err := cp.XDS().Publish(res); err != nil {
				t.Fatal(err)
			}
		})
	}
	_ = good
}

func copyRes[M ~map[K][]V, K comparable, V any](m M) M {
	out := M{}
	for k, v := range m {
		out[k] = append([]V(nil), v...)
	}
	return out
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestControlplaneRestartUnderLoad: alpha's controlplane goes away and comes back on the
// same address while calls flow; no call fails, and the gateways take configuration from
// the new one.
func TestControlplaneRestartUnderLoad(t *testing.T) {
	old := topo.AlphaCP
	addr := old.XDSAddr()
	d := old.Core().Domain()
	start := time.Now()
	l := startLoad(t, 500)
	moreOK(t, &l.ok, 50, "the load running")
	old.Close()
	// The egress instances lost their controlplane, and calls go on, on their last
	// configuration.
	wait.For(t, 30*time.Second, "every egress to see its controlplane gone", func() bool {
		for _, g := range egressGateways() {
			if g.XDS().Connected() {
				return false
			}
		}
		return true
	})
	moreOK(t, &l.ok, 50, "50 calls without a controlplane")
	var cp *controlplane.Server
	// The same address: the port may take a moment to be free again.
	// Its registry's data lives as long as the topology it joins (not the test's temporary
	// directory: etcd would find its files gone and end the process).
	dataDir := filepath.Join(topo.Dir, "alpha", "etcd-restarted")
	wait.ForNil(t, 30*time.Second, "the controlplane restarted on "+addr, func() (err error) {
		cp, err = controlplane.Start(controlplane.ServerOptions{Domain: d, XDS: addr, DataDir: dataDir})
		return err
	})
	topo.ReplaceControlplane(cp)
	// A change through the new controlplane reaches every egress.
	changed := *d
	changed.Limits.CallTimeout = config.Duration(42 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	v, err := topo.SetDomain(ctx, &changed)
	if err != nil {
		l.finish(t, time.Since(start), 0)
		t.Fatalf("after restart: %v", err)
	}
	moreOK(t, &l.ok, 50, "50 calls on the new configuration")
	l.finish(t, time.Since(start), 500)
	t.Logf("gateways run %s from the restarted controlplane", v)
}

// TestGatewayWithoutControlplane: a gateway that never got a configuration is not ready
// and answers UNAVAILABLE.
func TestGatewayWithoutControlplane(t *testing.T) {
	// A controlplane that hangs up on every connection: the gateway's attempt to reach it
	// is an event to wait for.
	dead := newHangUp(t)
	gw := &config.Gateway{Domain: "alpha", Role: "egress", Instance: "lonely", Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Controlplane: config.ControlplaneLink{XDS: dead.Addr()}}
	gw.Identity = config.Identity{Cert: topo.Certs.Egress[0].Cert, Key: topo.Certs.Egress[0].Key, Bundle: topo.Certs.AlphaOwnBundle}
	g, err := launch.StartGateway(gw, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	wait.For(t, 30*time.Second, "the gateway to try its controlplane", func() bool { return dead.accepted.Load() > 0 })
	if g.Ready() {
		t.Fatal("ready without configuration")
	}
	resp, err := http.Get("http://" + g.AdminAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc := dialAddr(t, g.Addr())
	_, err = testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want UNAVAILABLE", err)
	}
}

func egressGateways() []*launch.Gateway {
	var out []*launch.Gateway
	for _, g := range topo.Gateways {
		if g.Ingress() == nil {
			out = append(out, g)
		}
	}
	return out
}

// TestXDSNeedsDomainIdentity: the link to the controlplane is mutual TLS within the
// domain's trust domain: another domain's gateway, or one without TLS, gets nothing.
func TestXDSNeedsDomainIdentity(t *testing.T) {
	for _, tc := range []struct {
		name            string
		cert, key, bndl string
	}{
		{"another domain's identity", topo.Certs.Ingress[0].Cert, topo.Certs.Ingress[0].Key, topo.Certs.BetaOwnBundle},
		{"no TLS", topo.Certs.Egress[0].Cert, topo.Certs.Egress[0].Key, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Through a relay that counts the connections that ended: a refused handshake
			// ends one (the controlplane or the gateway closes it).
			r := newTCPRelay(t, topo.AlphaCP.XDSAddr())
			gw := &config.Gateway{Domain: "alpha", Role: "egress", Instance: "stranger", Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Controlplane: config.ControlplaneLink{XDS: r.Addr()}}
			gw.Identity = config.Identity{Cert: tc.cert, Key: tc.key, Bundle: tc.bndl}
			g, err := launch.StartGateway(gw, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Shutdown(context.Background())
			wait.For(t, 30*time.Second, "a connection to the controlplane refused", func() bool { return r.ended.Load() > 0 })
			if g.Ready() || g.XDS().Connected() && g.XDS().Version() != "" {
				t.Fatal("configured by the controlplane")
			}
		})
	}
}
