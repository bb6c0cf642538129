package nacos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/conformance"
	"github.com/strait-mesh/strait/registry-sync/nacos"
	testregistries "github.com/strait-mesh/strait/test/registries"
	"github.com/strait-mesh/strait/test/wait"
)

// The Nacos server TestMain starts: srv, and its HTTP address ("127.0.0.1:port").
var (
	srv    *testregistries.Server
	server string
)

// TestMain starts a real Nacos 2.x server (test/registries) on ports chosen at run time
// for the package's tests, and stops it at the end. A server that cannot start fails the
// package: these tests are the adapter's only check.
func TestMain(m *testing.M) {
	var err error
	if srv, err = testregistries.Start("nacos"); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: could not start the Nacos server:", err)
		os.Exit(1)
	}
	server = srv.Addr
	fmt.Fprintf(os.Stderr, "nacos: ready on %s in %v\n", server, srv.Took.Round(time.Millisecond))
	code := m.Run()
	if err := srv.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "nacos:", err)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func newRegistry(t *testing.T) *nacos.Registry {
	t.Helper()
	r, err := nacos.New([]string{server}, nacos.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestConformance runs the registry conformance suite against the real Nacos server.
func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Options{New: func(t *testing.T) registrysync.Registry { return newRegistry(t) }})
}

// TestConformanceApp runs the application-level cases (service <app>, configs of the
// mapping and the MetadataInfo) against the real Nacos server.
func TestConformanceApp(t *testing.T) {
	conformance.RunApp(t, conformance.Options{New: func(t *testing.T) registrysync.Registry { return newRegistry(t) }})
}

func TestServiceNames(t *testing.T) {
	for _, c := range []struct {
		k    mesh.ServiceKey
		name string
	}{
		{mesh.ServiceKey{Name: "com.Foo"}, "providers:com.Foo::"},
		{mesh.ServiceKey{Name: "com.Foo", Version: "1.0.0"}, "providers:com.Foo:1.0.0:"},
		{mesh.ServiceKey{Name: "com.Foo", Version: "1.0.0", Group: "g"}, "providers:com.Foo:1.0.0:g"},
		{mesh.ServiceKey{Name: "com.Foo", Group: "g"}, "providers:com.Foo::g"},
		{mesh.ServiceKey{Name: "a:b"}, "providers:a:b::"},
	} {
		if got := nacos.ServiceName(c.k); got != c.name {
			t.Errorf("ServiceName(%v) = %q, want %q", c.k, got, c.name)
		}
		if k, ok := nacos.ParseServiceName(c.name); !ok || k != c.k {
			t.Errorf("ParseServiceName(%q) = %v %v, want %v", c.name, k, ok, c.k)
		}
	}
	for _, bad := range []string{"consumers:com.Foo::", "providers:com.Foo", "providers::1:", "com.Foo"} {
		if k, ok := nacos.ParseServiceName(bad); ok {
			t.Errorf("ParseServiceName(%q) = %v", bad, k)
		}
	}
}

func TestInstanceRoundTrip(t *testing.T) {
	in := mesh.Instance{
		Service:  mesh.ServiceKey{Name: "org.apache.Greeter", Version: "1.0.0", Group: "g1"},
		Protocol: mesh.ProtocolTriple, Address: "10.0.0.1:20000",
		Metadata: map[string]string{"application": "demo", "strait.origin": "beta", "protocol": "ignored"},
	}
	ni, err := nacos.Instance(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"interface": "org.apache.Greeter", "path": "org.apache.Greeter", "version": "1.0.0", "group": "g1",
		"side": "provider", "category": "providers", "protocol": "tri", "application": "demo", "strait.origin": "beta",
	}
	if ni.Ip != "10.0.0.1" || ni.Port != 20000 || !ni.Ephemeral || !ni.Enable || !ni.Healthy || ni.Weight <= 0 || fmt.Sprint(ni.Metadata) != fmt.Sprint(want) {
		t.Fatalf("Instance(%v) = %+v", in, ni)
	}
	out, ok := nacos.FromInstance(nacos.ServiceName(in.Service), ni)
	delete(in.Metadata, "protocol")
	if !ok || out.Service != in.Service || out.Protocol != in.Protocol || out.Address != in.Address || fmt.Sprint(out.Metadata) != fmt.Sprint(in.Metadata) {
		t.Fatalf("round trip: %+v → %+v → %+v", in, ni, out)
	}
	// What a consumer would not call, or a protocol registries here do not carry, is skipped.
	for _, mod := range []func(*model.Instance){
		func(i *model.Instance) { i.Enable = false },
		func(i *model.Instance) { i.Healthy = false },
		func(i *model.Instance) { i.Metadata = map[string]string{"protocol": "rest"} },
		func(i *model.Instance) { i.Metadata = nil },
	} {
		bad := ni
		mod(&bad)
		if i, ok := nacos.FromInstance(nacos.ServiceName(in.Service), bad); ok {
			t.Errorf("FromInstance(%+v) = %v", bad, i)
		}
	}
	for _, bad := range []mesh.Instance{
		{Service: mesh.ServiceKey{Name: "x"}, Protocol: "rest", Address: "1.2.3.4:5"},
		{Service: mesh.ServiceKey{Name: "x"}, Protocol: mesh.ProtocolGRPC, Address: "1.2.3.4"},
		{Service: mesh.ServiceKey{}, Protocol: mesh.ProtocolGRPC, Address: "1.2.3.4:5"},
		{Service: mesh.ServiceKey{Name: "x", Group: "a:b"}, Protocol: mesh.ProtocolGRPC, Address: "1.2.3.4:5"},
	} {
		if _, err := nacos.Instance(bad); err == nil {
			t.Errorf("Instance(%v) accepted", bad)
		}
	}
}

