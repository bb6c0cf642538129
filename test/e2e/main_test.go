// Package e2e runs the cross-domain scenarios against a real in-process topology: embedded
// etcd registries, real providers, egress and ingress gateways with mutual TLS between
// them, and real clients (grpc-go's interop client, dubbo-go, net/http).
package e2e

import (
	"context"
	"os"
	"testing"

	"github.com/strait-mesh/strait/launch/demo"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/samples"
)

var topo *demo.Topology

func TestMain(m *testing.M) {
	ctx := context.Background()
	// STRAIT_E2E_DATAPATH=http runs the suite on the general path (make test does both).
	t, err := demo.StartTopology(ctx, demo.TopologyOptions{DataPath: os.Getenv("STRAIT_E2E_DATAPATH")})
	if err != nil {
		println("e2e: start topology:", err.Error())
		os.Exit(1)
	}
	topo = t
	code := m.Run()
	topo.Close()
	if code == 0 {
		opts := []goleak.Option{}
		for _, f := range samples.TripleClientGoroutines {
			opts = append(opts, goleak.IgnoreAnyFunction(f))
		}
		opts = append(opts, leakAllowed()...)
		if err := goleak.Find(opts...); err != nil {
			println("e2e: goroutine leak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}
