package dubbowire

// End-to-end tests against real dubbo-go v3.3.2 processes: test/dubbogo/prog, built by the
// test and run as a provider (protocol dubbo, no registry) or a consumer. They run as child
// processes because dubbo-go's dubbo transport (dubbo-getty) is not in Strait's module
// graph; see the package comment of test/dubbogo/prog.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dubbologger "github.com/dubbogo/gost/log/logger"

	"github.com/strait-mesh/strait/test/dubbogo"
	"github.com/strait-mesh/strait/test/ports"
)

// The service of test/dubbogo/prog.
const (
	echoInterface = dubbogo.Interface
	echoVersion   = dubbogo.Version
	echoGroup     = dubbogo.Group
)

func TestMain(m *testing.M) {
	dubbologger.SetLoggerLevel("warn") // dubbo-go's codec logs every exception response at info
	code := m.Run()
	dubbogo.Remove()
	os.Exit(code)
}

// dubbogoProgram builds test/dubbogo's program once per test binary and returns its path.
func dubbogoProgram(t *testing.T) string { return dubbogo.Program(t) }

// child is a running process (test/dubbogo/prog, a Java peer), stopped when the test ends.
type child struct {
	name   string
	kill   bool // stop it with SIGKILL at once rather than by closing its stdin
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // stdout, line by line; closed at EOF
	quit   chan struct{} // closed by the cleanup: stdout is discarded from then on
	done   chan struct{} // closed when the process has exited
	errLog string        // file with its stderr
}

// startChild runs test/dubbogo/prog with args.
func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	return startProcess(t, "dubbogo "+args[0], exec.Command(dubbogoProgram(t), args...), false)
}

// startProcess starts cmd; its stdout is read line by line (see line), its stderr kept in a
// file shown if the test fails.
func startProcess(t *testing.T, name string, cmd *exec.Cmd, kill bool) *child {
	t.Helper()
	c := &child{
		name:   name,
		kill:   kill,
		cmd:    cmd,
		lines:  make(chan string, 16),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		errLog: filepath.Join(t.TempDir(), "stderr"),
	}
	stderr, err := os.Create(c.errLog)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	c.cmd.Stderr = stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reader sync.WaitGroup
	reader.Add(1)
	go func() { // owned by c: ends at the process's EOF
		defer reader.Done()
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			case <-c.quit:
			}
		}
	}()
	go func() { // owned by c: ends when the process exits
		reader.Wait() // Wait closes stdout: read it all first
		_ = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		close(c.quit)
		_ = c.stdin.Close() // a dubbogo provider exits at EOF on stdin
		if c.kill {
			_ = c.cmd.Process.Kill()
		}
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("%s stderr (tail):\n%s", c.name, c.stderrTail())
		}
	})
	return c
}

func (c *child) stderrTail() string {
	b, _ := os.ReadFile(c.errLog)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// line waits for the child's line that starts with prefix (dubbo-go writes its error logs
// to stdout too) and returns the rest of it.
func (c *child) line(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				<-c.done
				t.Fatalf("%s exited (%v) without a line %q:\n%s", c.name, c.cmd.ProcessState, prefix, c.stderrTail())
			}
			if rest, found := strings.CutPrefix(l, prefix); found {
				return rest
			}
		case <-deadline.C:
			t.Fatalf("no line %q from %s in %v:\n%s", prefix, c.name, timeout, c.stderrTail())
		}
	}
}

// startProvider runs a dubbo-go provider of EchoService and returns its address.
func startProvider(t *testing.T) string {
	t.Helper()
	r := ports.Reserve(t, 1)[0]
	addr := r.Addr()
	r.Release() // dubbo-go binds the port itself
	c := startChild(t, "provider", addr)
	if rest := c.line(t, "ready", 2*time.Minute); rest != "" {
		t.Fatalf("provider says ready%s", rest)
	}
	return addr
}

func echoRequest(method, paramTypes string) Request {
	return Request{
		Path:        echoInterface,
		Version:     echoVersion,
		Method:      method,
		ParamTypes:  paramTypes,
		Attachments: map[string]string{"group": echoGroup},
	}
}

