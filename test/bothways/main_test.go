// Package bothways runs the two-domain topology with exports in both directions on each
// kind of external registry (an etcd server, ZooKeeper, Nacos 2.3.2), one server per domain
// started by test/registries/<kind>/start.sh on free loopback ports: no loop, calls both
// ways, and a removed peer's managed entries leave the registry.
package bothways

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

const scripts = "../registries"

// startServer starts a registry server of the kind (etcd, zookeeper, nacos) on free loopback
// ports, stopped when the test ends, and returns its client address (for Nacos, the HTTP
// port's). A watchdog stops it if the test process dies.
func startServer(kind string) (addr string, stop func() error, err error) {
	dir, err := os.MkdirTemp("", "strait-bothways-"+kind+"-")
	if err != nil {
		return "", nil, err
	}
	stop = func() error {
		defer os.RemoveAll(dir)
		if out, err := exec.Command(filepath.Join(scripts, kind, "stop.sh"), dir).CombinedOutput(); err != nil {
			return fmt.Errorf("%s stop.sh: %v\n%s", kind, err, out)
		}
		return nil
	}
	for range 3 { // another process may take a port between the check and the start
		var port int
		var env string
		switch kind {
		case "nacos": // PORT, PORT+1000, PORT+1001 (gRPC), PORT-1000 (JRaft)
			port = freePorts(-1000, 0, 1000, 1001)
			env = "NACOS_PARENT_PID=" + strconv.Itoa(os.Getpid())
		case "etcd": // PORT (clients), PORT+1 (peers)
			port = freePorts(0, 1)
			env = "WATCH_PID=" + strconv.Itoa(os.Getpid())
		default:
			port = freePorts(0)
			env = "WATCH_PID=" + strconv.Itoa(os.Getpid())
		}
		cmd := exec.Command(filepath.Join(scripts, kind, "start.sh"), dir, strconv.Itoa(port))
		cmd.Env = append(os.Environ(), env)
		out, serr := cmd.CombinedOutput()
		if serr == nil {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), stop, nil
		}
		err = fmt.Errorf("%s start.sh: %v\n%s", kind, serr, out)
	}
	_ = stop()
	return "", nil, err
}

// freePorts returns a port P such that P+d is free on every interface (Nacos binds some of
// its ports on all of them) for each offset d, away from up.sh's fixed 171xx/172xx.
func freePorts(offsets ...int) int {
	for {
		p := 20000 + rand.IntN(25000)
		free := true
		for _, d := range offsets {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(p+d))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return p
		}
	}
}
