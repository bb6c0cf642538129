package registrysync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/strait-mesh/strait/internal/mesh"
)

// Metadata keys that mark an instance Strait registered on behalf of another domain.
// Managed instances are never exported again (no loops, even when two domains export to
// each other) and never changed by anyone but their owner.
const (
	MetaManaged = "strait.managed" // "true"
	MetaOrigin  = "strait.origin"  // the domain that exported the service
	MetaOwner   = "strait.owner"   // the process that registered it, e.g. "alpha/egress-1"
	// MetaGateway names the gateway instance, one name per start, that serves a managed
	// entry: a restarted egress is a new entry, so that Dubbo consumers drop their
	// connection to the old one and open one to the new (same address, new URL).
	MetaGateway = "strait.gateway"
)

// Managed reports whether i was registered by Strait for another domain.
func Managed(i mesh.Instance) bool { return i.Metadata[MetaManaged] == "true" }

// AppInstance is one instance of an application in Dubbo's application-level service
// discovery: an address, and the services the application serves there.
type AppInstance struct {
	App     string
	Address string // host:port
	// Services are the services served at Address: their keys, protocols and metadata
	// (their Address is Address).
	Services []mesh.Instance
	// Metadata of the instance itself (e.g. the managed marks).
	Metadata map[string]string
}

// AppRegistry is a Registry that also speaks Dubbo's application-level layout: an
// application's instances (ZooKeeper /services/<app>/<host:port>, Nacos service <app>),
// each pointing to the description of its services (a MetadataInfo in the metadata
// report, by revision), and the interface → application mapping consumers start from.
// Like Register, RegisterApp ties the instance's liveness to the registering process;
// the metadata and the mapping are persistent, as Dubbo leaves them.
type AppRegistry interface {
	Registry
	// RegisterApp publishes (or replaces) the instance of a.App at a.Address.
	RegisterApp(ctx context.Context, a AppInstance) error
	// DeregisterApp withdraws an instance this process registered with RegisterApp.
	DeregisterApp(ctx context.Context, app, address string) error
}

// BatchRegistry is a Registry that writes many instances in few round trips; the
// Publisher uses it when a registry offers it.
type BatchRegistry interface {
	Registry
	RegisterAll(ctx context.Context, insts []mesh.Instance) error
	DeregisterAll(ctx context.Context, insts []mesh.Instance) error
}

// AppName is the application an instance is published under at application level:
// strait-<origin domain> for a managed instance (all the services imported from one
// domain form one application), else its "application" metadata; "" for none.
func AppName(i mesh.Instance) string {
	if Managed(i) && i.Metadata[MetaOrigin] != "" {
		return "strait-" + i.Metadata[MetaOrigin]
	}
	return i.Metadata["application"]
}

// AppInstances groups instances into application instances by AppName and address;
// instances without an application are left out. The result is sorted by application
// and address, each one's services by key.
func AppInstances(insts []mesh.Instance) []AppInstance {
	byKey := map[string]*AppInstance{}
	for _, i := range insts {
		app := AppName(i)
		if app == "" {
			continue
		}
		k := app + "|" + i.Address
		a := byKey[k]
		if a == nil {
			a = &AppInstance{App: app, Address: i.Address, Metadata: map[string]string{}}
			byKey[k] = a
		}
		a.Services = append(a.Services, i)
		for _, m := range []string{MetaManaged, MetaOrigin, MetaOwner} {
			if v, ok := i.Metadata[m]; ok {
				a.Metadata[m] = v
			}
		}
	}
	out := make([]AppInstance, 0, len(byKey))
	for _, a := range byKey {
		sort.Slice(a.Services, func(x, y int) bool { return instanceKey(a.Services[x]) < instanceKey(a.Services[y]) })
		out = append(out, *a)
	}
	sort.Slice(out, func(x, y int) bool {
		if out[x].App != out[y].App {
			return out[x].App < out[y].App
		}
		return out[x].Address < out[y].Address
	})
	return out
}

// fingerprint identifies an AppInstance's content: equal fingerprints need no re-registration.
func (a AppInstance) fingerprint() string {
	var b strings.Builder
	b.WriteString(a.App + "|" + a.Address)
	for _, k := range slices.Sorted(maps.Keys(a.Metadata)) {
		b.WriteString("|" + k + "=" + a.Metadata[k])
	}
	for _, s := range a.Services {
		b.WriteString("\n" + instanceKey(s))
		for _, k := range slices.Sorted(maps.Keys(s.Metadata)) {
			b.WriteString("|" + k + "=" + s.Metadata[k])
		}
	}
	return b.String()
}

func instanceKey(i mesh.Instance) string {
	return fmt.Sprintf("%s|%s|%s|%s|%s", i.Protocol, i.Service.Name, i.Service.Version, i.Service.Group, i.Address)
}

// Publisher keeps a desired set of instances registered by this process in a registry:
// Set registers what is new or changed and deregisters what is gone. It is the reconcile
// step of imports. Safe for concurrent use; calls are serialized.
type Publisher struct {
	reg Registry
	log *slog.Logger

	mu   sync.Mutex // one Set at a time
	hmu  sync.Mutex // have, while Set's workers write
	have map[string]mesh.Instance
	apps map[string]AppInstance // app|address → what is registered at application level
}

// NewPublisher returns a publisher writing to reg.
func NewPublisher(reg Registry, log *slog.Logger) *Publisher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Publisher{reg: reg, log: log, have: map[string]mesh.Instance{}, apps: map[string]AppInstance{}}
}

