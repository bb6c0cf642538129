package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/embedded"
	"github.com/strait-mesh/strait/registry-sync/leader"
	"github.com/strait-mesh/strait/registry-sync/syncjob"
	"github.com/strait-mesh/strait/registry-sync/zookeeper"
)

// lockedBuffer collects a process's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// logged reports whether the JSON log holds a line with message msg (and, if service is
// not empty, that service).
func (l *lockedBuffer) logged(msg, service string) bool {
	for _, line := range strings.Split(l.String(), "\n") {
		var e struct {
			Msg     string `json:"msg"`
			Service string `json:"service"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == msg && (service == "" || e.Service == service) {
			return true
		}
	}
	return false
}

// TestFailoverZooKeeperToNacos runs two `strait sync` processes on one continuous job,
// electing their writer on ZooKeeper: a provider registered in ZooKeeper reaches Nacos
// through the leader only; the leader is killed (SIGKILL) and the other process takes
// over (when the dead one's session expires) and copies the next provider.
func TestFailoverZooKeeperToNacos(t *testing.T) {
	src := newZK(t)
	dst := newNacos(t)
	job := writeJob(t, fmt.Sprintf(`
name: failover
source: {kind: zookeeper, addresses: [%q]}
target: {kind: nacos, addresses: [%q]}
services: ["org.example.failover.*"]
leader: {on: source, ttl: 2s}
`, zkAddr, nacosAddr))

	type proc struct {
		cmd  *exec.Cmd
		logs *lockedBuffer
		done chan error
	}
	start := func() *proc {
		p := &proc{cmd: exec.Command(straitBin, "sync", "-c", job), logs: &lockedBuffer{}, done: make(chan error, 1)}
		p.cmd.Stderr = p.logs
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.done <- p.cmd.Wait() }()
		t.Cleanup(func() {
			_ = p.cmd.Process.Kill()
			<-p.done
		})
		return p
	}
	a, b := start(), start()
	var lead, other *proc
	eventually(t, "one process leads", func() bool {
		switch {
		case a.logs.logged("leader election: leading", ""):
			lead, other = a, b
		case b.logs.logged("leader election: leading", ""):
			lead, other = b, a
		}
		return lead != nil
	})

	inNacos := func(i mesh.Instance) func() bool {
		return func() bool {
			_, ok := list(t, dst)[i.Service.Name+"@"+i.Address]
			return ok
		}
	}
	p1 := provider("org.example.failover.Greeter", listen(t), nil)
	register(t, src, p1)
	eventually(t, "the first provider is copied to Nacos", inNacos(p1))
	if other.logs.logged("copied", "") || other.logs.logged("leader election: leading", "") {
		t.Fatalf("the follower wrote or led:\n%s", other.logs.String())
	}

	killed := time.Now()
	if err := lead.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-lead.done
	lead.done <- nil // for the cleanup
	eventually(t, "the other process takes over", func() bool { return other.logs.logged("leader election: leading", "") })
	t.Logf("takeover %v after the SIGKILL (session timeout 2s)", time.Since(killed).Round(time.Millisecond))

	p2 := provider("org.example.failover.Greeter", listen(t), nil)
	register(t, src, p2)
	eventually(t, "the second provider is copied by the new leader", inNacos(p2))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := src.Deregister(ctx, p1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a provider gone from ZooKeeper leaves Nacos", func() bool { return !inNacos(p1)() })

	if err := other.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-other.done; err != nil {
		t.Errorf("SIGTERM: %v\n%s", err, other.logs.String())
	}
	other.done <- nil

	// Clean up the copy with the job's own --once (the provider is still in ZooKeeper
	// until src closes; close it first).
	src.Close()
	if tot, _ := runOnce(t, job).Totals(); tot.Removed != 1 {
		t.Errorf("cleanup run: %+v, want 1 removed", tot)
	}
}

// TestBothWaysNoLoop runs a job in both directions between ZooKeeper and Nacos in this
// process: each side's own providers reach the other side as managed copies, changes follow
// by subscription, no copy is ever copied back, and a provider registered in both
// registries by itself is not copied either way.
func TestBothWaysNoLoop(t *testing.T) {
	zkReg := newZK(t)
	nacosReg := newNacos(t)
	job, err := syncjob.Parse([]byte(fmt.Sprintf(`
name: both-ways
source: {kind: zookeeper, addresses: [%q]}
target: {kind: nacos, addresses: [%q]}
direction: both
services: ["org.example.both.*"]
leader: {on: source, ttl: 2s}
`, zkAddr, nacosAddr)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := syncjob.New(job, syncjob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A provider registered in both registries by itself is not copied. It registers
	// before the job starts: registered in one and then the other while the job runs, it
	// could be copied in between, and Nacos refuses an ephemeral instance in a service
	// that a copy (persistent) created.
	dual := provider("org.example.both.Dual", listen(t), nil)
	register(t, zkReg, dual)
	register(t, nacosReg, dual)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}()

	fromZK := provider("org.example.both.Legacy", listen(t), nil)
	fromNacos := provider("org.example.both.Modern", listen(t), nil)
	register(t, zkReg, fromZK)
	register(t, nacosReg, fromNacos)

	// state checks one registry: exactly its own providers (unmarked) and the other side's
	// as copies owned by the job, with that side as origin.
	state := func(reg registrysync.Registry, own, copies []mesh.Instance, otherLabel string) func() bool {
		return func() bool {
			got := map[string]mesh.Instance{}
			for k, i := range list(t, reg) {
				if strings.HasPrefix(i.Service.Name, "org.example.both.") {
					got[k] = i
				}
			}
			if len(got) != len(own)+len(copies) {
				return false
			}
			for _, i := range own {
				g, ok := got[i.Service.Name+"@"+i.Address]
				if !ok || registrysync.Managed(g) {
					return false
				}
			}
			for _, i := range copies {
				g, ok := got[i.Service.Name+"@"+i.Address]
				if !ok || !registrysync.Managed(g) || g.Metadata[registrysync.MetaOwner] != "sync/both-ways" || g.Metadata[registrysync.MetaOrigin] != otherLabel {
					return false
				}
			}
			return true
		}
	}
	zkLabel, nacosLabel := "zookeeper://"+zkAddr, "nacos://"+nacosAddr
	eventually(t, "ZooKeeper: its own provider and Nacos' as a copy",
		state(zkReg, []mesh.Instance{fromZK, dual}, []mesh.Instance{fromNacos}, nacosLabel))
	eventually(t, "Nacos: its own provider and ZooKeeper's as a copy",
		state(nacosReg, []mesh.Instance{fromNacos, dual}, []mesh.Instance{fromZK}, zkLabel))

	// The copy in ZooKeeper is a persistent znode.
	conn, _, err := zk.Connect([]string{zkAddr}, 2*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cp := list(t, zkReg)[fromNacos.Service.Name+"@"+fromNacos.Address]
	ok, st, err := conn.Exists(zookeeper.Path(cp))
	if err != nil || !ok {
		t.Fatalf("the copy's znode %s: exists %v, %v", zookeeper.Path(cp), ok, err)
	}
	if st.EphemeralOwner != 0 {
		t.Errorf("the copy's znode %s is ephemeral (owner %#x)", zookeeper.Path(cp), st.EphemeralOwner)
	}

	// Changes follow both ways; still no copy of a copy.
	fromZK2 := provider("org.example.both.Legacy", listen(t), nil)
	register(t, zkReg, fromZK2)
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if err := nacosReg.Deregister(dctx, fromNacos); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Nacos: a new ZooKeeper provider copied, its own one gone",
		state(nacosReg, []mesh.Instance{dual}, []mesh.Instance{fromZK, fromZK2}, zkLabel))
	eventually(t, "ZooKeeper: the copy of the Nacos provider removed",
		state(zkReg, []mesh.Instance{fromZK, fromZK2, dual}, nil, nacosLabel))

	// The providers go; so do their copies.
	if err := zkReg.Deregister(dctx, fromZK); err != nil {
		t.Fatal(err)
	}
	if err := zkReg.Deregister(dctx, fromZK2); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Nacos: the copies of gone providers removed", state(nacosReg, []mesh.Instance{dual}, nil, zkLabel))
}

// TestElectionZooKeeperNodeLost: the leader's context ends the moment its election node is
// gone (it must stop writing), and the next candidate leads.
func TestElectionZooKeeperNodeLost(t *testing.T) {
	const path = "/strait/test/election-node-lost"
	z1, err := leader.NewZooKeeper([]string{zkAddr}, path, "one", 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer z1.Close()
	z2, err := leader.NewZooKeeper([]string{zkAddr}, path, "two", 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer z2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lead1, err := z1.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got2 := make(chan context.Context, 1)
	go func() {
		l, err := z2.Campaign(ctx)
		if err != nil {
			t.Error(err)
		}
		got2 <- l
	}()

	conn, _, err := zk.Connect([]string{zkAddr}, 2*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var kids []string
	eventually(t, "two candidates", func() bool {
		kids, _, err = conn.Children(path)
		return err == nil && len(kids) == 2
	})
	select {
	case <-got2:
		t.Fatal("the second candidate leads while the first does")
	default:
	}
	for _, k := range kids {
		if strings.HasPrefix(k, "n-one-") {
			if err := conn.Delete(path+"/"+k, -1); err != nil {
				t.Fatal(err)
			}
		}
	}
	<-lead1.Done() // the first stops writing
	lead2 := <-got2
	if lead2 == nil || lead2.Err() != nil {
		t.Fatal("the second candidate does not lead")
	}
	if err := z2.Resign(); err != nil {
		t.Fatal(err)
	}
	<-lead2.Done()
}

// TestElectionEtcdCrash: on the embedded etcd, a leader that crashes (its lease is not
// revoked) is replaced once the lease expires.
func TestElectionEtcdCrash(t *testing.T) {
	srv, err := embedded.Start("election", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	e1, err := leader.NewEtcd([]string{srv.Endpoint()}, "/strait/test/election", "one", time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := leader.NewEtcd([]string{srv.Endpoint()}, "/strait/test/election", "two", time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lead1, err := e1.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got2 := make(chan context.Context, 1)
	go func() {
		l, err := e2.Campaign(ctx)
		if err != nil {
			t.Error(err)
		}
		got2 <- l
	}()
	if err := e1.Abandon(); err != nil { // a crash: no resign, no revoke
		t.Fatal(err)
	}
	<-lead1.Done()
	crashed := time.Now()
	lead2 := <-got2
	if lead2 == nil || lead2.Err() != nil {
		t.Fatal("the second candidate does not lead")
	}
	t.Logf("takeover %v after the crash (lease TTL 1s)", time.Since(crashed).Round(time.Millisecond))
}
