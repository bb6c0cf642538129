package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/samples"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/test/wait"
)

// TestFederationThroughTunnel: alpha's controlplane follows what beta exports to it, and
// beta's live ingress instances, over the Federation API riding beta's ingress tunnel port.
func TestFederationThroughTunnel(t *testing.T) {
	want := append([]string(nil), topo.Ingress...)
	sort.Strings(want)
	var im controlplane.Import
	wait.ForNil(t, 30*time.Second, "alpha's import of beta", func() error {
		var ok bool
		im, ok = topo.AlphaCP.Imports()["beta"]
		if ok && !im.Stale && len(im.Services) == len(topo.BetaCP.Core().Domain().Exports) &&
			strings.Join(im.Ingress, ",") == strings.Join(want, ",") {
			return nil
		}
		return fmt.Errorf("%+v", im)
	})
	var keys []string
	for _, s := range im.Services {
		keys = append(keys, controlplane.ServiceKey(s))
	}
	t.Logf("alpha imports from beta (revision %d): %v, ingress %v", im.Revision, keys, im.Ingress)
}

// TestImportedServicesAreRouted: with no gRPC or Triple route in alpha's domain file, the
// services beta exports to alpha are still routed, from the import.
func TestImportedServicesAreRouted(t *testing.T) {
	withRoutes(t, func(a *config.Domain) {
		var httpOnly []config.Route
		for _, r := range a.Routes {
			if r.Protocol == mesh.ProtocolHTTP {
				httpOnly = append(httpOnly, r)
			}
		}
		a.Routes = httpOnly
	}, func(*config.Domain) {})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := testgrpc.NewTestServiceClient(dialEgress(t, 0)).EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatalf("imported gRPC service: %v", err)
	}
	if g, err := samples.TripleGreet(ctx, topo.Egress[1], "imported"); err != nil || g != "hello imported" {
		t.Fatalf("imported Triple service: %q %v", g, err)
	}
}

// TestImportsPublishedInRegistry: alpha's registry lists beta's exported gRPC and Triple
// services with alpha's live egress instances as their providers, marked as managed.
func TestImportsPublishedInRegistry(t *testing.T) {
	want := map[string]bool{}
	for _, e := range topo.Egress {
		want[e] = true
	}
	var got map[string]map[string]bool
	wait.ForNil(t, 30*time.Second, "beta's services in alpha's registry", func() error {
		all, err := topo.AlphaCP.Registry().List(context.Background())
		if err != nil {
			return err
		}
		got = map[string]map[string]bool{}
		for _, i := range all {
			if !registrysync.Managed(i) || i.Metadata[registrysync.MetaOrigin] != "beta" {
				continue
			}
			if app := i.Metadata["application"]; app != "strait-beta" {
				return fmt.Errorf("%s at %s has application %q, want strait-beta", i.Service.Name, i.Address, app)
			}
			if got[i.Service.Name] == nil {
				got[i.Service.Name] = map[string]bool{}
			}
			got[i.Service.Name][i.Address] = true
		}
		ok := len(got) == 2
		for _, svc := range []string{demo.GRPCService, demo.TripleService} {
			ok = ok && len(got[svc]) == len(want)
			for a := range got[svc] {
				ok = ok && want[a]
			}
		}
		if !ok {
			return fmt.Errorf("alpha's registry has %v, want both services at %v", got, topo.Egress)
		}
		return nil
	})
	t.Logf("alpha's registry: %v", got)
}

// TestWithdrawnExportLeavesRegistry: when beta stops exporting a service to alpha, alpha
// stops routing it and its entries leave alpha's registry; exported again, they return.
func TestWithdrawnExportLeavesRegistry(t *testing.T) {
	count := func() int {
		all, err := topo.AlphaCP.Registry().List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, i := range all {
			if registrysync.Managed(i) && i.Service.Name == demo.TripleService {
				n++
			}
		}
		return n
	}
	waitCount := func(want func(int) bool, what string) {
		t.Helper()
		wait.ForNil(t, 30*time.Second, what, func() error {
			if n := count(); !want(n) {
				return fmt.Errorf("%d entries", n)
			}
			return nil
		})
	}
	waitCount(func(n int) bool { return n == len(topo.Egress) }, "published")
	// Runs after withRoutes puts the export back (cleanups run last first): the entries
	// return, and the next test starts from the whole import.
	t.Cleanup(func() { waitCount(func(n int) bool { return n == len(topo.Egress) }, "published again") })
	withRoutes(t, func(*config.Domain) {}, func(b *config.Domain) {
		var keep []config.Export
		for _, e := range b.Exports {
			if e.Service != demo.TripleService {
				keep = append(keep, e)
			}
		}
		b.Exports = keep
	})
	waitCount(func(n int) bool { return n == 0 }, "withdrawn")

	// The withdrawal shows in alpha's controlplane metrics; beta is reachable, not stale.
	metrics := func() string {
		resp, err := http.Get("http://" + topo.AlphaCP.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := metrics()
	for _, want := range []string{`strait_federation_peer_stale{peer="beta"} 0`, `strait_federation_withdrawn_total{peer="beta"} `} {
		if !strings.Contains(m, want) {
			t.Errorf("alpha's /metrics lacks %q", want)
		}
	}
	if strings.Contains(m, `strait_federation_withdrawn_total{peer="beta"} 0`) {
		t.Errorf("alpha's /metrics counts no withdrawal")
	}
}

// TestPeerSettingsChangeKeepsImports: when a peer's federation settings change (here its
// ingress seeds, reordered; a rotated trust bundle takes the same path), alpha follows
// beta's catalog with the new settings without dropping what it imported meanwhile.
func TestPeerSettingsChangeKeepsImports(t *testing.T) {
	before := topo.AlphaCP.Imports()["beta"]
	if len(before.Services) == 0 || before.Stale {
		t.Fatalf("alpha's import of beta before: %d services, stale %v", len(before.Services), before.Stale)
	}
	old := topo.AlphaCP.Core().Domain()
	d := *old
	d.Peers = append([]config.Peer(nil), d.Peers...)
	seeds := append([]string(nil), d.Peers[0].Ingress...)
	for i, j := 0, len(seeds)-1; i < j; i, j = i+1, j-1 {
		seeds[i], seeds[j] = seeds[j], seeds[i]
	}
	seeds = append(seeds, seeds[0]) // a different list, the same instances
	d.Peers[0].Ingress = seeds
	ctx := context.Background()
	t.Cleanup(func() {
		if _, err := topo.SetDomain(ctx, old); err != nil {
			t.Error(err)
		}
	})
	if _, err := topo.SetDomain(ctx, &d); err != nil {
		t.Fatal(err)
	}
	wait.ForNil(t, 30*time.Second, "alpha's import of beta current again", func() error {
		im := topo.AlphaCP.Imports()["beta"]
		if len(im.Services) != len(before.Services) {
			t.Fatalf("during the change alpha imported %d services, had %d", len(im.Services), len(before.Services))
		}
		if !im.Stale && im.Revision >= before.Revision {
			return nil
		}
		return fmt.Errorf("%+v", im)
	})
}
