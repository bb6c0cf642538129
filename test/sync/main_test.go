// Package sync_test runs `strait sync` jobs against real registries: a ZooKeeper and a
// Nacos 2.3.2 server started by test/registries/*/start.sh on free loopback ports, and the
// embedded etcd. The --once and election tests run the real strait binary.
package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/nacos"
	"github.com/strait-mesh/strait/registry-sync/zookeeper"
	"github.com/strait-mesh/strait/test/ports"
	testregistries "github.com/strait-mesh/strait/test/registries"
	"github.com/strait-mesh/strait/test/wait"
)

var (
	zkAddr    string // host:port of the ZooKeeper
	nacosAddr string // host:port of Nacos' HTTP API
	straitBin string // the strait binary, built by TestMain
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	tmp, err := os.MkdirTemp("", "strait-sync-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)

	// Build strait and start both servers at once: they take seconds each.
	var wg sync.WaitGroup
	var buildErr, zkErr, nacosErr error
	var zk, nacos *testregistries.Server
	wg.Add(3)
	go func() {
		defer wg.Done()
		straitBin = filepath.Join(tmp, "strait")
		out, err := exec.Command("go", "build", "-o", straitBin, "../../cmd/strait").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	}()
	go func() {
		defer wg.Done()
		zk, zkErr = testregistries.Start("zookeeper")
	}()
	go func() {
		defer wg.Done()
		nacos, nacosErr = testregistries.Start("nacos")
	}()
	wg.Wait()
	defer func() {
		for _, s := range []*testregistries.Server{zk, nacos} {
			if s == nil {
				continue
			}
			if err := s.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "FAIL:", err)
				code = 1
			}
		}
	}()
	for _, err := range []error{buildErr, zkErr, nacosErr} {
		if err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			return 1
		}
	}
	zkAddr, nacosAddr = zk.Addr, nacos.Addr
	fmt.Fprintf(os.Stderr, "zookeeper on %s, nacos on %s\n", zkAddr, nacosAddr)
	code = m.Run()
	http.DefaultClient.CloseIdleConnections() // nacosHosts' keep-alive connections
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}

func newZK(t *testing.T) *zookeeper.Registry {
	t.Helper()
	r, err := zookeeper.New([]string{zkAddr}, zookeeper.Options{SessionTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func newNacos(t *testing.T) *nacos.Registry {
	t.Helper()
	r, err := nacos.New([]string{nacosAddr}, nacos.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// listen opens a loopback listener for a provider's address (Nacos checks the health of
// persistent instances by connecting to them) and returns its port.
func listen(t *testing.T) int {
	t.Helper()
	return ports.Listen(t).Addr().(*net.TCPAddr).Port
}

// provider is a Dubbo-style provider instance of service svc at a loopback address.
func provider(svc string, port int, md map[string]string) mesh.Instance {
	m := map[string]string{"application": "legacy-app", "methods": "SayHello,SayBye"}
	for k, v := range md {
		m[k] = v
	}
	return mesh.Instance{
		Service:  mesh.ServiceKey{Name: svc, Version: "1.0.0"},
		Protocol: mesh.ProtocolTriple, Address: "127.0.0.1:" + strconv.Itoa(port), Metadata: m,
	}
}

func register(t *testing.T, r registrysync.Registry, is ...mesh.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, i := range is {
		if err := r.Register(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
}

// nacosHosts asks the Nacos server itself (its HTTP API) for every instance of a service,
// healthy or not.
func nacosHosts(t *testing.T, k mesh.ServiceKey) []model.Instance {
	t.Helper()
	q := url.Values{"serviceName": {nacos.ServiceName(k)}, "groupName": {nacos.Group}, "healthyOnly": {"false"}}
	resp, err := http.Get("http://" + nacosAddr + "/nacos/v1/ns/instance/list?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Hosts []model.Instance `json:"hosts"`
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("instance list of %s: %s: %v", k, resp.Status, err)
	}
	return s.Hosts
}

// eventually polls cond (bounded: 30 s) and fails the test with what if it never holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 30*time.Second, what, cond)
}

// list returns what r lists (for Nacos, unhealthy instances included), keyed by service
// name and address.
func list(t *testing.T, r registrysync.Registry) map[string]mesh.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lister := r.List
	if n, ok := r.(*nacos.Registry); ok {
		lister = n.ListAll
	}
	is, err := lister(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]mesh.Instance{}
	for _, i := range is {
		out[i.Service.Name+"@"+i.Address] = i
	}
	return out
}

func writeJob(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(p, []byte(strings.TrimLeft(body, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
