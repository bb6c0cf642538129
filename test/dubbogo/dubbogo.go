// Package dubbogo builds the dubbo-go v3.3.2 program of the tests that need a real dubbo-go
// peer over the classic Dubbo protocol (prog/: an EchoService provider, or a consumer that
// calls one). The program is a module of its own because dubbo-go's dubbo protocol
// transport (dubbo-getty and its dependencies) is not in Strait's module graph; see
// prog/main.go for its command line.
package dubbogo

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strait-mesh/strait/test/ports"
)

// The service the program provides and calls.
const (
	Interface = "org.apache.dubbo.strait.EchoService"
	Version   = "1.0.0"
	Group     = "strait"
)

var bin struct {
	once sync.Once
	path string
	err  error
}

// Program builds the program once per test binary (into a directory removed by Cleanup)
// and returns its path. The build takes seconds once the module cache holds dubbo-go's
// dependencies (`make deps` downloads them), about two minutes before.
func Program(t testing.TB) string {
	t.Helper()
	bin.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			bin.err = fmt.Errorf("dubbogo: the go command is needed to build the program: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "strait-dubbogo-")
		if err != nil {
			bin.err = fmt.Errorf("dubbogo: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out := filepath.Join(dir, "dubbogo")
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, ".")
		cmd.Dir = Dir()
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			bin.err = fmt.Errorf("dubbogo: go build %s: %w\n%s", cmd.Dir, err, b)
			return
		}
		bin.path = out
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}

// Remove removes the built program; a TestMain calls it after m.Run.
func Remove() {
	if bin.path != "" {
		os.RemoveAll(filepath.Dir(bin.path))
	}
}

// Dir is the program's source directory.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "prog")
}

// Provider runs the program's provider on a port of its own until the test ends, and
// returns its address once it accepts connections.
func Provider(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and starts a dubbo-go process")
	}
	prog := Program(t)
	r := ports.Reserve(t, 1)[0]
	addr := r.Addr()
	r.Release()
	cmd := exec.Command(prog, "provider", addr)
	errLog, err := os.Create(filepath.Join(t.TempDir(), "provider.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errLog.Close()
	cmd.Stderr = errLog
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() { // ends with the process (EOF on its stdout)
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if !ok && sc.Text() == "ready" {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close() // the provider exits at EOF on stdin
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(errLog.Name())
			t.Logf("dubbo-go provider stderr:\n%s", tail(b))
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			b, _ := os.ReadFile(errLog.Name())
			t.Fatalf("dubbo-go provider exited before it was ready:\n%s", tail(b))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("dubbo-go provider not ready in 60 s")
	}
	return addr
}

// Consumer runs the program's consumer against addr (a provider, or a gateway that
// carries the service) and returns its result: a JSON object.
func Consumer(t testing.TB, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, Program(t), "consumer", addr).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "result "); ok {
			return rest
		}
	}
	t.Fatalf("dubbo-go consumer %s: %v, no result:\n%s", addr, err, tail(out))
	return ""
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
