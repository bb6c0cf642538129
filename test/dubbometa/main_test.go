// Package dubbometa checks that Strait reads the MetadataInfo of application-level Dubbo
// providers whose MetadataService speaks the dubbo protocol (hessian2) and whose metadata
// stays with them (metadata-type local, Dubbo's default): a real Apache Dubbo 3.3.6
// provider that exports only dubbo:// (test/java/peer's ProviderMain), registered at
// application level in a real ZooKeeper (test/registries). The test reads the instance
// from ZooKeeper, calls dubboapp.FetchLocal, and checks that the ZooKeeper adapter's
// catalog lists the provider's service as a dubbo provider.
//
// This binary links dubbo-go's metadata/info package, as cmd/strait does: dubbo-go-hessian2
// then decodes a Java MetadataInfo to dubbo-go's *info.MetadataInfo. The test also
// unregisters those types for a while to read the answer as the map hessian2 makes of an
// unregistered class, which is what binaries without dubbo-go's metadata packages get.
//
// dubbo-go's own MetadataService over dubbo (metadata-service-protocol dubbo, dubbo-go's
// default) is not tested: dubbo-go v3.3.2 exports it at an address without a host, so it
// listens on every interface, and tests stay on loopback.
//
// The test is skipped where java, javac or mvn is missing.
package dubbometa

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// outputLimit bounds what a child process's output buffer keeps (its end).
const outputLimit = 256 << 10

// tailBuffer keeps the last outputLimit bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	b       []byte
	dropped int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - outputLimit; over > 0 {
		t.dropped += over
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped > 0 {
		return fmt.Sprintf("[… %d bytes dropped]\n%s", t.dropped, t.b)
	}
	return string(t.b)
}

// process is a child process of a test: its output is kept (stdout and stderr
// interleaved). It is killed when the test ends, pass or fail, and its output is logged if
// the test failed.
type process struct {
	name      string
	cmd       *exec.Cmd
	out       tailBuffer
	readyLine string
	ready     chan struct{} // closed when stdout has had readyLine
	done      chan struct{} // closed once the process has exited and its output is read
	err       error         // Wait's error, once done is closed
}

// start starts cmd (its Stdout and Stderr must be unset) as the test's child process;
// waitReady waits for it to print readyLine on a line of its own.
func start(t *testing.T, name string, cmd *exec.Cmd, readyLine string) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, readyLine: readyLine, ready: make(chan struct{}), done: make(chan struct{})}
	cmd.Stderr = &p.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&p.out, "$ %s\n", strings.Join(cmd.Args, " "))
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go p.read(stdout)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("---- output of %s ----\n%s---- end of %s ----", name, p.out.String(), name)
		}
	})
	return p
}

// read copies stdout into the output, closing ready at readyLine, then waits for the
// process.
func (p *process) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	seen := false
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(&p.out, line)
		if !seen && line == p.readyLine {
			seen = true
			close(p.ready)
		}
	}
	_, _ = io.Copy(&p.out, stdout) // a line too long for the scanner: keep the rest
	p.err = p.cmd.Wait()
	close(p.done)
}

// stop kills the process if it still runs and waits until it is gone.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// waitReady waits (at most timeout) for the process to print its ready line.
func (p *process) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.ready:
	case <-p.done:
		select {
		case <-p.ready: // printed it, then exited: the caller finds out
			return
		default:
		}
		t.Fatalf("%s exited before printing %q: %v", p.name, p.readyLine, p.err)
	case <-timer.C:
		t.Fatalf("%s did not print %q within %v", p.name, p.readyLine, timeout)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
