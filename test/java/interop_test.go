package java

import (
	"fmt"
	"strings"
	"testing"
)

// kinds are the registry kinds the Java peers are tested on.
var kinds = []string{"zookeeper", "nacos"}

// allChecks are the checks of the consumer's "checks" plan.
var allChecks = []string{"discover", "whoami", "echo", "echoPojo", "fail", "echoBytes", "timeout", "afterTimeout", "notify"}

// groupOf is the group of the matrix's providers of a register mode: one per mode, so that
// each consumer has exactly one provider (the interface-level and the application-level
// provider share beta's registry).
func groupOf(mode string) string {
	if mode == "instance" {
		return "g2"
	}
	return "g1"
}

// TestInterop: Triple × {ZooKeeper, Nacos} × {interface, instance}. A Java provider of
// EchoService 1.0.0 registers in beta's registry at that level; a Java consumer that knows
// only alpha's registry discovers the service there at the same level (migration step
// FORCE_INTERFACE or FORCE_APPLICATION) and calls it through alpha's egress and beta's
// ingress: every check of its plan passes, and whoami names the provider.
func TestInterop(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := getEnv(t, kind)
			for _, mode := range []string{"interface", "instance"} {
				t.Run(mode, func(t *testing.T) {
					t.Parallel()
					p := e.provider(t, providerSpec{mode: mode, version: "1.0.0", group: groupOf(mode)})
					name := kind + "-" + mode
					checks := runConsumer(t, name, consumerSpec{
						registry: e.alphaRegistry(), discovery: mode, version: "1.0.0", group: groupOf(mode), plan: "checks",
					})
					requireChecks(t, name, checks, allChecks...)
					requireAnswered(t, checks, p)
				})
			}
		})
	}
}

// TestVersions: two providers of EchoService, 1.0.0 and 2.0.0 (same group), each its own
// process, behind one export that names no version: a consumer of each version reaches
// its own provider, at interface level in ZooKeeper.
func TestVersions(t *testing.T) {
	t.Parallel()
	e := getEnv(t, "zookeeper")
	for _, version := range []string{"1.0.0", "2.0.0"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			p := e.provider(t, providerSpec{mode: "interface", version: version, group: "g1"})
			name := "versions-" + version
			checks := runConsumer(t, name, consumerSpec{
				registry: e.alphaRegistry(), discovery: "interface", version: version, group: "g1", plan: "whoami,echo",
			})
			requireChecks(t, name, checks, "discover", "whoami", "echo")
			requireAnswered(t, checks, p)
		})
	}
}

// TestLoad: 500 calls from 8 threads of a Java consumer (ZooKeeper, interface level), none
// failing.
func TestLoad(t *testing.T) {
	t.Parallel()
	e := getEnv(t, "zookeeper")
	p := e.provider(t, providerSpec{mode: "interface", version: "1.0.0", group: "g1"})
	checks := runConsumer(t, "load", consumerSpec{
		registry: e.alphaRegistry(), discovery: "interface", version: "1.0.0", group: "g1", plan: "load:500",
	})
	requireChecks(t, "load", checks, "discover", "load")
	requireAnswered(t, checks, p)
}

// requireAnswered fails t unless the provider that answered the consumer's first call
// (discover) and its whoami is p: its version, group and port.
func requireAnswered(t *testing.T, checks []check, p *provider) {
	t.Helper()
	want := fmt.Sprintf("version=%s,group=%s,port=%d,", p.spec.version, p.spec.group, p.port)
	for _, c := range []string{"discover", "whoami"} {
		d := detail(checks, c)
		if d == "" {
			continue
		}
		if !strings.Contains(d, want) {
			t.Fatalf("%s: answered by %q, want the provider %s (%s)", c, d, p.spec, want)
		}
	}
}
