package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	federationv1 "github.com/strait-mesh/strait/proto/federation/v1"
	registrysync "github.com/strait-mesh/strait/registry-sync"
)

// Options configure a Controlplane.
type Options struct {
	Domain *config.Domain
	// BaseDir resolves relative trust bundle paths (the domain file's directory).
	BaseDir string
	// Registry is the domain's registry; the ingress providers come from it. May be nil.
	Registry registrysync.Registry
	// XDSTLS, if set, makes the xDS server speak mutual TLS.
	XDSTLS *tls.Config
	Logger *slog.Logger
}

// Controlplane drives one domain's gateways: it holds the domain configuration in force,
// watches the registry, translates both into xDS resources and publishes them.
type Controlplane struct {
	log     *slog.Logger
	xds     *XDS
	cat     *registrysync.Catalog
	baseDir string
	dirty   chan struct{}
	// catDirty says the registry changed; Run republishes only if what the translation
	// reads of it changed (providersDigest).
	catDirty chan struct{}
	// lastDigest is providersDigest of the providers last translated.
	lastDigest uint64

	fed *Federation

	mu      sync.Mutex
	domain  *config.Domain
	bundles map[string][]byte
	version string
	lastErr error
	ingress []string // live ingress instances, from gossip
	imports func() map[string]Import
	// onDomain is called after every configuration put in force (OnDomain).
	onDomain func(*config.Domain)
}

// New loads the domain's trust bundles and publishes its first configuration.
func New(o Options) (*Controlplane, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controlplane{
		log:      o.Logger.With("component", "controlplane", "domain", o.Domain.Domain),
		baseDir:  o.BaseDir,
		dirty:    make(chan struct{}, 1),
		catDirty: make(chan struct{}, 1),
	}
	c.xds = NewXDS(c.log, o.XDSTLS)
	// Peers reach the Federation API through an ingress instance of this domain, which
	// forwards it here over the xDS listener.
	c.fed = NewFederation(o.Domain, c.log.With("component", "federation"))
	federationv1.RegisterFederationServer(c.xds.grpc, c.fed)
	if o.Registry != nil {
		c.cat = registrysync.NewCatalog(o.Registry, c.log.With("component", "catalog"))
		c.cat.OnChange(func() {
			select {
			case c.catDirty <- struct{}{}:
			default:
			}
		})
	}
	if _, err := c.SetDomain(o.Domain); err != nil {
		return nil, err
	}
	return c, nil
}

// XDS is the xDS server; serve it on the controlplane's xDS listener.
func (c *Controlplane) XDS() *XDS { return c.xds }

// Domain returns the configuration in force.
func (c *Controlplane) Domain() *config.Domain {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.domain
}

