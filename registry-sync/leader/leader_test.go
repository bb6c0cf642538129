package leader_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/strait-mesh/strait/registry-sync/embedded"
	"github.com/strait-mesh/strait/registry-sync/leader"
	"github.com/strait-mesh/strait/test/registries"
)

var (
	// etcdEndpoint is the embedded etcd that TestMain started.
	etcdEndpoint string
	// zkServers is the ZooKeeper that TestMain started (test/registries/zookeeper), or nil
	// with zkSkip saying why not.
	zkServers []string
	zkSkip    string
)

const zkJar = "/usr/share/java/zookeeper.jar"

func TestMain(m *testing.M) { os.Exit(run(m)) }

// run starts a real etcd (embedded) and, if it is installed, a real ZooKeeper at once, runs
// the tests, stops both and ends with a goroutine leak check.
func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "strait-leader-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	var wg sync.WaitGroup
	var srv *embedded.Server
	var etcdErr, zkErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv, etcdErr = embedded.Start("leader", filepath.Join(dir, "etcd"))
	}()
	var zk *registries.Server
	if _, err := os.Stat(zkJar); err != nil {
		// start.sh would install Debian's zookeeper package: not from a unit test.
		zkSkip = "ZooKeeper is not installed (" + zkJar + " is missing; `apt-get install zookeeper` or run test/registries/zookeeper/start.sh once)"
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if zk, zkErr = registries.Start("zookeeper"); zkErr == nil {
				zkServers = []string{zk.Addr}
			}
		}()
	}
	wg.Wait()
	code := 0
	if etcdErr != nil || zkErr != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", errors.Join(etcdErr, zkErr))
		code = 1
	} else {
		etcdEndpoint = srv.Endpoint()
		code = m.Run()
	}
	if srv != nil {
		srv.Close()
	}
	if zk != nil {
		if err := zk.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: zookeeper:", err)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}

// ---- what the tests share across both backends ----

// backend makes electors of one election and observes the election in the registry.
type backend struct {
	// elector returns a new candidate named id (closed at the end of the test).
	elector func(t *testing.T, id string) leader.Elector
	// candidates lists the candidates' ids in the registry, the leader first.
	candidates func(t *testing.T) []string
}

type result struct {
	lead context.Context
	err  error
}

func campaign(ctx context.Context, el leader.Elector) <-chan result {
	ch := make(chan result, 1)
	go func() {
		l, err := el.Campaign(ctx)
		ch <- result{l, err}
	}()
	return ch
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: %s", what)
		}
	}
}

func wait(t *testing.T, what string, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("after 20s: %s", what)
		return result{}
	}
}

func done(t *testing.T, what string, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("after 20s: %s", what)
	}
}

func pending(t *testing.T, what string, ch <-chan result) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s: Campaign returned (%v, %v)", what, r.lead, r.err)
	default:
	}
}

func candidatesAre(b backend, t *testing.T, want ...string) func() bool {
	return func() bool { return strings.Join(b.candidates(t), ",") == strings.Join(want, ",") }
}