// TestCallDubbogoProvider calls a dubbo-go provider with Call and raw frames.
func TestCallDubbogoProvider(t *testing.T) {
	addr := startProvider(t)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := t.Context()
	const timeout = 20 * time.Second

	resp, err := Call(ctx, conn, 1, echoRequest("Echo", "Ljava/lang/String;"), []any{"hello 世界 😀"}, timeout)
	if err != nil || resp.Err() != nil {
		t.Fatalf("Echo: %v %v", err, resp.Err())
	}
	if resp.Value != "hello 世界 😀" || resp.Header.ID() != 1 || resp.Flag != ResultValueWithAttachments {
		t.Fatalf("Echo: %s %s %#v", resp.Header, resp.Flag, resp.Value)
	}
	t.Logf("Echo: %s %s %q, attachments %v", resp.Header, resp.Flag, resp.Value, resp.Attachments)

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<15) // 512 KiB: dubbo-go's default limit is 1,024,000 bytes
	resp, err = Call(ctx, conn, 2, echoRequest("EchoBytes", "[B"), []any{big}, timeout)
	if err != nil || resp.Err() != nil || !bytes.Equal(asBytes(resp.Value), big) {
		t.Fatalf("EchoBytes: %v %v, %d bytes back", err, resp.Err(), len(asBytes(resp.Value)))
	}

	resp, err = Call(ctx, conn, 3, echoRequest("EchoUser", "Lorg/apache/dubbo/strait/User;"),
		[]any{&testUser{ID: "u1", Name: "n", Age: 41}}, timeout)
	if u, ok := resp.Value.(*testUser); err != nil || !ok || u.Age != 42 || u.ID != "u1" {
		t.Fatalf("EchoUser: %v %v %#v", err, resp.Err(), resp.Value)
	}

	resp, err = Call(ctx, conn, 4, echoRequest("Fail", "Ljava/lang/String;"), []any{"boom"}, timeout)
	var re *RemoteError
	if err != nil || !errors.As(resp.Err(), &re) || re.Status != StatusOK || !strings.Contains(re.Error(), "fail: boom") {
		t.Fatalf("Fail: %v %v", err, resp.Err())
	}
	t.Logf("Fail: %s %s: %v (%T)", resp.Header, resp.Flag, resp.Err(), resp.Exception)

	// An unknown service: dubbo-go answers OK with an exception, not SERVICE_NOT_FOUND.
	missing := echoRequest("Echo", "Ljava/lang/String;")
	missing.Path += "Missing"
	resp, err = Call(ctx, conn, 5, missing, []any{"x"}, timeout)
	if err != nil || resp.Err() == nil || !strings.Contains(resp.Err().Error(), "don't have this exporter") {
		t.Fatalf("unknown service: %v %v", err, resp.Err())
	}
	t.Logf("unknown service: %s %s: %v", resp.Header, resp.Flag, resp.Err())

	resp, err = Call(ctx, conn, 6, echoRequest("NoSuchMethod", "Ljava/lang/String;"), []any{"x"}, timeout)
	if err != nil || resp.Err() == nil {
		t.Fatalf("unknown method: %v %v", err, resp.Err())
	}
	t.Logf("unknown method: %s %s: %v", resp.Header, resp.Flag, resp.Err())

	// A heartbeat, then a oneway call (never answered) and a two-way one, in raw frames.
	var out []byte
	out = AppendHeartbeatRequest(out, 100)
	out, err = AppendRequest(out, 101, echoRequest("Echo", "Ljava/lang/String;"), []any{"oneway"}, false)
	if err != nil {
		t.Fatal(err)
	}
	out, err = AppendRequest(out, 102, echoRequest("Echo", "Ljava/lang/String;"), []any{"two-way"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	var got []string
	for range 2 {
		f, h, err := ReadFrame(r, DefaultMaxBody, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ParseResponse(f)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d event=%v %s %v", h.ID(), h.Event(), h.Status(), resp.Value))
		if h.Event() {
			t.Logf("dubbo-go heartbeat answer: % x", f)
		}
	}
	slices.Sort(got)
	if want := []string{"100 event=true OK <nil>", "102 event=false OK two-way"}; !slices.Equal(got, want) {
		t.Fatalf("answers %q, want %q (the oneway call unanswered)", got, want)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	// Call gives up with its context, and with its timeout.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Call(cancelled, conn, 7, echoRequest("Echo", "Ljava/lang/String;"), []any{"x"}, timeout); !errors.Is(err, context.Canceled) {
		t.Errorf("Call with a cancelled context: %v", err)
	}
	conn2, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	var ne net.Error
	if _, err := Call(ctx, conn2, 8, echoRequest("Echo", "Ljava/lang/String;"), []any{"x"}, time.Nanosecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Call with a timeout of 1ns: %v", err)
	}
}

func asBytes(v any) []byte {
	b, _ := v.([]byte)
	return b
}

// TestRelayDubbogoConsumer puts a relay built on this package between a dubbo-go consumer
// and a dubbo-go provider, as Strait's gateways will be: frames are read with ReadFrame,
// parsed with RequestParser, forwarded as bytes with their IDs remapped by SetID, and calls
// to a service the relay has no route for are answered with AppendErrorResponse.
func TestRelayDubbogoConsumer(t *testing.T) {
	provider := startProvider(t)
	relay := startRelay(t, provider, echoInterface+"Missing")

	c := startChild(t, "consumer", relay.addr)
	var res struct {
		Echo, EchoErr, BytesErr, FailErr, UserErr, UnknownErr string
		BytesOK                                               bool
		UserAge                                               int32
	}
	if err := json.Unmarshal([]byte(c.line(t, "result ", 2*time.Minute)), &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("consumer: %+v", res)
	if res.Echo != "hello" || !res.BytesOK || res.UserAge != 42 || !strings.Contains(res.FailErr, "fail: boom") {
		t.Errorf("consumer results through the relay: %+v", res)
	}
	if !strings.Contains(res.UnknownErr, "no route to "+echoInterface+"Missing") {
		t.Errorf("the consumer reads the relay's SERVICE_NOT_FOUND answer as %q", res.UnknownErr)
	}

	calls := relay.calls()
	var methods []string
	for _, call := range calls {
		methods = append(methods, call.req.Method)
		if call.header.Serialization() != SerializationHessian2 || call.req.DubboVersion != "2.0.2" ||
			call.req.Version != echoVersion || call.req.Group() != echoGroup || !strings.HasPrefix(call.req.Interface(), echoInterface) {
			t.Errorf("call %s: %+v", call.header, call.req)
		}
	}
	if want := []string{"Echo", "EchoBytes", "EchoUser", "Fail", "Echo"}; !slices.Equal(methods, want) {
		t.Errorf("methods %q, want %q", methods, want)
	}
	if len(calls) > 0 {
		t.Logf("what a dubbo-go consumer sends: %s, %+v", calls[0].header, calls[0].req)
	}
}

type relayedCall struct {
	header Header
	req    Request
}

type testRelay struct {
	addr     string
	provider string
	noRoute  string // the service answered with SERVICE_NOT_FOUND

	mu   sync.Mutex
	seen []relayedCall
	wg   sync.WaitGroup
}

// startRelay listens on a loopback port and relays each connection to provider; it stops
// when the test ends.
func startRelay(t *testing.T, provider, noRoute string) *testRelay {
	ln := ports.Listen(t)
	r := &testRelay{addr: ln.Addr().String(), provider: provider, noRoute: noRoute}
	var mu sync.Mutex
	var open []net.Conn
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(t, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *testRelay) calls() []relayedCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// lockedConn serializes writes: the relay's two loops both write to each side.
type lockedConn struct {
	net.Conn
	mu sync.Mutex
}

func (c *lockedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.Write(b)
}

func (r *testRelay) serve(t *testing.T, consumer net.Conn) {
	defer consumer.Close()
	pc, err := net.DialTimeout("tcp", r.provider, 5*time.Second)
	if err != nil {
		t.Errorf("relay: dial the provider: %v", err)
		return
	}
	up, down := &lockedConn{Conn: pc}, &lockedConn{Conn: consumer}
	var (
		idMu   sync.Mutex
		origID = map[uint64]uint64{} // provider-side ID -> consumer's ID
		nextID atomic.Uint64
	)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // provider -> consumer
		defer wg.Done()
		defer consumer.Close()
		br := bufio.NewReader(pc)
		var buf []byte
		for {
			f, h, err := ReadFrame(br, DefaultMaxBody, buf[:0])
			if err != nil {
				return
			}
			buf = f
			if h.IsRequest() { // the provider's own heartbeat
				if h.TwoWay() {
					_, _ = up.Write(AppendHeartbeatResponse(nil, h.ID()))
				}
				continue
			}
			idMu.Lock()
			id, ok := origID[h.ID()]
			delete(origID, h.ID())
			idMu.Unlock()
			if !ok {
				continue
			}
			SetID(f, id)
			if _, err := down.Write(f); err != nil {
				return
			}
		}
	}()
	defer wg.Wait()
	defer pc.Close()

	br := bufio.NewReader(consumer)
	var (
		buf    []byte
		parser RequestParser
	)
	for { // consumer -> provider
		f, h, err := ReadFrame(br, DefaultMaxBody, buf[:0])
		if err != nil {
			var tooLarge *BodyTooLargeError
			if errors.As(err, &tooLarge) && tooLarge.Header.IsRequest() {
				_, _ = down.Write(AppendErrorResponse(nil, tooLarge.Header.ID(), StatusBadRequest, err.Error()))
			}
			return
		}
		buf = f
		if !h.IsRequest() {
			continue // an answer to a heartbeat of ours: we send none
		}
		if !h.Event() {
			var req Request
			if err := parser.Parse(f, &req); err != nil {
				_, _ = down.Write(AppendErrorResponse(nil, h.ID(), StatusBadRequest, err.Error()))
				continue
			}
			r.mu.Lock()
			r.seen = append(r.seen, relayedCall{header: h, req: req})
			r.mu.Unlock()
			if req.Interface() == r.noRoute {
				_, _ = down.Write(AppendErrorResponse(nil, h.ID(), StatusServiceNotFound, "no route to "+req.Interface()))
				continue
			}
		}
		id := nextID.Add(1)
		if h.TwoWay() {
			idMu.Lock()
			origID[id] = h.ID()
			idMu.Unlock()
		}
		SetID(f, id)
		if _, err := up.Write(f); err != nil {
			return
		}
	}
}
