package java

import (
	"bufio"
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

// peerLogEnv names the environment variable that sets the SLF4J level of the Java peers'
// logs (trace, debug, info, warn, error; default warn), which a failed test shows.
const peerLogEnv = "STRAIT_JAVA_PEER_LOG"

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
	if lvl := os.Getenv(peerLogEnv); lvl != "" {
		argv = append(argv, "--log-level="+lvl)
	}
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
	protocol     string // tri or dubbo, as Dubbo names them
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
	return fmt.Sprintf("%s-%s-%s-%s-%s-%s", s.protocol, s.kind, s.mode, s.version, s.group, md)
}

// provider is a running Java provider.
type provider struct {
	spec providerSpec
	port int
	proc *process
	// err is why it could not start (then proc may be nil).
	err  error
	once sync.Once
	// took is how long it took to start: from its JVM's start until beta's controlplane listed it.
	took time.Duration
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
		"--registry="+registry, "--protocol="+spec.protocol, "--port="+strconv.Itoa(p.port),
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
	protocol  string // tri or dubbo
	registry  string // zookeeper://… or nacos://… (alpha's)
	discovery string // interface or instance
	version   string
	group     string
	plan      string // checks, whoami, load:N, load:N:Dms, … (comma-separated)
	egress    string // the egress the missing check calls directly (host:port)
}

// consumerLimit bounds a consumer's run.
const consumerLimit = 3 * time.Minute

// consumer is a running Java consumer. Its checks are read as they come, by a goroutine that
// ends with the process's stdout.
type consumer struct {
	name string
	p    *process
	// seen receives each check as it comes (buffered: nobody has to read it).
	seen chan check
	// done is closed once the process's stdout ended; checks is then complete.
	done   chan struct{}
	checks []check
}

// startConsumer starts the Java consumer; every check it reports is logged as it comes. It
// is stopped at the end of t, and its output logged if t failed.
func startConsumer(t *testing.T, name string, spec consumerSpec) *consumer {
	t.Helper()
	args := []string{
		"--registry=" + spec.registry, "--protocol=" + spec.protocol, "--discovery=" + spec.discovery,
		"--version=" + spec.version, "--group=" + spec.group, "--plan=" + spec.plan,
		"--application=java-consumer-" + name, "--wait-ms=60000",
	}
	if spec.egress != "" {
		args = append(args, "--egress="+spec.egress)
	}
	p, err := startJava("consumer-"+name, consumerMain, args...)
	if err != nil {
		t.Fatal(err)
	}
	c := &consumer{name: name, p: p, seen: make(chan check, 256), done: make(chan struct{})}
	go c.read(t) // ends with the process's stdout
	t.Cleanup(func() {
		p.stop()
		<-c.done // no logging after t ends
	})
	p.logOnFailure(t)
	return c
}

// read collects and logs the consumer's checks until its stdout ends.
func (c *consumer) read(t *testing.T) {
	defer close(c.done)
	for line := range c.p.lines {
		var ch check
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &ch) != nil || ch.Check == "" {
			continue // not a report line
		}
		c.checks = append(c.checks, ch)
		verdict := "ok"
		if !ch.OK {
			verdict = "FAILED"
		}
		t.Logf("%s: %s %s (%d ms): %s", c.name, ch.Check, verdict, ch.MS, ch.Detail)
		select {
		case c.seen <- ch:
		default:
		}
	}
}

// ended reports whether the consumer's stdout ended (it exited, or is exiting).
func (c *consumer) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitCheck waits (limit at most) until the consumer reports the check named name and
// fails t unless it passed.
func (c *consumer) waitCheck(t *testing.T, name string, limit time.Duration) check {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case ch := <-c.seen:
			if ch.Check != name {
				continue
			}
			if !ch.OK {
				t.Fatalf("consumer %s: %s failed: %s", c.name, name, ch.Detail)
			}
			return ch
		case <-c.done:
			t.Fatalf("consumer %s ended without reporting %s (exit: %v)", c.name, name, c.p.err)
		case <-timer.C:
			t.Fatalf("consumer %s: no %s within %v", c.name, name, limit)
		}
	}
}

// wait waits for the consumer's end (consumerLimit at most) and returns
// its checks, in order. The consumer failing a check is for the caller to judge; a
// consumer that reports nothing, or fails without a failed check, fails the test.
func (c *consumer) wait(t *testing.T) []check {
	t.Helper()
	timer := time.NewTimer(consumerLimit)
	defer timer.Stop()
	select {
	case <-c.done:
	case <-timer.C:
		c.p.stop()
		t.Fatalf("consumer %s: still running after %v", c.name, consumerLimit)
	}
	<-c.p.done
	failedCheck := false
	for _, ch := range c.checks {
		failedCheck = failedCheck || !ch.OK
	}
	switch {
	case len(c.checks) == 0:
		t.Fatalf("consumer %s reported no check (exit: %v)", c.name, c.p.err)
	case c.p.err != nil && !failedCheck:
		t.Fatalf("consumer %s failed without a failed check: %v", c.name, c.p.err)
	case c.p.err == nil && failedCheck:
		t.Fatalf("consumer %s exited 0 with a failed check", c.name)
	}
	return c.checks
}

// runConsumer runs the Java consumer to its end and returns its checks (see wait).
func runConsumer(t *testing.T, name string, spec consumerSpec) []check {
	t.Helper()
	return startConsumer(t, name, spec).wait(t)
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
