//go:build linux

// Package abuse runs bad callers against a real in-process topology (embedded registries,
// the grpc-go interop TestService in beta, egress and ingress gateways with mutual TLS
// between them) while a well-behaved consumer makes calls, and checks that the bad callers
// hurt nobody but themselves: consumers and providers that stop reading mid-stream, and
// HTTP/2 floods (rapid reset, CONTINUATION, PING, SETTINGS, WINDOW_UPDATE) on the egress's
// consumer port and on the ingress's tunnel port (with an alpha egress SVID).
//
// The package measures latency and reads this process's RSS: run it alone, not in
// parallel with other packages' tests (`go test ./test/abuse/ -count=1 -v`).
package abuse

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/strait-mesh/strait/launch/demo"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/samples"
	"github.com/strait-mesh/strait/launch"
)

var topo *demo.Topology

// log carries the package's own structured events (figures go to t.Logf as well).
var log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func TestMain(m *testing.M) {
	t, err := demo.StartTopology(context.Background(), demo.TopologyOptions{})
	if err != nil {
		log.Error("abuse: start topology", "err", err)
		os.Exit(1)
	}
	topo = t
	code := m.Run()
	topo.Close()
	if code == 0 {
		opts := []goleak.Option{
			// grpc-go's and etcd's process-wide background workers.
			goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
			goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
			goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		}
		for _, f := range samples.TripleClientGoroutines {
			opts = append(opts, goleak.IgnoreAnyFunction(f))
		}
		if err := goleak.Find(opts...); err != nil {
			log.Error("abuse: goroutine leak", "err", err)
			code = 1
		}
	}
	os.Exit(code)
}

// gateway returns the gateway listening on addr.
func gateway(t *testing.T, addr string) *launch.Gateway {
	t.Helper()
	for _, g := range topo.Gateways {
		if g.Addr() == addr {
			return g
		}
	}
	t.Fatalf("no gateway listens on %s", addr)
	return nil
}
