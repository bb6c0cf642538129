// Command benchsync measures catalog propagation: from a provider registered in beta's
// registry to alpha's consumer being able to call it through alpha's egress. The
// topology is the in-process two-domain one (embedded etcd registries, controlplanes with
// federation, gateways). It prints
//
//	catalog-propagation changes=N p50_ms=… p99_ms=… max_ms=…
//
// Run it with `make bench-sync`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
)

func main() {
	changes := flag.Int("changes", 100, "providers registered, one after the other (0: skip)")
	services := flag.Int("scale-services", 0, "services of the catalog-scale run (0: skip)")
	instances := flag.Int("scale-instances", 100000, "instances of the catalog-scale run, spread over its services")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	memProfile := flag.String("memprofile", "", "write a heap profile of the catalog-scale run, once synced, to this file")
	processes := flag.Bool("scale-processes", false, "run the catalog-scale run on deploy/local/up.sh's processes (each controlplane's memory its own) instead of in this process")
	flag.Parse()
	if err := runAll(*changes, *services, *instances, *cpuProfile, *memProfile, *processes); err != nil {
		fmt.Fprintln(os.Stderr, "benchsync:", err)
		os.Exit(1)
	}
}

func runAll(changes, services, instances int, cpuProfile, memProfile string, processes bool) error {
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if changes > 0 {
		if err := run(changes); err != nil {
			return err
		}
	}
	if services <= 0 {
		return nil
	}
	if processes {
		return runScaleProcesses(services, max(1, instances/services))
	}
	return runScale(services, max(1, instances/services), memProfile)
}

func run(n int) error {
	ctx := context.Background()
	topo, err := demo.StartTopology(ctx, demo.TopologyOptions{})
	if err != nil {
		return err
	}
	defer topo.Close()

	// Beta exports n services to alpha; none has a provider yet.
	beta := *topo.BetaCP.Core().Domain()
	beta.Exports = append([]config.Export(nil), beta.Exports...)
	for i := range n {
		beta.Exports = append(beta.Exports, config.Export{Service: svc(i), Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}})
	}
	if _, err := topo.SetDomain(ctx, &beta); err != nil {
		return err
	}
	cc, err := grpc.NewClient(topo.Egress[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()

	var lat []time.Duration
	for i := range n {
		inst := mesh.Instance{Service: mesh.ServiceKey{Name: svc(i)}, Protocol: mesh.ProtocolGRPC, Address: topo.GRPCAddr}
		if err := topo.BetaRegistry.Register(ctx, inst); err != nil {
			return err
		}
		start := time.Now()
		for {
			if reachedProvider(ctx, cc, svc(i)) {
				break
			}
			if time.Since(start) > 10*time.Second {
				return fmt.Errorf("%s not callable from alpha 10 s after its registration", svc(i))
			}
			time.Sleep(500 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("catalog-propagation changes=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
		n, ms(lat[len(lat)/2]), ms(lat[min(len(lat)-1, len(lat)*99/100)]), ms(lat[len(lat)-1]))
	return nil
}

func svc(i int) string { return fmt.Sprintf("bench.Service%03d", i) }

// reachedProvider calls the service through the egress: the interop provider answers
// UNIMPLEMENTED for it in its own words; until the provider is known, the gateways answer
// in theirs ("strait: …").
func reachedProvider(ctx context.Context, cc *grpc.ClientConn, service string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := cc.Invoke(ctx, "/"+service+"/Call", &emptyMsg{}, &emptyMsg{}, grpc.ForceCodecV2(rawCodec{}))
	return err != nil && !strings.HasPrefix(status.Convert(err).Message(), "strait:")
}