// Set makes the published set equal to desired. Failures are returned joined; what failed
// is tried again by the next Set.
//
// When the registry is an AppRegistry, the desired instances are also published at
// application level, grouped by AppName and address (see AppInstances), so that Dubbo
// consumers using either interface-level or application-level discovery find them.
func (p *Publisher) Set(ctx context.Context, desired []mesh.Instance) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := make(map[string]mesh.Instance, len(desired))
	for _, i := range desired {
		want[instanceKey(i)] = i
	}
	var gone, changed []string
	for k := range p.have {
		if _, ok := want[k]; !ok {
			gone = append(gone, k)
		}
	}
	for k, i := range want {
		if old, ok := p.have[k]; !ok || !sameMeta(old, i) {
			changed = append(changed, k)
		}
	}
	var (
		emu  sync.Mutex
		errs []error
	)
	nGone, nChanged := len(gone), len(changed)
	if br, ok := p.reg.(BatchRegistry); ok {
		errs = p.setBatched(ctx, br, want, gone, changed)
		gone, changed = nil, nil
	}
	// Registry writes are independent: a few at a time, so that thousands of imports
	// reach the registry in seconds, not one round trip after another.
	each(gone, func(k string) {
		i := p.get(k)
		if err := p.reg.Deregister(ctx, i); err != nil {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
			return
		}
		p.put(k, mesh.Instance{}, false)
		p.log.Debug("withdrawn", "service", i.Service.Name, "instance", i.Address)
	})
	each(changed, func(k string) {
		i := want[k]
		if err := p.reg.Register(ctx, i); err != nil {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
			return
		}
		p.put(k, i, true)
		p.log.Debug("published", "service", i.Service.Name, "instance", i.Address)
	})
	if nGone+nChanged > 0 {
		p.log.Info("registry entries updated", "published", nChanged, "withdrawn", nGone, "failed", len(errs), "total", len(p.have))
	}
	if ar, ok := p.reg.(AppRegistry); ok {
		errs = append(errs, p.setApps(ctx, ar, desired))
	}
	return errors.Join(errs...)
}

// setBatched is Set's writes for a BatchRegistry: batches of publishBatch instances, a
// few batches at a time. A failed batch is tried again by the next Set.
func (p *Publisher) setBatched(ctx context.Context, br BatchRegistry, want map[string]mesh.Instance, gone, changed []string) []error {
	var (
		emu  sync.Mutex
		errs []error
	)
	batches := func(keys []string) [][]string {
		var out [][]string
		for len(keys) > 0 {
			n := min(len(keys), publishBatch)
			out = append(out, keys[:n])
			keys = keys[n:]
		}
		return out
	}
	each(batches(gone), func(keys []string) {
		insts := make([]mesh.Instance, len(keys))
		for i, k := range keys {
			insts[i] = p.get(k)
		}
		if err := br.DeregisterAll(ctx, insts); err != nil {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
			return
		}
		for _, k := range keys {
			p.put(k, mesh.Instance{}, false)
		}
	})
	each(batches(changed), func(keys []string) {
		insts := make([]mesh.Instance, len(keys))
		for i, k := range keys {
			insts[i] = want[k]
		}
		if err := br.RegisterAll(ctx, insts); err != nil {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
			return
		}
		for i, k := range keys {
			p.put(k, insts[i], true)
		}
	})
	return errs
}

// publishBatch is how many instances one batched write carries.
const publishBatch = 128

// publishWorkers bounds the registry writes in flight.
const publishWorkers = 16

// each runs f for every item, publishWorkers at a time. Set's callers of each hold p.mu;
// f uses get and put (under hmu) to touch p.have.
func each[T any](keys []T, f func(T)) {
	if len(keys) == 0 {
		return
	}
	ch := make(chan T)
	var wg sync.WaitGroup
	for range min(publishWorkers, len(keys)) {
		wg.Go(func() {
			for k := range ch {
				f(k)
			}
		})
	}
	for _, k := range keys {
		ch <- k
	}
	close(ch)
	wg.Wait()
}

func (p *Publisher) get(k string) mesh.Instance {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	return p.have[k]
}

func (p *Publisher) put(k string, i mesh.Instance, add bool) {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if add {
		p.have[k] = i
	} else {
		delete(p.have, k)
	}
}

// setApps is Set's application-level half; p.mu is held.
func (p *Publisher) setApps(ctx context.Context, ar AppRegistry, desired []mesh.Instance) error {
	want := map[string]AppInstance{}
	for _, a := range AppInstances(desired) {
		want[a.App+"|"+a.Address] = a
	}
	var errs []error
	for k, a := range p.apps {
		if _, ok := want[k]; ok {
			continue
		}
		if err := ar.DeregisterApp(ctx, a.App, a.Address); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(p.apps, k)
		p.log.Info("withdrawn application instance", "service", a.App, "instance", a.Address)
	}
	for k, a := range want {
		if old, ok := p.apps[k]; ok && old.fingerprint() == a.fingerprint() {
			continue
		}
		if err := ar.RegisterApp(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		p.apps[k] = a
		p.log.Info("published application instance", "service", a.App, "instance", a.Address, "services", len(a.Services))
	}
	return errors.Join(errs...)
}

// Published returns what is registered now.
func (p *Publisher) Published() []mesh.Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]mesh.Instance, 0, len(p.have))
	for _, i := range p.have {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return instanceKey(out[a]) < instanceKey(out[b]) })
	return out
}

func sameMeta(a, b mesh.Instance) bool {
	if len(a.Metadata) != len(b.Metadata) {
		return false
	}
	for k, v := range a.Metadata {
		if b.Metadata[k] != v {
			return false
		}
	}
	return true
}
