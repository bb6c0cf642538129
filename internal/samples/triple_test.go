package samples

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	greetv1 "github.com/strait-mesh/strait/proto/demo/greet/v1"
)

// seenRequest is what the provider observed of one incoming request.
type seenRequest struct {
	proto, method, path, contentType, version string
}

// startObservedProvider starts a provider on 127.0.0.1:0 recording every
// request it receives; it is closed at the end of the test.
func startObservedProvider(t *testing.T) (*TripleProvider, func() []seenRequest) {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []seenRequest
	)
	p, err := startTripleProvider("127.0.0.1:0", func(r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, seenRequest{
			proto:       r.Proto,
			method:      r.Method,
			path:        r.URL.Path,
			contentType: r.Header.Get("Content-Type"),
			version:     r.Header.Get("tri-service-version"),
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p, func() []seenRequest {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

func closeProvider(t *testing.T, p *TripleProvider) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func findRequest(seen []seenRequest, path string) (seenRequest, bool) {
	for _, s := range seen {
		if s.path == path {
			return s, true
		}
	}
	return seenRequest{}, false
}

// TestTripleHelpers calls the provider with the three client helpers and
// checks the greetings, what went over the wire, and that nothing leaks once
// the provider is closed.
func TestTripleHelpers(t *testing.T) {
	p, seen := startObservedProvider(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got, err := TripleGreet(ctx, p.Addr(), "alice")
	if err != nil {
		t.Fatalf("TripleGreet: %v", err)
	}
	if got != "hello alice" {
		t.Errorf("TripleGreet = %q, want %q", got, "hello alice")
	}
	req, ok := findRequest(seen(), greetv1.GreetServiceGreetProcedure)
	if !ok {
		t.Fatalf("provider saw no Greet call: %+v", seen())
	}
	if want := (seenRequest{"HTTP/2.0", http.MethodPost, greetv1.GreetServiceGreetProcedure, "application/grpc+proto", TripleServiceVersion}); req != want {
		t.Errorf("TripleGreet went out as %+v, want %+v", req, want)
	}

	got, err = TripleGreetJSON(ctx, "http://"+p.Addr(), "bob")
	if err != nil {
		t.Fatalf("TripleGreetJSON: %v", err)
	}
	if got != "hello bob" {
		t.Errorf("TripleGreetJSON = %q, want %q", got, "hello bob")
	}
	if req := seen()[len(seen())-1]; req != (seenRequest{"HTTP/1.1", http.MethodPost, greetv1.GreetServiceGreetProcedure, "application/json", ""}) {
		t.Errorf("TripleGreetJSON went out as %+v", req)
	}

	names := []string{"a", "b", "c"}
	greetings, err := TripleGreetStream(ctx, p.Addr(), names)
	if err != nil {
		t.Fatalf("TripleGreetStream: %v", err)
	}
	if want := []string{"hello a", "hello b", "hello c"}; !slices.Equal(greetings, want) {
		t.Errorf("TripleGreetStream = %q, want %q", greetings, want)
	}
	req, ok = findRequest(seen(), greetv1.GreetServiceGreetStreamProcedure)
	if !ok {
		t.Fatalf("provider saw no GreetStream call: %+v", seen())
	}
	if want := (seenRequest{"HTTP/2.0", http.MethodPost, greetv1.GreetServiceGreetStreamProcedure, "application/grpc+proto", TripleServiceVersion}); req != want {
		t.Errorf("TripleGreetStream went out as %+v, want %+v", req, want)
	}

	// An empty stream is fine too.
	if greetings, err := TripleGreetStream(ctx, p.Addr(), nil); err != nil || len(greetings) != 0 {
		t.Errorf("TripleGreetStream(nil) = %q, %v", greetings, err)
	}

	// While the provider runs, the dubbo-go client keeps (only) what
	// TripleClientGoroutines lists, and a single connection per address.
	for range 3 {
		if _, err := TripleGreet(ctx, p.Addr(), "again"); err != nil {
			t.Fatalf("TripleGreet: %v", err)
		}
	}
	if n := countGoroutines("golang.org/x/net/http2.(*ClientConn).readLoop("); n != 1 {
		t.Errorf("%d HTTP/2 client connections open after repeated calls, want 1 (cached client)", n)
	}
	clientOnly := []goleak.Option{
		// The provider's own goroutines.
		goleak.IgnoreAnyFunction("net/http.(*Server).Serve"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("net/http.(*http2serverConn).readFrames"),
	}
	for _, fn := range TripleClientGoroutines {
		clientOnly = append(clientOnly, goleak.IgnoreAnyFunction(fn))
	}
	if err := goleak.Find(clientOnly...); err != nil {
		t.Errorf("goroutines beyond TripleClientGoroutines while the provider runs: %v", err)
	}

	closeProvider(t, p)
	goleak.VerifyNone(t)
}

func countGoroutines(function string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), function)
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestTripleWire checks the provider with raw HTTP/1.1 and h2c requests and
// with a plain grpc-go client: Triple JSON and binary unary calls, the
// optional tri-service-version header, and gRPC interop.
func TestTripleWire(t *testing.T) {
	p, _ := startObservedProvider(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "http://" + p.Addr() + greetv1.GreetServiceGreetProcedure

	h1 := &http.Transport{Protocols: new(http.Protocols)}
	h1.Protocols.SetHTTP1(true)
	defer h1.CloseIdleConnections()
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()

	type result struct {
		proto       string
		status      int
		contentType string
		body        string
	}
	post := func(t *testing.T, tr *http.Transport, url, contentType, body string, header map[string]string) result {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return result{resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"), string(b)}
	}

	protoBody := func(m proto.Message) string {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	for _, tc := range []struct {
		name        string
		tr          *http.Transport
		url         string
		contentType string
		body        string
		header      map[string]string
		want        result
	}{
		{
			name: "json http1 no version", tr: h1, url: url,
			contentType: "application/json", body: `{"name":"x"}`,
			want: result{"HTTP/1.1", 200, "application/json", `{"greeting":"hello x"}`},
		},
		{
			name: "json http1 version 1.0.0", tr: h1, url: url,
			contentType: "application/json", body: `{"name":"x"}`,
			header: map[string]string{"tri-service-version": "1.0.0"},
			want:   result{"HTTP/1.1", 200, "application/json", `{"greeting":"hello x"}`},
		},
		{
			name: "json h2c", tr: h2c, url: url,
			contentType: "application/json", body: `{"name":"y"}`,
			want: result{"HTTP/2.0", 200, "application/json", `{"greeting":"hello y"}`},
		},
		{
			name: "proto http1", tr: h1, url: url,
			contentType: "application/proto", body: protoBody(&greetv1.GreetRequest{Name: "z"}),
			want: result{"HTTP/1.1", 200, "application/proto", protoBody(&greetv1.GreetResponse{Greeting: "hello z"})},
		},
		{
			name: "unknown version", tr: h1, url: url,
			contentType: "application/json", body: `{"name":"x"}`,
			header: map[string]string{"tri-service-version": "2.0.0"},
			want:   result{"HTTP/1.1", 404, "application/json", `{"code":"unimplemented","message":"no implementation found for service group  and service version 2.0.0"}`},
		},
		{
			name: "unknown group", tr: h1, url: url,
			contentType: "application/json", body: `{"name":"x"}`,
			header: map[string]string{"tri-service-group": "g", "tri-service-version": "1.0.0"},
			want:   result{"HTTP/1.1", 404, "application/json", `{"code":"unimplemented","message":"no implementation found for service group g and service version 1.0.0"}`},
		},
		{
			name: "bidi over http1", tr: h1, url: "http://" + p.Addr() + greetv1.GreetServiceGreetStreamProcedure,
			contentType: "application/grpc+proto",
			want:        result{"HTTP/1.1", http.StatusHTTPVersionNotSupported, "", ""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := post(t, tc.tr, tc.url, tc.contentType, tc.body, tc.header); got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}

	t.Run("TripleGreetJSON non-200", func(t *testing.T) {
		_, err := TripleGreetJSON(ctx, "http://"+p.Addr()+"/nowhere", "x")
		if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "404 page not found") {
			t.Errorf("TripleGreetJSON to a wrong path: err = %v, want status and body", err)
		}
	})

	t.Run("grpc-go", func(t *testing.T) {
		conn, err := grpc.NewClient("passthrough:///"+p.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()

		for _, version := range []string{"", TripleServiceVersion} {
			callCtx := ctx
			if version != "" {
				callCtx = metadata.AppendToOutgoingContext(ctx, "tri-service-version", version)
			}
			resp := new(greetv1.GreetResponse)
			if err := conn.Invoke(callCtx, greetv1.GreetServiceGreetProcedure, &greetv1.GreetRequest{Name: "grpc"}, resp); err != nil {
				t.Fatalf("grpc Greet (version %q): %v", version, err)
			}
			if resp.GetGreeting() != "hello grpc" {
				t.Errorf("grpc Greet (version %q) = %q", version, resp.GetGreeting())
			}
		}

		badCtx := metadata.AppendToOutgoingContext(ctx, "tri-service-version", "9.9.9")
		err = conn.Invoke(badCtx, greetv1.GreetServiceGreetProcedure, &greetv1.GreetRequest{Name: "grpc"}, new(greetv1.GreetResponse))
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("grpc Greet with version 9.9.9: %v, want Unimplemented", err)
		}

		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, greetv1.GreetServiceGreetStreamProcedure)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"s1", "s2"} {
			if err := stream.SendMsg(&greetv1.GreetRequest{Name: name}); err != nil {
				t.Fatal(err)
			}
			resp := new(greetv1.GreetResponse)
			if err := stream.RecvMsg(resp); err != nil {
				t.Fatal(err)
			}
			if resp.GetGreeting() != "hello "+name {
				t.Errorf("grpc GreetStream answered %q to %q", resp.GetGreeting(), name)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := stream.RecvMsg(new(greetv1.GreetResponse)); !errors.Is(err, io.EOF) {
			t.Errorf("grpc GreetStream end: %v, want io.EOF", err)
		}
	})

	closeProvider(t, p)
	goleak.VerifyNone(t)
}

// TestTripleProviderCloseWithOpenStream checks that Close gives up on the
// graceful phase when ctx is done, force-closes an open GreetStream and still
// leaves no goroutine behind; and that Close is idempotent.
func TestTripleProviderCloseWithOpenStream(t *testing.T) {
	p, err := StartTripleProvider("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := grpc.NewClient("passthrough:///"+p.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, greetv1.GreetServiceGreetStreamProcedure)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&greetv1.GreetRequest{Name: "open"}); err != nil {
		t.Fatal(err)
	}
	if err := stream.RecvMsg(new(greetv1.GreetResponse)); err != nil {
		t.Fatal(err)
	}

	closeCtx, closeCancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer closeCancel()
	start := time.Now()
	err = p.Close(closeCtx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with an open stream = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err2 := p.Close(context.Background()); !errors.Is(err2, context.DeadlineExceeded) {
		t.Errorf("second Close = %v, want the first result", err2)
	}
	if err := stream.RecvMsg(new(greetv1.GreetResponse)); err == nil {
		t.Error("stream still alive after Close")
	}
	if _, err := TripleGreetJSON(ctx, "http://"+p.Addr(), "x"); err == nil {
		t.Error("provider still answers after Close")
	}
	conn.Close()
	goleak.VerifyNone(t)
}

// TestTripleGreetUnreachable checks that the dubbo-go client reports a dead
// address as an error instead of hanging or panicking.
func TestTripleGreetUnreachable(t *testing.T) {
	p, err := StartTripleProvider("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := p.Addr()
	closeProvider(t, p)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := TripleGreet(ctx, addr, "nobody"); err == nil {
		t.Error("TripleGreet to a closed provider succeeded")
	}
	if _, err := TripleGreetStream(ctx, addr, []string{"nobody"}); err == nil {
		t.Error("TripleGreetStream to a closed provider succeeded")
	}
	goleak.VerifyNone(t)
}
