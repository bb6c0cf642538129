package java

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/launch/demo"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	testregistries "github.com/strait-mesh/strait/test/registries"
	"github.com/strait-mesh/strait/test/wait"
)

// echoService is the Java peers' service.
const echoService = "org.strait.interop.EchoService"

// exportedMethods are the methods of EchoService that beta exports: all but hidden.
var exportedMethods = []string{"echo", "echoPojo", "echoBytes", "fail", "slow", "whoami", "notify", "notified"}

// protocols are the protocols the Java peers are tested on, as Dubbo names them.
var protocols = []string{"tri", "dubbo"}

// meshProtocol is Strait's name of a protocol as Dubbo names it (tri or dubbo).
func meshProtocol(p string) mesh.Protocol {
	if p == "dubbo" {
		return mesh.ProtocolDubbo
	}
	return mesh.ProtocolTriple
}

// env is a two-domain topology on registry servers of one kind: alpha and beta each have
// their own server, and beta exports EchoService to alpha twice, over Triple and over the
// dubbo protocol (each every version and group, each every method but hidden).
type env struct {
	kind        string
	alpha, beta *testregistries.Server
	topo        *demo.Topology

	once sync.Once
	err  error // why it could not start
}

// getEnv returns the environment of the registry kind, starting it on first use (later
// callers wait for it). It skips t if the Java peers cannot run.
func getEnv(t testing.TB, kind string) *env {
	t.Helper()
	needJava(t)
	e, err := envOf(kind)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// envOf returns the environment of the registry kind, starting it on first use (later
// callers wait for it), or why it could not start. The Java peers must be able to run
// (needJava).
func envOf(kind string) (*env, error) {
	suite.mu.Lock()
	if suite.envs == nil {
		suite.envs = map[string]*env{}
	}
	e, ok := suite.envs[kind]
	if !ok {
		e = &env{kind: kind}
		suite.envs[kind] = e
	}
	suite.mu.Unlock()
	e.once.Do(e.start)
	if e.err != nil {
		return nil, e.err
	}
	return e, nil
}

// logger is the topology's logger: nothing, unless STRAIT_JAVA_TEST_LOG names a level
// (debug, info, warn, error), then text on stderr.
func logger() *slog.Logger {
	var lvl slog.Level
	s := os.Getenv("STRAIT_JAVA_TEST_LOG")
	if s == "" || lvl.UnmarshalText([]byte(s)) != nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func (e *env) start() {
	began := time.Now()
	// Both servers at once: each takes seconds to start (Nacos more).
	var servers [2]*testregistries.Server
	var errs [2]error
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() {
			servers[i], errs[i] = testregistries.Start(e.kind)
			if errs[i] == nil {
				s := servers[i]
				suite.onClose(func() {
					if err := s.Stop(); err != nil {
						fmt.Fprintf(os.Stderr, "java: %v\n", err)
					}
				})
			}
		})
	}
	wg.Wait()
	if e.err = errors.Join(errs[:]...); e.err != nil {
		return
	}
	e.alpha, e.beta = servers[0], servers[1]

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp, err := demo.StartTopology(ctx, demo.TopologyOptions{
		Registry: e.kind, AlphaRegistry: []string{e.alpha.Addr}, BetaRegistry: []string{e.beta.Addr},
		Logger: logger(),
		// Gateways told to stop serve on while Java consumers learn it: Dubbo's registry
		// client passes changes on up to 5 s late (delay-notification).
		DrainDelay: 6 * time.Second,
	})
	if err != nil {
		e.err = fmt.Errorf("java: %s topology: %w", e.kind, err)
		return
	}
	suite.onClose(tp.Close)
	e.topo = tp
	// Beta exports EchoService to alpha over each protocol: exports naming no version or
	// group, so every version and group its providers register crosses; two exports of one
	// name, as their protocols are of different families.
	if _, err := tp.ChangeDomains(ctx, func(*config.Domain) {}, func(b *config.Domain) {
		for _, p := range protocols {
			b.Exports = append(b.Exports, config.Export{Service: echoService, Protocol: meshProtocol(p), To: []string{"alpha"}, Methods: exportedMethods})
		}
	}); err != nil {
		e.err = fmt.Errorf("java: %s topology: exporting %s: %w", e.kind, echoService, err)
		return
	}
	fmt.Fprintf(os.Stderr, "java: %s environment (alpha %s, beta %s, egress %v) ready in %v\n",
		e.kind, e.alpha.Addr, e.beta.Addr, tp.Egress, time.Since(began).Round(time.Millisecond))
}

// alphaRegistry and betaRegistry are the domains' registry addresses as Dubbo writes them.
func (e *env) alphaRegistry() string { return e.kind + "://" + e.alpha.Addr }
func (e *env) betaRegistry() string  { return e.kind + "://" + e.beta.Addr }

// startProvider returns the Java provider of spec (its kind is e's), starting it on first
// use (later callers wait for it), once beta's controlplane lists it as a provider of
// EchoService; or why it could not start.
func (e *env) startProvider(spec providerSpec) (*provider, error) {
	spec.kind = e.kind
	key := spec.String()
	suite.mu.Lock()
	if suite.provs == nil {
		suite.provs = map[string]*provider{}
	}
	p, ok := suite.provs[key]
	if !ok {
		p = &provider{spec: spec}
		suite.provs[key] = p
	}
	suite.mu.Unlock()
	p.once.Do(func() {
		began := time.Now()
		p.start(e.betaRegistry())
		if p.err == nil {
			p.err = e.waitProvider(p)
		}
		p.took = time.Since(began)
	})
	return p, p.err
}

