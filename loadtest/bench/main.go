// Command bench runs the comparison of `make bench` (loadtest/bench.sh starts the targets
// and calls it): every protocol × payload × mode against every target, one `load` process
// per measurement, reading each proxy process's CPU counters over exactly the measured
// interval. It writes the results as a JSON list, prints a table and a summary of issue 5's
// figures (and, for every protocol, the latency each chain adds and its CPU per call per
// hop), and captures pprof CPU and allocation profiles of one egress and one ingress
// during extra runs of the strait target (max throughput, and open loop at 1,000 calls/s)
// for each protocol of -profile-protocols (gRPC unary and Dubbo, 1 KiB).
//
//	bench -config targets.json -load ./load -out loadtest/results [-quick]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config names the targets; loadtest/bench.sh writes it.
type Config struct {
	Targets []Target `json:"targets"`
	// Providers are the provider processes' pids (CPU reported apart from the proxies').
	Providers []int `json:"providers"`
}

// Target is one way to reach the providers.
type Target struct {
	Name string `json:"name"`
	// Addrs maps a protocol (as `load -protocol` names it) to the address to call.
	Addrs map[string]string `json:"addrs"`
	// Procs maps a proxy process name to its pids (a process and its workers): the CPU
	// of each is reported under that name.
	Procs map[string][]int `json:"procs"`
	// Profile maps a file name prefix (e.g. strait-egress) to an admin address serving
	// /debug/pprof: profiled during the extra runs.
	Profile map[string]string `json:"profile,omitempty"`
}

// Row is one measurement as written to latest.json.
type Row struct {
	Target       string             `json:"target"`
	Protocol     string             `json:"protocol"`
	Mode         string             `json:"mode"`
	PayloadBytes int                `json:"payload_bytes"`
	OfferedRPS   float64            `json:"offered_rps"`
	AchievedRPS  float64            `json:"achieved_rps"`
	P50          float64            `json:"p50_ms"`
	P90          float64            `json:"p90_ms"`
	P99          float64            `json:"p99_ms"`
	P999         float64            `json:"p999_ms"`
	Errors       int64              `json:"errors"`
	CPUSeconds   map[string]float64 `json:"cpu_seconds"`
	Calls        int64              `json:"calls"`
	Seconds      float64            `json:"seconds"`
	LoadCPU      float64            `json:"load_cpu_seconds"`
	ProviderCPU  float64            `json:"provider_cpu_seconds"`
	// Unfinished counts the calls among Errors that failed after a max run had ended
	// (usually: timed out; the target stalled).
	Unfinished int64 `json:"unfinished,omitempty"`
	// LoadAvg is the machine's 1-minute load average when the measurement started: other
	// work on the machine shows here.
	LoadAvg    float64 `json:"loadavg_1m"`
	FirstError string  `json:"first_error,omitempty"`
	// Profiled marks the extra strait runs during which pprof profiles were taken (left
	// out of the summary and the plot: profiling costs the gateways some CPU).
	Profiled bool `json:"profiled,omitempty"`
}

