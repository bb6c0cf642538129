// Package h2spec runs h2spec v2.2.1 (github.com/summerwind/h2spec, installed by `make deps`)
// against the gateways of a real in-process topology: the egress consumer port (h2c) and an
// ingress tunnel port (mTLS, reached through a loopback forwarder that presents an alpha
// egress SVID), on the relay data path. Every h2spec case must pass there. The general
// (net/http) data path is run too, for comparison only.
package h2spec

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/samples"
)

func TestMain(m *testing.M) {
	code := m.Run()
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
			fmt.Fprintln(os.Stderr, "h2spec: goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
