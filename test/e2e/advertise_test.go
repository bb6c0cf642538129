package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/launch/demo"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/test/wait"
)

// TestAdvertisedAddress: an egress that listens on the wildcard address publishes its
// advertised address, not the bound one ([::]:port, which no consumer can dial): alpha's
// registry lists beta's imports at 127.0.0.1:<port>, and a consumer that takes the
// address from the registry reaches beta's provider through it.
func TestAdvertisedAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := demo.StartTopology(ctx, demo.TopologyOptions{Egress: 1, Ingress: 1, DataPath: topo.DataPath(),
		EgressListen: "0.0.0.0:0", EgressAdvertise: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.Close)
	g := tp.Gateways[len(tp.Gateways)-1] // alpha's egress, started last
	if g.Egress() == nil {
		t.Fatalf("%s is not the egress", g.Name())
	}
	if h, _, _ := net.SplitHostPort(g.Addr()); h != "::" && h != "0.0.0.0" {
		t.Fatalf("the egress listens on %s, not the wildcard address", g.Addr())
	}
	want := g.Advertised()
	if !strings.HasPrefix(want, "127.0.0.1:") || !strings.HasSuffix(want, g.Addr()[strings.LastIndexByte(g.Addr(), ':'):]) {
		t.Fatalf("advertised %q for a listener on %s", want, g.Addr())
	}
	var addr string
	wait.ForNil(t, 30*time.Second, "beta's gRPC service in alpha's registry at the advertised address", func() error {
		all, err := tp.AlphaCP.Registry().List(ctx)
		if err != nil {
			return err
		}
		var seen []string
		for _, i := range all {
			if registrysync.Managed(i) && i.Service.Name == demo.GRPCService {
				seen = append(seen, i.Address)
			}
		}
		if len(seen) != 1 || seen[0] != want {
			return fmt.Errorf("alpha's registry lists %s at %v, want [%s]", demo.GRPCService, seen, want)
		}
		addr = seen[0]
		return nil
	})
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if _, err := testgrpc.NewTestServiceClient(dialAddr(t, addr)).EmptyCall(cctx, &testpb.Empty{}); err != nil {
		t.Fatalf("call through the registry's address %s: %v", addr, err)
	}
}
