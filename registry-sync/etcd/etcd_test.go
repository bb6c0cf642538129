package etcd_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/conformance"
	"github.com/strait-mesh/strait/registry-sync/embedded"
	"github.com/strait-mesh/strait/registry-sync/etcd"
	"github.com/strait-mesh/strait/test/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRegisterWatchExpire runs against a real (embedded) etcd: a registration appears in a
// watcher's catalog, a deregistration disappears, and closing the registering process
// removes what it registered.
func TestRegisterWatchExpire(t *testing.T) {
	srv, err := embedded.Start("t", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	watcher, err := etcd.New([]string{srv.Endpoint()}, etcd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	cat := registrysync.NewCatalog(watcher, nil)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); cat.Run(wctx) }()
	defer func() { wcancel(); <-done }()

	owner, err := etcd.New([]string{srv.Endpoint()}, etcd.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a := mesh.Instance{Service: mesh.ServiceKey{Name: "x.S", Version: "1"}, Protocol: mesh.ProtocolGRPC, Address: "127.0.0.1:1"}
	b := mesh.Instance{Service: mesh.ServiceKey{Name: "x.S", Version: "2"}, Protocol: mesh.ProtocolGRPC, Address: "127.0.0.1:2"}
	for _, i := range []mesh.Instance{a, b} {
		if err := owner.Register(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	key := mesh.ServiceKey{Name: "x.S"}
	waitFor(t, func() bool { return len(cat.Endpoints(key, mesh.ProtocolGRPC)) == 2 })
	if got := cat.Endpoints(mesh.ServiceKey{Name: "x.S", Version: "2"}, mesh.ProtocolTriple); len(got) != 1 || got[0].Address != b.Address {
		t.Fatalf("version filter: %v", got)
	}
	if got := cat.Endpoints(key, mesh.ProtocolHTTP); len(got) != 0 {
		t.Fatalf("protocol filter: %v", got)
	}
	if err := owner.Deregister(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(cat.Endpoints(key, mesh.ProtocolGRPC)) == 1 })
	if err := owner.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(cat.Endpoints(key, mesh.ProtocolGRPC)) == 0 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	wait.For(t, 30*time.Second, "the watcher's catalog", cond)
}

// TestConformance runs the registry conformance suite against a real (embedded) etcd.
func TestConformance(t *testing.T) {
	srv, err := embedded.Start("conformance", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	conformance.Run(t, conformance.Options{New: func(t *testing.T) registrysync.Registry {
		r, err := etcd.New([]string{srv.Endpoint()}, etcd.Options{LeaseTTL: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}})
}
