package local

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain ends the package with a goroutine leak check: the registry clients and gRPC
// connections the tests open must be gone once they are closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// grpc-go's process-wide background worker.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}
