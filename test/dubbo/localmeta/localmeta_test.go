// Package localmeta checks that Strait reads an ordinary dubbo-go provider registered at
// application level with local metadata storage (dubbo-go's default): its MetadataInfo is
// asked from the provider's own MetadataService (MetadataServiceV2 over Triple).
//
// It runs in a process of its own because dubbo-go exports the MetadataService once per
// process (metadata.Options.Init's sync.Once), so a provider with local metadata cannot
// follow one with remote metadata in test/dubbo. It starts its own ZooKeeper on a free
// port (no fixed ports, no lock needed).
//
// There is no goroutine leak check in this package: the dubbo-go provider cannot be
// stopped without dubbo-go's process-wide graceful shutdown (see StartAppLevelProvider).
package localmeta

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/zookeeper"
)

type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}

var zkAddr string

func TestMain(m *testing.M) {
	scripts, _ := filepath.Abs("../../registries/zookeeper")
	dir, err := os.MkdirTemp("", "strait-localmeta-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(filepath.Join(scripts, "start.sh"), dir, strconv.Itoa(port))
	cmd.Env = append(os.Environ(), "WATCH_PID="+strconv.Itoa(os.Getpid()))
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: ZooKeeper did not start (%v):\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	zkAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	code := m.Run()
	if out, err := exec.Command(filepath.Join(scripts, "stop.sh"), dir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: stopping ZooKeeper: %v\n%s", err, out)
		code = 1
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// TestLocalMetadata: a dubbo-go provider with local metadata storage, registered at
// application level in ZooKeeper, is a GreetService provider in Strait's catalog of that
// registry, as in its List.
func TestLocalMetadata(t *testing.T) {
	app := "dubbo-local-meta"
	paddr, served, err := StartAppLevelProvider("zookeeper", zkAddr, app, "local")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := zookeeper.New([]string{zkAddr}, zookeeper.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	cat := registrysync.NewCatalog(reg, nil)
	changed := make(chan struct{}, 1)
	cat.OnChange(func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cat.Run(ctx) }()
	defer func() { cancel(); <-done }()
	key := mesh.ServiceKey{Name: "strait.demo.greet.v1.GreetService"}
	match := func(is []mesh.Instance) bool {
		for _, i := range is {
			if i.Address == paddr && i.Protocol == mesh.ProtocolTriple && i.Metadata["application"] == app {
				return true
			}
		}
		return false
	}
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for !match(cat.Endpoints(key, mesh.ProtocolTriple)) {
		select {
		case <-changed:
		case err := <-served:
			t.Fatalf("dubbo-go provider stopped: %v", err)
		case <-deadline.C:
			t.Fatalf("after 60s, the catalog has GreetService providers %v", cat.Endpoints(key, mesh.ProtocolTriple))
		}
	}
	lctx, lcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer lcancel()
	all, err := reg.List(lctx)
	if err != nil {
		t.Fatal(err)
	}
	if !match(all) {
		t.Fatalf("List: %v", all)
	}
	t.Logf("dubbo-go provider %s with local metadata seen at %s", app, paddr)
}
