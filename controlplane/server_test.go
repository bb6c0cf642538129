package controlplane_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/mesh"
)

const domainFile = `domain: alpha
trustDomain: alpha.strait.local
registry: {kind: embedded}
controlplane: {xds: 127.0.0.1:0, admin: 127.0.0.1:0}
`

// startServer runs a controlplane on its own embedded registry from a domain file in a
// temporary directory.
func startServer(t *testing.T) (*controlplane.Server, string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "alpha.yaml")
	if err := os.WriteFile(file, []byte(domainFile), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := controlplane.Start(controlplane.ServerOptions{File: file, DataDir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, file
}

// waitFor polls cond until it holds, or fails the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func do(t *testing.T, method, url, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestServerConfigAPI: GET /v1/config returns the document in force with its version; a
// PUT of a bad document is refused with path-qualified errors and changes nothing; a good
// one is applied and its version returned.
func TestServerConfigAPI(t *testing.T) {
	s, _ := startServer(t)
	url := "http://" + s.AdminAddr() + "/v1/config"
	code, body, h := do(t, http.MethodGet, url, "")
	if code != 200 || !strings.Contains(body, "domain: alpha") || h.Get("Strait-Config-Version") != s.Core().Version() {
		t.Fatalf("GET: %d %q version %q (in force %q)", code, body, h.Get("Strait-Config-Version"), s.Core().Version())
	}
	before := s.Core().Version()
	code, body, _ = do(t, http.MethodPut, url, "domain: alpha\ntrustDomain: alpha.strait.local\npeers:\n  - domain: beta\n")
	if code != http.StatusBadRequest || !strings.Contains(body, "peers[0].trustDomain: required") {
		t.Fatalf("bad PUT: %d %q", code, body)
	}
	code, body, _ = do(t, http.MethodPut, url, "domain: alpha\ntrustDomain: alpha.strait.local\nregistry: {kind: embedded}\nroutes: []\nbogus: 1\n")
	if code != http.StatusBadRequest || !strings.Contains(body, "bogus (line 5): unknown field") {
		t.Fatalf("PUT with an unknown field: %d %q", code, body)
	}
	if v := s.Core().Version(); v != before {
		t.Fatalf("a refused document changed the version: %s → %s", before, v)
	}
	good := domainFile + "limits: {callTimeout: 7s}\n"
	code, body, h = do(t, http.MethodPut, url, good)
	if code != 200 || !strings.HasPrefix(body, "applied ") {
		t.Fatalf("PUT: %d %q", code, body)
	}
	if v := h.Get("Strait-Config-Version"); v == before || v != s.Core().Version() {
		t.Fatalf("version after PUT %q (before %q, in force %q)", v, before, s.Core().Version())
	}
	if got := s.Core().Domain().Limits.CallTimeout.D(); got != 7*time.Second {
		t.Fatalf("callTimeout in force %v, want 7s", got)
	}
	if code, _, h = do(t, http.MethodDelete, url, ""); code != http.StatusMethodNotAllowed || h.Get("Allow") == "" {
		t.Fatalf("DELETE: %d, Allow %q", code, h.Get("Allow"))
	}
}

// TestServerWatchesFile: an edit of the domain file is applied; a broken edit is refused
// and the configuration in force stays.
func TestServerWatchesFile(t *testing.T) {
	s, file := startServer(t)
	before := s.Core().Version()
	if err := os.WriteFile(file, []byte(domainFile+"limits: {callTimeout: 9s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the edited file is applied", func() bool {
		return s.Core().Domain().Limits.CallTimeout.D() == 9*time.Second
	})
	applied := s.Core().Version()
	if applied == before {
		t.Fatal("the version did not change")
	}
	// A broken edit, then a good one: the good one is applied, and the broken one never
	// was (the limit goes from 9s to 11s, never to the broken file's).
	if err := os.WriteFile(file, []byte(domainFile+"limits: {callTimeout: banana}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(domainFile+"limits: {callTimeout: 11s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the next good edit is applied", func() bool {
		return s.Core().Domain().Limits.CallTimeout.D() == 11*time.Second
	})
}

// TestServerMetricsAndRegistry: the controlplane reads its registry (the providers
// gauge follows a registration) and serves its metrics.
func TestServerMetricsAndRegistry(t *testing.T) {
	s, _ := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inst := mesh.Instance{Service: mesh.ServiceKey{Name: "a.B"}, Protocol: mesh.ProtocolGRPC, Address: "127.0.0.1:50051"}
	if err := s.Registry().Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the provider is seen", func() bool { return len(s.Core().Providers()) == 1 })
	waitFor(t, 10*time.Second, "/metrics counts it", func() bool {
		_, body, _ := do(t, http.MethodGet, "http://"+s.AdminAddr()+"/metrics", "")
		return strings.Contains(body, "strait_registry_instances 1")
	})
}
