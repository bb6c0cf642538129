package local

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/samples"
)

// TestMain ends the package with a goroutine leak check: the registry clients and gRPC
// connections the tests open must be gone once they are closed.
func TestMain(m *testing.M) {
	opts := []goleak.Option{
		// grpc-go's process-wide background worker.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	}
	// The dubbo-go client of the scenarios' Triple calls cannot be closed (see
	// samples.TripleClientGoroutines); its connection ends with the topology.
	for _, f := range samples.TripleClientGoroutines {
		opts = append(opts, goleak.IgnoreAnyFunction(f))
	}
	goleak.VerifyTestMain(m, opts...)
}