// Version is the xDS version last published.
func (c *Controlplane) Version() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// SetDomain validates d, loads its bundles and publishes it. On any error the configuration
// in force is unchanged.
func (c *Controlplane) SetDomain(d *config.Domain) (string, error) {
	if err := d.Validate(); err != nil {
		return "", err
	}
	bundles := map[string][]byte{}
	for _, p := range d.Peers {
		path := p.TrustBundle
		if !filepath.IsAbs(path) && c.baseDir != "" {
			path = filepath.Join(c.baseDir, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("controlplane: peer %s: trust bundle: %w", p.Domain, err)
		}
		if err := checkBundle(p.TrustDomain, b); err != nil {
			return "", fmt.Errorf("controlplane: peer %s: trust bundle %s: %w", p.Domain, path, err)
		}
		bundles[p.TrustDomain] = b
	}
	c.mu.Lock()
	prevD, prevB := c.domain, c.bundles
	c.domain, c.bundles = d, bundles
	if err := c.publishLocked(); err != nil {
		c.domain, c.bundles = prevD, prevB
		c.mu.Unlock()
		return "", err
	}
	v, hook := c.version, c.onDomain
	c.mu.Unlock()
	if hook != nil {
		hook(d)
	}
	return v, nil
}

// OnDomain sets f to be called, outside the controlplane's lock, after each configuration
// put in force by SetDomain (for instance to follow the peers it names).
func (c *Controlplane) OnDomain(f func(*config.Domain)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onDomain = f
}

func (c *Controlplane) publishLocked() error {
	in := Inputs{Domain: c.domain, Bundles: c.bundles, Providers: c.Providers()}
	c.lastDigest = providersDigest(c.domain, in.Providers)
	if c.imports != nil {
		in.Imports = c.imports()
	}
	res, err := Translate(in)
	if err != nil {
		// Translation skipped what it could not translate; the rest is published.
		c.log.Warn("translation skipped some inputs", "err", err)
	}
	if res == nil {
		return errors.New("controlplane: translation produced nothing")
	}
	v, err := c.xds.Publish(res)
	if err != nil {
		return err
	}
	c.version = v
	c.fed.Update(c.domain, in.Providers, c.ingress)
	c.log.Debug("published", "version", v)
	return nil
}

// SetIngress records the domain's live ingress instances (from gossip); peers learn them
// over federation.
func (c *Controlplane) SetIngress(addrs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ingress = append([]string(nil), addrs...)
	c.fed.Update(c.domain, c.Providers(), c.ingress)
}

// SetImports sets where the peers' catalogs come from (the importers) and republishes;
// call Refresh when they change.
func (c *Controlplane) SetImports(f func() map[string]Import) {
	c.mu.Lock()
	c.imports = f
	c.mu.Unlock()
	c.markDirty()
}

// Refresh asks for a new translation and publication (coalesced) from Run.
func (c *Controlplane) Refresh() { c.markDirty() }

// Providers returns the registry's providers as last seen by the controlplane's watch.
func (c *Controlplane) Providers() []mesh.Instance {
	if c.cat == nil {
		return nil
	}
	return c.cat.All()
}

// Federation is the Federation API server.
func (c *Controlplane) Federation() *Federation { return c.fed }

func (c *Controlplane) markDirty() {
	select {
	case c.dirty <- struct{}{}:
	default:
	}
}

// publish translates and publishes; if onlyIfChanged, only when what the translation reads
// of the registry changed since the last time (the importing domain's own managed entries,
// written by thousands at a time, change nothing in its translation).
func (c *Controlplane) publish(onlyIfChanged bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if onlyIfChanged && providersDigest(c.domain, c.Providers()) == c.lastDigest {
		return
	}
	if err := c.publishLocked(); err != nil {
		c.log.Error("publish failed; gateways keep the previous configuration", "err", err)
	}
}

// providersDigest summarizes, independently of order, what Translate and ExportsFor read of
// the providers: every native instance (key, address, metadata), and of the managed ones
// only those of a service that an export names exactly (whose exports are left out when
// all their providers are managed). Everything else about managed instances is ignored.
func providersDigest(d *config.Domain, providers []mesh.Instance) uint64 {
	exact := map[string]bool{}
	for _, e := range d.Exports {
		if !e.IsPattern() {
			exact[e.Service] = true
		}
	}
	var sum, n uint64
	h := fnv.New64a()
	for _, p := range providers {
		managed := registrysync.Managed(p)
		if managed && !exact[p.Service.Name] {
			continue
		}
		h.Reset()
		fmt.Fprintf(h, "%t|%s|%s|%s|%s|%s", managed, p.Protocol, p.Service.Name, p.Service.Version, p.Service.Group, p.Address)
		var meta uint64
		for k, v := range p.Metadata {
			mh := fnv.New64a()
			mh.Write([]byte(k + "=" + v))
			meta += mh.Sum64()
		}
		sum += h.Sum64() ^ meta*0x9e3779b97f4a7c15
		n++
	}
	return sum ^ n<<48
}

// Run watches the registry and republishes on every change, coalescing bursts, until ctx
// ends.
func (c *Controlplane) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if c.cat != nil {
		wg.Add(1)
		go func() { defer wg.Done(); c.cat.Run(ctx) }()
	}
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.dirty:
			c.publish(false)
		case <-c.catDirty:
			c.publish(true)
		}
	}
}
