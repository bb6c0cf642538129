// Package localtopo runs deploy/local/up.sh for a test and stops it with down.sh when the
// test ends, checking that nothing is left behind.
package localtopo

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
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
// own. When the test ends, down.sh stops it and Up's cleanup fails the test if a process
// or the state directory is left (and prints the processes' logs if the test failed).
func Up(t *testing.T, kind string) *Ready {
	t.Helper()
	if testing.Short() {
		t.Skip("starts processes")
	}
	state := filepath.Join(t.TempDir(), "state")
	env := append(os.Environ(), "STRAIT_STATE="+state)
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
	out, err := up.Output()
	if err != nil {
		t.Fatalf("up.sh --registry %s: %v\n%s", kind, err, stderr.String())
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), r); err != nil {
		t.Fatalf("ready line %q: %v", out, err)
	}
	return r
}
