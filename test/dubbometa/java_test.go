package dubbometa

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"dubbo.apache.org/dubbo-go/v3/metadata/info"
	hessian "github.com/apache/dubbo-go-hessian2"
	"github.com/go-zookeeper/zk"

	"github.com/strait-mesh/strait/internal/dubbowire"
	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubboapp"
	"github.com/strait-mesh/strait/registry-sync/zookeeper"
	"github.com/strait-mesh/strait/test/ports"
	testregistries "github.com/strait-mesh/strait/test/registries"
	"github.com/strait-mesh/strait/test/wait"
)

// The Java provider: test/java/peer's EchoService, in a version and group.
const (
	javaEcho    = "org.strait.interop.EchoService"
	javaApp     = "dubbometa-java"
	javaVersion = "1.0.0"
	javaGroup   = "g1"
)

// javaJar returns test/java's peer jar, built (or found in its cache) by its build.sh. It
// skips t where java, javac or mvn is missing.
func javaJar(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"java", "javac", "mvn"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the Java Dubbo provider needs %s (make deps installs Java 17 and Maven): %v", tool, err)
		}
	}
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("bash", filepath.Join(filepath.Dir(file), "..", "java", "build.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	began := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("test/java/build.sh: %v\n%s", err, stderr.String())
	}
	t.Logf("java peer jar in %v", time.Since(began).Round(time.Millisecond))
	return strings.TrimSpace(string(out))
}

// startJavaProvider starts test/java's ProviderMain: EchoService over dubbo:// only on
// 127.0.0.1:port, registered at application level (register-mode instance) in the
// ZooKeeper at zkAddr with local metadata, as application javaApp. It returns once the
// provider printed READY; the JVM is killed when t ends (and exits by itself if this
// process dies).
func startJavaProvider(t *testing.T, jar, zkAddr string, port *ports.Reserved) *process {
	t.Helper()
	home := t.TempDir()
	args := []string{
		"-Xms32m", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
		"-Djava.net.preferIPv4Stack=true", "-Dfile.encoding=UTF-8",
		"-Duser.home=" + home, "-Djava.io.tmpdir=" + home,
		"-cp", jar, "org.strait.interop.ProviderMain",
		"--registry=zookeeper://" + zkAddr, "--protocol=dubbo", "--port=" + strconv.Itoa(port.Port()),
		"--version=" + javaVersion, "--group=" + javaGroup,
		"--register-mode=instance", "--metadata-type=local", "--application=" + javaApp,
		"--parent-pid=" + strconv.Itoa(os.Getpid()),
	}
	cmd := exec.Command("java", args...)
	cmd.Dir = home
	port.Release()
	p := start(t, "java provider", cmd, "READY")
	began := time.Now()
	p.waitReady(t, 2*time.Minute)
	t.Logf("Java provider READY in %v", time.Since(began).Round(time.Millisecond))
	return p
}

type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}

