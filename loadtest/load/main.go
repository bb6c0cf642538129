// Command load drives one target with one protocol and prints what it measured as one
// JSON object:
//
//	go run ./loadtest/load -target 127.0.0.1:17110 -protocol grpc-unary -rate 1000 -duration 10s
//
// Modes: open (a fixed arrival rate; latency from each call's scheduled time) and max
// (closed loop, -concurrency callers back to back over -conns connections).
//
// Protocols, each with -payload bytes each way:
//   - grpc-unary: grpc.testing.TestService/UnaryCall (grpc-go).
//   - grpc-bidi: grpc.testing.TestService/FullDuplexCall; a call is one request message and
//     its response on a long-lived stream (one stream per caller, reused).
//   - triple-grpc: strait.demo.greet.v1.GreetService/Greet in Triple's gRPC mode (HTTP/2,
//     application/grpc+proto), called with grpc-go.
//   - triple-json: the same method in Triple's HTTP/1.1 mode, a JSON body.
//   - http: POST /echo/load, HTTP/1.1, the body echoed back.
//   - dubbo: org.apache.dubbo.strait.EchoService.Echo(String) (version 1.0.0, group strait)
//     over the classic Dubbo protocol (dubbo://, hessian2), a string of -payload bytes:
//     -conns connections, each with up to -concurrency/-conns requests in flight told apart
//     by their IDs, as Dubbo consumers multiplex one connection. The request frames are
//     built once (internal/dubbowire) and only their IDs change; every response must be OK
//     and carry the argument back, or the call counts as failed.
//
// It prints {"event":"start"} when measuring starts (after a warm-up), then the result; the
// result includes load_cpu_seconds, the CPU this process used while measuring.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/loadtest"
	greetv1 "github.com/strait-mesh/strait/proto/demo/greet/v1"
)

// protocols are the values -protocol accepts.
var protocols = []string{"grpc-unary", "grpc-bidi", "triple-grpc", "triple-json", "http", "dubbo"}

func main() {
	target := flag.String("target", "", "host:port to call")
	name := flag.String("name", "", "target name in the output (default: the address)")
	protocol := flag.String("protocol", "grpc-unary", strings.Join(protocols, ", "))
	payload := flag.Int("payload", 1024, "payload bytes each way")
	mode := flag.String("mode", "open", "open (fixed rate) or max (closed loop)")
	rate := flag.Int("rate", 1000, "calls per second (open)")
	duration := flag.Duration("duration", 10*time.Second, "how long")
	concurrency := flag.Int("concurrency", 80, "callers (max); workers (open)")
	conns := flag.Int("conns", 4, "client connections (gRPC, Triple gRPC and Dubbo)")
	flag.Parse()
	switch {
	case *target == "":
		usage("-target is required")
	case *duration <= 0 || *duration > time.Hour:
		usage("-duration must be in (0, 1h]")
	case *rate <= 0 || *rate > 1_000_000:
		usage("-rate must be in (0, 1000000]")
	case *payload < 0 || *payload > 16<<20:
		usage("-payload must be in [0, 16 MiB]")
	case *concurrency <= 0 || *concurrency > 10_000:
		usage("-concurrency must be in (0, 10000]")
	case *conns <= 0 || *conns > 1000:
		usage("-conns must be in (0, 1000]")
	case *mode != "open" && *mode != "max":
		usage("-mode is open or max")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	call, closeFn, err := caller(*target, *protocol, *payload, *conns, *concurrency)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(2)
	}
	defer closeFn()
	// Warm the connections (and, for bidi, the streams) up before measuring: every caller
	// makes two calls.
	var warm sync.WaitGroup
	for range *concurrency {
		warm.Go(func() {
			for range 2 {
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_ = call(wctx)
				cancel()
			}
		})
	}
	warm.Wait()
	// A line that says measuring starts now, so that a driver can read other processes'
	// CPU counters over exactly the measured interval.
	fmt.Println(`{"event":"start"}`)
	cpu0 := cpuSeconds()
	var res loadtest.Result
	if *mode == "max" {
		res = loadtest.Max{Concurrency: *concurrency, Duration: *duration}.Run(ctx, call)
	} else {
		res = loadtest.OpenLoop{Rate: *rate, Duration: *duration, Workers: *concurrency}.Run(ctx, call)
	}
	loadCPU := cpuSeconds() - cpu0
	if *name == "" {
		*name = *target
	}
	out := struct {
		Target   string `json:"target"`
		Protocol string `json:"protocol"`
		Mode     string `json:"mode"`
		Payload  int    `json:"payload_bytes"`
		loadtest.Result
		LoadCPU float64 `json:"load_cpu_seconds"`
	}{*name, *protocol, *mode, *payload, res, loadCPU}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "load:", msg)
	flag.Usage()
	os.Exit(2)
}

