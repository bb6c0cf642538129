package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/launch"
	"github.com/strait-mesh/strait/launch/demo"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/test/wait"
)

// TestGammaCallsBeta: a topology with a second consumer domain, gamma, beside alpha. As
// soon as StartTopology returns, a gRPC consumer in gamma reaches beta's provider through
// gamma's egress, and one in alpha through alpha's; beta's ingress counts each domain's
// calls under its own peer label. Gamma imports beta's sample gRPC and Triple services over
// federation and publishes them in its own registry at its egress. ChangeGamma returns
// once gamma's egress runs the new configuration, and calls still cross afterwards.
func TestGammaCallsBeta(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tp, err := demo.StartTopology(ctx, demo.TopologyOptions{Gamma: true, Egress: 1, Ingress: 1, DataPath: topo.DataPath()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.Close)
	if len(tp.GammaEgress) != 1 || len(tp.Egress) != 1 || len(tp.Gateways) != 3 {
		t.Fatalf("gamma egress %v, alpha egress %v, %d gateways: want 1, 1 and 3", tp.GammaEgress, tp.Egress, len(tp.Gateways))
	}
	for i, want := range []string{"beta-ingress-ingress-1", "alpha-egress-egress-1", "gamma-egress-egress-1"} {
		if got := tp.Gateways[i].Name(); got != want {
			t.Fatalf("Gateways[%d] is %s, want %s", i, got, want)
		}
	}

	// No waiting: StartTopology returned once gamma's egress could call beta.
	const n = 3
	call := func(domain, addr string) {
		t.Helper()
		client := testgrpc.NewTestServiceClient(dialAddr(t, addr))
		for i := range n {
			if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
				t.Fatalf("%s → beta through %s, call %d: %v", domain, addr, i+1, err)
			}
		}
	}
	call("gamma", tp.GammaEgress[0])
	call("alpha", tp.Egress[0])

	ingress := tp.Gateways[0]
	series := func(peer string) string {
		return fmt.Sprintf(`strait_calls_total{code="OK",peer=%q,protocol="grpc",role="ingress"}`, peer)
	}
	wait.ForNil(t, 5*time.Second, "beta's ingress counting each domain's calls", func() error {
		m := metricsSeries(t, ingress)
		for _, peer := range []string{"gamma", "alpha"} {
			if got := m[series(peer)]; got != n {
				return fmt.Errorf("%s = %v, want %d", series(peer), got, n)
			}
		}
		return nil
	})

	// Gamma imports what beta exports to it, and its registry lists the gRPC service at
	// gamma's egress.
	wait.ForNil(t, 20*time.Second, "gamma importing beta's services", func() error {
		if got, want := demo.ImportedRPC(tp.GammaCP, "beta"), demo.GRPCService+","+demo.TripleService; got != want {
			return fmt.Errorf("gamma imports %q from beta, want %q", got, want)
		}
		all, err := tp.GammaCP.Registry().List(ctx)
		if err != nil {
			return err
		}
		var at []string
		for _, i := range all {
			if registrysync.Managed(i) && i.Service.Name == demo.GRPCService {
				at = append(at, i.Address)
			}
		}
		if len(at) != 1 || at[0] != tp.GammaEgress[0] {
			return fmt.Errorf("gamma's registry lists %s at %v, want [%s]", demo.GRPCService, at, tp.GammaEgress[0])
		}
		return nil
	})
	if err := tp.WaitGammaServiceRouted(ctx, 10*time.Second, mesh.ServiceKey{Name: demo.TripleService}, mesh.ProtocolTriple); err != nil {
		t.Fatal(err)
	}

	// A change of gamma's file is in force on gamma's egress when ChangeGamma returns: it
	// runs a version published after the change (versions are "v<n>", n increasing).
	before := xdsVersion(t, tp.GammaCP.Core().Version())
	restore, err := tp.ChangeGamma(ctx, func(d *config.Domain) { d.Limits.CallTimeout = config.Duration(7 * time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	if got := xdsVersion(t, tp.Gateways[2].XDS().Version()); got <= before {
		t.Fatalf("gamma's egress runs version v%d after ChangeGamma, published before the change: v%d", got, before)
	}
	call("gamma", tp.GammaEgress[0])
	if err := restore(ctx); err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(tp.GammaCP.Core().Domain().Limits.CallTimeout); got == 7*time.Second {
		t.Fatal("restore left gamma's changed file in force")
	}
	call("gamma", tp.GammaEgress[0])
}

// xdsVersion is the number of a controlplane's xDS version "v<n>".
func xdsVersion(t *testing.T, v string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(strings.TrimPrefix(v, "v"), 10, 64)
	if err != nil || !strings.HasPrefix(v, "v") {
		t.Fatalf("xDS version %q is not v<n>", v)
	}
	return n
}

// metricsSeries reads g's /metrics into a map from series (name and labels) to value.
func metricsSeries(t *testing.T, g *launch.Gateway) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", g.Name(), err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s /metrics: %v", g.Name(), err)
	}
	return out
}