// serverHosts asks the Nacos server itself (its HTTP API) for a service's instances.
func serverHosts(t *testing.T, service string) []model.Instance {
	t.Helper()
	q := url.Values{"serviceName": {service}, "groupName": {nacos.Group}}
	resp, err := http.Get("http://" + server + "/nacos/v1/ns/instance/list?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Hosts []model.Instance `json:"hosts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("instance list of %s: %s: %v", service, resp.Status, err)
	}
	sort.Slice(s.Hosts, func(a, b int) bool { return s.Hosts[a].Port < s.Hosts[b].Port })
	return s.Hosts
}

func ports(hosts []model.Instance) string {
	var ps []string
	for _, h := range hosts {
		ps = append(ps, strconv.FormatUint(h.Port, 10))
	}
	return strings.Join(ps, ",")
}

func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	return wait.For(t, 30*time.Second, what, cond)
}

// TestBatch registers several addresses of one service from one connection (one
// BatchRegisterInstance each time), checks what the server stores (Dubbo's layout) and
// what a watcher sees, through deregistrations, a second connection and a close.
func TestBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	key := mesh.ServiceKey{Name: fmt.Sprintf("batch.t%d.Greeter", time.Now().UnixNano()%1e9), Version: "1.0.0"}
	svc := nacos.ServiceName(key)
	inst := func(port int, app string) mesh.Instance {
		return mesh.Instance{Service: key, Protocol: mesh.ProtocolTriple, Address: "127.0.0.1:" + strconv.Itoa(port),
			Metadata: map[string]string{"application": app, "strait.origin": "beta"}}
	}

	watcher := newRegistry(t)
	defer watcher.Close()
	cat := registrysync.NewCatalog(watcher, nil)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); cat.Run(wctx) }()
	defer func() { wcancel(); <-done }()
	seen := func(want string) func() bool {
		return func() bool {
			var ps []string
			for _, i := range cat.Endpoints(key, mesh.ProtocolTriple) {
				_, p, _ := net.SplitHostPort(i.Address)
				ps = append(ps, p)
			}
			sort.Strings(ps)
			return strings.Join(ps, ",") == want
		}
	}
	onServer := func(want string) func() bool { return func() bool { return ports(serverHosts(t, svc)) == want } }

	owner := newRegistry(t)
	defer owner.Close()
	for _, p := range []int{30001, 30002, 30003} {
		if err := owner.Register(ctx, inst(p, "a")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "server has the batch", onServer("30001,30002,30003"))
	for _, h := range serverHosts(t, svc) {
		md := h.Metadata
		if !h.Ephemeral || md["protocol"] != "tri" || md["interface"] != key.Name || md["path"] != key.Name ||
			md["version"] != "1.0.0" || md["side"] != "provider" || md["category"] != "providers" ||
			md["application"] != "a" || md["strait.origin"] != "beta" {
			t.Fatalf("instance as stored: %+v", h)
		}
		if _, ok := md["group"]; ok {
			t.Fatalf("empty group stored: %+v", md)
		}
	}
	d := waitFor(t, "watcher sees the batch", seen("30001,30002,30003"))
	t.Logf("a new service reached the watcher %v after the server had it", d)

	// Deregistering one address re-sends the other two.
	if err := owner.Deregister(ctx, inst(30002, "a")); err != nil {
		t.Fatal(err)
	}
	d = waitFor(t, "watcher drops 30002", seen("30001,30003"))
	t.Logf("a change of a known service reached the watcher in %v (push)", d)
	waitFor(t, "server drops 30002", onServer("30001,30003"))
	// Deregistering what is not registered is not an error.
	if err := owner.Deregister(ctx, inst(30002, "a")); err != nil {
		t.Fatal(err)
	}

	// Registering an address again replaces it.
	if err := owner.Register(ctx, inst(30003, "b")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "watcher sees new metadata", func() bool {
		for _, i := range cat.Endpoints(key, mesh.ProtocolTriple) {
			if i.Address == "127.0.0.1:30003" {
				return i.Metadata["application"] == "b"
			}
		}
		return false
	})

	// A second connection keeps its own instances of the same service.
	other := newRegistry(t)
	defer other.Close()
	if err := other.Register(ctx, inst(30004, "c")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "watcher sees both connections", seen("30001,30003,30004"))
	if err := owner.Close(); err != nil {
		t.Fatal(err)
	}
	d = waitFor(t, "closing a connection removes its instances", seen("30004"))
	t.Logf("a closed connection's instances left the watcher in %v", d)
	if err := owner.Register(ctx, inst(30005, "a")); err == nil {
		t.Fatal("register on a closed registry succeeded")
	}

	// Deregistering the last address deregisters the service from that connection.
	if err := other.Deregister(ctx, inst(30004, "c")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "watcher sees no provider", seen(""))
	waitFor(t, "server has no instance", onServer(""))
	all, err := other.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range all {
		if i.Service == key {
			t.Fatalf("List still has %v", i)
		}
	}
}

