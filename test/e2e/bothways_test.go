package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"github.com/strait-mesh/strait/controlplane"
)

// TestExportsBothWaysNoLoop: alpha exports its own service to beta and beta exports to
// alpha, each also with a pattern export of everything ("*"). Each imports only what the
// other provides natively; the entries Strait published in one registry for the other
// domain's services are never exported back (no loop), in the federation catalogs or in
// either registry; calls cross both ways.
func TestExportsBothWaysNoLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := demo.StartTopology(ctx, demo.TopologyOptions{BothWays: true, DataPath: os.Getenv("STRAIT_E2E_DATAPATH")})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()

	if err := tp.WaitNoLoop(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	// Calls cross both ways: alpha's consumer reaches beta's provider, beta's consumer
	// reaches alpha's.
	if err := tp.CallBothWays(ctx); err != nil {
		t.Fatal(err)
	}

	// Settled: a round of republication on both sides (a config change each) re-exports
	// nothing that was imported.
	for _, cp := range []*controlplane.Server{tp.AlphaCP, tp.BetaCP} {
		d := *cp.Core().Domain()
		d.Limits.CallTimeout++
		if _, err := tp.SetDomain(ctx, &d); err != nil {
			t.Fatal(err)
		}
	}
	for _, cp := range []*controlplane.Server{tp.AlphaCP, tp.BetaCP} {
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
	if err := tp.CheckNoLoop(ctx); err != nil {
		t.Fatal(err)
	}
}