// cpuSeconds is the CPU time (user + system) this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func caller(target, protocol string, payload, conns, callers int) (loadtest.Call, func(), error) {
	body := bytes.Repeat([]byte{'x'}, payload)
	switch protocol {
	case "dubbo":
		d, err := newDubboClient(target, payload, conns, callers)
		if err != nil {
			return nil, nil, err
		}
		return d.call, d.close, nil
	case "grpc-unary", "grpc-bidi", "triple-grpc":
		var ccs []*grpc.ClientConn
		closeAll := func() {
			for _, cc := range ccs {
				cc.Close()
			}
		}
		for range conns {
			cc, err := grpc.NewClient(target,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithSharedWriteBuffer(true),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20)))
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("grpc client for %s: %w", target, err)
			}
			ccs = append(ccs, cc)
		}
		var n atomic.Uint64
		next := func() *grpc.ClientConn { return ccs[n.Add(1)%uint64(len(ccs))] }
		switch protocol {
		case "grpc-unary":
			req := &testpb.SimpleRequest{ResponseSize: int32(payload), Payload: &testpb.Payload{Body: body}}
			return func(ctx context.Context) error {
				_, err := testgrpc.NewTestServiceClient(next()).UnaryCall(ctx, req)
				return err
			}, closeAll, nil
		case "triple-grpc":
			req := &greetv1.GreetRequest{Name: string(body)}
			return func(ctx context.Context) error {
				var resp greetv1.GreetResponse
				if err := next().Invoke(ctx, greetv1.GreetServiceGreetProcedure, req, &resp); err != nil {
					return err
				}
				if len(resp.Greeting) != len("hello ")+payload {
					return fmt.Errorf("triple-grpc: greeting of %d bytes, want %d", len(resp.Greeting), len("hello ")+payload)
				}
				return nil
			}, closeAll, nil
		default:
			p := &bidiPool{
				streams: make(chan *bidiStream, callers),
				next:    func() testgrpc.TestServiceClient { return testgrpc.NewTestServiceClient(next()) },
				req: &testpb.StreamingOutputCallRequest{
					ResponseParameters: []*testpb.ResponseParameters{{Size: int32(payload)}},
					Payload:            &testpb.Payload{Body: body},
				},
				payload: payload,
			}
			return p.call, func() { p.close(); closeAll() }, nil
		}
	case "http", "triple-json":
		tr := &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024, IdleConnTimeout: time.Minute}
		c := &http.Client{Transport: tr}
		url, ct := "http://"+target+"/echo/load", "application/octet-stream"
		want := int64(payload)
		if protocol == "triple-json" {
			url, ct = "http://"+target+greetv1.GreetServiceGreetProcedure, "application/json"
			body = []byte(`{"name":"` + string(body) + `"}`)
			want = -1 // {"greeting":"hello xxx…"}: checked loosely below
		}
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", ct)
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			got, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch {
			case err != nil:
				return err
			case resp.StatusCode != http.StatusOK:
				return fmt.Errorf("status %d", resp.StatusCode)
			case want >= 0 && got != want:
				return fmt.Errorf("body of %d bytes, want %d", got, want)
			case want < 0 && got < int64(payload):
				return fmt.Errorf("body of %d bytes, want more than %d", got, payload)
			}
			return nil
		}, tr.CloseIdleConnections, nil
	}
	return nil, nil, fmt.Errorf("unknown protocol %q (use %s)", protocol, strings.Join(protocols, ", "))
}

// bidiPool keeps the long-lived FullDuplexCall streams of grpc-bidi: a call takes an idle
// stream (or opens one), sends one message, receives its response and puts the stream
// back. A stream whose call failed or timed out is closed and dropped.
type bidiPool struct {
	streams chan *bidiStream
	next    func() testgrpc.TestServiceClient
	req     *testpb.StreamingOutputCallRequest
	payload int
	closed  atomic.Bool
}

type bidiStream struct {
	s      testgrpc.TestService_FullDuplexCallClient
	cancel context.CancelFunc
	resp   testpb.StreamingOutputCallResponse
}

func (p *bidiPool) call(ctx context.Context) error {
	var bs *bidiStream
	select {
	case bs = <-p.streams:
	default:
		sctx, cancel := context.WithCancel(context.Background())
		s, err := p.next().FullDuplexCall(sctx)
		if err != nil {
			cancel()
			return err
		}
		bs = &bidiStream{s: s, cancel: cancel}
	}
	// The stream outlives the call: the call's deadline ends the stream if it passes.
	stopTimer := context.AfterFunc(ctx, bs.cancel)
	err := bs.s.Send(p.req)
	if err == nil {
		err = bs.s.RecvMsg(&bs.resp)
	}
	if err == nil && len(bs.resp.GetPayload().GetBody()) != p.payload {
		err = fmt.Errorf("grpc-bidi: response of %d bytes, want %d", len(bs.resp.GetPayload().GetBody()), p.payload)
	}
	if !stopTimer() || err != nil {
		bs.cancel()
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			err = errors.New("grpc-bidi: call deadline passed")
		}
		return err
	}
	if p.closed.Load() {
		bs.cancel()
		return nil
	}
	select {
	case p.streams <- bs:
	default:
		bs.cancel()
	}
	return nil
}

func (p *bidiPool) close() {
	p.closed.Store(true)
	for {
		select {
		case bs := <-p.streams:
			_ = bs.s.CloseSend()
			bs.cancel()
		default:
			return
		}
	}
}
