//go:build !nodemo

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/samples"
	"github.com/strait-mesh/strait/launch/demo"
	"github.com/strait-mesh/strait/registry-sync/registries"
)

// runSamples is `strait samples -registry HOST:PORT [-kind KIND]`: the demo's three
// providers, registered in a registry, until SIGINT or SIGTERM.
func runSamples(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("samples", flag.ContinueOnError)
	fs.SetOutput(stderr)
	reg := fs.String("registry", "", "endpoint of the providers' registry (host:port)")
	kind := fs.String("kind", "etcd", "registry kind: etcd, zookeeper or nacos")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *reg == "" {
		fmt.Fprintln(stderr, "strait samples: -registry is required")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	gp, err := samples.StartGRPC("127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, "strait samples:", err)
		return 1
	}
	tp, err := samples.StartTripleProvider("127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, "strait samples:", err)
		return 1
	}
	hp, err := samples.StartEcho("127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, "strait samples:", err)
		return 1
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gp.Close(cctx)
		_ = tp.Close(cctx)
		_ = hp.Close(cctx)
	}()
	r, err := registries.Open(*kind, registries.Params{Addresses: []string{*reg}})
	if err != nil {
		fmt.Fprintln(stderr, "strait samples:", err)
		return 1
	}
	defer r.Close()
	for _, inst := range []mesh.Instance{
		{Service: mesh.ServiceKey{Name: demo.GRPCService}, Protocol: mesh.ProtocolGRPC, Address: gp.Addr()},
		{Service: mesh.ServiceKey{Name: demo.TripleService, Version: demo.TripleVersion}, Protocol: mesh.ProtocolTriple, Address: tp.Addr()},
		{Service: mesh.ServiceKey{Name: demo.HTTPService}, Protocol: mesh.ProtocolHTTP, Address: hp.Addr()},
	} {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.Register(rctx, inst)
		cancel()
		if err != nil {
			fmt.Fprintln(stderr, "strait samples:", err)
			return 1
		}
	}
	b, _ := json.Marshal(map[string]any{"event": "ready", "grpc": gp.Addr(), "triple": tp.Addr(), "http": hp.Addr(), "pid": os.Getpid()})
	fmt.Fprintf(stdout, "%s\n", b)
	<-ctx.Done()
	return 0
}
