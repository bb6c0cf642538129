// Package registrysync connects Strait to service registries: the Registry interface that
// every adapter (etcd, embedded, and later Nacos, ZooKeeper, static) implements, and the
// Catalog that keeps a live view of a registry's providers for the gateways.
package registrysync

import (
	"context"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/strait-mesh/strait/internal/backoff"
	"github.com/strait-mesh/strait/internal/mesh"
)

// Registry is one service registry. Implementations are safe for concurrent use.
type Registry interface {
	// Register publishes a provider instance. Its liveness is tied to the registering
	// process (a lease, an ephemeral node): it disappears when the process does.
	Register(ctx context.Context, inst mesh.Instance) error
	// Deregister withdraws an instance this process registered.
	Deregister(ctx context.Context, inst mesh.Instance) error
	// List returns every provider instance.
	List(ctx context.Context) ([]mesh.Instance, error)
	// Watch calls fn with every provider instance, once at the start and again after each
	// change, until ctx ends. It is a subscription, never a polling timer. It returns
	// ctx.Err() when ctx ends, or another error if the subscription broke.
	Watch(ctx context.Context, fn func([]mesh.Instance)) error
	// Close withdraws what this process registered and releases the connection.
	Close() error
}

// PersistentRegistry is a Registry that can also hold copies which outlive the process
// that wrote them (no lease, no ephemeral node): what a one-shot sync job leaves behind.
// The etcd, ZooKeeper and Nacos adapters implement it; the sync job asks for it.
type PersistentRegistry interface {
	Registry
	RegisterPersistent(ctx context.Context, inst mesh.Instance) error
	DeregisterPersistent(ctx context.Context, inst mesh.Instance) error
}

// FullLister is implemented by adapters whose List leaves out instances the server
// reports unhealthy or disabled (Nacos): ListAll includes them, so the owner of a
// persistent copy the server cannot health-check still sees it to keep or remove it.
type FullLister interface {
	ListAll(ctx context.Context) ([]mesh.Instance, error)
}

// Catalog is a live view of a registry's providers, grouped by service name. Lookups are
// lock-free and safe for concurrent use; Run keeps the view current.
type Catalog struct {
	reg  Registry
	log  *slog.Logger
	snap atomic.Pointer[map[string][]mesh.Instance]
	gen  atomic.Uint64
	// notify, if set before Run, is called after every change, from Run's goroutine.
	notify func()
}

// OnChange sets a function called (from Run's goroutine) after every change of the view.
// Call it before Run.
func (c *Catalog) OnChange(f func()) { c.notify = f }

// All returns every instance in the view.
func (c *Catalog) All() []mesh.Instance {
	var out []mesh.Instance
	for _, is := range *c.snap.Load() {
		out = append(out, is...)
	}
	return out
}

// NewCatalog returns a catalog of reg. Call Run to fill it.
func NewCatalog(reg Registry, log *slog.Logger) *Catalog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Catalog{reg: reg, log: log}
	empty := map[string][]mesh.Instance{}
	c.snap.Store(&empty)
	return c
}

// Run watches the registry until ctx ends, re-subscribing with backoff when the watch
// breaks. The last known providers stay in the view while the registry is unreachable.
func (c *Catalog) Run(ctx context.Context) {
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		start := time.Now()
		err := c.reg.Watch(ctx, c.set)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			retry.Reset() // a watch that lasted: this break is a new one
		}
		d := retry.Next()
		c.log.Warn("registry watch broke; keeping the last known providers", "err", err, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

func (c *Catalog) set(all []mesh.Instance) {
	m := make(map[string][]mesh.Instance)
	for _, i := range all {
		if !i.Protocol.Valid() {
			continue // a protocol Strait does not proxy
		}
		m[i.Service.Name] = append(m[i.Service.Name], i)
	}
	for _, is := range m {
		sort.Slice(is, func(a, b int) bool { return is[a].Address < is[b].Address })
	}
	c.snap.Store(&m)
	c.gen.Add(1)
	if c.notify != nil {
		c.notify()
	}
}

// Generation counts the updates the catalog has received; 0 means none yet.
func (c *Catalog) Generation() uint64 { return c.gen.Load() }

// Endpoints returns the instances of service k whose protocol is in the family of p (gRPC
// and Triple providers serve each other's callers). An empty version or group in k
// matches any. The slice must not be modified.
func (c *Catalog) Endpoints(k mesh.ServiceKey, p mesh.Protocol) []mesh.Instance {
	return mesh.Serving((*c.snap.Load())[k.Name], k, p)
}
