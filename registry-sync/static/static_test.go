package static

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/mesh"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseErrors(t *testing.T) {
	_, err := Parse([]byte("providers:\n  - {service: a.B, protocol: soap, address: nope}\n  - {protocol: grpc, address: '1.2.3.4:5'}\n"))
	for _, want := range []string{`providers[0].protocol: "soap"`, `providers[0].address: "nope"`, `providers[1].service: required`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if is, err := Parse(nil); err != nil || len(is) != 0 {
		t.Fatalf("empty file: %v %v", is, err)
	}
	if _, err := Parse([]byte("bogus: 1")); err == nil {
		t.Fatal("unknown key accepted")
	}
}

func TestWatchFollowsEdits(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "providers.yaml")
	write := func(s string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // as editors do
			t.Fatal(err)
		}
	}
	write("providers:\n  - {service: a.B, protocol: grpc, address: '10.0.0.1:1'}\n")
	r, err := New(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Register(context.Background(), mesh.Instance{}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("register: %v", err)
	}
	var mu sync.Mutex
	var seen []mesh.Instance
	var history []int // how many providers each call reported
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.Watch(ctx, func(is []mesh.Instance) { mu.Lock(); seen = is; history = append(history, len(is)); mu.Unlock() })
	}()
	wait := func(n int, addr string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			mu.Lock()
			ok := len(seen) == n && (n == 0 || seen[n-1].Address == addr)
			mu.Unlock()
			if ok {
				return
			}
		}
		t.Fatalf("watch did not see %d providers ending with %s: %v", n, addr, seen)
	}
	wait(1, "10.0.0.1:1")
	write("providers:\n  - {service: a.B, protocol: grpc, address: '10.0.0.1:1'}\n  - {service: a.B, protocol: grpc, address: '10.0.0.2:1'}\n")
	wait(2, "10.0.0.2:1")
	// A broken file is refused and the last good list stays: the watch never reports
	// anything but the two providers until the next good file (three providers) is seen.
	mu.Lock()
	from := len(history)
	mu.Unlock()
	write("providers: [ {service: broken")
	write("providers:\n  - {service: a.B, protocol: grpc, address: '10.0.0.1:1'}\n  - {service: a.B, protocol: grpc, address: '10.0.0.2:1'}\n  - {service: a.B, protocol: grpc, address: '10.0.0.3:1'}\n")
	wait(3, "10.0.0.3:1")
	mu.Lock()
	for _, n := range history[from:] {
		if n != 2 && n != 3 {
			t.Errorf("after the broken file the watch reported %d providers", n)
		}
	}
	mu.Unlock()
	write("providers: []\n")
	wait(0, "")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("watch returned %v", err)
	}
}
