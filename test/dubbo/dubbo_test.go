// Package dubbo checks that an ordinary dubbo-go consumer in alpha, configured only with
// alpha's registry, discovers beta's Triple GreetService there (its providers are alpha's
// egress instances, registered by alpha's controlplane) and calls it through Strait.
//
// There is no goroutine leak check in this package: dubbo-go keeps process-wide state
// (registries, directories, invokers and their connections) that cannot be closed; see
// TripleGreetViaRegistry.
package dubbo

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/test/localtopo"
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
			deadline := time.Now().Add(20 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				got, err := TripleGreetViaRegistry(ctx, kind, addr, name)
				cancel()
				if err == nil {
					if want := "hello " + name; got != want {
						t.Fatalf("Greet via %s registry: %q, want %q", kind, got, want)
					}
					t.Logf("Greet via %s registry %s: %q", kind, addr, got)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Greet via %s registry %s: %v", kind, addr, err)
				}
				t.Logf("Greet via %s registry %s: %v (retrying)", kind, addr, err)
				time.Sleep(500 * time.Millisecond)
			}
			if kind == "etcd" {
				return // dubbo-go's application-level discovery is used with ZooKeeper and Nacos here
			}

			// The same service through application-level discovery: alpha's controlplane
			// also published it as application strait-beta (instances, mapping, metadata).
			name = "dubbo-app-" + kind
			deadline = time.Now().Add(20 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				got, err := TripleGreetViaAppLevel(ctx, kind, addr, name)
				cancel()
				if err == nil {
					if want := "hello " + name; got != want {
						t.Fatalf("Greet via %s application level: %q, want %q", kind, got, want)
					}
					t.Logf("Greet via %s registry %s, application level: %q", kind, addr, got)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Greet via %s registry %s, application level: %v", kind, addr, err)
				}
				t.Logf("Greet via %s registry %s, application level: %v (retrying)", kind, addr, err)
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
}