// testOneLeaderAndFailover: three candidates queue; only the first leads; when it closes,
// the next leads, and when that one resigns, the last; whoever leads, the one before has
// stopped leading (its context ended) first.
func testOneLeaderAndFailover(t *testing.T, b backend) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, bb, c := b.elector(t, "a"), b.elector(t, "b"), b.elector(t, "c")

	ra := wait(t, "a leads", campaign(ctx, a))
	if ra.err != nil {
		t.Fatal(ra.err)
	}
	chB := campaign(ctx, bb)
	eventually(t, "b queued behind a", candidatesAre(b, t, "a", "b"))
	chC := campaign(ctx, c)
	eventually(t, "c queued behind b", candidatesAre(b, t, "a", "b", "c"))
	pending(t, "b while a leads", chB)
	pending(t, "c while a leads", chC)

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	done(t, "a's leadership ends when it closes", ra.lead)
	rb := wait(t, "b leads after a closed", chB)
	if rb.err != nil || rb.lead.Err() != nil {
		t.Fatalf("b: %v %v", rb.err, rb.lead.Err())
	}
	if got := b.candidates(t); len(got) == 0 || got[0] != "b" {
		t.Fatalf("candidates in the registry %v, want b first", got)
	}
	pending(t, "c while b leads", chC)

	if err := bb.Resign(); err != nil {
		t.Fatal(err)
	}
	if rb.lead.Err() == nil {
		t.Fatal("b still leads after Resign returned")
	}
	rc := wait(t, "c leads after b resigned", chC)
	if rc.err != nil || rc.lead.Err() != nil {
		t.Fatalf("c: %v %v", rc.err, rc.lead.Err())
	}
	eventually(t, "c alone", candidatesAre(b, t, "c"))

	// b campaigns again: it queues behind c.
	chB2 := campaign(ctx, bb)
	eventually(t, "b queued behind c", candidatesAre(b, t, "c", "b"))
	pending(t, "b while c leads", chB2)
	if err := c.Resign(); err != nil {
		t.Fatal(err)
	}
	rb2 := wait(t, "b leads again", chB2)
	if rb2.err != nil || rb2.lead.Err() != nil || rc.lead.Err() == nil {
		t.Fatalf("b: %v %v; c's leadership: %v", rb2.err, rb2.lead.Err(), rc.lead.Err())
	}
	if err := bb.Close(); err != nil {
		t.Fatal(err)
	}
	done(t, "b's leadership ends when it closes", rb2.lead)
	eventually(t, "no candidates left", candidatesAre(b, t))
}