// instance waits (60 s at most) for the application instance node /services/<app>/<addr>
// and returns its host and metadata, as Curator's JSON holds them.
func instance(t *testing.T, zkAddr, app, addr string) (host string, md map[string]string) {
	t.Helper()
	conn, _, err := zk.Connect([]string{zkAddr}, 10*time.Second, zk.WithLogger(zkQuiet{}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	path := "/services/" + app + "/" + addr
	var data []byte
	wait.ForNil(t, 60*time.Second, "instance node "+path, func() error {
		data, _, err = conn.Get(path)
		return err
	})
	var doc struct {
		Address string `json:"address"`
		Payload struct {
			Metadata map[string]string `json:"metadata"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, data)
	}
	t.Logf("%s: %s", path, data)
	return doc.Address, doc.Payload.Metadata
}

// metadataCall calls getMetadataInfo over the dubbo protocol as FetchLocal does, and
// returns the decoded value (to show what dubbo-go-hessian2 makes of it).
func metadataCall(t *testing.T, addr, app, revision string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const svc = "org.apache.dubbo.metadata.MetadataService"
	resp, err := dubbowire.Call(ctx, conn, 7, dubbowire.Request{
		DubboVersion: dubbowire.DubboProtocolVersion, Path: svc, Version: "1.0.0",
		Method: "getMetadataInfo", ParamTypes: "Ljava/lang/String;",
		Attachments: map[string]string{"path": svc, "interface": svc, "version": "1.0.0", "group": app, "timeout": "5000"},
	}, []any{revision}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Err(); err != nil {
		t.Fatal(err)
	}
	return resp.Value
}

// fetch calls dubboapp.FetchLocal with a 10 s bound.
func fetch(t *testing.T, app, host string, md map[string]string, revision string) (*dubboapp.MetadataInfo, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	began := time.Now()
	mi, err := dubboapp.FetchLocal(ctx, app, host, md, revision)
	t.Logf("FetchLocal in %v", time.Since(began).Round(time.Microsecond))
	return mi, err
}

// checkEcho checks that mi describes the Java provider's EchoService at port.
func checkEcho(t *testing.T, mi *dubboapp.MetadataInfo, revision string, port int) {
	t.Helper()
	if mi.App != javaApp || mi.Revision != revision {
		t.Errorf("MetadataInfo app %q revision %q, want %q %q", mi.App, mi.Revision, javaApp, revision)
	}
	key := dubboapp.MatchKey(javaEcho, javaGroup, javaVersion, "dubbo")
	s := mi.Services[key]
	if s == nil {
		t.Fatalf("MetadataInfo has no service %s: %v", key, slices.Sorted(maps.Keys(mi.Services)))
	}
	want := dubboapp.ServiceInfo{Name: javaEcho, Group: javaGroup, Version: javaVersion, Protocol: "dubbo", Port: port, Path: javaEcho}
	got := *s
	got.Params = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("service %s: %+v, want %+v", key, got, want)
	}
	if s.Params["side"] != "provider" || s.Params["application"] != javaApp || !strings.Contains(s.Params["methods"], "echo") {
		t.Errorf("service %s params %v: want side provider, application %s, methods with echo", key, s.Params, javaApp)
	}
}

// TestJavaDubboMetadataService: a Java Dubbo 3.3.6 provider that exports EchoService only
// over dubbo://, registered at application level in ZooKeeper with local metadata, has its
// MetadataService on the dubbo protocol (hessian2); FetchLocal reads its MetadataInfo
// (whether hessian2 decodes it to dubbo-go's registered type or to a map), fails clearly
// when the call cannot succeed, and the ZooKeeper adapter's catalog lists EchoService as a
// dubbo provider.
func TestJavaDubboMetadataService(t *testing.T) {
	jar := javaJar(t)
	zkServer := testregistries.StartT(t, "zookeeper")
	port := ports.Reserve(t, 1)[0]
	startJavaProvider(t, jar, zkServer.Addr, port)
	addr := port.Addr()

	host, md := instance(t, zkServer.Addr, javaApp, addr)
	t.Logf("instance metadata: %s = %s, %s = %q, %s = %q", dubboapp.MetaServiceParams, md[dubboapp.MetaServiceParams],
		dubboapp.MetaServiceV, md[dubboapp.MetaServiceV], dubboapp.MetaStorage, md[dubboapp.MetaStorage])
	var ps map[string]string
	if err := json.Unmarshal([]byte(md[dubboapp.MetaServiceParams]), &ps); err != nil {
		t.Fatalf("%s: %v", dubboapp.MetaServiceParams, err)
	}
	if ps["protocol"] != "dubbo" || ps["port"] != strconv.Itoa(port.Port()) || md[dubboapp.MetaServiceV] != "1.0.0" ||
		md[dubboapp.MetaStorage] != dubboapp.StorageLocal {
		t.Fatalf("instance metadata %v: want the MetadataService (1.0.0) over dubbo on %d, local storage", md, port.Port())
	}
	revision := md[dubboapp.MetaRevision]
	metaAddr := net.JoinHostPort(host, ps["port"])

	var registered *dubboapp.MetadataInfo
	t.Run("registered", func(t *testing.T) {
		// As in cmd/strait: dubbo-go's info package has registered its types.
		v := metadataCall(t, metaAddr, javaApp, revision)
		t.Logf("hessian2 decodes the result to %T", v)
		if _, ok := v.(*info.MetadataInfo); !ok {
			t.Errorf("result is %T, want *info.MetadataInfo", v)
		}
		mi, err := fetch(t, javaApp, host, md, revision)
		if err != nil {
			t.Fatal(err)
		}
		checkEcho(t, mi, revision, port.Port())
		registered = mi
		js, _ := json.Marshal(mi)
		t.Logf("MetadataInfo: %s", js)
		is := dubboapp.Instances(javaApp, host, port.Port(), md, mi)
		if len(is) != 1 || is[0].Protocol != mesh.ProtocolDubbo || is[0].Address != addr ||
			is[0].Service != (mesh.ServiceKey{Name: javaEcho, Version: javaVersion, Group: javaGroup}) {
			t.Errorf("Instances: %v, want EchoService %s/%s over dubbo at %s", is, javaVersion, javaGroup, addr)
		}
	})

	t.Run("unregistered", func(t *testing.T) {
		// As in a binary without dubbo-go's metadata packages: no Go type for the class.
		pojos := []hessian.POJO{&info.MetadataInfo{}, &info.ServiceInfo{}}
		hessian.UnRegisterPOJOs(pojos...)
		t.Cleanup(func() { hessian.RegisterPOJOs(pojos...) })
		v := metadataCall(t, metaAddr, javaApp, revision)
		t.Logf("hessian2 decodes the result to %T", v)
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("result is %T, want map[string]any", v)
		}
		t.Logf("its class %v, fields %v; services %T", m[hessian.ClassKey], slices.Sorted(maps.Keys(m)), m["services"])
		mi, err := fetch(t, javaApp, host, md, revision)
		if err != nil {
			t.Fatal(err)
		}
		checkEcho(t, mi, revision, port.Port())
		if registered != nil && !reflect.DeepEqual(mi, registered) {
			t.Errorf("read as a map: %+v; read as dubbo-go's type: %+v", mi, registered)
		}
	})

	t.Run("errors", func(t *testing.T) {
		// Another application's name is another group: no such service.
		_, err := fetch(t, "no-such-app", host, md, revision)
		var re *dubbowire.RemoteError
		if !errors.As(err, &re) || re.Status == dubbowire.StatusOK || strings.Contains(err.Error(), "\n") {
			t.Errorf("FetchLocal in the wrong group: %v, want a status that is not OK, on one line", err)
		}
		t.Logf("wrong group: %v", err)

		// A revision the provider does not have: a null result.
		_, err = fetch(t, javaApp, host, md, "0123456789abcdef")
		if !errors.Is(err, dubboapp.ErrUnexpectedMetadataInfo) {
			t.Errorf("FetchLocal of an unknown revision: %v, want ErrUnexpectedMetadataInfo", err)
		}
		t.Logf("unknown revision: %v", err)

		// Nobody listens.
		closed := ports.Reserve(t, 1)[0]
		closed.Release()
		_, err = fetch(t, javaApp, "127.0.0.1", withPort(md, closed.Port()), revision)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("FetchLocal of a closed port: %v, want connection refused", err)
		}
		t.Logf("refused: %v", err)

		// A peer that accepts and never answers: the call ends with ctx.
		silent := ports.Listen(t)
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := silent.Accept()
			if err == nil {
				accepted <- c
			}
			close(accepted)
		}()
		t.Cleanup(func() {
			silent.Close()
			for c := range accepted {
				c.Close()
			}
		})
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		began := time.Now()
		_, err = dubboapp.FetchLocal(ctx, javaApp, "127.0.0.1", withPort(md, silent.Addr().(*net.TCPAddr).Port), revision)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 5*time.Second {
			t.Errorf("FetchLocal of a silent peer: %v after %v, want the deadline", err, time.Since(began))
		}
		t.Logf("silent peer: %v after %v", err, time.Since(began).Round(time.Millisecond))

		// Protocols neither path speaks.
		for _, c := range []struct{ protocol, metaV string }{{"rest", "1.0.0"}, {"tri", "1.0.0"}} {
			m := withPort(md, port.Port())
			m[dubboapp.MetaServiceParams] = fmt.Sprintf(`{"protocol":%q,"port":"%d"}`, c.protocol, port.Port())
			m[dubboapp.MetaServiceV] = c.metaV
			if _, err := fetch(t, javaApp, host, m, revision); !errors.Is(err, dubboapp.ErrUnsupportedMetadataService) {
				t.Errorf("FetchLocal of %s with meta-v %s: %v, want ErrUnsupportedMetadataService", c.protocol, c.metaV, err)
			}
		}
	})

	t.Run("catalog", func(t *testing.T) {
		logs := &tailBuffer{}
		reg, err := zookeeper.New([]string{zkServer.Addr}, zookeeper.Options{
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
		key := mesh.ServiceKey{Name: javaEcho, Version: javaVersion, Group: javaGroup}
		match := func(is []mesh.Instance) error {
			for _, i := range is {
				if i.Service == key && i.Protocol == mesh.ProtocolDubbo && i.Address == addr && i.Metadata["application"] == javaApp {
					return nil
				}
			}
			return fmt.Errorf("no EchoService %s/%s over dubbo at %s of %s in %v", javaVersion, javaGroup, addr, javaApp, is)
		}

		cat := registrysync.NewCatalog(reg, nil)
		changed := make(chan struct{}, 1)
		cat.OnChange(func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); cat.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		began := time.Now()
		deadline := time.NewTimer(30 * time.Second)
		defer deadline.Stop()
		for match(cat.Endpoints(key, mesh.ProtocolDubbo)) != nil {
			select {
			case <-changed:
			case <-deadline.C:
				t.Fatalf("catalog (Watch), after 30s: %v\nadapter logs:\n%s", match(cat.Endpoints(key, mesh.ProtocolDubbo)), logs)
			}
		}
		t.Logf("catalog (Watch) lists EchoService over dubbo at %s after %v", addr, time.Since(began).Round(time.Millisecond))

		lctx, lcancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer lcancel()
		all, err := reg.List(lctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := match(all); err != nil {
			t.Errorf("List: %v", err)
		}
		if strings.Contains(logs.String(), "skipping") {
			t.Errorf("the adapter skipped instances:\n%s", logs)
		}
	})
}

// withPort returns a copy of md whose MetadataService is over dubbo on port.
func withPort(md map[string]string, port int) map[string]string {
	m := maps.Clone(md)
	m[dubboapp.MetaServiceParams] = fmt.Sprintf(`{"protocol":"dubbo","port":"%d","version":"1.0.0"}`, port)
	return m
}
