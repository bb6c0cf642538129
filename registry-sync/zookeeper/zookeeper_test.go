package zookeeper_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/conformance"
	"github.com/strait-mesh/strait/registry-sync/zookeeper"
	"github.com/strait-mesh/strait/test/ports"
	testregistries "github.com/strait-mesh/strait/test/registries"
	"github.com/strait-mesh/strait/test/wait"
)

// servers is the ZooKeeper that TestMain started (test/registries/zookeeper/start.sh).
var servers []string

// sessionTimeout is short so that crashed sessions expire quickly; the test server's tick
// is 500 ms, so the server accepts it.
const sessionTimeout = 2 * time.Second

func TestMain(m *testing.M) {
	srv, err := testregistries.Start("zookeeper")
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: ZooKeeper did not start: %v\n", err)
		os.Exit(1)
	}
	servers = []string{srv.Addr}
	fmt.Fprintf(os.Stderr, "zookeeper: ready on %s in %v\n", servers[0], srv.Took.Round(time.Millisecond))
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if err := srv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: stopping ZooKeeper: %v\n", err)
			code = 1
		}
		os.Exit(code)
	}))
}

func newRegistry(t *testing.T, o zookeeper.Options) *zookeeper.Registry {
	t.Helper()
	if o.SessionTimeout == 0 {
		o.SessionTimeout = sessionTimeout
	}
	r, err := zookeeper.New(servers, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func conformanceOptions() conformance.Options {
	return conformance.Options{New: func(t *testing.T) registrysync.Registry {
		r, err := zookeeper.New(servers, zookeeper.Options{SessionTimeout: sessionTimeout})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}}
}

func TestConformance(t *testing.T) { conformance.Run(t, conformanceOptions()) }

// TestConformanceApp runs the application-level cases (/services, /dubbo/mapping, metadata).
func TestConformanceApp(t *testing.T) { conformance.RunApp(t, conformanceOptions()) }

func TestNodeRoundTrip(t *testing.T) {
	in := mesh.Instance{
		Service:  mesh.ServiceKey{Name: "org.apache.Greeter", Version: "1.0.0", Group: "g1"},
		Protocol: mesh.ProtocolTriple, Address: "10.0.0.1:20000",
		Metadata: map[string]string{"application": "demo", "strait.origin": "beta", "methods": "a,b"},
	}
	path := zookeeper.Path(in)
	const dir = "/dubbo/org.apache.Greeter/providers/"
	if !strings.HasPrefix(path, dir) {
		t.Fatalf("path %q is not under %s", path, dir)
	}
	node := strings.TrimPrefix(path, dir)
	if node != zookeeper.Node(in) || strings.Contains(node, "/") || !strings.HasPrefix(node, "tri%3A%2F%2F10.0.0.1%3A20000%2Forg.apache.Greeter%3F") {
		t.Fatalf("node name %q", node)
	}
	out, err := zookeeper.ParseNode(node)
	if err != nil {
		t.Fatal(err)
	}
	if out.Service != in.Service || out.Protocol != in.Protocol || out.Address != in.Address || !equalMaps(out.Metadata, in.Metadata) {
		t.Fatalf("round trip: %+v → %s → %+v", in, node, out)
	}
	for _, bad := range []string{"rest%3A%2F%2F1.2.3.4%3A1%2Fx", "tri%3A%2F%2Fnohost%2Fx", "%zz", ""} {
		if _, err := zookeeper.ParseNode(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}

	r := newRegistry(t, zookeeper.Options{})
	for _, name := range []string{"", "a/b", ".."} {
		bad := in
		bad.Service.Name = name
		if err := r.Register(t.Context(), bad); err == nil {
			t.Errorf("registered interface %q", name)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestNewFails: no server, no Registry, and nothing left running. The port is held for
// this test and released: nobody listens there.
func TestNewFails(t *testing.T) {
	free := ports.Reserve(t, 1)[0]
	free.Release()
	type result struct {
		r   *zookeeper.Registry
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		r, err := zookeeper.New([]string{free.Addr()}, zookeeper.Options{DialTimeout: 500 * time.Millisecond})
		done <- result{r, err}
	}()
	select {
	case res := <-done:
		if res.err == nil {
			res.r.Close()
			t.Fatal("New succeeded without a server")
		}
		t.Logf("New failed after %v: %v", time.Since(start).Round(time.Millisecond), res.err)
	case <-time.After(time.Minute): // a bound against a New that retries forever, not a timing check
		t.Fatal("New still trying after a minute without a server")
	}
}

// TestDubboWrittenNodes reads nodes the way a Dubbo (Java) provider writes them: the
// URL-encoded URL (java.net.URLEncoder) with Dubbo's extra parameters as the name of an
// ephemeral node, next to what Strait must skip (dubbo:// providers, consumers, Dubbo's
// config and mapping trees).
func TestDubboWrittenNodes(t *testing.T) {
	dubbo, events, err := zk.Connect(servers, sessionTimeout, zk.WithLogInfo(false), zk.WithLogger(discard{}))
	if err != nil {
		t.Fatal(err)
	}
	closeDubbo := func() {
		dubbo.Close()
		for range events { // closed once the client's goroutines are done
		}
	}
	defer closeDubbo()
	const iface = "org.apache.dubbo.samples.Greeter"
	// URLEncoder.encode("tri://10.1.2.3:50051/org.apache.dubbo.samples.Greeter?anyhost=true&…", "UTF-8")
	const triNode = "tri%3A%2F%2F10.1.2.3%3A50051%2Forg.apache.dubbo.samples.Greeter%3Fanyhost%3Dtrue" +
		"%26application%3Ddubbo-samples%26deprecated%3Dfalse%26dubbo%3D2.0.2%26dynamic%3Dtrue%26generic%3Dfalse" +
		"%26group%3Dg1%26interface%3Dorg.apache.dubbo.samples.Greeter%26methods%3Dgreet%2CgreetStream" +
		"%26pid%3D4242%26prefer.serialization%3Dfastjson2%2Chessian2%26release%3D3.3.0" +
		"%26service-name-mapping%3Dtrue%26side%3Dprovider%26timestamp%3D1700000000000%26version%3D1.0.0"
	const dubboNode = "dubbo%3A%2F%2F10.1.2.3%3A20880%2Forg.apache.dubbo.samples.Greeter%3Fanyhost%3Dtrue" +
		"%26interface%3Dorg.apache.dubbo.samples.Greeter%26side%3Dprovider"
	const consumerNode = "consumer%3A%2F%2F10.1.2.4%2Forg.apache.dubbo.samples.Greeter%3Fcategory%3Dconsumers" +
		"%26interface%3Dorg.apache.dubbo.samples.Greeter%26side%3Dconsumer"
	persistent := []string{
		"/dubbo", "/dubbo/" + iface, "/dubbo/" + iface + "/providers", "/dubbo/" + iface + "/consumers",
		"/dubbo/" + iface + "/configurators", "/dubbo/mapping", "/dubbo/mapping/" + iface,
		"/dubbo/config", "/dubbo/config/dubbo",
	}
	for _, p := range persistent {
		if _, err := dubbo.Create(p, nil, zk.FlagPersistent, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			t.Fatalf("create %s: %v", p, err)
		}
	}

	r := newRegistry(t, zookeeper.Options{})
	v := watch(t, r)

	for _, n := range []string{"/providers/" + dubboNode, "/consumers/" + consumerNode, "/providers/" + triNode} {
		if _, err := dubbo.Create("/dubbo/"+iface+n, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("create %s: %v", n, err)
		}
	}
	want := mesh.Instance{
		Service:  mesh.ServiceKey{Name: iface, Version: "1.0.0", Group: "g1"},
		Protocol: mesh.ProtocolTriple, Address: "10.1.2.3:50051",
	}
	check := func(got []mesh.Instance) string {
		// The dubbo:// provider is listed (registries carry it; gateways do not proxy it).
		var rpc []mesh.Instance
		sawDubbo := false
		for _, g := range only(got, iface) {
			if g.Protocol == mesh.ProtocolDubbo {
				sawDubbo = g.Address == "10.1.2.3:20880"
				continue
			}
			rpc = append(rpc, g)
		}
		got = rpc
		if len(got) != 1 || !sawDubbo {
			return fmt.Sprintf("want one triple and one dubbo provider of %s, got %v", iface, got)
		}
		g := got[0]
		if g.Service != want.Service || g.Protocol != want.Protocol || g.Address != want.Address {
			return fmt.Sprintf("got %+v, want %+v", g, want)
		}
		for k, val := range map[string]string{"methods": "greet,greetStream", "application": "dubbo-samples", "release": "3.3.0", "prefer.serialization": "fastjson2,hessian2"} {
			if g.Metadata[k] != val {
				return fmt.Sprintf("metadata %s = %q, want %q (%v)", k, g.Metadata[k], val, g.Metadata)
			}
		}
		return ""
	}
	eventually(t, func() string { return check(v.get()) })
	all, err := r.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if msg := check(all); msg != "" {
		t.Fatal("List: " + msg)
	}
	// Reading Dubbo's other trees created nothing in them.
	for _, p := range []string{"/dubbo/mapping/providers", "/dubbo/config/providers"} {
		if ok, _, err := dubbo.Exists(p); err != nil || ok {
			t.Errorf("%s exists (%v)", p, err)
		}
	}
	// The Dubbo process goes away: its ephemeral provider goes with it.
	closeDubbo()
	eventually(t, func() string {
		if got := only(v.get(), iface); len(got) != 0 {
			return fmt.Sprintf("still there after the Dubbo session closed: %v", got)
		}
		return ""
	})
}

// TestSessionLoss cuts connections abruptly, as a crash or a partition does: a cut-off
// provider's nodes leave the watchers' view once its session expires, and come back when it
// reconnects (the Registry registers them again in its new session); a cut-off watcher's
// Watch returns ErrSessionExpired and, subscribed again, sees what changed meanwhile.
func TestSessionLoss(t *testing.T) {
	var ownerNet, watcherNet cutter
	owner := newRegistry(t, zookeeper.Options{Dialer: ownerNet.dial})
	watcher := newRegistry(t, zookeeper.Options{Dialer: watcherNet.dial})

	// The watcher re-subscribes after each error, as registrysync.Catalog does.
	var mu sync.Mutex
	var watchErrs []error
	v := &view{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			err := watcher.Watch(ctx, v.set)
			if ctx.Err() != nil {
				return
			}
			mu.Lock()
			watchErrs = append(watchErrs, err)
			mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	defer func() { cancel(); <-done }()

	svc := fmt.Sprintf("loss.t%d.Svc", time.Now().UnixNano()%1e9)
	inst := func(port int) mesh.Instance {
		return mesh.Instance{Service: mesh.ServiceKey{Name: svc}, Protocol: mesh.ProtocolGRPC, Address: fmt.Sprintf("127.0.0.1:%d", port)}
	}
	a, b, w := inst(1), inst(2), inst(3)
	if err := owner.Register(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	if err := watcher.Register(t.Context(), w); err != nil {
		t.Fatal(err)
	}
	v.waitAddrs(t, svc, a, w)

	// The owner crashes: its connection breaks and it does not come back.
	start := time.Now()
	ownerNet.cut(true)
	v.waitAddrs(t, svc, w)
	t.Logf("a cut-off owner's provider left the view after %v (session timeout %v)", time.Since(start).Round(time.Millisecond), sessionTimeout)

	// It comes back: its client finds the session expired, opens a new one and the Registry
	// registers the provider again.
	start = time.Now()
	ownerNet.cut(false)
	v.waitAddrs(t, svc, a, w)
	t.Logf("re-registered %v after the owner's network came back", time.Since(start).Round(time.Millisecond))

	// The watcher is cut off long enough for its session to expire (its own provider w
	// vanishing shows that); meanwhile b arrives.
	watcherNet.cut(true)
	if err := owner.Register(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() string {
		all, err := owner.List(t.Context())
		if err != nil {
			return err.Error()
		}
		if got := addrs(only(all, svc)); !slices.Equal(got, []string{a.Address, b.Address}) {
			return fmt.Sprintf("waiting for the watcher's session to expire: %v", got)
		}
		return ""
	})
	watcherNet.cut(false)
	v.waitAddrs(t, svc, a, b, w)
	mu.Lock()
	defer mu.Unlock()
	if len(watchErrs) == 0 || !errors.Is(watchErrs[0], zookeeper.ErrSessionExpired) {
		t.Fatalf("watch errors %v, want a session expiry", watchErrs)
	}
}

// cutter is a dialer whose connections can be cut (reset) and new ones refused.
type cutter struct {
	mu    sync.Mutex
	off   bool
	conns []net.Conn
}

func (c *cutter) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.off {
		return nil, errors.New("cutter: network is cut")
	}
	conn, err := net.DialTimeout(network, addr, timeout)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutter) cut(off bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off = off
	if off {
		for _, conn := range c.conns {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // reset, not a clean close
			}
			_ = conn.Close()
		}
		c.conns = nil
	}
}

// view records what a Watch reports.
type view struct {
	mu  sync.Mutex
	all []mesh.Instance
}

func (v *view) set(all []mesh.Instance) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.all = all
}

func (v *view) get() []mesh.Instance {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.all
}

func (v *view) waitAddrs(t *testing.T, svc string, want ...mesh.Instance) {
	t.Helper()
	w := addrs(want)
	eventually(t, func() string {
		if got := addrs(only(v.get(), svc)); !slices.Equal(got, w) {
			return fmt.Sprintf("watcher sees %v, want %v", got, w)
		}
		return ""
	})
}

// watch runs r.Watch until the test ends.
func watch(t *testing.T, r registrysync.Registry) *view {
	v := &view{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, v.set) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v, want context.Canceled", err)
		}
	})
	return v
}

func only(all []mesh.Instance, svc string) []mesh.Instance {
	var out []mesh.Instance
	for _, i := range all {
		if i.Service.Name == svc {
			out = append(out, i)
		}
	}
	return out
}

func addrs(is []mesh.Instance) []string {
	out := make([]string, 0, len(is))
	for _, i := range is {
		out = append(out, i.Address)
	}
	slices.Sort(out)
	return out
}

// eventually waits until cond reports nothing wrong; after 30 s the test fails with
// what it last reported.
func eventually(t *testing.T, cond func() string) {
	t.Helper()
	wait.ForNil(t, 30*time.Second, "the registry", func() error {
		if msg := cond(); msg != "" {
			return errors.New(msg)
		}
		return nil
	})
}

type discard struct{}

func (discard) Printf(string, ...any) {}

// TestDubboWrittenAppNodes reads an application instance the way Java Dubbo writes it (a
// Curator JSON node under /services, metadata values as JSON strings), whose revision's
// MetadataInfo appears only after the instance (Java's path /dubbo/metadata/<app>/<rev>):
// a watch reports its services once the metadata arrives (an exists watch), and reports
// them gone with the node.
func TestDubboWrittenAppNodes(t *testing.T) {
	dubbo, events, err := zk.Connect(servers, sessionTimeout, zk.WithLogInfo(false), zk.WithLogger(discard{}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		dubbo.Close()
		for range events {
		}
	}()
	app := fmt.Sprintf("java-app-%d", time.Now().UnixNano()%1e9)
	const iface = "org.apache.dubbo.samples.AppGreeter"
	const rev = "5b7f9c0e6a2a43c1d6f1c4b1e2a8d9f0"
	r := newRegistry(t, zookeeper.Options{SessionTimeout: sessionTimeout})
	v := watch(t, r)
	mk := func(path string, data string, flags int32) {
		for i := 1; i < len(path); i++ {
			if path[i] == '/' {
				_, _ = dubbo.Create(path[:i], nil, zk.FlagPersistent, zk.WorldACL(zk.PermAll))
			}
		}
		if _, err := dubbo.Create(path, []byte(data), flags, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("create %s: %v", path, err)
		}
	}
	node := `{"name":"` + app + `","id":"10.1.2.3:50051","address":"10.1.2.3","port":50051,"sslPort":null,` +
		`"payload":{"@class":"org.apache.dubbo.registry.zookeeper.ZookeeperInstance","id":"10.1.2.3:50051","name":"` + app + `",` +
		`"metadata":{"dubbo.endpoints":"[{\"port\":50051,\"protocol\":\"tri\"}]","dubbo.metadata.revision":"` + rev + `",` +
		`"dubbo.metadata.storage-type":"remote","timestamp":"1700000000000"}},` +
		`"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null}`
	// A second instance of the application, with another revision whose MetadataInfo is
	// there already, created after the first: the watcher reads an application's instances
	// in one pass, so once it reports the second, it has read the first.
	const rev2 = "0f9d8a2e1b4c1f6d1c34a2a6e0c9f7b5"
	info2 := `{"app":"` + app + `","revision":"` + rev2 + `","services":{"` + iface + `:tri":{"name":"` + iface + `",` +
		`"protocol":"tri","port":50052,"path":"` + iface + `","params":{"application":"` + app + `","side":"provider",` +
		`"methods":"greet","release":"3.3.0"}}}}`
	mk("/dubbo/metadata/"+app+"/"+rev2, info2, zk.FlagPersistent)
	mk("/services/"+app+"/10.1.2.3:50051", node, zk.FlagEphemeral)
	node2 := strings.NewReplacer("10.1.2.3:50051", "10.1.2.4:50052", `"10.1.2.3"`, `"10.1.2.4"`, "50051", "50052", rev, rev2).Replace(node)
	mk("/services/"+app+"/10.1.2.4:50052", node2, zk.FlagEphemeral)
	second := mesh.Instance{Service: mesh.ServiceKey{Name: iface}, Protocol: mesh.ProtocolTriple, Address: "10.1.2.4:50052"}
	// The first instance alone (no MetadataInfo yet) is not a provider; a later change is.
	v.waitAddrs(t, iface, second)
	info := `{"app":"` + app + `","revision":"` + rev + `","services":{"` + iface + `:tri":{"name":"` + iface + `",` +
		`"protocol":"tri","port":50051,"path":"` + iface + `","params":{"application":"` + app + `","side":"provider",` +
		`"methods":"greet","release":"3.3.0"}},"` + iface + `:dubbo":{"name":"` + iface + `","protocol":"dubbo","port":20880}}}`
	mk("/dubbo/metadata/"+app+"/"+rev, info, zk.FlagPersistent)
	want := mesh.Instance{Service: mesh.ServiceKey{Name: iface}, Protocol: mesh.ProtocolTriple, Address: "10.1.2.3:50051"}
	v.waitAddrs(t, iface, want, second)
	var got mesh.Instance
	for _, i := range only(v.get(), iface) {
		if i.Address == want.Address {
			got = i
		}
	}
	if got.Metadata["application"] != app || got.Metadata["methods"] != "greet" || got.Metadata["timestamp"] != "1700000000000" {
		t.Fatalf("metadata %v", got.Metadata)
	}
	all, err := r.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l := addrs(only(all, iface)); !slices.Equal(l, addrs([]mesh.Instance{want, second})) {
		t.Fatalf("List: %v", l)
	}
	if err := dubbo.Delete("/services/"+app+"/10.1.2.3:50051", -1); err != nil {
		t.Fatal(err)
	}
	v.waitAddrs(t, iface, second)
	if err := dubbo.Delete("/services/"+app+"/10.1.2.4:50052", -1); err != nil {
		t.Fatal(err)
	}
	v.waitAddrs(t, iface)
	for _, p := range []string{"/dubbo/metadata/" + app + "/" + rev, "/dubbo/metadata/" + app + "/" + rev2, "/dubbo/metadata/" + app, "/services/" + app} {
		_ = dubbo.Delete(p, -1)
	}
}
