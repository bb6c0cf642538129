package registrysync_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/embedded"
	"github.com/strait-mesh/strait/registry-sync/etcd"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestPublisher reconciles a desired set into a real (embedded) etcd.
func TestPublisher(t *testing.T) {
	srv, err := embedded.Start("pub", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	reg, err := etcd.New([]string{srv.Endpoint()}, etcd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	imported := func(addr string) mesh.Instance {
		return mesh.Instance{
			Service: mesh.ServiceKey{Name: "com.beta.PayService", Version: "1.0.0"}, Protocol: mesh.ProtocolTriple, Address: addr,
			Metadata: map[string]string{registrysync.MetaManaged: "true", registrysync.MetaOrigin: "beta", registrysync.MetaOwner: "alpha/test"},
		}
	}
	p := registrysync.NewPublisher(reg, nil)
	list := func() []string {
		all, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, i := range all {
			if !registrysync.Managed(i) || i.Metadata[registrysync.MetaOrigin] != "beta" {
				t.Fatalf("lost the managed marks: %+v", i)
			}
			out = append(out, i.Address)
		}
		return out
	}
	if err := p.Set(ctx, []mesh.Instance{imported("10.0.0.1:1"), imported("10.0.0.2:1")}); err != nil {
		t.Fatal(err)
	}
	if got := list(); len(got) != 2 {
		t.Fatalf("published %v", got)
	}
	if err := p.Set(ctx, []mesh.Instance{imported("10.0.0.2:1"), imported("10.0.0.3:1")}); err != nil {
		t.Fatal(err)
	}
	if got := list(); len(got) != 2 || got[0] != "10.0.0.2:1" && got[1] != "10.0.0.2:1" {
		t.Fatalf("after change %v", got)
	}
	if err := p.Set(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("after withdrawal %v", got)
	}
	if len(p.Published()) != 0 {
		t.Fatal("publisher still holds instances")
	}
}

// TestAppInstances groups imports into application instances: one application per origin
// domain, one instance per address, each with its services and the managed marks.
func TestAppInstances(t *testing.T) {
	imp := func(name, origin, addr string) mesh.Instance {
		return mesh.Instance{
			Service: mesh.ServiceKey{Name: name}, Protocol: mesh.ProtocolTriple, Address: addr,
			Metadata: map[string]string{registrysync.MetaManaged: "true", registrysync.MetaOrigin: origin, registrysync.MetaOwner: "alpha/cp"},
		}
	}
	native := mesh.Instance{Service: mesh.ServiceKey{Name: "N"}, Protocol: mesh.ProtocolGRPC, Address: "10.0.0.9:1",
		Metadata: map[string]string{"application": "shop"}}
	bare := mesh.Instance{Service: mesh.ServiceKey{Name: "B"}, Protocol: mesh.ProtocolGRPC, Address: "10.0.0.9:2"}
	got := registrysync.AppInstances([]mesh.Instance{
		imp("S2", "beta", "10.0.0.1:1"), imp("S1", "beta", "10.0.0.1:1"), imp("S1", "beta", "10.0.0.2:1"),
		imp("S1", "gamma", "10.0.0.1:1"), native, bare,
	})
	var desc []string
	for _, a := range got {
		var names []string
		for _, s := range a.Services {
			names = append(names, s.Service.Name)
		}
		desc = append(desc, fmt.Sprintf("%s@%s%v origin=%s", a.App, a.Address, names, a.Metadata[registrysync.MetaOrigin]))
	}
	want := []string{
		"shop@10.0.0.9:1[N] origin=",
		"strait-beta@10.0.0.1:1[S1 S2] origin=beta",
		"strait-beta@10.0.0.2:1[S1] origin=beta",
		"strait-gamma@10.0.0.1:1[S1] origin=gamma",
	}
	if strings.Join(desc, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(desc, "\n"), strings.Join(want, "\n"))
	}
}
