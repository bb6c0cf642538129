// Command load drives one target with one protocol and prints what it measured as one
// JSON object:
//
//	go run ./loadtest/load -target 127.0.0.1:17110 -protocol grpc-unary -rate 1000 -duration 10s
//
// Modes: open (a fixed arrival rate; latency from each call's scheduled time) and max
// (closed loop, -concurrency callers back to back).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/samples"
	"github.com/strait-mesh/strait/loadtest"
)

func main() {
	target := flag.String("target", "", "host:port to call")
	name := flag.String("name", "", "target name in the output (default: the address)")
	protocol := flag.String("protocol", "grpc-unary", "grpc-unary, grpc-bidi, http or triple-json")
	payload := flag.Int("payload", 1024, "payload bytes each way")
	mode := flag.String("mode", "open", "open (fixed rate) or max (closed loop)")
	rate := flag.Int("rate", 1000, "calls per second (open)")
	duration := flag.Duration("duration", 10*time.Second, "how long")
	concurrency := flag.Int("concurrency", 80, "callers (max)")
	conns := flag.Int("conns", 4, "client connections")
	flag.Parse()
	if *target == "" || *duration <= 0 || *duration > time.Hour || *rate <= 0 {
		fmt.Fprintln(os.Stderr, "load: -target is required; -duration in (0, 1h]; -rate > 0")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	call, closeFn, err := caller(*target, *protocol, *payload, *conns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
	defer closeFn()
	// Warm the connections up before measuring.
	for range 20 {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = call(wctx)
		cancel()
	}
	var res loadtest.Result
	if *mode == "max" {
		res = loadtest.Max{Concurrency: *concurrency, Duration: *duration}.Run(ctx, call)
	} else {
		res = loadtest.OpenLoop{Rate: *rate, Duration: *duration, Workers: *concurrency}.Run(ctx, call)
	}
	if *name == "" {
		*name = *target
	}
	out := struct {
		Target   string `json:"target"`
		Protocol string `json:"protocol"`
		Mode     string `json:"mode"`
		Payload  int    `json:"payload_bytes"`
		loadtest.Result
	}{*name, *protocol, *mode, *payload, res}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

func caller(target, protocol string, payload, conns int) (loadtest.Call, func(), error) {
	body := bytes.Repeat([]byte{'x'}, payload)
	switch protocol {
	case "grpc-unary", "grpc-bidi":
		var ccs []*grpc.ClientConn
		var tcs []testgrpc.TestServiceClient
		for range max(conns, 1) {
			cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, nil, err
			}
			ccs = append(ccs, cc)
			tcs = append(tcs, testgrpc.NewTestServiceClient(cc))
		}
		closeAll := func() {
			for _, cc := range ccs {
				cc.Close()
			}
		}
		var n uint64
		next := func() testgrpc.TestServiceClient { n++; return tcs[n%uint64(len(tcs))] }
		req := &testpb.SimpleRequest{ResponseSize: int32(payload), Payload: &testpb.Payload{Body: body}}
		if protocol == "grpc-bidi" {
			return func(ctx context.Context) error { return samples.PingPong(ctx, next(), 1) }, closeAll, nil
		}
		return func(ctx context.Context) error {
			_, err := next().UnaryCall(ctx, req)
			return err
		}, closeAll, nil
	case "http", "triple-json":
		tr := &http.Transport{MaxIdleConnsPerHost: 256}
		c := &http.Client{Transport: tr}
		url, ct := "http://"+target+"/echo/load", "application/octet-stream"
		if protocol == "triple-json" {
			url, ct = "http://"+target+"/strait.demo.greet.v1.GreetService/Greet", "application/json"
			body = []byte(`{"name":"load"}`)
		}
		return func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", ct)
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			return err
		}, tr.CloseIdleConnections, nil
	}
	return nil, nil, fmt.Errorf("unknown protocol %q", protocol)
}
