package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/embedded"
	"github.com/strait-mesh/strait/registry-sync/syncjob"
)

// runOnce runs `strait sync -c job --once --json` and returns its report.
func runOnce(t *testing.T, job string) *syncjob.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, straitBin, "sync", "-c", job, "--once", "--json", "--timeout", "90s")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("strait sync --once: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var rep syncjob.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report %q: %v", stdout.String(), err)
	}
	t.Logf("strait sync --once took %v (process), report %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(stdout.String()))
	return &rep
}

func counts(rep *syncjob.Report) map[string]syncjob.ServiceReport {
	out := map[string]syncjob.ServiceReport{}
	for _, d := range rep.Directions {
		for _, s := range d.Services {
			out[s.Service] = s
		}
	}
	return out
}

// TestOnceZooKeeperToNacos is the migration: Dubbo providers registered in ZooKeeper (by
// the zookeeper adapter, Dubbo's interface-level layout) are copied to Nacos by the strait
// binary's --once, as persistent instances marked managed and owned by the job; a managed
// entry in ZooKeeper is not copied; a second run changes nothing; a provider removed from
// ZooKeeper is removed from Nacos by the next run, and the copies outlive the job.
func TestOnceZooKeeperToNacos(t *testing.T) {
	zk := newZK(t)
	greeter := provider("org.example.once.Greeter", listen(t), nil)
	greeter2 := provider("org.example.once.Greeter", listen(t), nil)
	orders := provider("org.example.once.Orders", listen(t), map[string]string{"timeout": "3000"})
	imported := provider("org.example.once.Imported", listen(t), map[string]string{
		registrysync.MetaManaged: "true", registrysync.MetaOrigin: "beta", registrysync.MetaOwner: "alpha/egress-1",
	})
	dual := provider("org.example.once.Dual", listen(t), nil) // registers in both registries itself
	legacy := provider("org.example.once.Legacy", listen(t), nil)
	legacy.Protocol = mesh.ProtocolDubbo // a classic dubbo:// provider: copied like the others
	register(t, zk, greeter, greeter2, orders, imported, dual, legacy)
	register(t, newNacos(t), dual)

	job := writeJob(t, fmt.Sprintf(`
name: once-zk-nacos
source: {kind: zookeeper, addresses: [%q]}
target: {kind: nacos, addresses: [%q]}
services: ["org.example.once.*"]
leader: {on: source, ttl: 2s}
`, zkAddr, nacosAddr))

	rep := runOnce(t, job)
	c := counts(rep)
	gk, ok := mesh.ServiceKey{Name: "org.example.once.Greeter", Version: "1.0.0"}, false
	if s := c[gk.String()]; s.Added != 2 || s.Removed != 0 {
		t.Errorf("Greeter: %+v, want 2 added", s)
	}
	if s := c[orders.Service.String()]; s.Added != 1 {
		t.Errorf("Orders: %+v, want 1 added", s)
	}
	if s := c[dual.Service.String()]; s.Native != 1 || s.Added != 0 {
		t.Errorf("Dual: %+v, want 1 native, nothing added", s)
	}
	if s := c[legacy.Service.String()]; s.Added != 1 {
		t.Errorf("Legacy (dubbo://): %+v, want 1 added", s)
	}
	if _, ok = c[imported.Service.String()]; ok || len(c) != 4 {
		t.Errorf("report %+v: want Greeter, Orders, Legacy and Dual only", c)
	}
	if hs := nacosHosts(t, dual.Service); len(hs) != 1 || !hs[0].Ephemeral || hs[0].Metadata[registrysync.MetaManaged] != "" {
		t.Errorf("Dual in Nacos: %+v, want only the provider's own ephemeral instance", hs)
	}

	// What the Nacos server holds: persistent instances, marked and owned by the job.
	if hs := nacosHosts(t, legacy.Service); len(hs) != 1 || hs[0].Metadata["protocol"] != "dubbo" {
		t.Errorf("Legacy in Nacos: %+v, want one dubbo instance", hs)
	}
	for _, want := range []mesh.Instance{greeter, greeter2, orders} {
		var found bool
		for _, h := range nacosHosts(t, want.Service) {
			if fmt.Sprintf("%s:%d", h.Ip, h.Port) != want.Address {
				continue
			}
			found = true
			if h.Ephemeral {
				t.Errorf("%s: copy is ephemeral", want)
			}
			md := h.Metadata
			if md[registrysync.MetaManaged] != "true" || md[registrysync.MetaOwner] != "sync/once-zk-nacos" ||
				md[registrysync.MetaOrigin] != "zookeeper://"+zkAddr || md["application"] != "legacy-app" ||
				md["interface"] != want.Service.Name || md["version"] != "1.0.0" || md["side"] != "provider" {
				t.Errorf("%s: metadata %v", want, md)
			}
		}
		if !found {
			t.Errorf("%s: not in Nacos", want)
		}
	}
	if hs := nacosHosts(t, imported.Service); len(hs) != 0 {
		t.Errorf("the managed entry was copied: %+v", hs)
	}

	// Again: nothing to do.
	rep = runOnce(t, job)
	tot, n := rep.Totals()
	if tot.Added+tot.Updated+tot.Removed != 0 || tot.Unchanged != 4 || tot.Native != 1 || n != 4 {
		t.Errorf("second run: %+v over %d services, want 4 unchanged, 1 native and nothing else", tot, n)
	}

	// A provider leaves ZooKeeper: the next run removes its copy, and only that one.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := zk.Deregister(ctx, greeter2); err != nil {
		t.Fatal(err)
	}
	rep = runOnce(t, job)
	if s := counts(rep)[gk.String()]; s.Removed != 1 || s.Unchanged != 1 || s.Added != 0 {
		t.Errorf("after a removal, Greeter: %+v, want 1 removed, 1 unchanged", s)
	}
	var left []string
	for _, h := range nacosHosts(t, gk) {
		left = append(left, fmt.Sprintf("%s:%d", h.Ip, h.Port))
	}
	if strings.Join(left, ",") != greeter.Address {
		t.Errorf("Nacos has Greeter at %v, want only %s", left, greeter.Address)
	}

	// The source's providers go: the last run leaves nothing of the job behind.
	if err := zk.Close(); err != nil {
		t.Fatal(err)
	}
	rep = runOnce(t, job)
	if tot, _ := rep.Totals(); tot.Removed != 3 {
		t.Errorf("after the providers left: %+v, want 3 removed", tot)
	}
	for _, k := range []mesh.ServiceKey{gk, orders.Service, legacy.Service} {
		if hs := nacosHosts(t, k); len(hs) != 0 {
			t.Errorf("%s still in Nacos: %+v", k, hs)
		}
	}
}

