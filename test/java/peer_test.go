package java

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strait-mesh/strait/test/ports"
)

// Main classes of the peer jar.
const (
	providerMain = "org.strait.interop.ProviderMain"
	consumerMain = "org.strait.interop.ConsumerMain"
)

// jvmFlags start a JVM quickly (client compiler only, serial GC) and keep it on IPv4
// loopback sockets; its files (Dubbo's and the Nacos client's caches and logs) go to its
// own directory, given as user.home.
func jvmFlags(home string) []string {
	return []string{
		"-Xms32m", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
		"-Djava.net.preferIPv4Stack=true",
		"-Dfile.encoding=UTF-8", "-Dsun.stdout.encoding=UTF-8", "-Dsun.stderr.encoding=UTF-8",
		"-Duser.home=" + home, "-DJM.LOG.PATH=" + filepath.Join(home, "logs"), "-DJM.SNAPSHOT.PATH=" + home,
		"-Djava.io.tmpdir=" + home,
	}
}

// outputLimit bounds what a process's output buffer keeps (its end).
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

// process is a running Java peer: its output is kept (stdout and stderr, interleaved as
// they come) and its stdout read line by line.
type process struct {
	name string
	cmd  *exec.Cmd
	out  tailBuffer
	// lines receives stdout's lines; it is closed when stdout ends.
	lines chan string
	// done is closed once the process has exited and its output is read; err is then
	// Wait's error.
	done chan struct{}
	err  error

	stopOnce sync.Once
}

// startJava starts a JVM running main of the peer jar with args (and --parent-pid, so it
// exits if this test binary dies), in its own directory under the run's directory.
func startJava(name, main string, args ...string) (*process, error) {
	if suite.jar == "" {
		return nil, errors.New("java peer: no jar")
	}
	home, err := os.MkdirTemp(suite.dir, name+"-")
	if err != nil {
		return nil, fmt.Errorf("java peer %s: %w", name, err)
	}
	argv := append(jvmFlags(home), "-cp", suite.jar, main)
	argv = append(argv, args...)
	argv = append(argv, "--parent-pid="+strconv.Itoa(os.Getpid()))
	p := &process{name: name, lines: make(chan string, 64), done: make(chan struct{})}
	p.cmd = exec.Command("java", argv...)
	p.cmd.Dir = home
	p.cmd.Stderr = &p.out
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("java peer %s: %w", name, err)
	}
	fmt.Fprintf(&p.out, "$ java %s\n", strings.Join(argv, " "))
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("java peer %s: %w", name, err)
	}
	go p.read(stdout) // ends with stdout, when the process exits or is killed
	return p, nil
}

// read copies stdout into the output and the lines channel, then waits for the process.
func (p *process) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(&p.out, line)
		p.lines <- line
	}
	close(p.lines)
	p.err = p.cmd.Wait()
	close(p.done)
}

// stop kills the process (if it still runs) and waits until it is gone.
func (p *process) stop() {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
		}
		// The lines nobody reads any more must not block read.
		go func() {
			for range p.lines {
			}
		}()
		<-p.done
	})
}

// output is what the process printed so far (its end, if long).
func (p *process) output() string { return p.out.String() }

// logOnFailure logs the process's output at the end of t if t failed.
func (p *process) logOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- output of %s ----\n%s---- end of %s ----", p.name, p.output(), p.name)
		}
	})
}

// providerSpec is a Java EchoService provider.
type providerSpec struct {
	kind         string // the registry kind of beta: zookeeper or nacos
	mode         string // register mode: interface, instance or all
	version      string
	group        string
	metadataType string // local (default) or remote
}

func (s providerSpec) String() string {
	md := s.metadataType
	if md == "" {
		md = "local"
	}
	return fmt.Sprintf("%s-%s-%s-%s-%s", s.kind, s.mode, s.version, s.group, md)
}

// provider is a running Java provider.
type provider struct {
	spec providerSpec
	port int
	proc *process
	// err is why it could not start (then proc may be nil).
	err  error
	once sync.Once
}