// TestWatchEndsWhenClosed: a Watch returns (with an error) when its Registry is closed.
func TestWatchEndsWhenClosed(t *testing.T) {
	r := newRegistry(t)
	done := make(chan error, 1)
	called := make(chan struct{}, 1)
	go func() {
		done <- r.Watch(t.Context(), func([]mesh.Instance) {
			select {
			case called <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-called:
	case err := <-done:
		t.Fatalf("Watch returned %v before its first call", err)
	case <-time.After(15 * time.Second):
		t.Fatal("no initial call")
	}
	r.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Watch returned nil")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after Close")
	}
}

// TestServerRestart: when the server goes away and comes back (same address, state lost
// for ephemeral instances), the SDK reconnects and registers and subscribes again, and a
// watch sees the providers again without being restarted.
func TestServerRestart(t *testing.T) {
	if race {
		// RpcClient.reconnect writes currentConnection while the event goroutine reads it
		// (nacos-group/nacos-sdk-go#741, #833; fixed after v2.3.5 by #887).
		t.Skip("nacos-sdk-go v2.3.2 has a data race on reconnect")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	key := mesh.ServiceKey{Name: fmt.Sprintf("restart.t%d.Greeter", time.Now().UnixNano()%1e9)}
	inst := func(port int) mesh.Instance {
		return mesh.Instance{Service: key, Protocol: mesh.ProtocolGRPC, Address: "127.0.0.1:" + strconv.Itoa(port),
			Metadata: map[string]string{"application": "restart"}}
	}
	owner, watcher := newRegistry(t), newRegistry(t)
	defer owner.Close()
	defer watcher.Close()
	for _, p := range []int{31001, 31002} {
		if err := owner.Register(ctx, inst(p)); err != nil {
			t.Fatal(err)
		}
	}
	cat := registrysync.NewCatalog(watcher, nil)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); cat.Run(wctx) }()
	defer func() { wcancel(); <-done }()
	n := func(want int) func() bool {
		return func() bool { return len(cat.Endpoints(key, mesh.ProtocolGRPC)) == want }
	}
	waitFor(t, "watcher sees both", n(2))

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("server restarted in %v", srv.Took)
	// The owner's SDK registers its batch again on the new server by itself.
	d := waitFor(t, "owner's instances back on the server", func() bool {
		return ports(serverHosts(t, nacos.ServiceName(key))) == "31001,31002"
	})
	t.Logf("the owner's instances were back %v after the restart", d)
	// The watcher's SDK subscribes again by itself: a new provider reaches it by push.
	other := newRegistry(t)
	defer other.Close()
	if err := other.Register(ctx, inst(31003)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "watcher sees the new instance", n(3))
	if err := owner.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "watcher sees the owner gone", n(1))
}
