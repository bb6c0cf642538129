// Package dubbogo builds the dubbo-go v3.3.2 program of the tests that need a real dubbo-go
// peer over the classic Dubbo protocol (prog/: an EchoService provider, or a consumer that
// calls one). The program is a module of its own because dubbo-go's dubbo protocol
// transport (dubbo-getty and its dependencies) is not in Strait's module graph; see
// prog/main.go for its command line.
package dubbogo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
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