// TestSyncBadJob: a bad job file exits 2 with every problem and its path.
func TestSyncBadJob(t *testing.T) {
	job := writeJob(t, `
name: Bad_Name
source: {kind: zk, addresses: ["nohost"]}
target: {kind: nacos, addresses: []}
direction: sideways
leader: {on: target}
`)
	var stderr bytes.Buffer
	cmd := exec.Command(straitBin, "sync", "-c", job, "--once")
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v, want code 2\n%s", err, stderr.String())
	}
	for _, want := range []string{"6 error(s)", "name:", "source.kind:", "source.addresses[0]:", "target.addresses:", "direction:", "leader.on:"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestOnceScale measures `strait sync --once` on STRAIT_SYNC_SCALE services of two
// instances each, ZooKeeper → Nacos (skipped unless set; a figure, not an assertion on time):
//
//	STRAIT_SYNC_SCALE=500 go test -count=1 -run TestOnceScale -v ./test/sync
func TestOnceScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("STRAIT_SYNC_SCALE"))
	if n <= 0 {
		t.Skip("set STRAIT_SYNC_SCALE=N to measure a sync of N services")
	}
	zk := newZK(t)
	port := listen(t)
	for s := range n {
		svc := fmt.Sprintf("org.example.scale.S%05d", s)
		register(t, zk, provider(svc, port, nil), provider(svc, port+1+s%100, nil))
	}
	job := writeJob(t, fmt.Sprintf(`
name: scale
source: {kind: zookeeper, addresses: [%q]}
target: {kind: nacos, addresses: [%q]}
services: ["org.example.scale.*"]
leader: {on: source, ttl: 2s}
`, zkAddr, nacosAddr))
	for _, what := range []string{"initial", "no-op"} {
		rep := runOnce(t, job)
		tot, svcs := rep.Totals()
		t.Logf("sync-once %s services=%d instances=%d added=%d unchanged=%d elapsed_ms=%d", what, svcs, 2*n, tot.Added, tot.Unchanged, rep.ElapsedMS)
		if svcs != n || tot.Added+tot.Unchanged != 2*n {
			t.Fatalf("%s: %+v over %d services", what, tot, svcs)
		}
	}
	if err := zk.Close(); err != nil {
		t.Fatal(err)
	}
	rep := runOnce(t, job)
	tot, _ := rep.Totals()
	t.Logf("sync-once removal services=%d removed=%d elapsed_ms=%d", n, tot.Removed, rep.ElapsedMS)
	if tot.Removed != 2*n {
		t.Fatalf("removal: %+v", tot)
	}
}

// TestOnceZooKeeperToEtcd runs a job in this process from ZooKeeper to the embedded etcd,
// electing on etcd: the copies are keys without a lease, in dubbo-go's etcdv3 layout.
func TestOnceZooKeeperToEtcd(t *testing.T) {
	srv, err := embedded.Start("sync", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	zk := newZK(t)
	p := provider("org.example.etcd.Greeter", listen(t), nil)
	register(t, zk, p)
	job, err := syncjob.Parse([]byte(fmt.Sprintf(`
name: zk-etcd
source: {kind: zookeeper, addresses: [%q]}
target: {kind: etcd, addresses: [%q]}
services: ["org.example.etcd.*"]
leader: {ttl: 2s}
`, zkAddr, srv.Endpoint())))
	if err != nil {
		t.Fatal(err)
	}
	if job.Leader.On != "target" {
		t.Fatalf("leader.on %q, want the default target", job.Leader.On)
	}
	once := func() syncjob.ServiceReport {
		r, err := syncjob.New(job, syncjob.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rep, err := r.Once(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tot, _ := rep.Totals()
		return tot
	}
	if tot := once(); tot.Added != 1 {
		t.Fatalf("first run: %+v", tot)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/dubbo/org.example.etcd.Greeter/providers/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != 0 || !strings.Contains(string(resp.Kvs[0].Value), "strait.owner=sync/zk-etcd") {
		t.Fatalf("etcd holds %v, want one key without a lease, owned by the job", resp.Kvs)
	}
	if err := zk.Deregister(ctx, p); err != nil {
		t.Fatal(err)
	}
	if tot := once(); tot.Removed != 1 {
		t.Fatalf("after the provider left: %+v", tot)
	}
	if resp, err := cli.Get(ctx, "/dubbo/org.example.etcd.", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("etcd still holds %d keys (%v)", resp.Count, err)
	}
}
