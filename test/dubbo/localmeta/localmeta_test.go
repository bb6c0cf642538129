// Package localmeta checks that Strait reads ordinary dubbo-go providers registered at
// application level: with local metadata storage (dubbo-go's default) in ZooKeeper, whose
// MetadataInfo is asked from the provider's own MetadataService (MetadataServiceV2 over
// Triple), and with remote metadata in Nacos.
//
// It runs in a process of its own because dubbo-go exports the MetadataService once per
// process (metadata.Options.Init's sync.Once), so a provider with local metadata cannot
// follow one with remote metadata in test/dubbo, and because a dubbo-go server registers
// in every registry its process has known, which must all stay up. It starts its own
// ZooKeeper and Nacos on free ports (no fixed ports, no lock needed).
//
// There is no goroutine leak check in this package: the dubbo-go provider cannot be
// stopped without dubbo-go's process-wide graceful shutdown (see StartAppLevelProvider).
package localmeta

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/nacos"
	"github.com/strait-mesh/strait/registry-sync/zookeeper"
)

type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}

var zkAddr, nacosAddr string

// nacosPort returns a port p with p, p+1000, p+1001 and p-1000 free (Nacos binds all four).
func nacosPort() int {
	for {
		p := 20000 + rand.IntN(25000)
		free := true
		for _, q := range []int{p, p + 1000, p + 1001, p - 1000} {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(q))
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
	nacosScripts, _ := filepath.Abs("../../registries/nacos")
	ndir, err := os.MkdirTemp("", "strait-localmeta-nacos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stop := func() int {
		code := 0
		if out, err := exec.Command(filepath.Join(scripts, "stop.sh"), dir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: stopping ZooKeeper: %v\n%s", err, out)
			code = 1
		}
		if out, err := exec.Command(filepath.Join(nacosScripts, "stop.sh"), ndir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: stopping Nacos: %v\n%s", err, out)
			code = 1
		}
		_ = os.RemoveAll(dir)
		_ = os.RemoveAll(ndir)
		return code
	}
	var nerr error
	for range 3 { // another process may take a port between the check and the start
		np := nacosPort()
		cmd := exec.Command(filepath.Join(nacosScripts, "start.sh"), ndir, strconv.Itoa(np))
		cmd.Env = append(os.Environ(), "NACOS_PARENT_PID="+strconv.Itoa(os.Getpid()), "NACOS_PARENT_CLEANUP=1")
		var out []byte
		if out, nerr = cmd.CombinedOutput(); nerr == nil {
			nacosAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(np))
			break
		} else {
			nerr = fmt.Errorf("%w\n%s", nerr, out)
		}
	}
	if nerr != nil {
		fmt.Fprintf(os.Stderr, "FAIL: Nacos did not start: %v\n", nerr)
		stop()
		os.Exit(1)
	}
	code := m.Run()
	if c := stop(); c != 0 {
		code = c
	}
	os.Exit(code)
}

// TestLocalMetadata: a dubbo-go provider with local metadata storage, registered at
// application level in ZooKeeper, is a GreetService provider in Strait's catalog of that
// registry, as in its List.
func TestLocalMetadata(t *testing.T) {
	checkProvider(t, "zookeeper", zkAddr, "dubbo-local-meta", "local")
}

// TestRemoteMetadataNacos: a dubbo-go provider with remote metadata (its MetadataInfo in
// Nacos's config), registered at application level in Nacos, is a GreetService provider in
// Strait's catalog of Nacos, as in its List.
func TestRemoteMetadataNacos(t *testing.T) {
	checkProvider(t, "nacos", nacosAddr, "dubbo-remote-meta", "remote")
}

func checkProvider(t *testing.T, kind, addr, app, metadataType string) {
	paddr, served, err := StartAppLevelProvider(kind, addr, app, metadataType)
	if err != nil {
		t.Fatal(err)
	}
	var reg registrysync.Registry
	switch kind {
	case "zookeeper":
		reg, err = zookeeper.New([]string{addr}, zookeeper.Options{})
	default:
		reg, err = nacos.New([]string{addr}, nacos.Options{})
	}
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
	// The instance is at the provider's address, or (dubbo-go keeps one application
	// instance per process, and this process runs a provider per test) at the address of
	// a provider an earlier test started: its service, group and application are this
	// provider's all the same.
	match := func(is []mesh.Instance) bool {
		for _, i := range is {
			if slices.Contains(providerAddrs, i.Address) && i.Protocol == mesh.ProtocolTriple && i.Service.Group == kind && i.Metadata["application"] == app {
				if i.Address != paddr {
					t.Logf("the %s instance of %s is registered at %s, another provider's port of this process (its own is %s)", kind, app, i.Address, paddr)
				}
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
			var got []string
			for _, i := range cat.Endpoints(key, mesh.ProtocolTriple) {
				got = append(got, fmt.Sprintf("%s %v", i, i.Metadata))
			}
			t.Fatalf("after 60s, no GreetService provider at %s in group %s of application %s; the catalog has %v", paddr, kind, app, got)
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
	t.Logf("dubbo-go provider %s (%s metadata) seen in %s at %s", app, metadataType, kind, paddr)
}
