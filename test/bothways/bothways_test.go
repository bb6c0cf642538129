package bothways

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/config"
	testregistries "github.com/strait-mesh/strait/test/registries"
	"github.com/strait-mesh/strait/test/wait"
)

func TestBothWaysEtcd(t *testing.T)      { runBothWays(t, "etcd") }
func TestBothWaysZooKeeper(t *testing.T) { runBothWays(t, "zookeeper") }
func TestBothWaysNacos(t *testing.T)     { runBothWays(t, "nacos") }

// runBothWays: alpha and beta, each on its own registry server of the kind, export every
// native gRPC/Triple service to each other ("*"). Each imports only what the other provides
// natively, each registry holds only the other domain's services as managed entries, calls
// cross both ways, and a config change on both sides changes none of it. Then alpha removes
// beta from its peers: beta's services leave alpha's registry and alpha's routes, and alpha's
// leave beta's registry (alpha withdrew everything it exported to beta). Added back, beta is
// followed again as before.
func runBothWays(t *testing.T, kind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Both servers at once: a Nacos takes seconds to start.
	var addrs [2]string
	var errs [2]error
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := testregistries.Start(kind)
			errs[i] = err
			if err == nil {
				addrs[i] = s.Addr
				t.Cleanup(func() {
					if err := s.Stop(); err != nil {
						t.Error(err)
					}
				})
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%s servers: alpha %s, beta %s", kind, addrs[0], addrs[1])

	tp, err := demo.StartTopology(ctx, demo.TopologyOptions{
		BothWays: true, DataPath: os.Getenv("STRAIT_E2E_DATAPATH"),
		Registry: kind, AlphaRegistry: []string{addrs[0]}, BetaRegistry: []string{addrs[1]},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	for _, cp := range []*controlplane.Server{tp.AlphaCP, tp.BetaCP} {
		if got := cp.Core().Domain().Registry.Kind; got != kind {
			t.Fatalf("%s runs on a %q registry, want %q", cp.Core().Domain().Domain, got, kind)
		}
	}

	if err := tp.WaitNoLoop(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := tp.CallBothWays(ctx); err != nil {
		t.Fatal(err)
	}

	// A round of republication on both sides (a config change each) re-exports nothing
	// that was imported.
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
		}
	}
	if err := tp.WaitNoLoop(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := tp.CallBothWays(ctx); err != nil {
		t.Fatal(err)
	}

	// Alpha removes beta from its peers (with its routes to beta and its exports to beta),
	// through its admin API as an operator would.
	withBeta := tp.AlphaCP.Core().Domain()
	putConfig(t, ctx, tp.AlphaCP.AdminAddr(), withoutPeer(withBeta, "beta"))
	eventually(t, ctx, "the peer's managed entries leave both registries", func() error {
		if _, ok := tp.AlphaCP.Imports()["beta"]; ok {
			return fmt.Errorf("alpha still imports from beta")
		}
		for _, x := range []struct {
			domain string
			cp     *controlplane.Server
		}{{"alpha", tp.AlphaCP}, {"beta", tp.BetaCP}} {
			got, err := demo.ManagedEntries(ctx, x.cp.Registry())
			if err != nil {
				return err
			}
			if len(got) != 0 {
				return fmt.Errorf("%s's registry still has managed %v", x.domain, got)
			}
		}
		return nil
	})
	// Alpha's egress instances no longer route beta's services (once they run the new
	// configuration).
	eventually(t, ctx, "alpha's egress stops routing beta's services", func() error {
		for _, e := range tp.Egress {
			cc, err := grpc.NewClient(e, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			_, err = testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{})
			cc.Close()
			if status.Code(err) != codes.Unimplemented {
				return fmt.Errorf("alpha → beta through %s after beta was removed: %v, want Unimplemented", e, err)
			}
		}
		return nil
	})

	// Beta added back: alpha follows it again, and everything is as before, still without
	// a loop.
	if _, err := tp.SetDomain(ctx, withBeta); err != nil {
		t.Fatal(err)
	}
	if err := tp.WaitNoLoop(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Beta's importer of alpha reconnects after a backoff; its routes follow.
	eventually(t, ctx, "calls both ways after beta was added back", func() error { return tp.CallBothWays(ctx) })
}

// putConfig replaces the domain document of the controlplane whose admin API is at admin.
func putConfig(t *testing.T, ctx context.Context, admin string, d *config.Domain) {
	t.Helper()
	b, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+admin+"/v1/config", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT /v1/config: %s: %s", resp.Status, body)
	}
	t.Logf("PUT /v1/config: %s", bytes.TrimSpace(body))
}

// withoutPeer is d without peer: its peer entry, its routes to the peer, and the peer in
// its exports' destinations (an export left with none goes).
func withoutPeer(d *config.Domain, peer string) *config.Domain {
	n := *d
	n.Peers, n.Routes, n.Exports = nil, nil, nil
	for _, p := range d.Peers {
		if p.Domain != peer {
			n.Peers = append(n.Peers, p)
		}
	}
	for _, r := range d.Routes {
		if r.Peer != peer {
			n.Routes = append(n.Routes, r)
		}
	}
	for _, e := range d.Exports {
		var to []string
		for _, x := range e.To {
			if x != peer {
				to = append(to, x)
			}
		}
		if len(to) > 0 {
			e.To = to
			n.Exports = append(n.Exports, e)
		}
	}
	return &n
}

// eventually polls cond, up to 30 s, and fails the test with its last error.
func eventually(t *testing.T, ctx context.Context, what string, cond func() error) {
	t.Helper()
	if _, err := wait.Until(ctx, 30*time.Second, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
