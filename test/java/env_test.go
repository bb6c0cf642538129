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

// env is a two-domain topology on registry servers of one kind: alpha and beta each have
// their own server, and beta exports EchoService (Triple, every version and group) to
// alpha.
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
		t.Fatal(e.err)
	}
	return e
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
	})
	if err != nil {
		e.err = fmt.Errorf("java: %s topology: %w", e.kind, err)
		return
	}
	suite.onClose(tp.Close)
	e.topo = tp
	// Beta exports EchoService to alpha: one export naming no version or group, so every
	// version and group its providers register crosses.
	if _, err := tp.ChangeDomains(ctx, func(*config.Domain) {}, func(b *config.Domain) {
		b.Exports = append(b.Exports, config.Export{Service: echoService, Protocol: mesh.ProtocolTriple, To: []string{"alpha"}})
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

// provider returns the Java provider of spec (its kind is e's) registered in beta's
// registry, starting it on first use, once beta's controlplane lists it as a provider of
// EchoService, and once alpha's registry lists EchoService of the provider's version and
// group at every egress instance.
func (e *env) provider(t testing.TB, spec providerSpec) *provider {
	t.Helper()
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
		if p.err == nil {
			t.Logf("provider %s on %s ready in %v", key, p.Addr(), time.Since(began).Round(time.Millisecond))
		}
	})
	if p.err != nil {
		t.Fatal(p.err)
	}
	if p.proc != nil {
		p.proc.logOnFailure(t)
	}
	e.waitImported(t, spec.version, spec.group)
	return p
}

// waitProvider waits (60 s at most) until beta's controlplane lists p as a provider of
// EchoService with p's version and group.
func (e *env) waitProvider(p *provider) error {
	want := mesh.ServiceKey{Name: echoService, Version: p.spec.version, Group: p.spec.group}
	_, err := wait.Until(context.Background(), 60*time.Second, func() error {
		var seen []string
		for _, i := range e.topo.BetaCP.Core().Providers() {
			if i.Service.Name != echoService {
				continue
			}
			if i.Address == p.Addr() && i.Service == want && i.Protocol == mesh.ProtocolTriple {
				return nil
			}
			seen = append(seen, i.String())
		}
		return fmt.Errorf("beta's controlplane lists EchoService providers %v, not %s at %s", seen, want, p.Addr())
	})
	if err != nil {
		return fmt.Errorf("provider %s: %w\n%s", p.spec, err, p.proc.output())
	}
	return nil
}

// waitImported waits (30 s at most) until alpha's registry lists EchoService of the version
// and group at every egress instance of alpha, as entries alpha's controlplane manages.
func (e *env) waitImported(t testing.TB, version, group string) {
	t.Helper()
	want := mesh.ServiceKey{Name: echoService, Version: version, Group: group}
	wait.ForNil(t, 30*time.Second, fmt.Sprintf("alpha's %s registry lists %s at egress %v", e.kind, want, e.topo.Egress), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		all, err := e.topo.AlphaCP.Registry().List(ctx)
		if err != nil {
			return err
		}
		var at, seen []string
		for _, i := range all {
			if i.Service.Name != echoService || !registrysync.Managed(i) {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s at %s", i.Service, i.Address))
			if i.Service == want && i.Protocol == mesh.ProtocolTriple {
				at = append(at, i.Address)
			}
		}
		for _, eg := range e.topo.Egress {
			if !slices.Contains(at, eg) {
				slices.Sort(seen)
				return fmt.Errorf("EchoService entries there: [%s]", strings.Join(seen, ", "))
			}
		}
		return nil
	})
}
