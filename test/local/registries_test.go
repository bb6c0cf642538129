package local

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"gopkg.in/yaml.v3"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/config"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/registries"
	"github.com/strait-mesh/strait/test/localtopo"
	testregistries "github.com/strait-mesh/strait/test/registries"
	"github.com/strait-mesh/strait/test/wait"
)

// TestUpDownRegistries runs the local topology with each domain on its own etcd, then its
// own ZooKeeper, then its own Nacos (one topology per kind, several checks on it):
//   - a grpc-go client in alpha reaches beta's gRPC service through alpha's egress;
//   - alpha's registry lists beta's exported gRPC and Triple services with alpha's two egress
//     instances as providers, marked managed, in the layout Dubbo consumers read;
//   - beta withdrawing an export (a PUT of its domain without it) removes the service's
//     entries from alpha's registry, and exporting it again brings them back;
//   - kill -9 of an egress instance removes its entries from alpha's registry;
//   - beta's registry going down leaves calls working on the endpoints already known.
//
// (The dubbo-go consumer is test/dubbo; exports in both directions are test/e2e.)
func TestUpDownRegistries(t *testing.T) {
	for _, kind := range []string{"etcd", "zookeeper", "nacos"} {
		t.Run(kind, func(t *testing.T) {
			r := localtopo.Up(t, kind)
			state := r.State
			if !strings.HasPrefix(r.Registries["alpha"], kind+"://") || !strings.HasPrefix(r.Registries["beta"], kind+"://") {
				t.Fatalf("registries: %v", r.Registries)
			}
			cc, err := grpc.NewClient(r.Egress, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			call := func(what string) {
				t.Helper()
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				defer ccancel()
				if _, err := testgrpc.NewTestServiceClient(cc).EmptyCall(cctx, &testpb.Empty{}); err != nil {
					t.Fatalf("grpc through the %s topology, %s: %v", kind, what, err)
				}
			}
			call("at start")
			if got := post(t, "http://"+r.Egress+"/echo/x", "text/plain", kind); got != kind {
				t.Fatalf("http echo: %q", got)
			}
			reg, err := registries.Open(kind, registries.Params{Addresses: []string{strings.TrimPrefix(r.Registries["alpha"], kind+"://")}})
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			// published lists alpha's managed entries of beta's services: service → addresses.
			published := func() map[string][]string {
				all, err := reg.List(ctx)
				if err != nil {
					t.Fatal(err)
				}
				found := map[string][]string{}
				for _, i := range all {
					if registrysync.Managed(i) && i.Metadata[registrysync.MetaOrigin] == "beta" {
						found[i.Service.Name] = append(found[i.Service.Name], i.Address)
					}
				}
				for _, as := range found {
					sort.Strings(as)
				}
				return found
			}
			both := strings.Join(r.EgressInstances, ",")
			waitPublished := func(what string, want map[string]string) {
				t.Helper()
				wait.ForNil(t, 30*time.Second, what, func() error {
					got := published()
					ok := len(got) == len(want)
					for svc, addrs := range want {
						ok = ok && strings.Join(got[svc], ",") == addrs
					}
					if !ok {
						return fmt.Errorf("alpha's %s lists %v, want %v", kind, got, want)
					}
					return nil
				})
			}
			waitPublished("published", map[string]string{demo.GRPCService: both, demo.TripleService: both})

			// Beta withdraws the Triple export: it leaves alpha's registry; then it returns.
			betaAdmin := "http://" + r.Admin["beta-controlplane-1"] + "/v1/config"
			orig := get(t, betaAdmin)
			d, err := config.Parse([]byte(orig))
			if err != nil {
				t.Fatalf("beta's document: %v", err)
			}
			var keep []config.Export
			for _, e := range d.Exports {
				if e.Service != demo.TripleService {
					keep = append(keep, e)
				}
			}
			d.Exports = keep
			b, err := yaml.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			put(t, betaAdmin, string(b))
			waitPublished("withdrawn", map[string]string{demo.GRPCService: both})
			call("after the withdrawal of another service")
			put(t, betaAdmin, orig)
			waitPublished("exported again", map[string]string{demo.GRPCService: both, demo.TripleService: both})

			// kill -9 of alpha's second egress: its entries leave alpha's registry.
			name := "alpha-egress-2"
			pid := r.PIDs[name]
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill %s: %v", name, err)
			}
			waitGone(t, pid)
			delete(r.PIDs, name) // gone: down.sh has nothing to stop there
			first := r.EgressInstances[0]
			waitPublished("egress killed", map[string]string{demo.GRPCService: first, demo.TripleService: first})
			call("with one egress killed")

			// Beta's registry goes down: calls keep working on the endpoints already known.
			// stop.sh returns once the server is gone.
			if err := testregistries.StopDir(kind, filepath.Join(state, "registry-beta")); err != nil {
				t.Fatalf("stopping beta's %s: %v", kind, err)
			}
			// Deliberate: time passes with the registry gone (nothing announces that nothing
			// changed), then calls must still go through.
			time.Sleep(time.Second)
			for i := range 20 {
				call(fmt.Sprintf("call %d with beta's registry down", i))
			}
		})
	}
}

func put(t *testing.T, url, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s: %s %s", url, resp.Status, b)
	}
}

// waitGone waits until the process is gone or a zombie (dead, not yet reaped by init).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	wait.For(t, 30*time.Second, fmt.Sprintf("process %d gone after SIGKILL", pid), func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		return err != nil || strings.Contains(string(b), "State:\tZ")
	})
}
