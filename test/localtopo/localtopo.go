// Package localtopo runs deploy/local/up.sh for a test, on ports chosen at run time, and
// stops it with down.sh when the test ends, checking that nothing is left behind.
package localtopo

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/strait-mesh/strait/test/ports"
)

// Ready is up.sh's ready line.
type Ready struct {
	Event           string            `json:"event"`
	Egress          string            `json:"egress"`
	EgressInstances []string          `json:"egress_instances"`
	Ingress         []string          `json:"ingress"`
	Admin           map[string]string `json:"admin"`
	PIDs            map[string]int    `json:"pids"`
	Registries      map[string]string `json:"registries"`
	State           string            `json:"state"`
}

func script(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "local", name)
}

// Up starts the topology with `up.sh --registry kind` in a state directory of the test's
// own, on ports chosen at run time: the ports up.sh derives from its base (as
// `up.sh --port-offsets` lists them) are held by test/ports from a base it picks until
// up.sh starts, and the base is passed to up.sh (STRAIT_PORT_BASE). When the test ends,
// down.sh stops it and Up's cleanup fails the test if a process or the state directory is
// left (and prints the processes' logs if the test failed).
func Up(t *testing.T, kind string) *Ready {
	t.Helper()
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	// The binary is built before the ports are held, so that the gap between their release
	// and up.sh's processes binding them is short.
	bin := filepath.Join(dir, "strait")
	build := exec.Command("go", "build", "-o", bin, "./cmd/strait")
	build.Dir = filepath.Join(filepath.Dir(script("up.sh")), "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	held := ports.Pattern(t, offsets(t, kind)...)
	env := append(os.Environ(), "STRAIT_STATE="+state, "STRAIT_BIN="+bin, "STRAIT_PORT_BASE="+strconv.Itoa(held.Base))
	r := &Ready{}
	t.Cleanup(func() {
		if t.Failed() {
			for name := range r.PIDs {
				b, _ := os.ReadFile(filepath.Join(state, name+".log"))
				if len(b) > 1500 {
					b = b[len(b)-1500:]
				}
				t.Logf("%s.log:\n%s", name, b)
			}
		}
		cmd := exec.Command("bash", script("down.sh"))
		cmd.Env = env
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("down.sh: %v\n%s", err, b)
		}
		for name, pid := range r.PIDs {
			if syscall.Kill(pid, 0) == nil {
				t.Errorf("%s (%d) still running after down.sh", name, pid)
			}
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Errorf("state %s left behind", state)
		}
	})
	up := exec.Command("bash", script("up.sh"), "--registry", kind)
	up.Env = env
	var stderr bytes.Buffer
	up.Stderr = &stderr
	held.Release()
	out, err := up.Output()
	if err != nil {
		t.Fatalf("up.sh --registry %s (port base %d): %v\n%s", kind, held.Base, err, stderr.String())
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), r); err != nil {
		t.Fatalf("ready line %q: %v", out, err)
	}
	t.Logf("up.sh --registry %s: port base %d, egress %s", kind, held.Base, r.Egress)
	return r
}

// offsets are the offsets from its port base of the ports up.sh binds for kind.
func offsets(t *testing.T, kind string) []int {
	t.Helper()
	out, err := exec.Command("bash", script("up.sh"), "--registry", kind, "--port-offsets").Output()
	if err != nil {
		t.Fatalf("up.sh --port-offsets: %v", err)
	}
	var ds []int
	for _, f := range strings.Fields(string(out)) {
		d, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("up.sh --port-offsets: %q", out)
		}
		ds = append(ds, d)
	}
	if len(ds) == 0 {
		t.Fatal("up.sh --port-offsets printed none")
	}
	return ds
}