// providerReq is a provider a test needs: its spec, in the environment of a registry kind.
type providerReq struct {
	kind string
	spec providerSpec
}

// providers returns the providers of reqs, in order, starting the environments and
// providers that are not running yet all at once (a JVM takes seconds to start). Their
// output is logged if t fails. Whether alpha's registry lists them is for the caller to
// wait for (waitImported), where a consumer is about to look.
func providers(t *testing.T, reqs ...providerReq) []*provider {
	t.Helper()
	needJava(t)
	began := time.Now()
	out := make([]*provider, len(reqs))
	errs := make([]error, len(reqs))
	envs := make([]*env, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() {
			if envs[i], errs[i] = envOf(r.kind); errs[i] == nil {
				out[i], errs[i] = envs[i].startProvider(r.spec)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, p := range out {
		p.proc.logOnFailure(t)
	}
	var started []string
	for _, p := range out {
		started = append(started, fmt.Sprintf("%s on %s (%v)", p.spec, p.Addr(), p.took.Round(time.Millisecond)))
	}
	t.Logf("providers ready in %v: %s", time.Since(began).Round(time.Millisecond), strings.Join(started, ", "))
	return out
}

// waitProvider waits (60 s at most) until beta's controlplane lists p as a provider of
// EchoService with p's protocol, version and group.
func (e *env) waitProvider(p *provider) error {
	want := mesh.ServiceKey{Name: echoService, Version: p.spec.version, Group: p.spec.group}
	proto := meshProtocol(p.spec.protocol)
	_, err := wait.Until(context.Background(), 60*time.Second, func() error {
		var seen []string
		for _, i := range e.topo.BetaCP.Core().Providers() {
			if i.Service.Name != echoService {
				continue
			}
			if i.Address == p.Addr() && i.Service == want && i.Protocol == proto {
				return nil
			}
			seen = append(seen, i.String())
		}
		return fmt.Errorf("beta's controlplane lists EchoService providers %v, not %s %s at %s", seen, proto, want, p.Addr())
	})
	if err != nil {
		return fmt.Errorf("provider %s: %w\n%s", p.spec, err, p.proc.output())
	}
	return nil
}

// waitImported waits (30 s at most) until alpha's registry lists EchoService of p's
// protocol, version and group at every egress instance of alpha, as entries alpha's
// controlplane manages, where a consumer of p's discovery mode looks: at interface level
// the provider entries themselves, as the registry server holds them (interfaceEntries);
// at application level the services of alpha's registry as Strait's adapter reads them.
func (e *env) waitImported(t testing.TB, p *provider) {
	t.Helper()
	want := mesh.ServiceKey{Name: echoService, Version: p.spec.version, Group: p.spec.group}
	proto := meshProtocol(p.spec.protocol)
	level := "application"
	if p.spec.mode == "interface" {
		level = "interface"
	}
	wait.ForNil(t, 30*time.Second, fmt.Sprintf("alpha's %s registry lists %s %s at egress %v (%s level)", e.kind, proto, want, e.topo.Egress, level), func() error {
		var at, seen []string
		if p.spec.mode == "interface" {
			all, err := e.interfaceEntries(e.alpha.Addr, p.spec.version, p.spec.group)
			if err != nil {
				return err
			}
			for _, en := range all {
				if en.Params["strait.managed"] != "true" {
					continue
				}
				seen = append(seen, en.protocol()+"://"+en.Address)
				if en.protocol() == p.spec.protocol {
					at = append(at, en.Address)
				}
			}
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			all, err := e.topo.AlphaCP.Registry().List(ctx)
			if err != nil {
				return err
			}
			for _, i := range all {
				if i.Service.Name != echoService || !registrysync.Managed(i) {
					continue
				}
				seen = append(seen, fmt.Sprintf("%s %s at %s", i.Protocol, i.Service, i.Address))
				if i.Service == want && i.Protocol == proto {
					at = append(at, i.Address)
				}
			}
		}
		for _, eg := range e.topo.Egress {
			if !slices.Contains(at, eg) {
				slices.Sort(seen)
				return fmt.Errorf("managed EchoService entries there: [%s]", strings.Join(seen, ", "))
			}
		}
		return nil
	})
}

// interfaceEntries reads the interface-level provider entries of EchoService of the
// version and group from the registry server at addr (alpha's or beta's), as consumers
// read them: ZooKeeper's URL nodes under /dubbo/<EchoService>/providers (of that version
// and group), the instances of Nacos' service providers:<EchoService>:<version>:<group>.
func (e *env) interfaceEntries(addr, version, group string) ([]entry, error) {
	if e.kind == "nacos" {
		return nacosEntries(addr, "providers:"+echoService+":"+version+":"+group)
	}
	all, err := zkEntries(addr, echoService)
	if err != nil {
		return nil, err
	}
	var out []entry
	for _, en := range all {
		if en.Params["version"] == version && en.Params["group"] == group {
			out = append(out, en)
		}
	}
	return out, nil
}
