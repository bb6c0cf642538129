package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/launch"
)

func newLogger(stderr io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q (debug, info, warn, error)", level)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: l}))
	// The configuration loaders log their deprecation warnings to the default logger:
	// they go where the process logs.
	slog.SetDefault(log)
	return log, nil
}

// runControlplane is `strait controlplane -c domain.yaml`.
func runControlplane(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "domain file (watched: edits apply live)")
	xds := fs.String("xds", "", "xDS listen address (overrides controlplane.xds)")
	adminAddr := fs.String("admin", "", "admin listen address (overrides controlplane.admin)")
	dataDir := fs.String("data-dir", "", "data directory of the embedded registry (registry kind embedded)")
	level := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "strait controlplane: -c FILE is required")
		return 2
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "strait controlplane:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "strait-registry-"); err != nil {
			fmt.Fprintln(stderr, "strait controlplane:", err)
			return 1
		}
		defer os.RemoveAll(dir)
	}
	cp, err := controlplane.Start(controlplane.ServerOptions{File: *file, DataDir: dir, XDS: *xds, Admin: *adminAddr, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "strait controlplane:", err)
		return 1
	}
	defer cp.Close()
	fmt.Fprintf(stdout, `{"event":"ready","xds":%q,"admin":%q,"registry":%q,"version":%q,"pid":%d}`+"\n",
		cp.XDSAddr(), cp.AdminAddr(), cp.RegistryEndpoint(), cp.Core().Version(), os.Getpid())
	<-ctx.Done()
	return 0
}

// runGateway is `strait egress -c gw.yaml` and `strait ingress -c gw.yaml`.
func runGateway(role string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "gateway file")
	level := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintf(stderr, "strait %s: -c FILE is required\n", role)
		return 2
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		fmt.Fprintf(stderr, "strait %s: %v\n", role, err)
		return 2
	}
	gw, err := config.LoadGateway(*file)
	if err != nil {
		fmt.Fprintf(stderr, "strait %s: %v\n", role, err)
		return 1
	}
	if gw.Role != role {
		fmt.Fprintf(stderr, "strait %s: %s is the file of a %s gateway\n", role, *file, gw.Role)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, err := launch.StartGateway(gw, log)
	if err != nil {
		fmt.Fprintf(stderr, "strait %s: %v\n", role, err)
		return 1
	}
	fmt.Fprintf(stdout, `{"event":"started","role":%q,"listen":%q,"admin":%q,"pid":%d}`+"\n", role, g.Addr(), g.AdminAddr(), os.Getpid())
	<-ctx.Done()
	stop()
	drain := gw.DrainTimeout.D()
	if drain == 0 {
		drain = 15 * time.Second
	}
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := g.Shutdown(dctx); err != nil {
		log.Warn("drain", "err", err)
		return 1
	}
	return 0
}
