package java

import (
	"fmt"
	"strings"
	"testing"
)

// kinds are the registry kinds the Java peers are tested on.
var kinds = []string{"zookeeper", "nacos"}

// modes are Dubbo's levels of service discovery: interface and application (instance).
var modes = []string{"interface", "instance"}

// allChecks are the checks of the consumer's "checks" plan.
var allChecks = []string{"discover", "whoami", "echo", "echoPojo", "fail", "forbidden", "missing", "echoBytes", "timeout", "afterTimeout", "notify"}

// groupOf is the group of the matrix's providers of a register mode: one per mode, so that
// each consumer has exactly one provider of its protocol (the interface-level and the
// application-level provider share beta's registry; the providers of the two protocols
// share a group, as one Java provider exporting both would).
func groupOf(mode string) string {
	if mode == "instance" {
		return "g2"
	}
	return "g1"
}

// TestInterop: {Triple, dubbo} × {ZooKeeper, Nacos} × {interface, instance}. A Java provider
// of EchoService 1.0.0 speaking the protocol registers in beta's registry at that level; a
// Java consumer of the protocol that knows only alpha's registry discovers the service
// there at the same level (migration step FORCE_INTERFACE or FORCE_APPLICATION) and calls
// it through alpha's egress and beta's ingress: every check of its plan passes, and whoami
// names the provider. Among the checks, two refusals: hidden, a method beta does not
// export, is refused with "may not call"; and Missing, a service nobody exports, called
// through a direct URL to an egress, with "unknown service" (what the consumer sees is
// logged). The providers are started all at once, the consumers one after the other.
func TestInterop(t *testing.T) {
	var reqs []providerReq
	for _, protocol := range protocols {
		for _, kind := range kinds {
			for _, mode := range modes {
				reqs = append(reqs, providerReq{kind, providerSpec{protocol: protocol, mode: mode, version: "1.0.0", group: groupOf(mode)}})
			}
		}
	}
	ps := providers(t, reqs...)
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			for _, kind := range kinds {
				t.Run(kind, func(t *testing.T) {
					e := getEnv(t, kind)
					for _, mode := range modes {
						t.Run(mode, func(t *testing.T) {
							p := ps[0]
							for _, q := range ps {
								if q.spec.protocol == protocol && q.spec.kind == kind && q.spec.mode == mode {
									p = q
								}
							}
							e.waitImported(t, p)
							name := protocol + "-" + kind + "-" + mode
							checks := runConsumer(t, name, consumerSpec{
								protocol: protocol, registry: e.alphaRegistry(), discovery: mode,
								version: "1.0.0", group: groupOf(mode), plan: "checks", egress: e.topo.Egress[0],
							})
							requireChecks(t, name, checks, allChecks...)
							requireAnswered(t, checks, p)
						})
					}
				})
			}
		})
	}
}

// TestVersions: per protocol, two providers of EchoService, 1.0.0 and 2.0.0 (same group),
// each its own process, behind one export that names no version: a consumer of each
// version reaches its own provider, at interface level in ZooKeeper.
func TestVersions(t *testing.T) {
	var reqs []providerReq
	for _, protocol := range protocols {
		for _, version := range []string{"1.0.0", "2.0.0"} {
			reqs = append(reqs, providerReq{"zookeeper", providerSpec{protocol: protocol, mode: "interface", version: version, group: "g1"}})
		}
	}
	ps := providers(t, reqs...)
	e := getEnv(t, "zookeeper")
	for _, p := range ps {
		t.Run(p.spec.protocol+"-"+p.spec.version, func(t *testing.T) {
			e.waitImported(t, p)
			name := "versions-" + p.spec.protocol + "-" + p.spec.version
			checks := runConsumer(t, name, consumerSpec{
				protocol: p.spec.protocol, registry: e.alphaRegistry(), discovery: "interface",
				version: p.spec.version, group: "g1", plan: "whoami,echo",
			})
			requireChecks(t, name, checks, "discover", "whoami", "echo")
			requireAnswered(t, checks, p)
		})
	}
}

// TestLoad: per protocol, 500 calls from 8 threads of a Java consumer (ZooKeeper,
// interface level), none failing.
func TestLoad(t *testing.T) {
	var reqs []providerReq
	for _, protocol := range protocols {
		reqs = append(reqs, providerReq{"zookeeper", providerSpec{protocol: protocol, mode: "interface", version: "1.0.0", group: "g1"}})
	}
	ps := providers(t, reqs...)
	e := getEnv(t, "zookeeper")
	for _, p := range ps {
		t.Run(p.spec.protocol, func(t *testing.T) {
			e.waitImported(t, p)
			name := "load-" + p.spec.protocol
			checks := runConsumer(t, name, consumerSpec{
				protocol: p.spec.protocol, registry: e.alphaRegistry(), discovery: "interface",
				version: "1.0.0", group: "g1", plan: "load:500",
			})
			requireChecks(t, name, checks, "discover", "load")
			requireAnswered(t, checks, p)
		})
	}
}

// requireAnswered fails t unless the provider that answered the consumer's first call
// (discover) and its whoami is p: its version, group, port and protocol.
func requireAnswered(t *testing.T, checks []check, p *provider) {
	t.Helper()
	want := fmt.Sprintf("version=%s,group=%s,port=%d,", p.spec.version, p.spec.group, p.port)
	wantProto := ",protocol=" + p.spec.protocol
	for _, c := range []string{"discover", "whoami"} {
		d := detail(checks, c)
		if d == "" {
			continue
		}
		if !strings.Contains(d, want) || !strings.HasSuffix(d, wantProto) {
			t.Fatalf("%s: answered by %q, want the provider %s (%s…%s)", c, d, p.spec, want, wantProto)
		}
	}
}
