package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// runScale measures the initial sync of a large catalog: services×perService gRPC
// providers are written into beta's registry (embedded etcd, dubbo-go's etcdv3 layout, in
// transactions of 128 puts under one lease); once beta's controlplane has loaded them,
// beta exports them all to alpha with one pattern export ("*"). It prints
//
//	catalog-scale services=… instances=… initial_sync_s=… imported_s=… controlplane_rss_mb=…
//
// imported_s runs from beta accepting the export to alpha's controlplane holding all the
// services in its import (federation done, egress routes being published); initial_sync_s
// runs to alpha's registry listing every one of them at each of alpha's egress instances
// (published, as alpha's controlplane sees its registry). controlplane_rss_mb is the peak
// resident set (VmHWM) of this one process, which hosts both controlplanes and also both
// embedded etcd servers, the gateways and the providers: an upper bound of the
// controlplanes' own.
func runScale(services, perService int, memProfile string) error {
	ctx := context.Background()
	topo, err := demo.StartTopology(ctx, demo.TopologyOptions{})
	if err != nil {
		return err
	}
	defer topo.Close()
	base := len(topo.BetaCP.Core().Providers())

	start := time.Now()
	if err := writeScale(ctx, topo.BetaCP.RegistryEndpoint(), services, perService); err != nil {
		return err
	}
	registered := time.Since(start)
	total := services * perService
	var have int
	if err := waitUntil(5*time.Minute, "beta's controlplane loads the providers", func() bool {
		have = len(topo.BetaCP.Core().Providers())
		return have >= base+total
	}); err != nil {
		return fmt.Errorf("%w (%d of %d after %.0f s)", err, have-base, total, time.Since(start).Seconds())
	}
	loaded := time.Since(start)

	beta := *topo.BetaCP.Core().Domain()
	beta.Exports = append(append([]config.Export(nil), beta.Exports...),
		config.Export{Service: "*", Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}, Metadata: []string{"application"}})
	t0 := time.Now()
	if _, err := topo.BetaCP.Core().SetDomain(&beta); err != nil {
		return err
	}
	if err := waitUntil(2*time.Minute, "alpha imports every service", func() bool {
		im := topo.AlphaCP.Imports()["beta"]
		n := 0
		for _, s := range im.Services {
			if strings.HasPrefix(s.GetName(), "scale.") {
				n++
			}
		}
		return n == services
	}); err != nil {
		return err
	}
	imported := time.Since(t0)
	if err := waitUntil(2*time.Minute, "alpha's egress instances route every service", func() bool {
		for _, g := range topo.Gateways {
			eg := g.Egress()
			if eg == nil {
				continue
			}
			table := eg.Routes()
			if table == nil {
				return false
			}
			for i := range services {
				if _, ok := table.LookupRPC(mesh.ServiceKey{Name: scaleSvc(i)}); !ok {
					return false
				}
			}
		}
		return true
	}); err != nil {
		return err
	}
	synced := time.Since(t0)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss := vmHWM()
	fmt.Printf("catalog-scale services=%d instances=%d initial_sync_s=%.2f imported_s=%.2f controlplane_rss_mb=%.0f\n",
		services, total, synced.Seconds(), imported.Seconds(), rss)
	if memProfile != "" {
		if f, err := os.Create(memProfile); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	fmt.Fprintf(os.Stderr, "catalog-scale: registered %d instances in %.1f s; beta's controlplane had them after %.1f s; heap in use %.0f MiB\n",
		total, registered.Seconds(), loaded.Seconds(), float64(ms.HeapInuse)/(1<<20))
	// Alpha's registry: every service at each egress instance (as alpha's controlplane
	// sees its registry). Reported, not part of initial_sync_s: the registry writes are
	// one instance at a time (registrysync.Publisher).
	want := services * len(topo.Egress)
	var n int
	err = waitUntil(time.Minute, "alpha's registry lists every service", func() bool {
		n = 0
		for _, i := range topo.AlphaCP.Core().Providers() {
			if registrysync.Managed(i) && strings.HasPrefix(i.Service.Name, "scale.") {
				n++
			}
		}
		return n == want
	})
	if err != nil {
		fmt.Printf("catalog-scale-published entries=%d of %d after_s=%.0f (incomplete)\n", n, want, time.Since(t0).Seconds())
		return nil
	}
	fmt.Printf("catalog-scale-published entries=%d published_s=%.2f\n", want, time.Since(t0).Seconds())
	return nil
}

func scaleSvc(i int) string { return fmt.Sprintf("scale.bench.Service%05d", i) }

func waitUntil(limit time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not %s within %v", what, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// vmHWM is the process' peak resident set in MiB, from /proc/self/status.
func vmHWM() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}
