package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/launch/demo"
)

// TestDecideBothPaths drives one table of calls through both data paths: the relay and
// the general net/http path, in two topologies that differ only in their gateways'
// dataPath. Both gateways decide a call once, in internal/gateway's core, whichever path
// it takes: each case must end the same way on both, and on the relay the counters show
// which path served it (a refusal is answered by the general path).
func TestDecideBothPaths(t *testing.T) {
	other := "http"
	if topo.DataPath() == "http" {
		other = "relay"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	second, err := demo.StartTopology(ctx, demo.TopologyOptions{DataPath: other, Egress: 1, Ingress: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(second.Close) // after the domains are put back (cleanups run last first)

	const (
		notExported = "grpc.testing.ReconnectService"
		oneMethod   = "grpc.testing.LoadBalancerStatsService"
		noProvider  = "grpc.testing.XdsUpdateClientConfigureService"
	)
	for _, tp := range []*demo.Topology{topo, second} {
		setDomains(t, tp,
			func(a *config.Domain) {
				for _, s := range []string{notExported, oneMethod, noProvider} {
					a.Routes = append(a.Routes, config.Route{Service: s, Protocol: mesh.ProtocolGRPC, Peer: "beta"})
				}
			},
			func(b *config.Domain) {
				b.Exports = append(b.Exports,
					config.Export{Service: oneMethod, Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}, Methods: []string{"Other"}},
					config.Export{Service: noProvider, Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}})
			})
	}

	// where says which gateway answers the call on the relay: "" relays through both,
	// "egress" is answered by the egress' general path, "ingress" by the ingress'.
	cases := []struct {
		name  string
		call  func(context.Context, *demo.Topology) error
		code  codes.Code
		msg   string
		where string
	}{
		{"allowed", func(ctx context.Context, tp *demo.Topology) error {
			_, err := testgrpc.NewTestServiceClient(dialAddr(t, tp.Egress[0])).EmptyCall(ctx, &testpb.Empty{})
			return err
		}, codes.OK, "", ""},
		{"unknown service at the egress", func(ctx context.Context, tp *demo.Topology) error {
			_, err := testgrpc.NewXdsUpdateHealthServiceClient(dialAddr(t, tp.Egress[0])).SetServing(ctx, &testpb.Empty{})
			return err
		}, codes.Unimplemented, `unknown service "grpc.testing.XdsUpdateHealthService"`, "egress"},
		{"not exported by the peer", func(ctx context.Context, tp *demo.Topology) error {
			_, err := testgrpc.NewReconnectServiceClient(dialAddr(t, tp.Egress[0])).Start(ctx, &testpb.ReconnectParams{})
			return err
		}, codes.Unimplemented, `unknown service "grpc.testing.ReconnectService" in domain beta`, "ingress"},
		{"method not exported", func(ctx context.Context, tp *demo.Topology) error {
			_, err := testgrpc.NewLoadBalancerStatsServiceClient(dialAddr(t, tp.Egress[0])).GetClientStats(ctx, &testpb.LoadBalancerStatsRequest{})
			return err
		}, codes.PermissionDenied, "domain alpha may not call grpc.testing.LoadBalancerStatsService/GetClientStats", "ingress"},
		{"no live provider", func(ctx context.Context, tp *demo.Topology) error {
			_, err := testgrpc.NewXdsUpdateClientConfigureServiceClient(dialAddr(t, tp.Egress[0])).Configure(ctx, &testpb.ClientConfigureRequest{})
			return err
		}, codes.Unavailable, "no live provider of grpc.testing.XdsUpdateClientConfigureService in domain beta", "ingress"},
	}
	for _, c := range cases {
		for _, tp := range []*demo.Topology{topo, second} {
			t.Run(c.name+"/"+tp.DataPath(), func(t *testing.T) {
				before := relayCounts(tp)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				err := c.call(cctx, tp)
				if status.Code(err) != c.code || (c.msg != "" && !contains(err, c.msg)) {
					t.Fatalf("got %v, want %v %q", err, c.code, c.msg)
				}
				after := relayCounts(tp)
				if tp.DataPath() == "http" {
					if after != before {
						t.Fatalf("the http data path relayed: %+v → %+v", before, after)
					}
					return
				}
				want := before
				switch c.where {
				case "":
					want.egressRelayed++
					want.ingressRelayed++
				case "egress":
					want.egressFallback++
				case "ingress":
					want.egressRelayed++
					want.ingressFallback++
				}
				if after != want {
					t.Fatalf("relay counters %+v → %+v, want %+v", before, after, want)
				}
			})
		}
	}
}

type counts struct{ egressRelayed, egressFallback, ingressRelayed, ingressFallback uint64 }

// relayCounts sums what the relay of alpha's egress and beta's ingress instances served
// and handed to the general path.
func relayCounts(tp *demo.Topology) counts {
	var c counts
	for _, g := range tp.Gateways {
		if e := g.Egress(); e != nil && g.Config().Domain == "alpha" {
			r, f := e.RelayStats()
			c.egressRelayed += r
			c.egressFallback += f
		}
		if i := g.Ingress(); i != nil && g.Config().Domain == "beta" {
			r, f := i.RelayStats()
			c.ingressRelayed += r
			c.ingressFallback += f
		}
	}
	return c
}

// setDomains changes alpha's and beta's domain files of tp for the test (exports first,
// then routes: a route never points at a service the peer refuses), and puts them back.
func setDomains(t *testing.T, tp *demo.Topology, alpha func(*config.Domain), beta func(*config.Domain)) {
	t.Helper()
	restore, err := tp.ChangeDomains(context.Background(), alpha, beta)
	t.Cleanup(func() {
		if err := restore(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}
