// Package java checks Strait against real Java Apache Dubbo 3.3 peers: Java EchoService
// providers (test/java/peer, a plain Java interface over Triple or the dubbo protocol)
// register in beta's ZooKeeper or Nacos, beta exports the service to alpha once per
// protocol, and a Java consumer of either protocol that knows only alpha's registry finds
// it there (at interface or application level) and calls it through alpha's egress and
// beta's ingress: strings, a nested object, 1 MiB of bytes, a business exception, a
// timeout, one-way calls, a method beta does not export and a service nobody exports (both
// refused, and what the consumer sees logged), two versions behind one export, a load run,
// and a load run while every gateway is restarted in turn. It also compares, parameter by
// parameter, a Java provider's registry entry in beta with the entry alpha's controlplane
// imported into alpha's registry.
//
// The registries (a ZooKeeper and a Nacos server per domain, test/registries), the
// topologies (launch/demo, one per registry kind) and the Java providers are started once
// per test binary, when a test first needs them (the providers a test needs all at once),
// and shared by the tests, which run one after the other; all of them are stopped when the
// binary ends (the Java processes also exit by themselves if it dies). The peer jar is built
// by build.sh (cached; offline once Maven's repository has what the pom names); without
// java or mvn the tests are skipped. STRAIT_JAVA_TEST_LOG sets the level of Strait's logs
// (none by default), STRAIT_JAVA_PEER_LOG that of the Java peers' (warn), shown for the
// peers of a failed test.
package java

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// runState is what the tests of this binary share.
type runState struct {
	// jar is the peer jar; if it is empty, skip says why the tests are skipped, or
	// buildErr why they fail.
	jar      string
	skip     string
	buildErr error
	// dir holds the Java processes' own directories.
	dir string

	mu      sync.Mutex
	envs    map[string]*env      // by registry kind
	provs   map[string]*provider // by providerSpec.String()
	closers []func()             // run in reverse order at the end
}

var suite runState

// onClose runs f when the test binary ends, before what was registered earlier.
func (s *runState) onClose(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, f)
}

// closeAll runs what onClose registered, last first.
func (s *runState) closeAll() {
	s.mu.Lock()
	cs := s.closers
	s.closers = nil
	s.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// needJava skips t if java or mvn is missing and fails it if the jar could not be built.
func needJava(t testing.TB) {
	t.Helper()
	switch {
	case suite.skip != "":
		t.Skip(suite.skip)
	case suite.buildErr != nil:
		t.Fatal(suite.buildErr)
	}
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if suite.dir, err = os.MkdirTemp("", "strait-java-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(suite.dir)
	suite.jar, suite.skip, suite.buildErr = buildJar()
	code := m.Run()
	suite.closeAll()
	return code
}

// buildJar builds (or finds in the cache) the peer jar with build.sh. It returns why the
// tests are skipped if java, javac or mvn is missing, and an error if the build failed.
func buildJar() (jar, skip string, err error) {
	for _, tool := range []string{"java", "javac", "mvn"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Sprintf("test/java needs %s (make deps installs Java 17 and Maven): %v", tool, err), nil
		}
	}
	_, file, _, _ := runtime.Caller(0)
	began := time.Now()
	cmd := exec.Command("bash", filepath.Join(filepath.Dir(file), "build.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("java peer: build.sh: %w", err)
	}
	jar = strings.TrimSpace(string(out))
	if took := time.Since(began); took > 2*time.Second {
		fmt.Fprintf(os.Stderr, "java peer: %s built in %v\n", jar, took.Round(time.Millisecond))
	}
	return jar, "", nil
}
