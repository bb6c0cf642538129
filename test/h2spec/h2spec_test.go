package h2spec

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/tunnel"
)

const (
	// caseTimeout is h2spec's -o: how long one case waits for the frame it expects (a
	// failing case usually costs all of it; the answers of a conformant gateway take
	// milliseconds).
	caseTimeout = 3
	// runLimit bounds one h2spec run (145 cases; a conformant server takes seconds).
	runLimit = 4 * time.Minute
	// path is what h2spec requests: a plain-HTTP route of alpha's egress (demo.HTTPPrefix)
	// to beta's HTTP service.
	path = demo.HTTPPrefix + "/h2spec"
)

// body is what the test's HTTP provider answers every request with. h2spec's flow-control
// cases (6.5.3/1, 6.9.1/1, 6.9.2/1-2) need a response body of at least 5 bytes to a GET
// and are skipped otherwise; the sample echo provider answers a GET with an empty body.
var body = bytes.Repeat([]byte("h2spec conformance body\n"), 40)

// TestH2Spec runs every h2spec case against the relay data path: the egress consumer
// port (h2c) and an ingress tunnel port. Each failed case is an error.
func TestH2Spec(t *testing.T) {
	bin := h2specBinary(t)
	topo := startTopology(t, "")
	// The two runs wait mostly on h2spec's timeouts: they run at the same time.
	t.Run("egress", func(t *testing.T) {
		t.Parallel()
		runTarget(t, bin, topo.Egress[0], true)
	})
	t.Run("ingress", func(t *testing.T) {
		t.Parallel()
		runTarget(t, bin, tunnelForwarder(t, topo), true)
	})
}

// TestH2SpecGeneralPath runs h2spec against the general (net/http) data path for
// comparison: failed cases are logged, not errors. Skipped with -short.
func TestH2SpecGeneralPath(t *testing.T) {
	bin := h2specBinary(t)
	if testing.Short() {
		t.Skip("-short: the general data path is run for comparison only")
	}
	topo := startTopology(t, "http")
	t.Run("egress", func(t *testing.T) {
		t.Parallel()
		runTarget(t, bin, topo.Egress[0], false)
	})
	t.Run("ingress", func(t *testing.T) {
		t.Parallel()
		runTarget(t, bin, tunnelForwarder(t, topo), false)
	})
}

// h2specBinary finds h2spec on PATH, in $(go env GOBIN) or in $(go env GOPATH)/bin (where
// `make deps` installs it), or skips the test.
func h2specBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	var dirs []string
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(string(out), "\n")
		if len(lines) >= 2 {
			if gobin := strings.TrimSpace(lines[0]); gobin != "" {
				dirs = append(dirs, gobin)
			}
			for _, gp := range filepath.SplitList(strings.TrimSpace(lines[1])) {
				dirs = append(dirs, filepath.Join(gp, "bin"))
			}
		}
	} else if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "h2spec")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Skip("h2spec not found on PATH, in $(go env GOBIN) or in $(go env GOPATH)/bin: `make deps` " +
		"installs it (go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible)")
	return ""
}

// startTopology starts one egress and one ingress on the data path dp ("" is the relay),
// and puts the test's HTTP provider in place of beta's echo provider.
func startTopology(t *testing.T, dp string) *demo.Topology {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topo, err := demo.StartTopology(ctx, demo.TopologyOptions{Egress: 1, Ingress: 1, DataPath: dp})
	if err != nil {
		t.Fatalf("start topology: %v", err)
	}
	t.Cleanup(topo.Close)

	// The provider: a fixed body to every request, after reading the request's body.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		}),
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-served
	})
	mine := mesh.Instance{Service: mesh.ServiceKey{Name: demo.HTTPService}, Protocol: mesh.ProtocolHTTP, Address: ln.Addr().String()}
	sample := mesh.Instance{Service: mesh.ServiceKey{Name: demo.HTTPService}, Protocol: mesh.ProtocolHTTP, Address: topo.HTTPAddr}
	if err := topo.BetaRegistry.Register(ctx, mine); err != nil {
		t.Fatalf("register provider: %v", err)
	}
	if err := topo.BetaRegistry.Deregister(ctx, sample); err != nil {
		t.Fatalf("deregister sample echo provider: %v", err)
	}
	// Wait until beta's ingress knows only the test's provider.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		only := true
		for _, g := range topo.Gateways {
			if ig := g.Ingress(); ig != nil {
				eps := ig.Endpoints(mine.Service, mine.Protocol)
				if len(eps) != 1 || eps[0].Address != mine.Address {
					only = false
				}
			}
		}
		if only {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("beta's ingress did not switch to the test's HTTP provider: %v", ctx.Err())
		case <-tick.C:
		}
	}
	// The route answers with the body end to end.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + topo.Egress[0] + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("GET %s through the topology: %d, %d bytes; want 200 with the provider's %d bytes", path, resp.StatusCode, len(got), len(body))
	}
	return topo
}

