package membership

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/test/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKey = bytes.Repeat([]byte{7}, 32)

// testLogger discards unless -v. It must not log through t: memberlist's goroutines may
// still log after a test has ended.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

func testOptions(name string, seeds ...string) Options {
	return Options{
		Name:     name,
		Cluster:  "beta/ingress",
		Key:      testKey,
		BindAddr: "127.0.0.1:0",
		Join:     seeds,
		Meta: Meta{
			Domain:   "beta",
			Role:     RoleIngress,
			Instance: name,
			Addr:     "10.0.0.1:8443",
			Zone:     "z1",
		},
		Logger: testLogger(),
	}
}

func start(t *testing.T, o Options) *Cluster {
	t.Helper()
	c, err := Join(t.Context(), o)
	if err != nil {
		t.Fatalf("Join(%s): %v", o.Name, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close(%s): %v", o.Name, err)
		}
	})
	return c
}

// startCluster starts n members named m1…mn, all joined through m1, and waits until
// every one sees all n.
func startCluster(t *testing.T, n int) []*Cluster {
	t.Helper()
	first := start(t, testOptions("m1"))
	cs := []*Cluster{first}
	for i := 2; i <= n; i++ {
		cs = append(cs, start(t, testOptions("m"+string(rune('0'+i)), first.Addr())))
	}
	for _, c := range cs {
		waitFor(t, func() bool { return len(c.Members()) == n }, c.name+" to see all members")
	}
	return cs
}

// waitFor waits until cond holds and returns how long that took. The bound is generous:
// how fast gossip converges is logged, not asserted (a shared machine may be slow).
func waitFor(t *testing.T, cond func() bool, what string) time.Duration {
	t.Helper()
	return wait.For(t, 30*time.Second, what, cond)
}

func names(ms []Member) []string {
	var ns []string
	for _, m := range ms {
		ns = append(ns, m.Name)
	}
	return ns
}

func has(c *Cluster, name string) bool { return slices.Contains(names(c.Members()), name) }

// kill stops c abruptly, without leaving: the others must detect the failure.
func kill(t *testing.T, c *Cluster) {
	t.Helper()
	c.life.Lock()
	defer c.life.Unlock()
	c.left = true // so that Close does not try to leave a shut-down memberlist
	if err := c.ml.Shutdown(); err != nil {
		t.Fatal(err)
	}
}

func TestThreeMembersJoin(t *testing.T) {
	cs := startCluster(t, 3)
	for _, c := range cs {
		ms := c.Members()
		if got, want := names(ms), []string{"m1", "m2", "m3"}; !slices.Equal(got, want) {
			t.Errorf("%s sees %v, want %v", c.name, got, want)
		}
		for _, m := range ms {
			want := Meta{Domain: "beta", Role: RoleIngress, Instance: m.Name, Addr: "10.0.0.1:8443", Zone: "z1", State: StateServing}
			if m.Meta != want {
				t.Errorf("%s sees %s with meta %+v, want %+v", c.name, m.Name, m.Meta, want)
			}
		}
	}
	if a := cs[0].Addr(); !strings.HasPrefix(a, "127.0.0.1:") || strings.HasSuffix(a, ":0") {
		t.Errorf("Addr() = %q, want 127.0.0.1 and a real port", a)
	}
}

func TestRefusedJoins(t *testing.T) {
	cs := startCluster(t, 2)
	seed := cs[0].Addr()
	otherKey := bytes.Repeat([]byte{9}, 32)
	for _, tc := range []struct {
		name string
		edit func(*Options)
	}{
		{"wrong key", func(o *Options) { o.Key = otherKey }},
		{"shorter wrong key", func(o *Options) { o.Key = otherKey[:16] }},
		{"other cluster label", func(o *Options) { o.Cluster = "beta/egress" }},
		{"other domain", func(o *Options) { o.Meta.Domain = "gamma" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions("intruder", seed)
			tc.edit(&o)
			c, err := Join(t.Context(), o)
			if err == nil {
				_ = c.Close()
				t.Fatal("Join succeeded, want an error")
			}
			t.Logf("Join: %v", err)
		})
	}
	// Whatever the intruders sent reached m1, their seed, before their Join returned; m1
	// gossips on to m2. A change of m1's metadata seen by m2 (gossip that left m1 after the
	// intruders' messages) shows that it has passed; then nobody may list an intruder.
	m := testOptions("m1").Meta
	m.Load = 7
	if err := cs[0].UpdateMeta(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, x := range cs[1].Members() {
			if x.Name == "m1" && x.Meta.Load == 7 {
				return true
			}
		}
		return false
	}, "m2 to see m1's new metadata")
	for _, c := range cs {
		if got := names(c.Members()); !slices.Equal(got, []string{"m1", "m2"}) {
			t.Errorf("%s sees %v, want [m1 m2]", c.name, got)
		}
	}
}