// loadOut is what `load` prints.
type loadOut struct {
	Event       string  `json:"event"`
	Offered     float64 `json:"offered_rps"`
	Achieved    float64 `json:"achieved_rps"`
	P50         float64 `json:"p50_ms"`
	P90         float64 `json:"p90_ms"`
	P99         float64 `json:"p99_ms"`
	P999        float64 `json:"p999_ms"`
	Calls       int64   `json:"calls"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	FirstError  string  `json:"first_error"`
	Unfinished  int64   `json:"unfinished"`
	LoadCPU     float64 `json:"load_cpu_seconds"`
	ProtocolOut string  `json:"protocol"`
}

// step is one group of measurements: every target, one protocol, payload and mode.
type step struct {
	protocol string
	payload  int
	mode     string
	duration time.Duration
}

const (
	headlineProtocol = "grpc-unary"
	headlinePayload  = 1024
	openRate         = 1000
	// Max mode: 4 connections × 20 streams (ARCHITECTURE.md), for HTTP/1.1 80 connections.
	maxConcurrency = 80
	maxConns       = 4
)

func plan(quick bool) []step {
	if quick {
		return []step{
			{"grpc-unary", 1024, "open", 5 * time.Second},
			{"grpc-unary", 1024, "max", 3 * time.Second},
			{"grpc-unary", 65536, "max", 3 * time.Second},
			{"triple-grpc", 1024, "open", 3 * time.Second},
			{"http", 1024, "open", 3 * time.Second},
			{"dubbo", 1024, "open", 5 * time.Second},
			{"dubbo", 1024, "max", 3 * time.Second},
		}
	}
	var s []step
	for _, p := range []string{"grpc-unary", "grpc-bidi", "triple-grpc", "triple-json", "http", "dubbo"} {
		for _, size := range []int{1024, 65536} {
			// 64 KiB at 1,000 calls/s saturates some targets on 2 cores: a shorter open run,
			// since a saturated one drains for as long again (loadtest.OpenLoop.Drain).
			open, max := 8*time.Second, 5*time.Second
			switch {
			case p == headlineProtocol && size == headlinePayload:
				open, max = 15*time.Second, 8*time.Second
			case size > headlinePayload:
				open, max = 5*time.Second, 4*time.Second
			}
			s = append(s, step{p, size, "open", open}, step{p, size, "max", max})
		}
	}
	return s
}

func main() {
	cfgPath := flag.String("config", "", "targets file (JSON, written by loadtest/bench.sh)")
	loadBin := flag.String("load", "", "the load generator binary (loadtest/load)")
	outDir := flag.String("out", "loadtest/results", "where latest.json and the profiles go")
	quick := flag.Bool("quick", false, "a short run: gRPC unary 1 KiB open and max, gRPC unary 64 KiB max, Triple gRPC and HTTP 1 KiB open, Dubbo 1 KiB open and max")
	profileFor := flag.Duration("profile", 10*time.Second, "length of each profiled strait run, max and open loop (0: none)")
	profileProtos := flag.String("profile-protocols", "grpc-unary,dubbo", "comma-separated protocols of the profiled runs (1 KiB each); the profiles of PROTOCOL other than grpc-unary are named PREFIX.PROTOCOL[.open].KIND.pprof")
	onlyTargets := flag.String("targets", "", "comma-separated targets to measure (default: all in the config)")
	onlySteps := flag.String("only", "", "comma-separated PROTOCOL:PAYLOAD to measure, e.g. grpc-unary:65536 (default: all of the plan)")
	flag.Parse()
	if *cfgPath == "" || *loadBin == "" {
		fmt.Fprintln(os.Stderr, "bench: -config and -load are required")
		os.Exit(2)
	}
	cfg, err := readConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	steps := plan(*quick)
	if *onlySteps != "" {
		want := map[string]bool{}
		for _, v := range strings.Split(*onlySteps, ",") {
			want[strings.TrimSpace(v)] = true
		}
		var kept []step
		for _, st := range steps {
			if want[fmt.Sprintf("%s:%d", st.protocol, st.payload)] {
				kept = append(kept, st)
			}
		}
		steps = kept
	}
	if *onlyTargets != "" {
		want := map[string]bool{}
		for _, v := range strings.Split(*onlyTargets, ",") {
			want[strings.TrimSpace(v)] = true
		}
		var kept []Target
		for _, t := range cfg.Targets {
			if want[t.Name] {
				kept = append(kept, t)
			}
		}
		cfg.Targets = kept
	}
	if len(steps) == 0 || len(cfg.Targets) == 0 {
		fmt.Fprintln(os.Stderr, "bench: -only or -targets left nothing to measure")
		os.Exit(2)
	}
	if *quick {
		fmt.Println("QUICK run: gRPC unary 1 KiB (open 1,000/s and max), gRPC unary 64 KiB (max), Triple gRPC-mode and HTTP/1.1 1 KiB (open), Dubbo 1 KiB (open and max) only; `make bench` runs every protocol × 1 KiB/64 KiB × open/max.")
	}
	var rows []Row
	// Idle: every proxy process's CPU over a few seconds without calls (background work
	// such as gossip, xDS and metrics), to tell it apart from the cost of calls.
	if ctx.Err() == nil {
		rows = append(rows, idle(ctx, cfg.Targets, cfg.Providers, 3*time.Second)...)
	}
	for _, st := range steps {
		for _, t := range cfg.Targets {
			if ctx.Err() != nil {
				break
			}
			addr := t.Addrs[st.protocol]
			if addr == "" {
				continue
			}
			row, err := measure(ctx, *loadBin, t, cfg.Providers, addr, st, nil, "")
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: %s %s %d %s: %v\n", t.Name, st.protocol, st.payload, st.mode, err)
				continue
			}
			printRow(row, len(rows) == 0)
			rows = append(rows, row)
		}
	}
	var profiles []string
	// Profiled runs (extra, marked "profiled"), per protocol: max, and open loop at 1,000
	// calls/s, whose profiles are named PREFIX[.PROTOCOL].open.*.pprof.
	var profiled []string
	if *profileFor > 0 && *profileProtos != "" {
		for _, p := range strings.Split(*profileProtos, ",") {
			profiled = append(profiled, strings.TrimSpace(p))
		}
	}
	for _, proto := range profiled {
		for _, t := range cfg.Targets {
			if len(t.Profile) == 0 || t.Addrs[proto] == "" {
				continue
			}
			for _, mode := range []string{"max", "open"} {
				if ctx.Err() != nil {
					break
				}
				prof := map[string]string{}
				for prefix, admin := range t.Profile {
					if proto != headlineProtocol {
						prefix += "." + proto
					}
					if mode == "open" {
						prefix += ".open"
					}
					prof[prefix] = admin
					for _, kind := range []string{"cpu", "allocs"} {
						_ = os.Remove(filepath.Join(*outDir, prefix+"."+kind+".pprof")) // an older run's
					}
				}
				st := step{proto, headlinePayload, mode, *profileFor}
				row, err := measure(ctx, *loadBin, t, cfg.Providers, t.Addrs[proto], st, prof, *outDir)
				if err != nil {
					fmt.Fprintf(os.Stderr, "bench: profiled %s %s run of %s: %v\n", proto, mode, t.Name, err)
					continue
				}
				row.Profiled = true
				printRow(row, false)
				rows = append(rows, row)
				for prefix := range prof {
					for _, kind := range []string{"cpu", "allocs"} {
						p := filepath.Join(*outDir, prefix+"."+kind+".pprof")
						if _, err := os.Stat(p); err == nil {
							profiles = append(profiles, p)
						}
					}
				}
			}
		}
	}
	if len(rows) == 0 {
		fmt.Fprintln(os.Stderr, "bench: nothing was measured")
		os.Exit(1)
	}
	b, _ := json.MarshalIndent(rows, "", " ")
	latest := filepath.Join(*outDir, "latest.json")
	if err := os.WriteFile(latest, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Println()
	summary(os.Stdout, rows)
	fmt.Println()
	fmt.Println("wrote", latest)
	sort.Strings(profiles)
	for _, p := range profiles {
		fmt.Println("profile", p, "(go tool pprof -top "+p+")")
	}
	if ctx.Err() != nil {
		os.Exit(130)
	}
}

func readConfig(path string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if len(cfg.Targets) == 0 {
		return cfg, fmt.Errorf("config %s: no targets", path)
	}
	return cfg, nil
}

// measure runs one load process against addr and reads the target's process CPU over the
// interval it measured. With profile, it saves CPU and allocation profiles of those admin
// addresses taken while measuring, as DIR/PREFIX.cpu.pprof and DIR/PREFIX.allocs.pprof.
func measure(ctx context.Context, loadBin string, t Target, providers []int, addr string, st step, profile map[string]string, dir string) (Row, error) {
	args := []string{
		"-name", t.Name, "-target", addr, "-protocol", st.protocol, "-payload", strconv.Itoa(st.payload),
		"-mode", st.mode, "-rate", strconv.Itoa(openRate), "-duration", st.duration.String(),
		"-concurrency", strconv.Itoa(maxConcurrency), "-conns", strconv.Itoa(maxConns),
	}
	cmd := exec.CommandContext(ctx, loadBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Row{}, err
	}
	if err := cmd.Start(); err != nil {
		return Row{}, fmt.Errorf("start load: %w", err)
	}
	var (
		before, after map[string]float64
		prov0, prov1  float64
		loadAvg       float64
		out           loadOut
		got           bool
		profWG        sync.WaitGroup
		profErrs      = make(chan error, 2*len(profile))
	)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var o loadOut
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			continue
		}
		if o.Event == "start" {
			before, prov0, loadAvg = cpuOf(t.Procs), cpuSum(providers), loadAverage()
			secs := int(st.duration.Seconds()) - 1
			for prefix, admin := range profile {
				for kind, path := range map[string]string{"cpu": "/debug/pprof/profile", "allocs": "/debug/pprof/allocs"} {
					profWG.Go(func() {
						url := fmt.Sprintf("http://%s%s?seconds=%d", admin, path, max(secs, 1))
						if err := fetch(ctx, url, filepath.Join(dir, prefix+"."+kind+".pprof")); err != nil {
							profErrs <- err
						}
					})
				}
			}
			continue
		}
		after, prov1 = cpuOf(t.Procs), cpuSum(providers)
		out, got = o, true
	}
	werr := cmd.Wait()
	profWG.Wait()
	close(profErrs)
	for err := range profErrs {
		fmt.Fprintln(os.Stderr, "bench: profile:", err)
	}
	if !got || before == nil {
		return Row{}, fmt.Errorf("load printed no result (%v): %s", werr, strings.TrimSpace(stderr.String()))
	}
	cpu := map[string]float64{}
	for name := range t.Procs {
		cpu[name] = round(after[name]-before[name], 2)
	}
	return Row{
		Target: t.Name, Protocol: st.protocol, Mode: st.mode, PayloadBytes: st.payload,
		OfferedRPS: out.Offered, AchievedRPS: round(out.Achieved, 1),
		P50: out.P50, P90: out.P90, P99: out.P99, P999: out.P999,
		Errors: out.Errors, CPUSeconds: cpu, Calls: out.Calls, Seconds: round(out.Seconds, 3),
		LoadCPU: round(out.LoadCPU, 2), ProviderCPU: round(prov1-prov0, 2), Unfinished: out.Unfinished,
		LoadAvg: loadAvg, FirstError: out.FirstError,
	}, nil
}

// idle reads every target's processes' CPU over d while nothing calls them: one row per
// target with mode "idle".
func idle(ctx context.Context, targets []Target, providers []int, d time.Duration) []Row {
	before := make([]map[string]float64, len(targets))
	for i, t := range targets {
		before[i] = cpuOf(t.Procs)
	}
	prov0, loadAvg := cpuSum(providers), loadAverage()
	start := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	secs := time.Since(start).Seconds()
	prov := round(cpuSum(providers)-prov0, 2)
	var rows []Row
	for i, t := range targets {
		after := cpuOf(t.Procs)
		cpu := map[string]float64{}
		for name := range t.Procs {
			cpu[name] = round(after[name]-before[i][name], 2)
		}
		r := Row{Target: t.Name, Protocol: "none", Mode: "idle", CPUSeconds: cpu, Seconds: round(secs, 3), ProviderCPU: prov, LoadAvg: loadAvg}
		printRow(r, i == 0)
		rows = append(rows, r)
	}
	return rows
}

// loadAverage is the 1-minute load average of the machine (0 if unknown).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("get %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("get %s: %w", url, err)
	}
	return f.Close()
}

// clkTck is USER_HZ, the unit of /proc/PID/stat times: 100 on Linux (getconf CLK_TCK).
const clkTck = 100

// cpuOf reads the CPU seconds (user + system) of each named group of processes.
func cpuOf(procs map[string][]int) map[string]float64 {
	m := make(map[string]float64, len(procs))
	for name, pids := range procs {
		m[name] = cpuSum(pids)
	}
	return m
}

func cpuSum(pids []int) float64 {
	var t float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited: counts nothing more
		}
		// The command name (field 2) may hold spaces; fields after its ")" are fixed.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		// utime and stime are fields 14 and 15 of the line, 12 and 13 after ")".
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		s, _ := strconv.ParseFloat(f[12], 64)
		t += (u + s) / clkTck
	}
	return t
}

func round(v float64, places int) float64 {
	p := 1.0
	for range places {
		p *= 10
	}
	if v < 0 {
		return -float64(int64(-v*p+0.5)) / p
	}
	return float64(int64(v*p+0.5)) / p
}

func printRow(r Row, header bool) {
	if header {
		fmt.Println("(load_s: CPU seconds of the load generator; prov_s: of the providers; load1: the machine's 1-minute load average at the start)")
		fmt.Printf("%-8s %-11s %6s %-4s %9s %10s %8s %8s %8s %8s %6s %7s %7s %5s  %s\n",
			"target", "protocol", "bytes", "mode", "offered", "achieved", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "errors", "load_s", "prov_s", "load1", "cpu_seconds per proxy process")
	}
	if r.Mode == "idle" {
		fmt.Printf("%-8s %-11s %6s %-4s %9s %10s %8s %8s %8s %8s %6s %7s %7.2f %5.1f  %s\n",
			r.Target, "(no calls)", "-", "idle", fmt.Sprintf("%.0fs", r.Seconds), "-", "-", "-", "-", "-", "-", "-", r.ProviderCPU, r.LoadAvg, cpuString(r.CPUSeconds))
		return
	}
	offered := r.Mode
	if r.Mode == "open" {
		offered = fmt.Sprintf("%.0f", r.OfferedRPS)
	}
	mode := r.Mode
	if r.Profiled {
		mode += "*"
	}
	fmt.Printf("%-8s %-11s %6d %-4s %9s %10.0f %8.3f %8.3f %8.3f %8.3f %6d %7.2f %7.2f %5.1f  %s\n",
		r.Target, r.Protocol, r.PayloadBytes, mode, offered, r.AchievedRPS, r.P50, r.P90, r.P99, r.P999,
		r.Errors, r.LoadCPU, r.ProviderCPU, r.LoadAvg, cpuString(r.CPUSeconds))
	if r.Unfinished > 0 {
		fmt.Printf("         %d calls were still unanswered when the run ended and timed out (counted in errors)\n", r.Unfinished)
	}
	if r.FirstError != "" {
		fmt.Printf("         first error: %s\n", r.FirstError)
	}
}

func cpuString(m map[string]float64) string {
	if len(m) == 0 {
		return "-"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%.2f", n, m[n])
	}
	return strings.Join(parts, " ")
}

func find(rows []Row, target, protocol string, payload int, mode string) (Row, bool) {
	for _, r := range rows {
		if r.Target == target && r.Protocol == protocol && r.PayloadBytes == payload && r.Mode == mode && !r.Profiled {
			return r, true
		}
	}
	return Row{}, false
}

var chains = []string{"strait", "nginx", "haproxy"}

// summary prints issue 5's figures computed from rows.
func summary(w io.Writer, rows []Row) {
	fmt.Fprintf(w, "Summary (issue 5), %s %d B:\n", headlineProtocol, headlinePayload)
	lo, hi := rows[0].LoadAvg, rows[0].LoadAvg
	for _, r := range rows {
		lo, hi = min(lo, r.LoadAvg), max(hi, r.LoadAvg)
	}
	fmt.Fprintf(w, "  machine: 1-minute load average %.1f–%.1f during the run (this run's own load is about 2; more means other work shared the cores)\n", lo, hi)
	direct, okD := find(rows, "direct", headlineProtocol, headlinePayload, "open")
	added := map[string][2]float64{}
	if okD {
		fmt.Fprintf(w, "  latency added over direct at %d calls/s (direct p50 %.3f ms, p99 %.3f ms):\n", openRate, direct.P50, direct.P99)
		for _, c := range chains {
			r, ok := find(rows, c, headlineProtocol, headlinePayload, "open")
			if !ok {
				continue
			}
			a := [2]float64{r.P50 - direct.P50, r.P99 - direct.P99}
			added[c] = a
			fmt.Fprintf(w, "    %-8s %+.3f ms p50   %+.3f ms p99   (errors %d)\n", c, a[0], a[1], r.Errors)
		}
	}
	maxOf := map[string]float64{}
	for _, c := range append([]string{"direct"}, chains...) {
		if r, ok := find(rows, c, headlineProtocol, headlinePayload, "max"); ok {
			maxOf[c] = r.AchievedRPS
		}
	}
	if len(maxOf) > 0 {
		fmt.Fprintf(w, "  max throughput (calls/s):")
		for _, c := range append([]string{"direct"}, chains...) {
			if v, ok := maxOf[c]; ok {
				fmt.Fprintf(w, " %s %.0f", c, v)
			}
		}
		fmt.Fprintln(w)
	}
	ratio := func(a, b string) (float64, bool) {
		if maxOf[a] > 0 && maxOf[b] > 0 {
			return maxOf[a] / maxOf[b], true
		}
		return 0, false
	}
	rN, okN := ratio("strait", "nginx")
	rH, okH := ratio("strait", "haproxy")
	if okN {
		fmt.Fprintf(w, "  max throughput ratio strait/nginx   %.2f\n", rN)
	}
	if okH {
		fmt.Fprintf(w, "  max throughput ratio strait/haproxy %.2f\n", rH)
	}
	fmt.Fprintf(w, "  cores per 1,000 calls/s per hop (open loop at %d/s; CPU seconds ÷ seconds ÷ thousands of calls/s), the same process idle (no calls), and CPU per call from the max run:\n", openRate)
	worstStrait := -1.0
	for _, c := range chains {
		r, ok := find(rows, c, headlineProtocol, headlinePayload, "open")
		if !ok || r.AchievedRPS <= 0 || r.Seconds <= 0 {
			continue
		}
		m, okM := find(rows, c, headlineProtocol, headlinePayload, "max")
		names := make([]string, 0, len(r.CPUSeconds))
		for n := range r.CPUSeconds {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			cores := r.CPUSeconds[n] / r.Seconds / (r.AchievedRPS / 1000)
			if c == "strait" && cores > worstStrait {
				worstStrait = cores
			}
			idleCores := ""
			if ir, ok := find(rows, c, "none", 0, "idle"); ok && ir.Seconds > 0 {
				idleCores = fmt.Sprintf("   idle %.3f cores", ir.CPUSeconds[n]/ir.Seconds)
			}
			perCall := ""
			if okM && m.Calls > 0 {
				perCall = fmt.Sprintf("   %.1f µs/call at max", m.CPUSeconds[n]/float64(m.Calls-m.Errors)*1e6)
			}
			fmt.Fprintf(w, "    %-8s %-16s %.3f cores%s%s\n", c, n, cores, idleCores, perCall)
		}
	}
	fmt.Fprintln(w, "  issue 5 targets (this run):")
	check := func(name string, ok, known bool) {
		s := "NOT met"
		switch {
		case !known:
			s = "not measured"
		case ok:
			s = "met"
		}
		fmt.Fprintf(w, "    %-62s %s\n", name, s)
	}
	s, okS := added["strait"]
	n, okNg := added["nginx"]
	check("strait added p50 < 0.3 ms", okS && s[0] < 0.3, okS)
	check("strait added p50 and p99 ≤ nginx's", okS && okNg && s[0] <= n[0] && s[1] <= n[1], okS && okNg)
	check("strait max ≥ 1.3 × nginx", okN && rN >= 1.3, okN)
	check("strait max ≥ haproxy", okH && rH >= 1, okH)
	check("strait ≤ 0.1 core per 1,000 calls/s per hop", worstStrait >= 0 && worstStrait <= 0.1, worstStrait >= 0)

	// Max throughput ratios for every protocol and payload measured.
	type key struct {
		p    string
		size int
	}
	var keys []key
	seen := map[key]bool{}
	for _, r := range rows {
		k := key{r.Protocol, r.PayloadBytes}
		if r.Mode == "max" && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		fmt.Fprintln(w, "  max throughput by protocol (calls/s; ratio strait/nginx, strait/haproxy):")
		for _, k := range keys {
			fmt.Fprintf(w, "    %-11s %6d B:", k.p, k.size)
			vals := map[string]float64{}
			for _, c := range append([]string{"direct"}, chains...) {
				if r, ok := find(rows, c, k.p, k.size, "max"); ok {
					vals[c] = r.AchievedRPS
					fmt.Fprintf(w, " %s %.0f", c, r.AchievedRPS)
				}
			}
			for _, c := range []string{"nginx", "haproxy"} {
				if vals["strait"] > 0 && vals[c] > 0 {
					fmt.Fprintf(w, "; /%s %.2f", c, vals["strait"]/vals[c])
				}
			}
			fmt.Fprintln(w)
		}
	}
	byProtocol(w, rows)
	var errs []string
	for _, r := range rows {
		if r.Errors > 0 {
			errs = append(errs, fmt.Sprintf("%s %s %d %s: %d (%s)", r.Target, r.Protocol, r.PayloadBytes, r.Mode, r.Errors, r.FirstError))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintln(w, "  measurements with errors:")
		for _, e := range errs {
			fmt.Fprintln(w, "    "+e)
		}
	}
}

// byProtocol prints, for every protocol and payload measured, each chain's latency added
// over direct at 1,000 calls/s, its max throughput, and each hop's CPU per call in the max
// run (its CPU seconds ÷ the calls answered).
func byProtocol(w io.Writer, rows []Row) {
	type key struct {
		p    string
		size int
	}
	var keys []key
	seen := map[key]bool{}
	for _, r := range rows {
		k := key{r.Protocol, r.PayloadBytes}
		if (r.Mode == "open" || r.Mode == "max") && !r.Profiled && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	fmt.Fprintf(w, "  by protocol: added p50 / p99 over direct at %d calls/s, max calls/s, CPU µs per call per hop in the max run:\n", openRate)
	dash := func(ok bool, f string, v ...any) string {
		if !ok {
			return "-"
		}
		return fmt.Sprintf(f, v...)
	}
	for _, k := range keys {
		fmt.Fprintf(w, "    %s %d B\n", k.p, k.size)
		dOpen, okDO := find(rows, "direct", k.p, k.size, "open")
		dMax, okDM := find(rows, "direct", k.p, k.size, "max")
		if okDO || okDM {
			fmt.Fprintf(w, "      %-8s p50 %s  p99 %s  max %s\n", "direct",
				dash(okDO, "%.3f ms", dOpen.P50), dash(okDO, "%.3f ms", dOpen.P99), dash(okDM, "%.0f", dMax.AchievedRPS))
		}
		for _, c := range chains {
			o, okO := find(rows, c, k.p, k.size, "open")
			m, okM := find(rows, c, k.p, k.size, "max")
			if !okO && !okM {
				continue
			}
			var hops []string
			if okM && m.Calls > m.Errors {
				names := make([]string, 0, len(m.CPUSeconds))
				for n := range m.CPUSeconds {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					hops = append(hops, fmt.Sprintf("%s %.1f", n, m.CPUSeconds[n]/float64(m.Calls-m.Errors)*1e6))
				}
			}
			errs := ""
			if o.Errors+m.Errors > 0 {
				errs = fmt.Sprintf("  (errors: open %d, max %d)", o.Errors, m.Errors)
			}
			fmt.Fprintf(w, "      %-8s %s / %s  max %s  %s%s\n", c,
				dash(okO && okDO, "%+.3f ms", o.P50-dOpen.P50), dash(okO && okDO, "%+.3f ms", o.P99-dOpen.P99),
				dash(okM, "%.0f", m.AchievedRPS), strings.Join(hops, ", "), errs)
		}
	}
}
