// Package dubbo checks that an ordinary dubbo-go consumer in alpha, configured only with
// alpha's registry, discovers beta's Triple GreetService there (its providers are alpha's
// egress instances, registered by alpha's controlplane) and calls it through Strait, at
// interface level (etcd, ZooKeeper, Nacos) and at application level (ZooKeeper, Nacos); and
// that a dubbo-go provider registered at application level in beta's ZooKeeper is read by
// Strait's adapter there.
//
// There is no goroutine leak check in this package: dubbo-go keeps process-wide state
// (registries, directories, invokers and their connections) that cannot be closed; see
// TripleGreetViaRegistry.
package dubbo

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"dubbo.apache.org/dubbo-go/v3/metadata"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/nacos"
	"github.com/strait-mesh/strait/registry-sync/zookeeper"
	"github.com/strait-mesh/strait/test/localtopo"
	"github.com/strait-mesh/strait/test/wait"
)

type ready struct {
	Registries map[string]string `json:"registries"`
	PIDs       map[string]int    `json:"pids"`
}

// TestGreetViaRegistry runs the local topology on each registry kind and calls beta's
// GreetService with a dubbo-go client that knows only alpha's registry.
func TestGreetViaRegistry(t *testing.T) {
	for _, kind := range []string{"etcd", "zookeeper", "nacos"} {
		t.Run(kind, func(t *testing.T) {
			r := localtopo.Up(t, kind)
			addr, ok := strings.CutPrefix(r.Registries["alpha"], kind+"://")
			if !ok {
				t.Fatalf("registries: %v", r.Registries)
			}

			// A consumer that starts while the providers are already registered finds them
			// in its first read of the registry; retry briefly in case the controlplane is
			// still importing GreetService into alpha's registry.
			name := "dubbo-" + kind
			got := greet(t, fmt.Sprintf("Greet via %s registry %s", kind, addr), func(ctx context.Context) (string, error) {
				return TripleGreetViaRegistry(ctx, kind, addr, name)
			})
			if want := "hello " + name; got != want {
				t.Fatalf("Greet via %s registry: %q, want %q", kind, got, want)
			}
			t.Logf("Greet via %s registry %s: %q", kind, addr, got)
			if kind == "etcd" {
				return // dubbo-go's application-level discovery is used with ZooKeeper and Nacos here
			}

			// dubbo-go keeps its metadata reports process-wide and asks all of them for a
			// mapping, or writes a mapping to all of them; those of the previous subtest's
			// registries went with its topology: forget them.
			metadata.ClearMetadataReportInstances()

			// The same service through application-level discovery: alpha's controlplane
			// also published it as application strait-beta (instances, mapping, metadata).
			name = "dubbo-app-" + kind
			got = greet(t, fmt.Sprintf("Greet via %s registry %s, application level", kind, addr), func(ctx context.Context) (string, error) {
				return TripleGreetViaAppLevel(ctx, kind, addr, name)
			})
			if want := "hello " + name; got != want {
				t.Fatalf("Greet via %s application level: %q, want %q", kind, got, want)
			}
			t.Logf("Greet via %s registry %s, application level: %q", kind, addr, got)

			// The read side: an ordinary dubbo-go provider registered at application level
			// (remote metadata) in beta's registry is a provider of GreetService in the
			// catalog beta's controlplane keeps of that registry (same adapter, same Watch).
			// Only with the first registry kind: a dubbo-go server registers in every
			// registry the process has known, so a second one would also write to the
			// previous subtest's registry, gone with its topology. test/dubbo/localmeta
			// covers providers in ZooKeeper and Nacos that stay up.
			if kind != "zookeeper" {
				return
			}
			betaAddr, ok := strings.CutPrefix(r.Registries["beta"], kind+"://")
			if !ok {
				t.Fatalf("registries: %v", r.Registries)
			}
			app := "dubbo-app-provider-" + kind
			paddr, served, err := StartAppLevelProvider(kind, betaAddr, app)
			if err != nil {
				t.Fatal(err)
			}
			seen := waitCatalog(t, kind, betaAddr, served, func(i mesh.Instance) bool {
				return i.Address == paddr && i.Service.Group == kind && i.Metadata["application"] == app &&
					i.Protocol == mesh.ProtocolTriple && !registrysync.Managed(i)
			})
			t.Logf("beta's %s registry: dubbo-go application-level provider seen as %s %s %s", kind, seen.Service.Name, seen.Protocol, seen.Address)
		})
	}
}

// greet calls until a call succeeds (a minute at most) and returns its answer. A consumer
// that starts while the providers are registered already finds them in its first read of
// the registry; it may start before the controlplane has imported the service into alpha's
// registry, or before its first read completes. Each different error is logged once.
func greet(t *testing.T, what string, call func(context.Context) (string, error)) string {
	t.Helper()
	var got, last string
	wait.Retry(t, time.Minute, 500*time.Millisecond, what, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g, err := call(ctx)
		if err != nil {
			if err.Error() != last {
				last = err.Error()
				t.Logf("%s: %v (retrying)", what, err)
			}
			return err
		}
		got = g
		return nil
	})
	return got
}

// waitCatalog watches a registry with Strait's adapter and catalog, as a controlplane
// does, until a GreetService provider matching match appears (at most 60 s).
func waitCatalog(t *testing.T, kind, addr string, served <-chan error, match func(mesh.Instance) bool) mesh.Instance {
	t.Helper()
	var reg registrysync.Registry
	var err error
	switch kind {
	case "zookeeper":
		reg, err = zookeeper.New([]string{addr}, zookeeper.Options{})
	case "nacos":
		reg, err = nacos.New([]string{addr}, nacos.Options{})
	default:
		t.Fatalf("kind %q", kind)
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
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	key := mesh.ServiceKey{Name: "strait.demo.greet.v1.GreetService"}
	for {
		for _, i := range cat.Endpoints(key, mesh.ProtocolTriple) {
			if match(i) {
				return i
			}
		}
		select {
		case <-changed:
		case err := <-served:
			t.Fatalf("dubbo-go provider stopped: %v", err)
		case <-deadline.C:
			t.Fatalf("after 60s, %s's catalog has GreetService providers %v", kind, cat.Endpoints(key, mesh.ProtocolTriple))
		}
	}
}
