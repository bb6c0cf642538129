package local

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/launch"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/test/localtopo"
)

// TestUpDownRegistries runs the local topology with each domain on its own ZooKeeper, then
// its own Nacos: calls cross, and alpha's registry lists beta's exported services with
// alpha's egress instances as providers, in the layout Dubbo consumers read.
func TestUpDownRegistries(t *testing.T) {
	for _, kind := range []string{"zookeeper", "nacos"} {
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
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testpb.Empty{}); err != nil {
				t.Fatalf("grpc through %s topology: %v", kind, err)
			}
			if got := post(t, "http://"+r.Egress+"/echo/x", "text/plain", kind); got != kind {
				t.Fatalf("http echo: %q", got)
			}
			reg, err := launch.OpenRegistry(kind, []string{strings.TrimPrefix(r.Registries["alpha"], kind+"://")}, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			deadline := time.Now().Add(15 * time.Second)
			for {
				all, err := reg.List(ctx)
				if err != nil {
					t.Fatal(err)
				}
				found := map[string]int{}
				for _, i := range all {
					if registrysync.Managed(i) && i.Metadata[registrysync.MetaOrigin] == "beta" {
						found[i.Service.Name]++
					}
				}
				if found[launch.GRPCService] == 2 && found[launch.TripleService] == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("alpha's %s lists %v", kind, found)
				}
				time.Sleep(100 * time.Millisecond)
			}

			// Beta's registry goes down: calls keep working on the endpoints already known.
			stop := exec.Command("bash", "../../test/registries/"+kind+"/stop.sh", filepath.Join(state, "registry-beta"))
			if b, err := stop.CombinedOutput(); err != nil {
				t.Fatalf("stopping beta's %s: %v\n%s", kind, err, b)
			}
			time.Sleep(time.Second)
			for i := range 20 {
				cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(cctx, &testpb.Empty{})
				ccancel()
				if err != nil {
					t.Fatalf("call %d with beta's %s down: %v", i, kind, err)
				}
			}
		})
	}
}
