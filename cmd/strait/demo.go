//go:build !nodemo

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/samples"
)

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	duration := fs.Duration("duration", 0, "keep calling for this long (default: one round of calls)")
	hold := fs.Bool("hold", false, "after the calls, keep the topology running until SIGINT or SIGTERM")
	verbose := fs.Bool("v", false, "log the gateways' warnings to stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *duration < 0 || *duration > 24*time.Hour {
		fmt.Fprintln(stderr, "strait demo: --duration must be between 0 and 24h")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	out := &printer{w: stdout, json: *asJSON}

	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	topo, err := demo.StartTopology(startCtx, demo.TopologyOptions{Logger: log})
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "strait demo: %v\n", err)
		return 1
	}
	defer topo.Close()
	out.ready(topo)

	c, err := newConsumers(topo)
	if err != nil {
		fmt.Fprintf(stderr, "strait demo: %v\n", err)
		return 1
	}
	defer c.close()

	var calls, failed int
	end := time.Now().Add(*duration)
	// Without --duration: one round through each egress instance.
	for round := 0; ; round++ {
		for _, r := range c.round(ctx, round) {
			calls++
			if r.Err != nil {
				failed++
			}
			out.call(r)
		}
		if ctx.Err() != nil || (round+1 >= len(topo.Egress) && !time.Now().Before(end)) {
			break
		}
	}
	out.summary(calls, failed)

	if *hold && ctx.Err() == nil {
		if !*asJSON {
			fmt.Fprintln(stdout, "holding; press Ctrl-C to stop")
		}
		<-ctx.Done()
	}
	if failed > 0 || calls == 0 {
		return 1
	}
	return 0
}

// The events of --json, one per line, fields in this order.
type readyEvent struct {
	Event           string   `json:"event"`
	Egress          string   `json:"egress"`
	EgressInstances []string `json:"egress_instances"`
	Ingress         []string `json:"ingress"`
	Services        struct {
		GRPC struct {
			Service string `json:"service"`
		} `json:"grpc"`
		Triple struct {
			Service string `json:"service"`
			Method  string `json:"method"`
			Body    any    `json:"body"`
		} `json:"triple"`
		HTTP struct {
			URL  string `json:"url"`
			Host string `json:"host"`
		} `json:"http"`
	} `json:"services"`
}

