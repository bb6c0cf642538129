package dubbowire

// Tests against real Java Apache Dubbo 3.3 peers over the dubbo protocol: test/java's
// EchoService provider (built by test/java/build.sh), and testdata/java/JavaConsumer.java
// compiled against the same jar. They are skipped where java, javac or mvn is missing, as
// test/java's are.

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/strait-mesh/strait/test/ports"
	"github.com/strait-mesh/strait/test/wait"
)

const javaEcho = "org.strait.interop.EchoService"

// javaPojo is test/java's org.strait.interop.Pojo.
type javaPojo struct {
	Name   string
	Count  int32
	ID     int64 `hessian:"id"` // the default would be "iD"
	Ratio  float64
	Flag   bool
	Tags   []string
	Scores map[string][]int32
	Child  *javaPojo
}

func (*javaPojo) JavaClassName() string { return "org.strait.interop.Pojo" }

func init() { hessian.RegisterPOJO(&javaPojo{}) }

var javaPeer struct {
	once      sync.Once
	jar, skip string
	err       error
}

// javaJar returns test/java's peer jar, built (or found in its cache) by build.sh.
func javaJar(t *testing.T) string {
	t.Helper()
	javaPeer.once.Do(func() {
		for _, tool := range []string{"java", "javac", "mvn"} {
			if _, err := exec.LookPath(tool); err != nil {
				javaPeer.skip = tool + " not found"
				return
			}
		}
		script := filepath.Join("..", "..", "test", "java", "build.sh")
		if _, err := os.Stat(script); err != nil {
			javaPeer.skip = "no test/java/build.sh: " + err.Error()
			return
		}
		cmd := exec.Command("bash", script)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			javaPeer.err = err
			return
		}
		lines := strings.Fields(string(out))
		if len(lines) == 0 {
			javaPeer.err = errors.New("test/java/build.sh printed no jar")
			return
		}
		javaPeer.jar = lines[len(lines)-1]
	})
	if javaPeer.skip != "" {
		t.Skip(javaPeer.skip)
	}
	if javaPeer.err != nil {
		t.Fatalf("test/java/build.sh: %v", javaPeer.err)
	}
	return javaPeer.jar
}

func javaRequest(method, paramTypes string) Request {
	return Request{Path: javaEcho, Version: "1.0.0", Method: method, ParamTypes: paramTypes,
		Attachments: map[string]string{"group": "g1"}}
}

// TestCallJavaProvider calls a Java Dubbo 3.3 provider (protocol dubbo, no registry).
func TestCallJavaProvider(t *testing.T) {
	jar := javaJar(t)
	r := ports.Reserve(t, 1)[0]
	port := r.Port()
	r.Release()
	const app = "dubbowire-java"
	c := startProcess(t, "java provider", exec.Command("java", "-cp", jar, "org.strait.interop.ProviderMain",
		"--registry=N/A", "--protocol=dubbo", "--port="+strconv.Itoa(port), "--version=1.0.0", "--group=g1",
		"--application="+app, "--register-mode=instance", // instance: the MetadataService is exported too
		"--parent-pid="+strconv.Itoa(os.Getpid())), true)
	c.line(t, "READY", 2*time.Minute)

	conn, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := t.Context()
	const timeout = 20 * time.Second
	var id uint64
	call := func(req Request, args ...any) Response {
		t.Helper()
		id++
		resp, err := Call(ctx, conn, id, req, args, timeout)
		if err != nil {
			t.Fatalf("%s: %v", req.Method, err)
		}
		return resp
	}

	resp := call(javaRequest("echo", "Ljava/lang/String;"), "hello 世界 😀")
	if resp.Err() != nil || resp.Value != "hello 世界 😀" || resp.Flag != ResultValueWithAttachments || resp.Attachments["dubbo"] != "2.0.2" {
		t.Fatalf("echo: %v %s %#v %v", resp.Err(), resp.Flag, resp.Value, resp.Attachments)
	}

	p := &javaPojo{Name: "n", Count: 2, ID: 1 << 40, Ratio: 0.5, Flag: true, Tags: []string{"a", "b"},
		Scores: map[string][]int32{"x": {1, 2}}, Child: &javaPojo{Name: "child", Tags: []string{}, Scores: map[string][]int32{}}}
	resp = call(javaRequest("echoPojo", "Lorg/strait/interop/Pojo;"), p)
	if got, ok := resp.Value.(*javaPojo); resp.Err() != nil || !ok || got.Name != "n" || got.ID != 1<<40 || got.Child == nil ||
		got.Child.Name != "child" || len(got.Scores["x"]) != 2 {
		t.Fatalf("echoPojo: %v %#v", resp.Err(), resp.Value)
	}

	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	resp = call(javaRequest("echoBytes", "[B"), big)
	if b := asBytes(resp.Value); resp.Err() != nil || string(b) != string(big) {
		t.Fatalf("echoBytes: %v, %d bytes back", resp.Err(), len(b))
	}

	resp = call(javaRequest("fail", "Ljava/lang/String;"), "boom")
	if err := resp.Err(); err == nil || resp.Header.Status() != StatusOK || !resp.Flag.HasException() || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("fail: %s %s %v", resp.Header, resp.Flag, err)
	}
	t.Logf("fail: %s %s, exception %T: %v", resp.Header, resp.Flag, resp.Exception, resp.Err())

	// A oneway notification, counted by the provider.
	frame, err := AppendRequest(nil, 1000, javaRequest("notify", "Ljava/lang/String;"), []any{"n"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the provider counts the oneway notify", func() bool {
		return call(javaRequest("notified", "")).Value == int64(1)
	})

	// Java answers a call to a service or method it does not have with BAD_REQUEST: it
	// decodes the arguments by the method's declared types and fails to find them.
	missing := javaRequest("echo", "Ljava/lang/String;")
	missing.Path = "org.strait.interop.Missing"
	resp = call(missing, "x")
	if resp.Header.Status() != StatusBadRequest || !strings.Contains(resp.ErrorMessage, "Fail to decode request") {
		t.Fatalf("unknown service: %s %q", resp.Header, resp.ErrorMessage)
	}
	t.Logf("unknown service: %s %q", resp.Header, resp.ErrorMessage)

	// Its MetadataService, in group <application>, version 1.0.0. Without a registry it
	// holds no MetadataInfo: the calls show the service and its methods answer.
	meta := Request{Path: "org.apache.dubbo.metadata.MetadataService", Version: "1.0.0",
		Attachments: map[string]string{"group": app}}
	meta.Method, meta.ParamTypes = "getMetadataInfo", "Ljava/lang/String;"
	resp = call(meta, "0")
	if resp.Err() != nil || resp.Header.Status() != StatusOK || resp.Flag != ResultNullValueWithAttachments {
		t.Fatalf("getMetadataInfo: %s %s %v", resp.Header, resp.Flag, resp.Err())
	}
	meta.Method, meta.ParamTypes = "getMetadataInfos", ""
	if resp = call(meta); resp.Err() != nil || resp.Flag != ResultValueWithAttachments {
		t.Fatalf("getMetadataInfos: %s %s %v %#v", resp.Header, resp.Flag, resp.Err(), resp.Value)
	}

	// A heartbeat.
	if _, err := conn.Write(AppendHeartbeatRequest(nil, 2000)); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	f, h, err := ReadFrame(bufio.NewReader(conn), DefaultMaxBody, nil)
	if err != nil || !h.Event() || h.IsRequest() || h.ID() != 2000 || h.Status() != StatusOK || string(f[HeaderLen:]) != "N" {
		t.Fatalf("heartbeat answer: %v % x", err, f)
	}
}

