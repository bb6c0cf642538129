// Package conformance is the test suite every registry adapter passes against its real
// server: register, list, watch (a subscription, not a poll), deregister, and liveness tied
// to the registering client. Adapters that implement registrysync.AppRegistry also pass
// the application-level cases (RunApp).
package conformance

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// Options describe the adapter under test.
type Options struct {
	// New returns a new client of the same registry; the suite closes what it gets.
	New func(t *testing.T) registrysync.Registry
	// Protocols the adapter can store (default: grpc, triple, http).
	Protocols []mesh.Protocol
	// Propagation bounds how long a change may take to reach a watcher (default 10 s).
	Propagation time.Duration
}

// Run runs the suite. Each subtest uses service names of its own, so the registry may be
// shared with other tests.
func Run(t *testing.T, o Options) {
	if o.Propagation == 0 {
		o.Propagation = 10 * time.Second
	}
	if len(o.Protocols) == 0 {
		o.Protocols = []mesh.Protocol{mesh.ProtocolGRPC, mesh.ProtocolTriple, mesh.ProtocolHTTP}
	}
	prefix := fmt.Sprintf("conformance.t%d", time.Now().UnixNano()%1e9)
	inst := func(svc, version, group string, p mesh.Protocol, port int) mesh.Instance {
		return mesh.Instance{
			Service:  mesh.ServiceKey{Name: prefix + "." + svc, Version: version, Group: group},
			Protocol: p, Address: fmt.Sprintf("127.0.0.1:%d", port),
			Metadata: map[string]string{"application": "conformance"},
		}
	}

	t.Run("RegisterListDeregister", func(t *testing.T) {
		r := o.New(t)
		defer r.Close()
		ctx := ctxT(t)
		var want []mesh.Instance
		for i, p := range o.Protocols {
			want = append(want, inst("List", "1.0.0", "", p, 20000+i), inst("List", "2.0.0", "g1", p, 21000+i))
		}
		for _, i := range want {
			if err := r.Register(ctx, i); err != nil {
				t.Fatalf("register %s: %v", i, err)
			}
		}
		eventually(t, o.Propagation, func() string { return diff(list(t, r, prefix+".List"), want) })
		if err := r.Deregister(ctx, want[0]); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(list(t, r, prefix+".List"), want[1:]) })
		// Registering twice is not an error and does not duplicate.
		if err := r.Register(ctx, want[1]); err != nil {
			t.Fatalf("register again: %v", err)
		}
		eventually(t, o.Propagation, func() string { return diff(list(t, r, prefix+".List"), want[1:]) })
	})

	t.Run("TwoProtocolsAtOneAddress", func(t *testing.T) {
		// A gateway port serves a service over Triple and over dubbo:// (Strait's egress
		// does): two instances, neither hiding the other.
		r := o.New(t)
		defer r.Close()
		ctx := ctxT(t)
		want := []mesh.Instance{inst("Both", "1.0.0", "", mesh.ProtocolTriple, 22000), inst("Both", "1.0.0", "", mesh.ProtocolDubbo, 22000)}
		for _, i := range want {
			if err := r.Register(ctx, i); err != nil {
				t.Fatalf("register %s: %v", i, err)
			}
		}
		eventually(t, o.Propagation, func() string { return diff(list(t, r, prefix+".Both"), want) })
		if err := r.Deregister(ctx, want[1]); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(list(t, r, prefix+".Both"), want[:1]) })
	})

	t.Run("WatchSeesChanges", func(t *testing.T) {
		owner, watcher := o.New(t), o.New(t)
		defer watcher.Close()
		defer owner.Close()
		var mu sync.Mutex
		var seen []mesh.Instance
		calls := 0
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- watcher.Watch(ctx, func(all []mesh.Instance) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				seen = filter(all, prefix+".Watch")
			})
		}()
		defer func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("Watch did not return after its context ended")
			}
		}()
		got := func() []mesh.Instance {
			mu.Lock()
			defer mu.Unlock()
			return append([]mesh.Instance(nil), seen...)
		}
		eventually(t, o.Propagation, func() string {
			mu.Lock()
			defer mu.Unlock()
			if calls == 0 {
				return "watch has not reported the initial set"
			}
			return ""
		})
		a := inst("Watch", "", "", o.Protocols[0], 22000)
		b := inst("Watch", "1.0.0", "", o.Protocols[0], 22001)
		ictx := ctxT(t)
		for _, i := range []mesh.Instance{a, b} {
			if err := owner.Register(ictx, i); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, o.Propagation, func() string { return diff(got(), []mesh.Instance{a, b}) })
		if err := owner.Deregister(ictx, a); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(got(), []mesh.Instance{b}) })
		// The owner goes away: what it registered goes with it.
		if err := owner.Close(); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(got(), nil) })
	})

	t.Run("WatchStopsWithContext", func(t *testing.T) {
		r := o.New(t)
		defer r.Close()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Watch(ctx, func([]mesh.Instance) {}) }()
		time.Sleep(100 * time.Millisecond)
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Watch did not return after its context ended")
		}
	})
}