type callEvent struct {
	Event     string  `json:"event"`
	Protocol  string  `json:"protocol"`
	Service   string  `json:"service"`
	Method    string  `json:"method"`
	Mode      string  `json:"mode,omitempty"`
	Via       string  `json:"via"`
	OK        bool    `json:"ok"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
}

type summaryEvent struct {
	Event  string `json:"event"`
	Calls  int    `json:"calls"`
	Failed int    `json:"failed"`
}

// result is one call the demo made.
type result struct {
	Protocol, Service, Method string
	// Mode tells calls of one method apart: "h2 grpc", "http1 json", a path.
	Mode    string
	Via     string
	Latency time.Duration
	Err     error
}

// consumers are alpha's clients; each call goes through one of alpha's egress instances.
type consumers struct {
	topo  *demo.Topology
	conns []*grpc.ClientConn
	http  *http.Client
}

func newConsumers(t *demo.Topology) (*consumers, error) {
	c := &consumers{topo: t, http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}}
	for _, e := range t.Egress {
		cc, err := grpc.NewClient(e, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			c.close()
			return nil, fmt.Errorf("grpc client: %w", err)
		}
		c.conns = append(c.conns, cc)
	}
	return c, nil
}

func (c *consumers) close() {
	for _, cc := range c.conns {
		cc.Close()
	}
	c.http.CloseIdleConnections()
}

// round makes one call of each kind, through egress instance round%N.
func (c *consumers) round(ctx context.Context, round int) []result {
	i := round % len(c.topo.Egress)
	egress := c.topo.Egress[i]
	tc := testgrpc.NewTestServiceClient(c.conns[i])
	var rs []result
	do := func(proto, svc, method, mode string, f func(ctx context.Context) error) {
		if ctx.Err() != nil {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		err := f(cctx)
		rs = append(rs, result{Protocol: proto, Service: svc, Method: method, Mode: mode, Via: egress, Latency: time.Since(start), Err: err})
	}
	do("grpc", demo.GRPCService, "EmptyCall", "", func(ctx context.Context) error {
		_, err := tc.EmptyCall(ctx, &testpb.Empty{})
		return err
	})
	do("grpc", demo.GRPCService, "UnaryCall", "", func(ctx context.Context) error {
		resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 1024, Payload: &testpb.Payload{Body: make([]byte, 1024)}})
		if err == nil && len(resp.GetPayload().GetBody()) != 1024 {
			err = fmt.Errorf("got %d bytes, want 1024", len(resp.GetPayload().GetBody()))
		}
		return err
	})
	do("grpc", demo.GRPCService, "FullDuplexCall", "bidi", func(ctx context.Context) error {
		return samples.PingPong(ctx, tc, 3)
	})
	do("triple", demo.TripleService, demo.TripleMethod, "dubbo-go, h2", func(ctx context.Context) error {
		g, err := samples.TripleGreet(ctx, egress, "alpha")
		if err == nil && g != "hello alpha" {
			err = fmt.Errorf("greeting %q", g)
		}
		return err
	})
	do("triple", demo.TripleService, demo.TripleMethod, "HTTP/1.1 JSON", func(ctx context.Context) error {
		g, err := samples.TripleGreetJSON(ctx, "http://"+egress, "alpha")
		if err == nil && g != "hello alpha" {
			err = fmt.Errorf("greeting %q", g)
		}
		return err
	})
	do("http", demo.HTTPService, "POST", demo.HTTPPrefix+"/hello", func(ctx context.Context) error {
		body := []byte(`{"hello":"from alpha"}`)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+egress+demo.HTTPPrefix+"/hello", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("X-Demo", "strait")
		resp, err := c.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) || resp.Header.Get("X-Demo") != "strait" {
			return fmt.Errorf("status %d, body %q, X-Demo %q", resp.StatusCode, got, resp.Header.Get("X-Demo"))
		}
		return nil
	})
	return rs
}

// printer writes the demo's events for people or, with --json, one object per line.
type printer struct {
	w    io.Writer
	json bool
}

func (p *printer) emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(p.w, "%s\n", b)
}

func (p *printer) ready(t *demo.Topology) {
	egress := t.Egress[0]
	if p.json {
		var ev readyEvent
		ev.Event, ev.Egress, ev.EgressInstances, ev.Ingress = "ready", egress, t.Egress, t.Ingress
		ev.Services.GRPC.Service = demo.GRPCService
		ev.Services.Triple.Service, ev.Services.Triple.Method = demo.TripleService, demo.TripleMethod
		ev.Services.Triple.Body = map[string]string{"name": "alpha"}
		ev.Services.HTTP.URL = "http://" + egress + demo.HTTPPrefix + "/"
		p.emit(ev)
		return
	}
	fmt.Fprintf(p.w, "Strait demo: domain alpha (consumers) → domain beta (providers)\n")
	fmt.Fprintf(p.w, "  alpha egress (consumers dial): %v\n", t.Egress)
	fmt.Fprintf(p.w, "  beta ingress (mTLS tunnel):    %v\n", t.Ingress)
	fmt.Fprintf(p.w, "  services: grpc %s, triple %s/%s, http http://%s%s/\n\n", demo.GRPCService, demo.TripleService, demo.TripleMethod, egress, demo.HTTPPrefix)
}

func (p *printer) call(r result) {
	ms := float64(r.Latency.Microseconds()) / 1000
	if p.json {
		ev := callEvent{Event: "call", Protocol: r.Protocol, Service: r.Service, Method: r.Method, Mode: r.Mode, Via: r.Via, OK: r.Err == nil, LatencyMS: ms}
		if r.Err != nil {
			ev.Error = r.Err.Error()
		}
		p.emit(ev)
		return
	}
	status := "ok"
	if r.Err != nil {
		status = "FAILED: " + r.Err.Error()
	}
	method := r.Method
	if r.Mode != "" {
		method += " (" + r.Mode + ")"
	}
	fmt.Fprintf(p.w, "  %-6s %-36s %-28s via %-15s %7.2f ms  %s\n", r.Protocol, r.Service, method, r.Via, ms, status)
}

func (p *printer) summary(calls, failed int) {
	if p.json {
		p.emit(summaryEvent{Event: "summary", Calls: calls, Failed: failed})
		return
	}
	fmt.Fprintf(p.w, "\nsummary: %d calls, %d failed\n", calls, failed)
}
