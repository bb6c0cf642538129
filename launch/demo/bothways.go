package demo

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/controlplane"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// ImportedRPC lists, sorted and comma-separated, the gRPC/Triple services cp imports from
// peer.
func ImportedRPC(cp *controlplane.Server, peer string) string {
	var names []string
	for _, s := range cp.Imports()[peer].Services {
		if s.GetProtocol() != "http" {
			names = append(names, s.GetName())
		}
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// ManagedEntries counts a registry's managed entries by "service@origin".
func ManagedEntries(ctx context.Context, reg registrysync.Registry) (map[string]int, error) {
	all, err := reg.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("managed entries: %w", err)
	}
	out := map[string]int{}
	for _, i := range all {
		if registrysync.Managed(i) {
			out[i.Service.Name+"@"+i.Metadata[registrysync.MetaOrigin]]++
		}
	}
	return out, nil
}

// CheckNoLoop checks a BothWays topology: each domain imports only what the other provides
// natively (alpha: the gRPC and Triple sample services; beta: AlphaService), and each
// registry holds as managed entries only the other domain's services, one per egress
// instance of its own domain: nothing imported was exported back.
func (t *Topology) CheckNoLoop(ctx context.Context) error {
	if want := GRPCService + "," + TripleService; ImportedRPC(t.AlphaCP, "beta") != want {
		return fmt.Errorf("alpha imports from beta %q, want %q", ImportedRPC(t.AlphaCP, "beta"), want)
	}
	if got := ImportedRPC(t.BetaCP, "alpha"); got != AlphaService {
		return fmt.Errorf("beta imports from alpha %q, want %q", got, AlphaService)
	}
	for _, x := range []struct {
		domain string
		cp     *controlplane.Server
		want   map[string]int
	}{
		{"alpha", t.AlphaCP, map[string]int{GRPCService + "@beta": len(t.Egress), TripleService + "@beta": len(t.Egress)}},
		{"beta", t.BetaCP, map[string]int{AlphaService + "@alpha": len(t.BetaEgress)}},
	} {
		got, err := ManagedEntries(ctx, x.cp.Registry())
		if err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint(x.want) {
			return fmt.Errorf("%s's registry has managed %v, want %v", x.domain, got, x.want)
		}
	}
	return nil
}

// WaitNoLoop waits up to limit until CheckNoLoop holds, and returns its last error if it
// never does.
func (t *Topology) WaitNoLoop(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := t.CheckNoLoop(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topology: not settled within %v: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topology: %w (last: %w)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CallBothWays calls through every egress instance of a BothWays topology: alpha's reach
// beta's TestService, beta's reach alpha's health service.
func (t *Topology) CallBothWays(ctx context.Context) error {
	for _, e := range t.Egress {
		if err := callEgress(e, func(cc *grpc.ClientConn) error {
			_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{})
			return err
		}); err != nil {
			return fmt.Errorf("alpha → beta through %s: %w", e, err)
		}
	}
	for _, e := range t.BetaEgress {
		if err := callEgress(e, func(cc *grpc.ClientConn) error {
			resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				err = fmt.Errorf("status %v", resp.GetStatus())
			}
			return err
		}); err != nil {
			return fmt.Errorf("beta → alpha through %s: %w", e, err)
		}
	}
	return nil
}

func callEgress(addr string, call func(*grpc.ClientConn) error) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	return call(cc)
}
