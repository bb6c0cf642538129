package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/registry-sync/syncjob"
)

// runSync is `strait sync -c job.yaml [--once]`: a standalone job copying services between
// two registries (registry-sync/syncjob).
func runSync(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "job file")
	once := fs.Bool("once", false, "reconcile until both sides are in sync, print what was done, exit")
	timeout := fs.Duration("timeout", 2*time.Minute, "with --once: give up (exit 1) if not in sync by then")
	asJSON := fs.Bool("json", false, "with --once: print the report as one JSON object")
	level := fs.String("log-level", "", "log level (default: warn with --once, info without)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "strait sync: usage: strait sync -c JOB.yaml [--once [--timeout D] [--json]]")
		return 2
	}
	if *level == "" {
		*level = "info"
		if *once {
			*level = "warn"
		}
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "strait sync:", err)
		return 2
	}
	job, err := syncjob.Load(*file)
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			fmt.Fprintf(stderr, "%s: %d error(s):\n", *file, len(es))
			for _, e := range es {
				fmt.Fprintf(stderr, "  %s\n", e)
			}
		} else {
			fmt.Fprintln(stderr, "strait sync:", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := syncjob.Options{Logger: log}
	if !*asJSON {
		o.Progress, o.Terminal = stdout, isTerminal(stdout)
	}
	r, err := syncjob.New(job, o)
	if err != nil {
		fmt.Fprintln(stderr, "strait sync:", err)
		return 1
	}
	defer r.Close()
	if !*once {
		if err := r.Run(ctx); err != nil {
			fmt.Fprintln(stderr, "strait sync:", err)
			return 1
		}
		return 0
	}
	octx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := r.Once(octx)
	if err != nil {
		fmt.Fprintln(stderr, "strait sync:", err)
		return 1
	}
	if *asJSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	for _, d := range rep.Directions {
		fmt.Fprintf(stdout, "%s -> %s\n", d.From, d.To)
		for _, s := range d.Services {
			fmt.Fprintf(stdout, "  %-50s added %d  updated %d  removed %d  unchanged %d  native %d\n",
				s.Service, s.Added, s.Updated, s.Removed, s.Unchanged, s.Native)
		}
	}
	t, n := rep.Totals()
	fmt.Fprintf(stdout, "in sync: %d service(s), added %d, updated %d, removed %d, unchanged %d, native %d (registered in the target by the provider itself), in %v\n",
		n, t.Added, t.Updated, t.Removed, t.Unchanged, t.Native, rep.Elapsed.Round(time.Millisecond))
	return 0
}

// isTerminal reports whether w is a terminal (the progress bar then updates in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && terminalFD(f.Fd())
}
