package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/samples"
)

func TestMain(m *testing.M) {
	var opts []goleak.Option
	for _, f := range samples.TripleClientGoroutines {
		opts = append(opts, goleak.IgnoreAnyFunction(f))
	}
	goleak.VerifyTestMain(m, opts...)
}

// TestDemoJSON runs `strait demo --json` and checks its contract line by line.
func TestDemoJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"demo", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	sc := bufio.NewScanner(&out)
	var events []map[string]any
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		events = append(events, ev)
	}
	if len(events) < 3 {
		t.Fatalf("only %d events", len(events))
	}
	ready := events[0]
	if ready["event"] != "ready" || ready["egress"] == "" || len(ready["ingress"].([]any)) != 2 {
		t.Fatalf("ready: %v", ready)
	}
	svcs := ready["services"].(map[string]any)
	for _, k := range []string{"grpc", "triple", "http"} {
		if svcs[k] == nil {
			t.Fatalf("ready.services lacks %s: %v", k, svcs)
		}
	}
	calls := 0
	protos := map[string]bool{}
	for _, ev := range events[1 : len(events)-1] {
		if ev["event"] != "call" || ev["ok"] != true {
			t.Fatalf("call: %v", ev)
		}
		protos[ev["protocol"].(string)] = true
		calls++
	}
	if len(protos) != 3 {
		t.Fatalf("protocols called: %v", protos)
	}
	sum := events[len(events)-1]
	if sum["event"] != "summary" || sum["calls"] != float64(calls) || sum["failed"] != float64(0) {
		t.Fatalf("summary: %v (calls seen %d)", sum, calls)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("domain: alpha\ntrustDomain: alpha.local\npeers:\n  - domain: beta\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", bad}, &out, &errb); code == 0 {
		t.Fatal("bad file validated")
	}
	for _, want := range []string{"peers[0].trustDomain: required", "peers[0].trustBundle: required"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("missing %q in %q", want, errb.String())
		}
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"validate", "-c", "../../deploy/examples/beta.yaml"}, &out, &errb); code != 0 {
		t.Fatalf("example refused: %s", errb.String())
	}
	if code := run([]string{"validate"}, &out, &errb); code != 2 {
		t.Fatalf("validate without -c: exit %d", code)
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
}

// TestDemoHoldStopsCleanly runs the real binary with --hold, calls through its egress from
// outside, sends SIGINT, and checks that it exits 0 leaving no temporary file behind.
func TestDemoHoldStopsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "strait")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o755)
	cmd := exec.Command(bin, "demo", "--json", "--hold")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	sc := bufio.NewScanner(stdout)
	var egress string
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		if ev["event"] == "ready" {
			egress = ev["egress"].(string)
		}
		if ev["event"] == "summary" {
			break
		}
	}
	go func() { io.Copy(io.Discard, stdout); done <- cmd.Wait() }()
	if entries, _ := os.ReadDir(tmp); len(entries) == 0 {
		t.Fatal("the demo keeps no files in TMPDIR while running")
	}
	resp, err := http.Post("http://"+egress+"/echo/x", "text/plain", strings.NewReader("outside"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "outside" {
		t.Fatalf("echo through held topology: %q", b)
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("demo did not stop within 20s of SIGINT")
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}
