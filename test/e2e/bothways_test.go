package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/launch"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// TestExportsBothWaysNoLoop: alpha exports its own service to beta and beta exports to
// alpha, each also with a pattern export of everything ("*"). Each imports only what the
// other provides natively; the entries Strait published in one registry for the other
// domain's services are never exported back (no loop), in the federation catalogs or in
// either registry; calls cross both ways.
func TestExportsBothWaysNoLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := launch.StartTopology(ctx, launch.TopologyOptions{BothWays: true, DataPath: os.Getenv("STRAIT_E2E_DATAPATH")})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()

	imported := func(cp *launch.Controlplane, peer string) string {
		im := cp.Imports()[peer]
		var names []string
		for _, s := range im.Services {
			if s.GetProtocol() != "http" {
				names = append(names, s.GetName())
			}
		}
		sort.Strings(names)
		return strings.Join(names, ",")
	}
	// managed lists a registry's managed entries: service@origin → count.
	managed := func(reg registrysync.Registry) map[string]int {
		all, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, i := range all {
			if registrysync.Managed(i) {
				out[i.Service.Name+"@"+i.Metadata[registrysync.MetaOrigin]]++
			}
		}
		return out
	}
	wantAlphaImports := launch.GRPCService + "," + launch.TripleService
	wantAlphaReg := map[string]int{launch.GRPCService + "@beta": len(tp.Egress), launch.TripleService + "@beta": len(tp.Egress)}
	wantBetaReg := map[string]int{launch.AlphaService + "@alpha": len(tp.BetaEgress)}
	check := func() error {
		if got := imported(tp.AlphaCP, "beta"); got != wantAlphaImports {
			return fmt.Errorf("alpha imports from beta %q, want %q", got, wantAlphaImports)
		}
		if got := imported(tp.BetaCP, "alpha"); got != launch.AlphaService {
			return fmt.Errorf("beta imports from alpha %q, want %q", got, launch.AlphaService)
		}
		if got := managed(tp.AlphaCP.Registry()); fmt.Sprint(got) != fmt.Sprint(wantAlphaReg) {
			return fmt.Errorf("alpha's registry has managed %v, want %v", got, wantAlphaReg)
		}
		if got := managed(tp.BetaCP.Registry()); fmt.Sprint(got) != fmt.Sprint(wantBetaReg) {
			return fmt.Errorf("beta's registry has managed %v, want %v", got, wantBetaReg)
		}
		return nil
	}
	deadline := time.Now().Add(20 * time.Second)
	for err := check(); err != nil; err = check() {
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Calls cross both ways: alpha's consumer reaches beta's provider, beta's consumer
	// reaches alpha's.
	for _, e := range tp.Egress {
		if _, err := testgrpc.NewTestServiceClient(dialAddr(t, e)).EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
			t.Fatalf("alpha → beta through %s: %v", e, err)
		}
	}
	for _, e := range tp.BetaEgress {
		resp, err := healthpb.NewHealthClient(dialAddr(t, e)).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("beta → alpha through %s: %v %v", e, resp, err)
		}
	}

	// Settled: a round of republication on both sides (a config change each) re-exports
	// nothing that was imported.
	for _, cp := range []*launch.Controlplane{tp.AlphaCP, tp.BetaCP} {
		d := *cp.Core().Domain()
		d.Limits.CallTimeout++
		if _, err := tp.SetDomain(ctx, &d); err != nil {
			t.Fatal(err)
		}
	}
	for _, cp := range []*launch.Controlplane{tp.AlphaCP, tp.BetaCP} {
		for peer, im := range cp.Imports() {
			if im.Stale {
				t.Fatalf("%s's import of %s is stale: %s", cp.Core().Domain().Domain, peer, im.LastErr)
			}
			var keys []string
			for _, s := range im.Services {
				keys = append(keys, controlplane.ServiceKey(s))
			}
			t.Logf("%s imports from %s (revision %d): %v", cp.Core().Domain().Domain, peer, im.Revision, keys)
		}
	}
	if err := check(); err != nil {
		t.Fatal(err)
	}
}