// TestJavaConsumer runs a Java Dubbo 3.3 consumer against a listener of the test that
// answers every call with AppendErrorResponse: with the default serialization it sends
// hessian2, which ParseRequest reads; with prefer.serialization=fastjson2,hessian2 on the
// provider URL (a Dubbo 3.2 provider's default) it sends fastjson2, which ParseRequest
// refuses; either way it reads the hessian2 error answer.
func TestJavaConsumer(t *testing.T) {
	jar := javaJar(t)
	classes := t.TempDir()
	if out, err := exec.Command("javac", "-cp", jar, "-d", classes, filepath.Join("testdata", "java", "JavaConsumer.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}

	type seen struct {
		header Header
		req    Request
		err    error
	}
	ln := ports.Listen(t)
	calls := make(chan seen, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() { // the listener's owner: ends when it is closed
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { // ends when the consumer closes, or the listener's cleanup does
				defer wg.Done()
				defer conn.Close()
				stop := make(chan struct{})
				defer close(stop)
				wg.Add(1)
				go func() { // closes conn when the test ends
					defer wg.Done()
					select {
					case <-stop:
					case <-t.Context().Done():
						conn.Close()
					}
				}()
				br := bufio.NewReader(conn)
				for {
					f, h, err := ReadFrame(br, DefaultMaxBody, nil)
					if err != nil {
						return
					}
					if h.IsRequest() && h.Event() {
						_, _ = conn.Write(AppendHeartbeatResponse(nil, h.ID()))
						continue
					}
					req, err := ParseRequest(f)
					select {
					case calls <- seen{h, req, err}:
					default:
					}
					_, _ = conn.Write(AppendErrorResponse(nil, h.ID(), StatusServiceNotFound, "dubbowire test: no route to "+req.Interface()))
				}
			}()
		}
	}()

	for _, tc := range []struct {
		params        string
		serialization Serialization
	}{
		{"", SerializationHessian2},
		{"?prefer.serialization=fastjson2,hessian2", SerializationFastjson2},
	} {
		t.Run("params="+tc.params, func(t *testing.T) {
			url := "dubbo://" + ln.Addr().String() + "/" + javaEcho + tc.params
			c := startProcess(t, "java consumer", exec.Command("java", "-cp", jar+string(os.PathListSeparator)+classes,
				"dubbowire.JavaConsumer", url), true)
			result := c.line(t, "RESULT ", 2*time.Minute)
			t.Logf("Java consumer: %s", result)
			if !strings.HasPrefix(result, "err ") || !strings.Contains(result, "dubbowire test: no route to") {
				t.Errorf("the Java consumer reads our SERVICE_NOT_FOUND answer as %q", result)
			}
			var s seen
			select {
			case s = <-calls:
			default:
				t.Fatal("no call reached the listener")
			}
			if s.header.Serialization() != tc.serialization {
				t.Fatalf("the Java consumer sends %s, want %s", s.header, tc.serialization)
			}
			if tc.serialization != SerializationHessian2 {
				if !errors.Is(s.err, ErrUnsupportedSerialization) {
					t.Fatalf("ParseRequest of fastjson2: %v", s.err)
				}
				return
			}
			if s.err != nil {
				t.Fatal(s.err)
			}
			r := s.req
			if r.DubboVersion != "2.0.2" || r.Path != javaEcho || r.Version != "1.0.0" || r.Method != "echo" ||
				r.ParamTypes != "Ljava/lang/String;" || r.Group() != "g1" || r.Attachments["timeout"] != "10000" ||
				r.Attachments["remote.application"] != "dubbowire-java-consumer" {
				t.Errorf("what the Java consumer sends: %+v", r)
			}
			t.Logf("what a Java 3.3 consumer sends: %s %+v", s.header, r)
		})
	}
}
