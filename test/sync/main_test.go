// Package sync_test runs `strait sync` jobs against real registries: a ZooKeeper and a
// Nacos 2.3.2 server started by test/registries/*/start.sh on free loopback ports, and the
// embedded etcd. The --once and election tests run the real strait binary.
package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
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
)

var (
	zkAddr    string // host:port of the ZooKeeper
	nacosAddr string // host:port of Nacos' HTTP API
	straitBin string // the strait binary, built by TestMain
)

const scripts = "../registries"

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
	zkDir, nacosDir := filepath.Join(tmp, "zookeeper"), filepath.Join(tmp, "nacos")
	for _, d := range []string{zkDir, nacosDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}

	// Build strait and start both servers at once: they take seconds each.
	var wg sync.WaitGroup
	var buildErr, zkErr, nacosErr error
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
		port, err := freePort()
		if err != nil {
			zkErr = err
			return
		}
		cmd := exec.Command(filepath.Join(scripts, "zookeeper/start.sh"), zkDir, strconv.Itoa(port))
		cmd.Env = append(os.Environ(), "WATCH_PID="+strconv.Itoa(os.Getpid()))
		if out, err := cmd.CombinedOutput(); err != nil {
			zkErr = fmt.Errorf("zookeeper start.sh: %v\n%s", err, out)
			return
		}
		zkAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}()
	go func() {
		defer wg.Done()
		for range 3 { // another process may take a port between the check and the start
			port := nacosPorts()
			cmd := exec.Command(filepath.Join(scripts, "nacos/start.sh"), nacosDir, strconv.Itoa(port))
			cmd.Env = append(os.Environ(), "NACOS_PARENT_PID="+strconv.Itoa(os.Getpid()))
			out, err := cmd.CombinedOutput()
			if err == nil {
				nacosAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
				nacosErr = nil
				return
			}
			nacosErr = fmt.Errorf("nacos start.sh: %v\n%s", err, out)
		}
	}()
	wg.Wait()
	defer func() {
		for _, s := range []struct{ script, dir string }{{"zookeeper/stop.sh", zkDir}, {"nacos/stop.sh", nacosDir}} {
			if out, err := exec.Command(filepath.Join(scripts, s.script), s.dir).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: %s: %v\n%s", s.script, err, out)
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// nacosPorts returns a port P such that P, P+1000, P+1001 (gRPC) and P-1000 (JRaft) are
// free on every interface, as Nacos binds its gRPC and JRaft ports on all of them.
func nacosPorts() int {
	for {
		p := 20000 + rand.IntN(25000)
		free := true
		for _, q := range []int{p, p + 1000, p + 1001, p - 1000} {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(q))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return p
		}
	}
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
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
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 30s", what)
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