// tunnelForwarder listens on a loopback port and forwards each plaintext connection to
// beta's ingress over the tunnel's TLS (TLS 1.3, an alpha egress SVID, ALPN strait/1), so
// that h2spec, which cannot present a client certificate, speaks HTTP/2 to the ingress.
// Bytes are copied both ways unchanged; a half-close is passed on.
func tunnelForwarder(t *testing.T, topo *demo.Topology) string {
	t.Helper()
	svid, err := identity.LoadSVID(topo.Certs.Egress[0])
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: demo.BetaTrustDomain, File: topo.Certs.BetaBundle}})
	if err != nil {
		t.Fatal(err)
	}
	conf := identity.ClientConfig(svid, bundles, spiffeid.RequireTrustDomainFromString(demo.BetaTrustDomain), tunnel.ALPN)
	target := topo.Ingress[0]

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		delete(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			pc, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(pc) {
				pc.Close()
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer untrack(pc)
				defer pc.Close()
				tc, err := tunnel.DialTLS(ctx, target, conf, 5*time.Second)
				if err != nil {
					slog.Warn("h2spec forwarder: dial ingress", "err", err)
					return
				}
				if !track(tc) {
					tc.Close()
					return
				}
				defer untrack(tc)
				defer tc.Close()
				pipe(pc.(*net.TCPConn), tc.(*tls.Conn))
			}()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		cancel()
		ln.Close()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// pipe copies both ways until both directions end; the end of one direction is passed on
// as a half-close (FIN to h2spec, close_notify to the ingress).
func pipe(pc *net.TCPConn, tc *tls.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(tc, pc)
		_ = tc.CloseWrite()
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(pc, tc)
		_ = pc.CloseWrite()
		done <- struct{}{}
	}()
	<-done
	// One direction ended. The other ends when its reader sees the end or an error; a
	// peer that closes its socket completely makes both end.
	<-done
}

// The JUnit report h2spec writes (reporter/junit_report.go of h2spec v2.2.1). Failures
// are reported as <error> (h2spec's reporter matches its TestError by value while the
// cases return a pointer), or as <failure>.
type junitReport struct {
	Suites []struct {
		Package string `xml:"package,attr"` // e.g. http2/6.5.3
		Name    string `xml:"name,attr"`    // e.g. 6.5.3. SETTINGS Synchronization
		Cases   []struct {
			Desc    string    `xml:"classname,attr"`
			Time    string    `xml:"time,attr"`
			Failure *string   `xml:"failure"`
			Error   *string   `xml:"error"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

type caseResult struct {
	id, group, desc, detail string
	failed, skipped         bool
}

// runTarget runs h2spec against addr and reports its failed cases: as errors if strict,
// as log lines otherwise.
func runTarget(t *testing.T, bin, addr string, strict bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	ctx, cancel := context.WithTimeout(context.Background(), runLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-P", path,
		"-o", strconv.Itoa(caseTimeout), "--junit-report", report)
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "TERM=dumb")
	start := time.Now()
	out, runErr := cmd.CombinedOutput()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("h2spec did not finish within %v; output:\n%s", runLimit, tail(out, 4000))
	}
	raw, err := os.ReadFile(report)
	if err != nil {
		// h2spec exits before writing its report when it cannot connect or a case errs.
		t.Fatalf("h2spec wrote no report (%v; exit: %v); output:\n%s", err, runErr, tail(out, 4000))
	}
	results, err := parseReport(raw)
	if err != nil {
		t.Fatalf("h2spec report: %v", err)
	}
	var passed, failed, skipped int
	for _, r := range results {
		switch {
		case r.failed:
			failed++
			msg := fmt.Sprintf("h2spec %s [%s] %s: %s", r.id, r.group, r.desc, r.detail)
			if strict {
				t.Error(msg)
			} else {
				t.Log(msg)
			}
		case r.skipped:
			skipped++
		default:
			passed++
		}
	}
	t.Logf("%s: h2spec against %s: %d cases, %d passed, %d failed, %d skipped in %.1fs",
		t.Name(), addr, len(results), passed, failed, skipped, took.Seconds())
	if len(results) == 0 {
		t.Errorf("h2spec reported no cases (exit: %v); output:\n%s", runErr, tail(out, 4000))
	}
	if failed == 0 && runErr != nil {
		t.Errorf("h2spec exited with %v but its report has no failed case; output:\n%s", runErr, tail(out, 4000))
	}
}

// parseReport reads h2spec's JUnit report. A case's id is its group's and its number in
// the group (h2spec's own notation, e.g. http2/6.5.3/2): h2spec numbers a group's cases
// from 1 and reports every non-strict case of a full run, in order.
func parseReport(raw []byte) ([]caseResult, error) {
	var rep junitReport
	if err := xml.Unmarshal(raw, &rep); err != nil {
		return nil, err
	}
	var out []caseResult
	for _, s := range rep.Suites {
		for i, c := range s.Cases {
			r := caseResult{
				id:      fmt.Sprintf("%s/%d", s.Package, i+1),
				group:   s.Name,
				desc:    c.Desc,
				skipped: c.Skipped != nil,
			}
			for _, d := range []*string{c.Failure, c.Error} {
				if d != nil {
					r.failed = true
					r.detail = oneLine(*d)
				}
			}
			out = append(out, r)
		}
	}
	if len(out) == 0 && !bytes.Contains(raw, []byte("testsuite")) {
		return nil, errors.New("no testsuite element")
	}
	return out, nil
}

// oneLine puts h2spec's account of a failed case on one line. A <failure> reads
// "Expect:\n<lines>\nActual:\n<line>"; an <error> holds the error's text, which for
// h2spec's TestError is the expected lines and then the actual one.
func oneLine(s string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" && l != "Expect:" && l != "Actual:" {
			lines = append(lines, l)
		}
	}
	if len(lines) < 2 {
		return strings.Join(lines, "")
	}
	return "expected " + strings.Join(lines[:len(lines)-1], " | ") + "; actual " + lines[len(lines)-1]
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