// testCampaignCancelled: a campaign whose context ends returns ctx.Err() and leaves the
// queue; a leadership whose campaign context ends ends too.
func testCampaignCancelled(t *testing.T, b backend) {
	a, bb := b.elector(t, "a"), b.elector(t, "b")
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	ra := wait(t, "a leads", campaign(actx, a))
	if ra.err != nil {
		t.Fatal(ra.err)
	}

	bctx, bcancel := context.WithCancel(context.Background())
	chB := campaign(bctx, bb)
	eventually(t, "b queued behind a", candidatesAre(b, t, "a", "b"))
	bcancel()
	rb := wait(t, "b's campaign returns when its context ends", chB)
	if !errors.Is(rb.err, context.Canceled) || rb.lead != nil {
		t.Fatalf("b's campaign: %v, %v; want context.Canceled", rb.lead, rb.err)
	}
	eventually(t, "b left the queue", candidatesAre(b, t, "a"))
	if ra.lead.Err() != nil {
		t.Fatal("a stopped leading when b gave up")
	}

	// A context already ended: no campaign at all.
	ended, cancelled := context.WithCancel(context.Background())
	cancelled()
	if l, err := bb.Campaign(ended); !errors.Is(err, context.Canceled) || l != nil {
		t.Fatalf("campaign with an ended context: %v, %v", l, err)
	}
	if got := b.candidates(t); strings.Join(got, ",") != "a" {
		t.Fatalf("candidates %v, want a alone", got)
	}

	// The leadership is derived from the campaign's context.
	acancel()
	done(t, "a's leadership ends with its campaign context", ra.lead)
	if err := a.Resign(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no candidates left", candidatesAre(b, t))
	// Resigning when not leading is not an error.
	if err := a.Resign(); err != nil {
		t.Fatalf("second Resign: %v", err)
	}
	if err := bb.Resign(); err != nil {
		t.Fatalf("Resign of a candidate that never led: %v", err)
	}
}

// ---- etcd ----

func etcdBackend(t *testing.T, ttl time.Duration) (backend, string) {
	prefix := "/strait/test/leader/" + t.Name()
	cli := etcdClient(t, etcdEndpoint)
	return backend{
		elector: func(t *testing.T, id string) leader.Elector {
			e, err := leader.NewEtcd([]string{etcdEndpoint}, prefix, id, ttl, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			return e
		},
		candidates: func(t *testing.T) []string {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, kv := range resp.Kvs {
				ids = append(ids, string(kv.Value))
			}
			return ids
		},
	}, prefix
}

func etcdClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestEtcdOneLeaderAndFailover(t *testing.T) {
	b, _ := etcdBackend(t, 5*time.Second)
	testOneLeaderAndFailover(t, b)
}

func TestEtcdCampaignCancelled(t *testing.T) {
	b, _ := etcdBackend(t, 5*time.Second)
	testCampaignCancelled(t, b)
}

// TestEtcdLeaseLost: the leader's lease goes (revoked behind its back, as when it expires
// during a partition): its leadership ends at once, the next candidate leads, and the old
// leader can campaign again on a new lease.
func TestEtcdLeaseLost(t *testing.T) {
	b, prefix := etcdBackend(t, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, bb := b.elector(t, "a"), b.elector(t, "b")
	ra := wait(t, "a leads", campaign(ctx, a))
	if ra.err != nil {
		t.Fatal(ra.err)
	}
	chB := campaign(ctx, bb)
	eventually(t, "b queued behind a", candidatesAre(b, t, "a", "b"))

	cli := etcdClient(t, etcdEndpoint)
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil || len(resp.Kvs) != 2 || string(resp.Kvs[0].Value) != "a" {
		t.Fatalf("election keys: %v %v", resp, err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	done(t, "a's leadership ends when its lease goes", ra.lead)
	rb := wait(t, "b leads", chB)
	if rb.err != nil || rb.lead.Err() != nil {
		t.Fatalf("b: %v", rb.err)
	}
	// a campaigns again: its old session is dead, so it takes a new lease and queues.
	chA := campaign(ctx, a)
	eventually(t, "a queued behind b", candidatesAre(b, t, "b", "a"))
	if err := bb.Close(); err != nil {
		t.Fatal(err)
	}
	ra2 := wait(t, "a leads again", chA)
	if ra2.err != nil || ra2.lead.Err() != nil {
		t.Fatalf("a: %v", ra2.err)
	}
}

// TestEtcdUnreachable: a campaign against an etcd that does not answer returns when its
// context ends, as Campaign promises.
func TestEtcdUnreachable(t *testing.T) {
	srv, err := embedded.Start("gone", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	endpoint := srv.Endpoint()
	e, err := leader.NewEtcd([]string{endpoint}, "/strait/test/leader/unreachable", "a", 5*time.Second, nil)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	ch := campaign(ctx, e)
	select {
	case r := <-ch:
		if !errors.Is(r.err, context.DeadlineExceeded) || r.lead != nil {
			t.Errorf("campaign: %v, %v; want context.DeadlineExceeded", r.lead, r.err)
		}
	case <-time.After(10 * time.Second):
		e.Close() // unblocks the campaign
		<-ch
		t.Fatal("Campaign did not return within 10s of its context ending while etcd was unreachable")
	}
	if err := e.Close(); err != nil {
		t.Logf("close: %v", err)
	}
}

// ---- ZooKeeper ----

func zkBackend(t *testing.T, servers []string) (backend, string) {
	if zkServers == nil {
		t.Skip(zkSkip)
	}
	path := "/strait/test/leader/" + strings.ReplaceAll(t.Name(), "/", "-")
	conn := zkConn(t)
	return backend{
		elector: func(t *testing.T, id string) leader.Elector {
			z, err := leader.NewZooKeeper(servers, path, id, 2*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { z.Close() })
			return z
		},
		candidates: func(t *testing.T) []string { return zkCandidates(t, conn, path) },
	}, path
}

func zkConn(t *testing.T) *zk.Conn {
	t.Helper()
	conn, events, err := zk.Connect(zkServers, 2*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		for range events { // the client's goroutines end with the channel
		}
	})
	return conn
}

// zkCandidates reads the election's nodes, n-<id>-<sequence>, lowest sequence first.
func zkCandidates(t *testing.T, conn *zk.Conn, path string) []string {
	t.Helper()
	kids, _, err := conn.Children(path)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(kids, func(i, j int) bool { return kids[i][len(kids[i])-10:] < kids[j][len(kids[j])-10:] })
	ids := make([]string, len(kids))
	for i, k := range kids {
		ids[i] = strings.TrimPrefix(k[:len(k)-11], "n-")
	}
	return ids
}

func TestZooKeeperOneLeaderAndFailover(t *testing.T) {
	b, _ := zkBackend(t, zkServers)
	testOneLeaderAndFailover(t, b)
}

func TestZooKeeperCampaignCancelled(t *testing.T) {
	b, _ := zkBackend(t, zkServers)
	testCampaignCancelled(t, b)
}

// TestZooKeeperSessionLost: the leader's connection to ZooKeeper breaks: its leadership
// ends at once (it cannot know whether its session survives), and once the session has
// expired the next candidate leads.
func TestZooKeeperSessionLost(t *testing.T) {
	if zkServers == nil {
		t.Skip(zkSkip)
	}
	p := startProxy(t, zkServers[0])
	viaProxy, _ := zkBackend(t, []string{p.addr})
	direct, _ := zkBackend(t, zkServers)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	a := viaProxy.elector(t, "a")
	ra := wait(t, "a leads", campaign(ctx, a))
	if ra.err != nil {
		t.Fatal(ra.err)
	}
	bb := direct.elector(t, "b")
	chB := campaign(ctx, bb)
	eventually(t, "b queued behind a", candidatesAre(direct, t, "a", "b"))

	p.cut()
	done(t, "a's leadership ends when its connection breaks", ra.lead)
	cut := time.Now()
	rb := wait(t, "b leads once a's session expired", chB)
	if rb.err != nil || rb.lead.Err() != nil {
		t.Fatalf("b: %v", rb.err)
	}
	t.Logf("b leads %v after a's connection broke (session timeout 2s)", time.Since(cut).Round(time.Millisecond))
	if got := direct.candidates(t); strings.Join(got, ",") != "b" {
		t.Errorf("candidates %v, want b alone", got)
	}
	// a, cut off, still closes.
	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close of a cut-off candidate did not return")
	}
}

// TestZooKeeperNodeDeleted: the leader's node is deleted behind its back: its leadership
// ends, and the next candidate leads.
func TestZooKeeperNodeDeleted(t *testing.T) {
	b, path := zkBackend(t, zkServers)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, bb := b.elector(t, "a"), b.elector(t, "b")
	ra := wait(t, "a leads", campaign(ctx, a))
	if ra.err != nil {
		t.Fatal(ra.err)
	}
	chB := campaign(ctx, bb)
	eventually(t, "b queued behind a", candidatesAre(b, t, "a", "b"))
	conn := zkConn(t)
	kids, _, err := conn.Children(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kids {
		if strings.HasPrefix(k, "n-a-") {
			if err := conn.Delete(path+"/"+k, -1); err != nil {
				t.Fatal(err)
			}
		}
	}
	done(t, "a's leadership ends when its node goes", ra.lead)
	rb := wait(t, "b leads", chB)
	if rb.err != nil || rb.lead.Err() != nil {
		t.Fatalf("b: %v", rb.err)
	}
}

func TestZooKeeperBadPath(t *testing.T) {
	for _, p := range []string{"strait/x", "/strait/x/", ""} {
		if _, err := leader.NewZooKeeper([]string{"127.0.0.1:1"}, p, "a", time.Second, nil); err == nil || !strings.Contains(err.Error(), "must start and not end with '/'") {
			t.Errorf("path %q: %v", p, err)
		}
	}
}

func TestID(t *testing.T) {
	a, b := leader.ID(), leader.ID()
	if a == b || !strings.Contains(a, "-"+strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("IDs %q, %q", a, b)
	}
}

// ---- a TCP proxy whose connections the test can cut ----

type proxy struct {
	addr string
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
	once  sync.Once
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, d)
			p.mu.Unlock()
			p.wg.Add(2)
			for _, pair := range [][2]net.Conn{{c, d}, {d, c}} {
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				}()
			}
		}
	}()
	t.Cleanup(p.cut)
	return p
}

// cut closes the listener and every connection: the client behind it is cut off.
func (p *proxy) cut() {
	p.once.Do(func() {
		p.ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}
