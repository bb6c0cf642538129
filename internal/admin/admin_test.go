package admin

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/test/wait"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer is a served Server and a client for it.
type testServer struct {
	*Server
	base   string
	client *http.Client
	served chan error
}

// start serves a Server on loopback; tweak, if set, runs before Serve. Cleanup shuts it
// down and checks that Serve returned nil.
func start(t *testing.T, o Options, tweak func(*Server)) *testServer {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(s)
	}
	ts := &testServer{
		Server: s,
		base:   "http://" + s.Addr(),
		client: &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second},
		served: make(chan error, 1),
	}
	go func() { ts.served <- s.Serve() }()
	t.Cleanup(func() {
		ts.client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-ts.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

// do sends a request and returns the response with its body read.
func (ts *testServer) do(t *testing.T, method, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, ts.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, string(b)
}

func (ts *testServer) expect(t *testing.T, method, path string, code int, body string) *http.Response {
	t.Helper()
	resp, got := ts.do(t, method, path)
	if resp.StatusCode != code || got != body {
		t.Errorf("%s %s = %d %q, want %d %q", method, path, resp.StatusCode, got, code, body)
	}
	return resp
}

func TestNewDefaults(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())
	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" {
		t.Errorf("Addr() = %q, want 127.0.0.1:<port>", s.Addr())
	}
	if s.Registry() == nil {
		t.Fatal("Registry() = nil")
	}
	names := gatheredNames(t, s.Registry())
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if !names[want] {
			t.Errorf("default registry lacks %s", want)
		}
	}
}

func TestNewListenError(t *testing.T) {
	if _, err := New(Options{Addr: "256.0.0.1:0"}); err == nil {
		t.Fatal("New with a bad address: no error")
	}
}

func TestHealthAndReadiness(t *testing.T) {
	ts := start(t, Options{}, nil)

	ts.expect(t, "GET", "/healthz", 200, "ok")
	ts.expect(t, "GET", "/readyz", 503, "starting")

	ts.SetReady(true, "ignored when ready")
	ts.expect(t, "GET", "/readyz", 200, "ready")
	ts.expect(t, "GET", "/healthz", 200, "ok")

	ts.SetReady(false, "xds not synced")
	ts.expect(t, "GET", "/readyz", 503, "xds not synced")
	ts.SetReady(false, "")
	ts.expect(t, "GET", "/readyz", 503, "not ready")

	resp := ts.expect(t, "HEAD", "/healthz", 200, "")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("healthz Content-Type = %q", ct)
	}
	ts.expect(t, "GET", "/nope", 404, "404 page not found\n")
}

func TestMethodNotAllowed(t *testing.T) {
	ts := start(t, Options{}, nil)
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/debug/config", "/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile"} {
		for _, method := range []string{"POST", "PUT", "DELETE"} {
			resp := ts.expect(t, method, path, 405, "method not allowed")
			if a := resp.Header.Get("Allow"); a != "GET, HEAD" {
				t.Errorf("%s %s: Allow = %q", method, path, a)
			}
		}
	}
}

func TestDebugConfig(t *testing.T) {
	ts := start(t, Options{}, nil)

	resp := ts.expect(t, "GET", "/debug/config", 200, "{}\n")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}

	type listener struct {
		Name string `json:"name"`
		Port int    `json:"port"`
	}
	cfg := map[string]any{"domain": "alpha", "listeners": []listener{{"grpc", 9000}}}
	ts.SetConfigSource(func() any { return cfg })
	_, body := ts.do(t, "GET", "/debug/config")
	want := "{\n  \"domain\": \"alpha\",\n  \"listeners\": [\n    {\n      \"name\": \"grpc\",\n      \"port\": 9000\n    }\n  ]\n}\n"
	if body != want {
		t.Errorf("body = %q, want %q", body, want)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(body), &got); err != nil || got["domain"] != "alpha" {
		t.Errorf("body does not decode back: %v %v", got, err)
	}

	ts.SetConfigSource(func() any { return make(chan int) })
	if resp, _ := ts.do(t, "GET", "/debug/config"); resp.StatusCode != 500 {
		t.Errorf("unserializable config: status %d, want 500", resp.StatusCode)
	}

	ts.SetConfigSource(nil)
	ts.expect(t, "GET", "/debug/config", 200, "{}\n")
}

func TestMetrics(t *testing.T) {
	ts := start(t, Options{}, nil)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "strait_test_things_total", Help: "Things."})
	ts.Registry().MustRegister(c)
	c.Add(3)
	gm := NewGatewayMetrics(ts.Registry(), "egress")
	gm.Observe("grpc", "beta", "OK", 300*time.Microsecond)
	gm.SetConfigVersion("v7")

	resp, body := ts.do(t, "GET", "/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type = %q", ct)
	}
	for _, want := range []string{
		"strait_test_things_total 3\n",
		`strait_calls_total{code="OK",peer="beta",protocol="grpc",role="egress"} 1` + "\n",
		`strait_call_duration_seconds_bucket{protocol="grpc",role="egress",le="0.0005"} 1` + "\n",
		`strait_config_version_info{role="egress",version="v7"} 1` + "\n",
		`strait_config_updates_total{result="nack",role="egress"} 0` + "\n",
		"go_goroutines ",
		"process_cpu_seconds_total ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestMetricsOwnRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := start(t, Options{Registry: reg}, nil)
	if ts.Registry() != reg {
		t.Fatal("Registry() is not the registry passed in")
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "strait_test_level", Help: "Level."})
	reg.MustRegister(g)
	g.Set(2)
	_, body := ts.do(t, "GET", "/metrics")
	if !strings.Contains(body, "strait_test_level 2\n") {
		t.Errorf("/metrics lacks strait_test_level:\n%s", body)
	}
	if strings.Contains(body, "go_goroutines") {
		t.Error("a registry passed in got the Go collector added")
	}
}

