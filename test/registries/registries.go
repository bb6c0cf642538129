// Package registries is the one harness tests start real registry servers with: a
// ZooKeeper, an etcd server or a Nacos 2.x server, each by its start.sh in the directory of
// its kind (kept as scripts, for deploy/local/up.sh uses them too), on ports that
// test/ports holds until the script starts the server. A watchdog stops the server if the
// test process dies.
package registries

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/strait-mesh/strait/test/ports"
)

// Kinds are the kinds of server the harness starts.
var Kinds = []string{"etcd", "nacos", "zookeeper"}

// Offsets are the ports, as offsets from the port given to start.sh, that a server of the
// kind binds: etcd its client port and peer port (+1); Nacos its HTTP API, gRPC for SDK
// clients (+1000), gRPC between members (+1001) and JRaft (-1000), some of them on every
// interface; ZooKeeper its client port.
func Offsets(kind string) ([]int, error) {
	switch kind {
	case "etcd":
		return []int{0, 1}, nil
	case "nacos":
		return []int{-1000, 0, 1000, 1001}, nil
	case "zookeeper":
		return []int{0}, nil
	}
	return nil, fmt.Errorf("registries: kind %q is not etcd, nacos or zookeeper", kind)
}

// Script is the path of the kind's script (start.sh or stop.sh).
func Script(kind, name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), kind, name)
}

// Server is a running registry server.
type Server struct {
	Kind string
	Dir  string // its files: data, log, pid
	Port int    // the port start.sh was given
	// Addr is 127.0.0.1:Port, the address clients are given (Nacos' HTTP API).
	Addr string
	// Took is how long start.sh took, the server's start included.
	Took time.Duration

	ports *ports.Group
}

// attempts: if an unrelated program binds one of the released ports before the server
// does, or the server fails to start on a loaded machine (a Nacos whose embedded Derby
// times out), it is tried again, on other ports.
const attempts = 3

// Start starts a server of the kind in a new temporary directory, for a TestMain; Stop it
// when done. Tests use StartT.
func Start(kind string) (*Server, error) {
	offsets, err := Offsets(kind)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "strait-"+kind+"-")
	if err != nil {
		return nil, fmt.Errorf("registries: %w", err)
	}
	s := &Server{Kind: kind, Dir: dir}
	for range attempts {
		g, herr := ports.HoldPattern(offsets...)
		if herr != nil {
			err = herr
			break
		}
		s.ports, s.Port = g, g.Base
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(g.Base))
		if err = s.start(); err == nil {
			return s, nil
		}
		_ = s.stopScript() // what a failed start left, if anything
		g.Close()
		s.ports = nil
		// The next try starts from an empty directory (a Nacos that failed may have left
		// half an embedded database).
		os.RemoveAll(dir)
		if merr := os.MkdirAll(dir, 0o700); merr != nil {
			return nil, fmt.Errorf("registries: %w", merr)
		}
	}
	os.RemoveAll(dir)
	return nil, err
}

// StartT starts a server of the kind for the test; it is stopped, and its directory
// removed, when the test ends.
func StartT(t testing.TB, kind string) *Server {
	t.Helper()
	s, err := Start(kind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("%s ready on %s in %v", kind, s.Addr, s.Took.Round(time.Millisecond))
	return s
}

// start releases the held ports and runs start.sh at once.
func (s *Server) start() error {
	cmd := exec.Command(Script(s.Kind, "start.sh"), s.Dir, strconv.Itoa(s.Port))
	pid := strconv.Itoa(os.Getpid())
	cmd.Env = append(os.Environ(),
		"WATCH_PID="+pid,                                  // etcd, ZooKeeper
		"NACOS_PARENT_PID="+pid, "NACOS_PARENT_CLEANUP=1") // Nacos (and remove the directory)
	began := time.Now()
	s.ports.Release()
	out, err := cmd.CombinedOutput()
	s.Took = time.Since(began)
	if err != nil {
		return fmt.Errorf("registries: %s start.sh %s %d: %w\n%s", s.Kind, s.Dir, s.Port, err, out)
	}
	return nil
}

func (s *Server) stopScript() error {
	if out, err := exec.Command(Script(s.Kind, "stop.sh"), s.Dir).CombinedOutput(); err != nil {
		return fmt.Errorf("registries: %s stop.sh %s: %w\n%s", s.Kind, s.Dir, err, out)
	}
	return nil
}

// Stop stops the server, removes its directory and gives its ports up.
func (s *Server) Stop() error {
	err := s.stopScript()
	os.RemoveAll(s.Dir)
	if s.ports != nil {
		s.ports.Close()
		s.ports = nil
	}
	return err
}

// Kill stops the server and keeps its directory and ports (still claimed by this
// process), for Restart.
func (s *Server) Kill() error { return s.stopScript() }

// Restart starts the server again, after Kill, in the same directory on the same ports
// (which no other user of test/ports has been given meanwhile).
func (s *Server) Restart() error { return s.start() }

// StopDir stops the server of the kind that start.sh started in dir (deploy/local/up.sh's
// registries, for instance).
func StopDir(kind, dir string) error {
	if out, err := exec.Command(Script(kind, "stop.sh"), dir).CombinedOutput(); err != nil {
		return fmt.Errorf("registries: %s stop.sh %s: %w\n%s", kind, dir, err, out)
	}
	return nil
}
