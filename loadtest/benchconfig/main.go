// Command benchconfig measures config propagation: how long from a change being accepted
// by the controlplane until every gateway runs it. It starts one domain's controlplane
// and N gateways in this process (real xDS over loopback), applies M changes one after the
// other, and prints
//
//	config-propagation gateways=N changes=M p50_ms=… p99_ms=… max_ms=…
//
// Run it with `make bench-config`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/launch"
)

func main() {
	gateways := flag.Int("gateways", 10, "gateway instances (half egress, half ingress)")
	changes := flag.Int("changes", 100, "configuration changes")
	flag.Parse()
	if err := run(*gateways, *changes); err != nil {
		fmt.Fprintln(os.Stderr, "benchconfig:", err)
		os.Exit(1)
	}
}

func run(n, changes int) error {
	dir, err := os.MkdirTemp("", "strait-bench-config-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// One domain whose gateways are both egress (to a peer) and ingress (from it).
	self, err := identity.NewCA("bench.strait.local", time.Hour)
	if err != nil {
		return err
	}
	peer, err := identity.NewCA("peer.strait.local", time.Hour)
	if err != nil {
		return err
	}
	bundle := filepath.Join(dir, "peer-bundle.pem")
	if err := peer.WriteBundle(bundle); err != nil {
		return err
	}
	d := &config.Domain{
		Domain: "bench", TrustDomain: "bench.strait.local", Registry: config.Registry{Kind: "embedded"},
		Peers: []config.Peer{{Domain: "peer", TrustDomain: "peer.strait.local", TrustBundle: bundle, Ingress: []string{"127.0.0.1:1"}}},
	}
	cp, err := controlplane.Start(controlplane.ServerOptions{Domain: d, DataDir: filepath.Join(dir, "etcd")})
	if err != nil {
		return err
	}
	defer cp.Close()

	var gws []*launch.Gateway
	defer func() {
		for _, g := range gws {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = g.Shutdown(ctx)
			cancel()
		}
	}()
	for i := range n {
		role := "egress"
		if i%2 == 1 {
			role = "ingress"
		}
		name := fmt.Sprintf("%s-%d", role, i)
		id, err := identity.ID("bench.strait.local", role, name)
		if err != nil {
			return err
		}
		f, err := self.WriteSVID(dir, name, id, identity.IssueOptions{})
		if err != nil {
			return err
		}
		gw := &config.Gateway{Domain: "bench", Role: role, Instance: name, Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Controlplane: config.ControlplaneLink{XDS: cp.XDSAddr()}}
		gw.Identity.Cert, gw.Identity.Key = f.Cert, f.Key
		g, err := launch.StartGateway(gw, nil)
		if err != nil {
			return err
		}
		gws = append(gws, g)
	}
	if err := waitAll(gws, cp.Core().Version(), 20*time.Second); err != nil {
		return fmt.Errorf("first configuration: %w", err)
	}

	var lat []time.Duration
	for i := range changes {
		next := *d
		next.Routes = []config.Route{{Service: fmt.Sprintf("svc.Change%d", i), Protocol: mesh.ProtocolGRPC, Peer: "peer"}}
		next.Exports = []config.Export{{Service: fmt.Sprintf("svc.Export%d", i), Protocol: mesh.ProtocolGRPC, To: []string{"peer"}}}
		v, err := cp.Core().SetDomain(&next)
		if err != nil {
			return err
		}
		accepted := time.Now()
		if err := waitAll(gws, v, 10*time.Second); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		lat = append(lat, time.Since(accepted))
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	fmt.Printf("config-propagation gateways=%d changes=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n", n, changes, pct(0.50), pct(0.99), pct(1))
	return nil
}

// waitAll polls every gateway's running version until all run v.
func waitAll(gws []*launch.Gateway, v string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		all := true
		for _, g := range gws {
			if g.XDS().Version() != v {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not every gateway runs %s within %v", v, limit)
		}
		time.Sleep(100 * time.Microsecond)
	}
}