// Addr is the provider's address, as it registers it.
func (p *provider) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// start starts the provider, registering in registry (zookeeper://… or nacos://…), and
// returns once it printed READY (2 minutes at most), or with p.err set. The process is
// stopped when the test binary ends.
func (p *provider) start(registry string) {
	spec := p.spec
	port, err := ports.ReservePort()
	if err != nil {
		p.err = err
		return
	}
	suite.onClose(port.Close)
	p.port = port.Port()
	md := spec.metadataType
	if md == "" {
		md = "local"
	}
	port.Release()
	p.proc, p.err = startJava("provider-"+spec.String(), providerMain,
		"--registry="+registry, "--protocol=tri", "--port="+strconv.Itoa(p.port),
		"--version="+spec.version, "--group="+spec.group,
		"--register-mode="+spec.mode, "--metadata-type="+md,
		"--application=java-provider-"+spec.String(),
	)
	if p.err != nil {
		return
	}
	suite.onClose(p.proc.stop)
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	for {
		select {
		case line, ok := <-p.proc.lines:
			if !ok {
				<-p.proc.done
				p.err = fmt.Errorf("provider %s exited before READY: %v\n%s", spec, p.proc.err, p.proc.output())
				return
			}
			if line == "READY" {
				go func() { // nothing else is expected on stdout; keep it drained
					for range p.proc.lines {
					}
				}()
				return
			}
		case <-timeout.C:
			p.proc.stop()
			p.err = fmt.Errorf("provider %s: no READY within 2m\n%s", spec, p.proc.output())
			return
		}
	}
}

// check is one line of the consumer's report.
type check struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	MS     int64  `json:"ms"`
}

// consumerSpec is a run of the Java consumer.
type consumerSpec struct {
	registry  string // zookeeper://… or nacos://… (alpha's)
	discovery string // interface or instance
	version   string
	group     string
	plan      string // checks, whoami, load:N (comma-separated)
}

// runConsumer runs the Java consumer to its end (3 minutes at most) and returns its
// checks, in order, each logged. The consumer failing a check is for the caller to judge;
// a consumer that reports nothing, or fails without a failed check, fails the test.
func runConsumer(t *testing.T, name string, spec consumerSpec) []check {
	t.Helper()
	p, err := startJava("consumer-"+name, consumerMain,
		"--registry="+spec.registry, "--protocol=tri", "--discovery="+spec.discovery,
		"--version="+spec.version, "--group="+spec.group, "--plan="+spec.plan,
		"--application=java-consumer-"+name, "--wait-ms=60000",
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	p.logOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var checks []check
	for done := false; !done; {
		select {
		case line, ok := <-p.lines:
			if !ok {
				done = true
				break
			}
			var c check
			if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &c) != nil || c.Check == "" {
				continue // not a report line
			}
			checks = append(checks, c)
			verdict := "ok"
			if !c.OK {
				verdict = "FAILED"
			}
			t.Logf("%s: %s %s (%d ms): %s", name, c.Check, verdict, c.MS, c.Detail)
		case <-ctx.Done():
			p.stop()
			t.Fatalf("consumer %s: still running after 3m", name)
		}
	}
	<-p.done
	failedCheck := false
	for _, c := range checks {
		failedCheck = failedCheck || !c.OK
	}
	switch {
	case len(checks) == 0:
		t.Fatalf("consumer %s reported no check (exit: %v)", name, p.err)
	case p.err != nil && !failedCheck:
		t.Fatalf("consumer %s failed without a failed check: %v", name, p.err)
	case p.err == nil && failedCheck:
		t.Fatalf("consumer %s exited 0 with a failed check", name)
	}
	return checks
}

// requireChecks fails t unless every check passed and each of want was made.
func requireChecks(t *testing.T, name string, checks []check, want ...string) {
	t.Helper()
	made := map[string]bool{}
	var failed []string
	for _, c := range checks {
		made[c.Check] = true
		if !c.OK {
			failed = append(failed, fmt.Sprintf("%s: %s", c.Check, c.Detail))
		}
	}
	for _, w := range want {
		if !made[w] {
			failed = append(failed, w+": not made")
		}
	}
	if len(failed) > 0 {
		t.Fatalf("consumer %s: %d check(s) failed:\n  %s", name, len(failed), strings.Join(failed, "\n  "))
	}
}

// detail is the detail of the check named name ("" if it was not made).
func detail(checks []check, name string) string {
	for _, c := range checks {
		if c.Check == name {
			return c.Detail
		}
	}
	return ""
}