func TestJoinNoSeed(t *testing.T) {
	// A port nobody listens on: bind one and close it.
	c := start(t, testOptions("m1"))
	addr := c.Addr()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if c2, err := Join(t.Context(), testOptions("m2", addr)); err == nil {
		_ = c2.Close()
		t.Fatal("Join with an unreachable seed succeeded")
	}
}

func TestLeave(t *testing.T) {
	cs := startCluster(t, 3)
	begin := time.Now()
	if err := cs[2].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	returned := time.Since(begin)
	waitFor(t, func() bool { return !has(cs[0], "m3") && !has(cs[1], "m3") }, "m3 to be dropped after Leave")
	t.Logf("Leave returned after %v; left member dropped by both others %v after the call", returned.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	if has(cs[2], "m3") {
		t.Error("a left member still lists itself")
	}
	if err := cs[2].UpdateMeta(testOptions("m3").Meta); err == nil {
		t.Error("UpdateMeta after Leave succeeded")
	}
}

func TestKilledMemberDetected(t *testing.T) {
	cs := startCluster(t, 3)
	killed := time.Now()
	kill(t, cs[2])
	var dropped [2]time.Duration
	waitFor(t, func() bool {
		for i, c := range cs[:2] {
			if dropped[i] == 0 && !has(c, "m3") {
				dropped[i] = time.Since(killed)
			}
		}
		return dropped[0] != 0 && dropped[1] != 0
	}, "the killed m3 to be dropped")
	t.Logf("killed member dropped by m1 after %v, by m2 after %v", dropped[0].Round(time.Millisecond), dropped[1].Round(time.Millisecond))
	for _, c := range cs[:2] {
		if got := names(c.Members()); !slices.Equal(got, []string{"m1", "m2"}) {
			t.Errorf("%s sees %v, want [m1 m2]", c.name, got)
		}
	}
}

func TestUpdateMetaAndWatch(t *testing.T) {
	cs := startCluster(t, 2)

	var (
		mu    sync.Mutex
		calls [][]Member
	)
	stop := cs[0].Watch(func(ms []Member) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, ms)
	})
	last := func() []Member {
		mu.Lock()
		defer mu.Unlock()
		if len(calls) == 0 {
			return nil
		}
		return calls[len(calls)-1]
	}
	waitFor(t, func() bool { return len(last()) == 2 }, "the first Watch call")

	m := testOptions("m2").Meta
	m.State = StateDraining
	m.Load = 42
	begin := time.Now()
	if err := cs[1].UpdateMeta(m); err != nil {
		t.Fatal(err)
	}
	draining := func(ms []Member) bool {
		for _, x := range ms {
			if x.Name == "m2" {
				return x.Meta.State == StateDraining && x.Meta.Load == 42
			}
		}
		return false
	}
	waitFor(t, func() bool { return draining(last()) }, "m2's draining state in Watch")
	t.Logf("meta update seen through Watch %v after the UpdateMeta call", time.Since(begin).Round(time.Millisecond))
	if !draining(cs[0].Members()) {
		t.Error("Members does not show the update")
	}

	// A third member joins: the watcher sees it.
	start(t, testOptions("m3", cs[0].Addr()))
	waitFor(t, func() bool { return len(last()) == 3 }, "m3 in Watch")

	stop()
	mu.Lock()
	n := len(calls)
	mu.Unlock()
	m.Load = 43
	if err := cs[1].UpdateMeta(m); err != nil {
		t.Fatal(err)
	}
	// m1 has the change (a watcher that had not stopped would be woken by it), and no call
	// of fn came after stop.
	waitFor(t, func() bool {
		for _, x := range cs[0].Members() {
			if x.Name == "m2" && x.Meta.Load == 43 {
				return true
			}
		}
		return false
	}, "m1 to see m2's load of 43")
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != n {
		t.Errorf("fn called %d more times after stop", len(calls)-n)
	}
	for i := 1; i < len(calls); i++ {
		if slices.EqualFunc(calls[i], calls[i-1], func(a, b Member) bool { return a == b }) {
			t.Errorf("call %d repeats the previous set %v", i, calls[i])
		}
	}

	// Domain and role are fixed.
	bad := m
	bad.Domain = "gamma"
	if err := cs[1].UpdateMeta(bad); err == nil {
		t.Error("UpdateMeta changing the domain succeeded")
	}
}

