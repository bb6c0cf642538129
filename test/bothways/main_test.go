// Package bothways runs the two-domain topology with exports in both directions on each
// kind of external registry (an etcd server, ZooKeeper, Nacos 2.3.2), one server per domain
// started by test/registries on ports chosen at run time: no loop, calls both
// ways, and a removed peer's managed entries leave the registry.
package bothways

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultClient.CloseIdleConnections() // putConfig's keep-alive connections
	if code == 0 {
		if err := goleak.Find(
			// grpc-go's process-wide background workers.
			goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
			goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
			goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "bothways: goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
