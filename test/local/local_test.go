// Package local runs deploy/local/up.sh and down.sh, the two-domain topology as separate
// processes, and changes its configuration the two ways an operator does: through the
// controlplane's admin API and by editing the domain file.
package local

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/test/localtopo"
	"github.com/strait-mesh/strait/test/scenarios"
	"github.com/strait-mesh/strait/test/wait"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func TestUpDown(t *testing.T) {
	r := localtopo.Up(t, "embedded")
	state := r.State
	if len(r.EgressInstances) != 2 || len(r.Ingress) != 2 || len(r.PIDs) != 7 || len(r.Admin) != 6 {
		t.Fatalf("ready line incomplete: %+v", r)
	}

	// Calls through both egress instances.
	for _, e := range r.EgressInstances {
		cc, err := grpc.NewClient(e, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10})
		cancel()
		cc.Close()
		if err != nil {
			t.Fatalf("grpc via %s: %v", e, err)
		}
		if got := post(t, "http://"+e+"/echo/x", "text/plain", "hi"); got != "hi" {
			t.Fatalf("http via %s: %q", e, got)
		}
	}

	// The cross-domain suite test/e2e runs in process.
	t.Run("scenarios", func(t *testing.T) {
		scenarios.Run(t, scenarios.Topology{Egress: r.EgressInstances})
	})

	// The calls are counted on /metrics.
	for _, name := range []string{"alpha-egress-1", "alpha-egress-2"} {
		m := get(t, "http://"+r.Admin[name]+"/metrics")
		if !strings.Contains(m, "strait_calls_total{") || !strings.Contains(m, "strait_call_duration_seconds_bucket{") {
			t.Errorf("%s /metrics lacks call metrics", name)
		}
	}

	// Each controlplane sees its gateways through gossip.
	for cp, insts := range map[string][]string{"alpha-controlplane-1": {"egress-1", "egress-2"}, "beta-controlplane-1": {"ingress-1", "ingress-2"}} {
		wait.ForNil(t, 30*time.Second, cp+" sees its gateways", func() error {
			cfg := get(t, "http://"+r.Admin[cp]+"/debug/config")
			if strings.Contains(cfg, `"instance": "`+insts[0]+`"`) && strings.Contains(cfg, `"instance": "`+insts[1]+`"`) {
				return nil
			}
			return fmt.Errorf("%s does not see %v: %s", cp, insts, tail(cfg, 600))
		})
	}

	alphaAdmin := "http://" + r.Admin["alpha-controlplane-1"]
	// A bad document is refused with path-qualified errors, and nothing changes.
	req, _ := http.NewRequest(http.MethodPut, alphaAdmin+"/v1/config", strings.NewReader("domain: alpha\ntrustDomain: alpha.strait.local\npeers:\n  - domain: beta\n"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "peers[0].trustDomain: required") {
		t.Fatalf("bad PUT: %d %s", resp.StatusCode, body)
	}

	// A good document through the admin API reaches every egress.
	cur := get(t, alphaAdmin+"/v1/config")
	withAPI := strings.Replace(cur, "routes:\n", "routes:\n    - service: api.Added\n      protocol: grpc\n      peer: beta\n", 1)
	req, _ = http.NewRequest(http.MethodPut, alphaAdmin+"/v1/config", strings.NewReader(withAPI))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	waitRoute(t, r, "api.Added", true)

	// Editing the file on disk applies too (the file does not have api.Added).
	file := filepath.Join(state, "alpha.yaml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), "routes:\n", "routes:\n  - {service: file.Added, protocol: grpc, peer: beta}\n", 1)
	if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	waitRoute(t, r, "file.Added", true)
	waitRoute(t, r, "api.Added", false)
}

// waitRoute waits until every egress' /debug/config lists (or no longer lists) service.
func waitRoute(t *testing.T, r *localtopo.Ready, service string, present bool) {
	t.Helper()
	wait.For(t, 30*time.Second, fmt.Sprintf("route %s present=%v on every egress", service, present), func() bool {
		for _, name := range []string{"alpha-egress-1", "alpha-egress-2"} {
			cfg := get(t, "http://"+r.Admin[name]+"/debug/config")
			if strings.Contains(cfg, `"service": "`+service+`"`) != present {
				return false
			}
		}
		return true
	})
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func post(t *testing.T, url, ct, body string) string {
	t.Helper()
	resp, err := http.Post(url, ct, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(bufio.NewReader(resp.Body))
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