// RunApp runs the application-level cases against an adapter whose New returns a
// registrysync.AppRegistry: application instances read back as providers of each of their
// services, alongside and deduplicated with interface-level ones; watches see them come,
// change services and go; the owner closing removes them; the publisher writes imports in
// both layouts.
func RunApp(t *testing.T, o Options) {
	if o.Propagation == 0 {
		o.Propagation = 10 * time.Second
	}
	prefix := fmt.Sprintf("conformance.a%d", time.Now().UnixNano()%1e9)
	app := fmt.Sprintf("conformance-app-%d", time.Now().UnixNano()%1e9)
	newApp := func(t *testing.T) registrysync.AppRegistry {
		r := o.New(t)
		ar, ok := r.(registrysync.AppRegistry)
		if !ok {
			r.Close()
			t.Fatalf("%T is not a registrysync.AppRegistry", r)
		}
		return ar
	}
	svc := func(name, version, group string, p mesh.Protocol, addr, application string) mesh.Instance {
		return mesh.Instance{
			Service:  mesh.ServiceKey{Name: prefix + "." + name, Version: version, Group: group},
			Protocol: p, Address: addr,
			Metadata: map[string]string{"application": application},
		}
	}
	appInst := func(application, addr string, ss ...mesh.Instance) registrysync.AppInstance {
		return registrysync.AppInstance{App: application, Address: addr, Services: ss, Metadata: map[string]string{"owner": "conformance"}}
	}
	mine := func(all []mesh.Instance) []mesh.Instance {
		var out []mesh.Instance
		for _, i := range all {
			if strings.HasPrefix(i.Service.Name, prefix+".") {
				out = append(out, i)
			}
		}
		return out
	}

	t.Run("AppRegisterListDeregister", func(t *testing.T) {
		r := newApp(t)
		defer r.Close()
		ctx := ctxT(t)
		a1 := svc("Pay", "1.0.0", "", mesh.ProtocolTriple, "127.0.0.1:23001", app)
		b1 := svc("Refund", "", "g1", mesh.ProtocolGRPC, "127.0.0.1:23001", app)
		a2 := svc("Pay", "1.0.0", "", mesh.ProtocolTriple, "127.0.0.1:23002", app)
		for _, a := range []registrysync.AppInstance{appInst(app, a1.Address, a1, b1), appInst(app, a2.Address, a2)} {
			if err := r.RegisterApp(ctx, a); err != nil {
				t.Fatalf("register application %s at %s: %v", a.App, a.Address, err)
			}
		}
		all := func() []mesh.Instance {
			l, err := r.List(ctxT(t))
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			return mine(l)
		}
		eventually(t, o.Propagation, func() string { return diff(all(), []mesh.Instance{a1, b1, a2}) })
		for _, i := range all() {
			if i.Metadata["owner"] != "conformance" {
				t.Fatalf("instance metadata lost: %+v", i)
			}
		}
		// The instance at 23002 now serves Refund too: registering again replaces it.
		b2 := svc("Refund", "", "g1", mesh.ProtocolGRPC, "127.0.0.1:23002", app)
		if err := r.RegisterApp(ctx, appInst(app, a2.Address, a2, b2)); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(all(), []mesh.Instance{a1, b1, a2, b2}) })
		if err := r.DeregisterApp(ctx, app, a1.Address); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(all(), []mesh.Instance{a2, b2}) })
		// The same provider registered at interface level too is one provider.
		if err := r.Register(ctx, a2); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(all(), []mesh.Instance{a2, b2}) })
		if err := r.Deregister(ctx, a2); err != nil {
			t.Fatal(err)
		}
		if err := r.DeregisterApp(ctx, app, a2.Address); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(all(), nil) })
	})

	t.Run("AppWatchSeesChanges", func(t *testing.T) {
		owner, watcher := newApp(t), newApp(t)
		defer watcher.Close()
		defer owner.Close()
		var mu sync.Mutex
		var seen []mesh.Instance
		calls := 0
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- watcher.Watch(ctx, func(all []mesh.Instance) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				seen = mine(all)
			})
		}()
		defer func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("Watch did not return after its context ended")
			}
		}()
		got := func() []mesh.Instance {
			mu.Lock()
			defer mu.Unlock()
			return append([]mesh.Instance(nil), seen...)
		}
		eventually(t, o.Propagation, func() string {
			mu.Lock()
			defer mu.Unlock()
			if calls == 0 {
				return "watch has not reported the initial set"
			}
			return ""
		})
		wapp := app + "-w"
		a := svc("WatchPay", "", "", mesh.ProtocolTriple, "127.0.0.1:24001", wapp)
		b := svc("WatchRefund", "", "", mesh.ProtocolTriple, "127.0.0.1:24001", wapp)
		ictx := ctxT(t)
		if err := owner.RegisterApp(ictx, appInst(wapp, a.Address, a)); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(got(), []mesh.Instance{a}) })
		// A new revision (one more service) on the same instance.
		if err := owner.RegisterApp(ictx, appInst(wapp, a.Address, a, b)); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(got(), []mesh.Instance{a, b}) })
		c := svc("WatchPay", "", "", mesh.ProtocolTriple, "127.0.0.1:24002", wapp)
		if err := owner.RegisterApp(ictx, appInst(wapp, c.Address, c)); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(got(), []mesh.Instance{a, b, c}) })
		if err := owner.DeregisterApp(ictx, wapp, a.Address); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(got(), []mesh.Instance{c}) })
		// The owner goes away: its application instances go with it.
		if err := owner.Close(); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(got(), nil) })
	})

	t.Run("PublisherWritesBothLayouts", func(t *testing.T) {
		pubReg, reader := newApp(t), newApp(t)
		defer reader.Close()
		defer pubReg.Close()
		ctx := ctxT(t)
		origin := fmt.Sprintf("conf%d", time.Now().UnixNano()%1e6)
		imported := func(name, addr string) mesh.Instance {
			return mesh.Instance{
				Service:  mesh.ServiceKey{Name: prefix + "." + name},
				Protocol: mesh.ProtocolTriple, Address: addr,
				Metadata: map[string]string{
					registrysync.MetaManaged: "true", registrysync.MetaOrigin: origin, registrysync.MetaOwner: "conformance/publisher",
				},
			}
		}
		p := registrysync.NewPublisher(pubReg, nil)
		desired := []mesh.Instance{imported("Imported", "127.0.0.1:25001"), imported("Imported", "127.0.0.1:25002"), imported("Other", "127.0.0.1:25001")}
		if err := p.Set(ctx, desired); err != nil {
			t.Fatal(err)
		}
		// Interface level and application level both hold them; each reads back once
		// (the interface-level entry first).
		want := func(application string, ds ...mesh.Instance) []mesh.Instance {
			out := make([]mesh.Instance, len(ds))
			for i, d := range ds {
				out[i] = d
				out[i].Metadata = map[string]string{"application": application}
			}
			return out
		}
		listed := func() []mesh.Instance {
			l, err := reader.List(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			return mine(l)
		}
		eventually(t, o.Propagation, func() string { return diff(listed(), want("", desired...)) })
		// Without the interface-level entries, the application level alone serves them,
		// as application strait-<origin>, managed.
		for _, d := range desired {
			if err := pubReg.Deregister(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, o.Propagation, func() string { return diff(listed(), want("strait-"+origin, desired...)) })
		for _, i := range listed() {
			if !registrysync.Managed(i) || i.Metadata[registrysync.MetaOrigin] != origin {
				t.Fatalf("lost the managed marks: %+v", i)
			}
		}
		// Fewer services on one instance (a new revision), the other instance withdrawn.
		if err := p.Set(ctx, desired[:1]); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(listed(), want("strait-"+origin, desired[0])) })
		if err := p.Set(ctx, nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, o.Propagation, func() string { return diff(listed(), nil) })
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func list(t *testing.T, r registrysync.Registry, svc string) []mesh.Instance {
	t.Helper()
	all, err := r.List(ctxT(t))
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	return filter(all, svc)
}

func filter(all []mesh.Instance, svc string) []mesh.Instance {
	var out []mesh.Instance
	for _, i := range all {
		if i.Service.Name == svc {
			out = append(out, i)
		}
	}
	return out
}

func key(i mesh.Instance) string {
	return fmt.Sprintf("%s|%s|%s|%s|%s|%s", i.Service.Name, i.Service.Version, i.Service.Group, i.Protocol, i.Address, i.Metadata["application"])
}

// diff is "" when got and want hold the same instances (metadata: application only).
func diff(got, want []mesh.Instance) string {
	g, w := make([]string, len(got)), make([]string, len(want))
	for i, x := range got {
		g[i] = key(x)
	}
	for i, x := range want {
		w[i] = key(x)
	}
	sort.Strings(g)
	sort.Strings(w)
	if strings.Join(g, "\n") == strings.Join(w, "\n") {
		return ""
	}
	return fmt.Sprintf("got\n  %s\nwant\n  %s", strings.Join(g, "\n  "), strings.Join(w, "\n  "))
}

func eventually(t *testing.T, limit time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