func TestHandle(t *testing.T) {
	ts := start(t, Options{}, nil)
	ts.Handle("GET /v1/config", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "v1")
	}))
	ts.expect(t, "GET", "/v1/config", 200, "v1")
	ts.expect(t, "POST", "/v1/config", 405, "Method Not Allowed\n")

	defer func() {
		if recover() == nil {
			t.Error("Handle of a built-in pattern did not panic")
		}
	}()
	ts.Handle("/healthz", http.NotFoundHandler())
}

func TestPprof(t *testing.T) {
	ts := start(t, Options{}, nil)

	resp, body := ts.do(t, "GET", "/debug/pprof/")
	if resp.StatusCode != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ = %d %.80q", resp.StatusCode, body)
	}
	resp, body = ts.do(t, "GET", "/debug/pprof/goroutine?debug=1")
	if resp.StatusCode != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("/debug/pprof/goroutine = %d %.80q", resp.StatusCode, body)
	}
	if resp, _ := ts.do(t, "GET", "/debug/pprof/cmdline"); resp.StatusCode != 200 {
		t.Errorf("/debug/pprof/cmdline = %d", resp.StatusCode)
	}
	if resp, _ := ts.do(t, "POST", "/debug/pprof/symbol"); resp.StatusCode != 200 {
		t.Errorf("POST /debug/pprof/symbol = %d", resp.StatusCode)
	}
	ts.expect(t, "GET", "/debug/pprof/profile?seconds=61", 400, "seconds must be at most 60")
	ts.expect(t, "GET", "/debug/pprof/heap?seconds=120", 400, "seconds must be at most 60")
}

var onDefaultMux sync.Once

func TestPprofNotOnDefaultMux(t *testing.T) {
	// Importing net/http/pprof registers on http.DefaultServeMux; the admin server must
	// not serve that mux: a handler put there only is not reachable.
	onDefaultMux.Do(func() {
		http.DefaultServeMux.HandleFunc("/only-on-default-mux", func(http.ResponseWriter, *http.Request) {})
	})
	ts := start(t, Options{}, nil)
	ts.expect(t, "GET", "/only-on-default-mux", 404, "404 page not found\n")
}

// A profile longer than ReadTimeout runs its full length (the request's context is not
// cancelled when the read deadline passes).
func TestPprofOutlivesReadTimeout(t *testing.T) {
	ts := start(t, Options{}, func(s *Server) { s.srv.ReadTimeout = 100 * time.Millisecond })
	t0 := time.Now()
	resp, body := ts.do(t, "GET", "/debug/pprof/allocs?seconds=1")
	if resp.StatusCode != 200 {
		t.Fatalf("delta profile: %d %q", resp.StatusCode, body)
	}
	if d := time.Since(t0); d < time.Second {
		t.Errorf("1s delta profile returned after %v", d)
	}
}

func TestShutdownCancelsProfiles(t *testing.T) {
	s, err := New(Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	got := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+s.Addr()+"/debug/pprof/heap?seconds=30", nil)
		resp, err := client.Do(req)
		if err != nil {
			got <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	wait.For(t, 30*time.Second, "the profile request in its handler", func() bool {
		return strings.Contains(goroutines(), "serveDeltaProfile")
	})

	// Shutdown must not wait for the 30 s profile: it has 20 s (a bound against a wait,
	// not a measure of its speed).
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a 30s profile in flight: %v", err)
	}
	t.Logf("Shutdown took %v with a 30s profile in flight", time.Since(t0).Round(time.Millisecond))
	if err := <-served; err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
	if code := <-got; code == 200 {
		t.Errorf("cancelled profile answered 200")
	}
	if r := s.ready.Load(); r.ready || r.reason != "shutting down" {
		t.Errorf("readiness after Shutdown = %+v", *r)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestShutdownWithoutServe(t *testing.T) {
	s, err := New(Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	var d net.Dialer
	if c, err := d.DialContext(t.Context(), "tcp", addr); err == nil {
		c.Close()
		t.Error("listener still open after Shutdown")
	}
	if err := s.Serve(); err != nil {
		t.Errorf("Serve after Shutdown = %v, want nil", err)
	}
}

func TestServeTwice(t *testing.T) {
	ts := start(t, Options{}, nil)
	ts.expect(t, "GET", "/healthz", 200, "ok") // the first Serve is running
	if err := ts.Serve(); err == nil {
		t.Error("second Serve: no error")
	}
}

func gatheredNames(t *testing.T, g prometheus.Gatherer) map[string]bool {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

func goroutines() string {
	b := make([]byte, 1<<20)
	return string(b[:runtime.Stack(b, true)])
}