func TestCloseStopsWatches(t *testing.T) {
	c, err := Join(t.Context(), testOptions("m1"))
	if err != nil {
		t.Fatal(err)
	}
	called := make(chan []Member, 10)
	c.Watch(func(ms []Member) { called <- ms })
	if ms := <-called; len(ms) != 1 || ms[0].Name != "m1" {
		t.Errorf("first call %v, want [m1]", names(ms))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	c.Watch(func([]Member) { t.Error("Watch on a closed cluster called fn") })()
	if err := c.UpdateMeta(testOptions("m1").Meta); err != ErrClosed {
		t.Errorf("UpdateMeta after Close = %v, want ErrClosed", err)
	}
	if err := c.Leave(time.Second); err != ErrClosed {
		t.Errorf("Leave after Close = %v, want ErrClosed", err)
	}
}

func TestJoinValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Options)
	}{
		{"no name", func(o *Options) { o.Name = "" }},
		{"no cluster", func(o *Options) { o.Cluster = "" }},
		{"no key", func(o *Options) { o.Key = nil }},
		{"bad key length", func(o *Options) { o.Key = make([]byte, 20) }},
		{"host name bind", func(o *Options) { o.BindAddr = "localhost:0" }},
		{"no port", func(o *Options) { o.BindAddr = "127.0.0.1" }},
		{"no domain", func(o *Options) { o.Meta.Domain = "" }},
		{"bad role", func(o *Options) { o.Meta.Role = "router" }},
		{"serving controlplane", func(o *Options) { o.Meta.Role, o.Meta.State = RoleControlplane, StateServing }},
		{"observer gateway", func(o *Options) { o.Meta.State = StateObserver }},
		{"meta too large", func(o *Options) { o.Meta.Zone = strings.Repeat("z", 500) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions("m1")
			tc.edit(&o)
			if c, err := Join(t.Context(), o); err == nil {
				_ = c.Close()
				t.Fatal("Join succeeded, want an error")
			} else {
				t.Logf("Join: %v", err)
			}
		})
	}
}

func TestControlplaneObserver(t *testing.T) {
	gw := start(t, testOptions("m1"))
	o := testOptions("cp", gw.Addr())
	o.Meta = Meta{Domain: "beta", Role: RoleControlplane, Instance: "cp-0"}
	cp := start(t, o)
	waitFor(t, func() bool { return len(gw.Members()) == 2 && len(cp.Members()) == 2 }, "both to see each other")
	for _, m := range gw.Members() {
		if m.Name == "cp" && m.Meta.State != StateObserver {
			t.Errorf("controlplane state %q, want %q", m.Meta.State, StateObserver)
		}
	}
}

func TestParseKey(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != 32 {
		t.Fatalf("GenerateKey: %d bytes, want 32", len(k))
	}
	for _, n := range []int{16, 24, 32} {
		s := base64.StdEncoding.EncodeToString(k[:n])
		got, err := ParseKey(" " + s + "\n")
		if err != nil || !bytes.Equal(got, k[:n]) {
			t.Errorf("ParseKey(%d-byte key) = %x, %v", n, got, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"not base64!", "base64"},
		{base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), "base64"},
		{base64.StdEncoding.EncodeToString(make([]byte, 20)), "20 bytes"},
		{base64.StdEncoding.EncodeToString(make([]byte, 64)), "64 bytes"},
	} {
		if _, err := ParseKey(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKey(%q) = %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}
