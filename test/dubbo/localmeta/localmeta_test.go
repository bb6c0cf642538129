// Package localmeta checks that Strait reads ordinary dubbo-go providers registered at
// application level: with local metadata storage (dubbo-go's default) in ZooKeeper, whose
// MetadataInfo is asked from the provider's own MetadataService (MetadataServiceV2 over
// Triple), and with remote metadata in Nacos.
//
// It runs in a process of its own because dubbo-go exports the MetadataService once per
// process (metadata.Options.Init's sync.Once), so a provider with local metadata cannot
// follow one with remote metadata in test/dubbo, and because a dubbo-go server registers
// in every registry its process has known, which must all stay up. It starts its own
// ZooKeeper and Nacos (test/registries) on ports chosen at run time.
//
// There is no goroutine leak check in this package: the dubbo-go provider cannot be
// stopped without dubbo-go's process-wide graceful shutdown (see StartAppLevelProvider).
package localmeta

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/nacos"
	"github.com/strait-mesh/strait/registry-sync/zookeeper"
	testregistries "github.com/strait-mesh/strait/test/registries"
)

type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}

var zkAddr, nacosAddr string

// nacosDir holds the Nacos SDK's logs and caches of this process's dubbo-go providers:
// the process's own, as the SDK loads what its cache directory holds at start.
var nacosDir string

func TestMain(m *testing.M) {
	var err error
	if nacosDir, err = os.MkdirTemp("", "strait-localmeta-nacos-sdk-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := run(m)
	os.RemoveAll(nacosDir)
	os.Exit(code)
}

func run(m *testing.M) int {
	// Both servers at once: each takes seconds to start.
	var zk, nacos *testregistries.Server
	var zkErr, nacosErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); zk, zkErr = testregistries.Start("zookeeper") }()
	go func() { defer wg.Done(); nacos, nacosErr = testregistries.Start("nacos") }()
	wg.Wait()
	stop := func() int {
		code := 0
		for _, s := range []*testregistries.Server{zk, nacos} {
			if s == nil {
				continue
			}
			if err := s.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
				code = 1
			}
		}
		return code
	}
	for _, err := range []error{zkErr, nacosErr} {
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			stop()
			return 1
		}
	}
	zkAddr, nacosAddr = zk.Addr, nacos.Addr
	code := m.Run()
	if c := stop(); c != 0 {
		code = c
	}
	return code
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
