package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/test/ports"
	"github.com/strait-mesh/strait/test/wait"
)

// withRoutes applies changed copies of both domains' configurations through their
// controlplanes for the test's duration, and restores them after.
func withRoutes(t *testing.T, alpha func(*config.Domain), beta func(*config.Domain)) {
	t.Helper()
	setDomains(t, topo, alpha, beta)
}

// TestProviderDown: the registry lists a provider that is not there; the caller gets
// UNAVAILABLE quickly, not a hang.
func TestProviderDown(t *testing.T) {
	const svc = "grpc.testing.ReconnectService"
	// A port held for this test and released: nobody listens there.
	free := ports.Reserve(t, 1)[0]
	free.Release()
	inst := mesh.Instance{Service: mesh.ServiceKey{Name: svc}, Protocol: mesh.ProtocolGRPC, Address: free.Addr()}
	ctx := context.Background()
	if err := topo.BetaRegistry.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.BetaRegistry.Deregister(ctx, inst) })
	withRoutes(t,
		func(a *config.Domain) {
			a.Routes = append(a.Routes, config.Route{Service: svc, Protocol: mesh.ProtocolGRPC, Peer: "beta"})
		},
		func(b *config.Domain) {
			b.Exports = append(b.Exports, config.Export{Service: svc, Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}})
		})
	waitEndpoints(t, svc)

	// A call that hung would end with the caller's deadline (DEADLINE_EXCEEDED), not
	// UNAVAILABLE: the code tells a fast failure from a hang, whatever the machine's speed.
	rc := testgrpc.NewReconnectServiceClient(dialEgress(t, 0))
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := rc.Start(cctx, &testpb.ReconnectParams{})
	took := time.Since(start)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want UNAVAILABLE", err)
	}
	t.Logf("provider down → %v in %v", err, took)
}

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

// TestNotExportedToPeer: alpha routes a service beta does not export: UNIMPLEMENTED from the
// ingress, naming the service; a service exported to someone else: PERMISSION_DENIED.
func TestNotExported(t *testing.T) {
	withRoutes(t,
		func(a *config.Domain) {
			a.Routes = append(a.Routes,
				config.Route{Service: "grpc.testing.ReconnectService", Protocol: mesh.ProtocolGRPC, Peer: "beta"},
				config.Route{Service: "grpc.testing.LoadBalancerStatsService", Protocol: mesh.ProtocolGRPC, Peer: "beta"})
		},
		func(b *config.Domain) {
			b.Exports = append(b.Exports, config.Export{Service: "grpc.testing.LoadBalancerStatsService", Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}, Methods: []string{"Other"}})
		})
	cc := dialEgress(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := testgrpc.NewReconnectServiceClient(cc).Start(ctx, &testpb.ReconnectParams{})
	if status.Code(err) != codes.Unimplemented || !contains(err, "grpc.testing.ReconnectService") {
		t.Fatalf("not exported: got %v", err)
	}
	_, err = testgrpc.NewLoadBalancerStatsServiceClient(cc).GetClientStats(ctx, &testpb.LoadBalancerStatsRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("method not allowed: got %v", err)
	}
}

func contains(err error, s string) bool {
	return err != nil && strings.Contains(status.Convert(err).Message(), s)
}
