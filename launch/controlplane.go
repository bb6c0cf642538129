package launch

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/admin"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/membership"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/tunnel"
	federationv1 "github.com/strait-mesh/strait/proto/federation/v1"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/embedded"
	"github.com/strait-mesh/strait/registry-sync/registries"
)

// ControlplaneOptions configure StartControlplane.
type ControlplaneOptions struct {
	// File is the domain file, watched for changes. Empty when Domain is given directly.
	File   string
	Domain *config.Domain
	// BaseDir resolves relative bundle paths; the file's directory by default.
	BaseDir string
	// DataDir holds the embedded registry's data (registry kind embedded).
	DataDir string
	// XDS and Admin override the domain file's listen addresses.
	XDS, Admin string
	Logger     *slog.Logger
}

// Controlplane is a running controlplane process.
type Controlplane struct {
	cp       *controlplane.Controlplane
	log      *slog.Logger
	xdsLn    net.Listener
	admin    *admin.Server
	reg      registrysync.Registry
	embedded *embedded.Server
	file     string
	// importers follow the catalog of each peer the configuration in force names (impMu);
	// conns are every connection they used. impClosed is set by Close.
	impMu     sync.Mutex
	importers map[string]*peerImporter
	impClosed bool
	conns     []*grpc.ClientConn
	// publisher writes imported services into the registry; republishCh wakes it.
	publisher   *registrysync.Publisher
	republishCh chan struct{}
	// gossip holds the controlplane's observer membership of each gateway cluster.
	gossip map[string]*membership.Cluster

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	once      sync.Once
	stopWatch []func()
}

// StartControlplane starts a domain's controlplane: registry, xDS server, admin API, and a
// watch of the domain file.
func StartControlplane(o ControlplaneOptions) (c *Controlplane, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d := o.Domain
	if o.File != "" {
		if d, err = config.Load(o.File); err != nil {
			return nil, err
		}
		if o.BaseDir == "" {
			o.BaseDir = filepath.Dir(o.File)
		}
	}
	if d == nil {
		return nil, errors.New("controlplane: no domain")
	}
	cp := &Controlplane{log: o.Logger.With("component", "controlplane", "domain", d.Domain), file: o.File}
	c = cp
	defer func() {
		if err != nil {
			cp.Close()
		}
	}()

	endpoints := d.Registry.Endpoints
	if d.Registry.Kind == "" || d.Registry.Kind == "embedded" {
		dir := o.DataDir
		if dir == "" {
			return nil, errors.New("controlplane: an embedded registry needs a data directory")
		}
		if c.embedded, err = embedded.Start(d.Domain, dir); err != nil {
			return nil, err
		}
		endpoints = []string{c.embedded.Endpoint()}
		c.log.Info("embedded registry", "endpoint", c.embedded.Endpoint())
	}
	if c.reg, err = registries.Open(d.Registry.Kind, registries.Params{Addresses: endpoints, Namespace: d.Registry.Namespace, Logger: c.log}); err != nil {
		return nil, err
	}
	var xdsTLS *tls.Config
	var svid *x509svid.SVID
	if id := d.Controlplane.Identity; id != nil {
		if svid, xdsTLS, err = controlplaneTLS(id, d.TrustDomain); err != nil {
			return nil, err
		}
	} else {
		c.log.Warn("xDS is served without TLS: set controlplane.identity outside a single host")
	}
	if c.cp, err = controlplane.New(controlplane.Options{Domain: d, BaseDir: o.BaseDir, Registry: c.reg, XDSTLS: xdsTLS, Logger: o.Logger}); err != nil {
		return nil, err
	}
	xdsAddr := firstNonEmpty(o.XDS, d.Controlplane.XDS, "127.0.0.1:0")
	if c.xdsLn, err = net.Listen("tcp", xdsAddr); err != nil {
		return nil, fmt.Errorf("controlplane: xds listener: %w", err)
	}
	if c.admin, err = admin.New(admin.Options{Addr: firstNonEmpty(o.Admin, d.Controlplane.Admin), Logger: c.log}); err != nil {
		return nil, err
	}
	c.admin.Handle("/v1/config", http.HandlerFunc(c.serveConfig))
	c.gossip = map[string]*membership.Cluster{}
	for role, g := range map[string]*config.Gossip{"egress": d.Gossip.Egress, "ingress": d.Gossip.Ingress} {
		if g == nil {
			continue
		}
		m, err := joinGossip(g, d.Domain, role, d.Domain+"-controlplane-"+role, membership.Meta{
			Domain: d.Domain, Role: membership.RoleControlplane, Instance: "controlplane", State: membership.StateObserver,
		}, true, c.log)
		if err != nil {
			return nil, err
		}
		c.gossip[role] = m
		gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strait_cluster_members", Help: "Live serving members of a gateway cluster, as the controlplane sees them.",
			ConstLabels: prometheus.Labels{"cluster": d.Domain + "/" + role},
		}, func() float64 { return float64(len(serving(m.Members()))) })
		if err := c.admin.Registry().Register(gauge); err != nil {
			return nil, fmt.Errorf("controlplane: metrics: %w", err)
		}
	}
	registrySize := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strait_registry_instances", Help: "Provider instances in the domain's registry, as the controlplane sees it (managed ones included).",
	}, func() float64 { return float64(len(c.cp.Providers())) })
	if err := c.admin.Registry().Register(registrySize); err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	if err := c.admin.Registry().Register(federationCollector{c}); err != nil {
		return nil, fmt.Errorf("controlplane: metrics: %w", err)
	}
	c.admin.SetConfigSource(func() any {
		members := map[string]any{}
		for role, m := range c.gossip {
			members[role] = viewMembers(m.Members())
		}
		imports := map[string]any{}
		for p, im := range c.Imports() {
			var svcs []string
			for _, s := range im.Services {
				svcs = append(svcs, controlplane.ServiceKey(s))
			}
			imports[p] = map[string]any{"services": svcs, "ingress": im.Ingress, "stale": im.Stale, "withdrawn": im.Withdrawn, "epoch": im.Epoch, "revision": im.Revision, "lastError": im.LastErr}
		}
		return map[string]any{"version": c.cp.Version(), "domain": c.cp.Domain(), "members": members, "imports": imports}
	})
	c.admin.SetReady(true, "")

	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.goRun(func() { c.cp.Run(ctx) })
	c.goRun(func() {
		if err := c.cp.XDS().Serve(c.xdsLn); err != nil {
			c.log.Error("xds listener stopped", "err", err)
		}
	})
	c.goRun(func() {
		if err := c.admin.Serve(); err != nil {
			c.log.Error("admin listener stopped", "err", err)
		}
	})
	if svid != nil {
		if err := c.startImporters(ctx, d, o.BaseDir, svid); err != nil {
			return nil, err
		}
	} else {
		c.log.Warn("no controlplane.identity: federation with peers is off")
	}
	if m := c.gossip["egress"]; m != nil && svid != nil {
		// Imported services are published in this domain's registry with the live egress
		// instances as their providers.
		c.publisher = registrysync.NewPublisher(c.reg, c.log.With("component", "publisher"))
		c.republishCh = make(chan struct{}, 1)
		c.goRun(func() { c.publishImports(ctx, d.Domain) })
		stop := m.Watch(func([]membership.Member) { c.republish() })
		c.stopWatch = append(c.stopWatch, stop)
	}
	if m := c.gossip["ingress"]; m != nil {
		stop := m.Watch(func(ms []membership.Member) {
			var addrs []string
			for _, x := range serving(ms) {
				if x.Meta.Addr != "" {
					addrs = append(addrs, x.Meta.Addr)
				}
			}
			c.cp.SetIngress(addrs)
		})
		c.stopWatch = append(c.stopWatch, stop)
	}
	if o.File != "" {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return nil, fmt.Errorf("controlplane: watch %s: %w", o.File, err)
		}
		// Watch the directory: editors replace files rather than write them in place.
		if err := w.Add(filepath.Dir(o.File)); err != nil {
			w.Close()
			return nil, fmt.Errorf("controlplane: watch %s: %w", o.File, err)
		}
		c.goRun(func() { c.watchFile(ctx, w) })
	}
	return c, nil
}

func controlplaneTLS(id *config.Identity, trustDomain string) (*x509svid.SVID, *tls.Config, error) {
	svid, err := identity.LoadSVID(identity.Files{Cert: id.Cert, Key: id.Key})
	if err != nil {
		return nil, nil, err
	}
	bundles, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: trustDomain, File: id.Bundle}})
	if err != nil {
		return nil, nil, err
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, nil, err
	}
	if svid.ID.TrustDomain() != td || !strings.HasPrefix(svid.ID.Path(), "/"+identity.RoleControlplane+"/") {
		return nil, nil, fmt.Errorf("controlplane: identity %s is not spiffe://%s/controlplane/…", svid.ID, trustDomain)
	}
	return svid, identity.ControlplaneServerConfig(svid, bundles, td), nil
}

// peerImporter is the importer of one peer's catalog, with what stops it.
type peerImporter struct {
	im     *controlplane.Importer
	cc     *grpc.ClientConn
	cancel context.CancelFunc
	// key is what the importer was started with (trust domain, bundle, ingress seeds).
	key string
}

// importerKey identifies a peer's federation settings: the trust domain, the bundle's
// content (a rotated bundle keeps its file name) and the ingress seeds.
func importerKey(p config.Peer, baseDir string) string {
	file := p.TrustBundle
	if !filepath.IsAbs(file) && baseDir != "" {
		file = filepath.Join(baseDir, file)
	}
	b, _ := os.ReadFile(file)
	sum := sha256.Sum256(b)
	return p.TrustDomain + "|" + hex.EncodeToString(sum[:]) + "|" + strings.Join(p.Ingress, ",")
}

// startImporters follows every peer's catalog over the Federation API, through the
// peer's ingress tunnel port, authenticated with the controlplane's own SVID; and, as the
// configuration changes, the catalogs of the peers it names: a removed peer's importer
// stops (its services leave the routes and the registry), an added peer's starts.
func (c *Controlplane) startImporters(ctx context.Context, d *config.Domain, baseDir string, svid *x509svid.SVID) error {
	c.impMu.Lock()
	c.importers = map[string]*peerImporter{}
	c.impMu.Unlock()
	if err := c.syncImporters(ctx, d, baseDir, svid); err != nil {
		return err
	}
	c.cp.SetImports(c.Imports)
	c.cp.OnDomain(func(*config.Domain) {
		// The configuration in force now, not the one of this call: two changes close
		// together may run their hooks in either order.
		if err := c.syncImporters(ctx, c.cp.Domain(), baseDir, svid); err != nil {
			c.log.Error("following the peers of the new configuration", "err", err)
		}
		c.cp.Refresh()
		c.republish()
	})
	return nil
}

// syncImporters makes the importers those of d's peers.
func (c *Controlplane) syncImporters(ctx context.Context, d *config.Domain, baseDir string, svid *x509svid.SVID) error {
	c.impMu.Lock()
	defer c.impMu.Unlock()
	if c.impClosed {
		return nil
	}
	for name, pi := range c.importers {
		if _, ok := d.Peer(name); ok {
			continue
		}
		pi.cancel()
		_ = pi.cc.Close()
		delete(c.importers, name)
		c.log.Info("peer removed: its catalog is no longer imported", "peer", name)
	}
	var errs []error
	for _, p := range d.Peers {
		old := c.importers[p.Domain]
		if old != nil && old.key == importerKey(p, baseDir) {
			continue
		}
		if err := c.startImporterLocked(ctx, d.Domain, p, baseDir, svid, old); err != nil {
			errs = append(errs, err)
			continue
		}
		if old != nil {
			// New settings: the new importer carries the old one's catalog and resumes.
			old.cancel()
			_ = old.cc.Close()
			c.log.Info("peer settings changed: following its catalog with the new ones", "peer", p.Domain)
		}
	}
	return errors.Join(errs...)
}

func (c *Controlplane) startImporterLocked(ctx context.Context, self string, p config.Peer, baseDir string, svid *x509svid.SVID, carry *peerImporter) error {
	key := importerKey(p, baseDir)
	file := p.TrustBundle
	if !filepath.IsAbs(file) && baseDir != "" {
		file = filepath.Join(baseDir, file)
	}
	bundle, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: p.TrustDomain, File: file}})
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
	if err != nil {
		return err
	}
	conf := identity.ClientConfig(svid, bundle, td, tunnel.ALPN)
	seeds := append([]string(nil), p.Ingress...)
	var im *controlplane.Importer
	var next atomic.Uint64
	// Each connection goes to one of the peer's ingress instances: the live ones
	// the peer reported, else those of the domain file.
	dialer := func(ctx context.Context, _ string) (net.Conn, error) {
		addrs := seeds
		if im != nil {
			if live := im.Import().Ingress; len(live) > 0 {
				addrs = live
			}
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("federation: no ingress address known for %s", p.Domain)
		}
		return tunnel.DialTLS(ctx, addrs[int(next.Add(1))%len(addrs)], conf, 5*time.Second)
	}
	// A full catalog is one message: 10,000 services take about 1 MB; allow large ones.
	cc, err := grpc.NewClient("passthrough:///"+p.Domain, grpc.WithContextDialer(dialer),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}, MinConnectTimeout: 5 * time.Second}))
	if err != nil {
		return fmt.Errorf("federation: %s: %w", p.Domain, err)
	}
	c.conns = append(c.conns, cc)
	im = controlplane.NewImporter(self, p.Domain, federationv1.NewFederationClient(cc), func() {
		c.cp.Refresh()
		c.republish()
	}, c.log.With("component", "importer"))
	if carry != nil {
		im.Carry(carry.im)
	}
	ictx, cancel := context.WithCancel(ctx)
	c.importers[p.Domain] = &peerImporter{im: im, cc: cc, cancel: cancel, key: key}
	c.goRun(func() { im.Run(ictx) })
	return nil
}

// republish asks publishImports for a pass (coalesced).
func (c *Controlplane) republish() {
	if c.republishCh == nil {
		return
	}
	select {
	case c.republishCh <- struct{}{}:
	default:
	}
}

// publishImports keeps the registry's managed entries equal to the imported gRPC and Triple
// services × the live egress instances, until ctx ends. A stale peer's services stay (calls
// keep flowing); a withdrawn service or a dead egress leaves.
func (c *Controlplane) publishImports(ctx context.Context, domain string) {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			// Withdraw what we published: nothing may outlive its owner.
			wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.publisher.Set(wctx, nil)
			cancel()
			return
		case <-c.republishCh:
		case <-retry.C:
		}
		var egress []string
		for _, m := range serving(c.gossip["egress"].Members()) {
			if m.Meta.Addr != "" {
				egress = append(egress, m.Meta.Addr)
			}
		}
		var desired []mesh.Instance
		native := map[string]bool{}
		for _, i := range c.cp.Providers() {
			if !registrysync.Managed(i) {
				native[i.Service.Name] = true
			}
		}
		for peer, im := range c.Imports() {
			for _, s := range im.Services {
				p := mesh.Protocol(s.GetProtocol())
				if !p.RPC() || native[s.GetName()] {
					continue
				}
				for _, addr := range egress {
					md := map[string]string{}
					for k, v := range s.GetMetadata() {
						md[k] = v
					}
					md[registrysync.MetaManaged] = "true"
					md[registrysync.MetaOrigin] = peer
					md[registrysync.MetaOwner] = domain + "/controlplane"
					desired = append(desired, mesh.Instance{
						Service:  mesh.ServiceKey{Name: s.GetName(), Version: s.GetVersion(), Group: s.GetGroup()},
						Protocol: p, Address: addr, Metadata: md,
					})
				}
			}
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.publisher.Set(sctx, desired)
		cancel()
		if err != nil {
			c.log.Warn("publishing imports; retrying", "err", err)
			retry.Reset(time.Second)
		}
	}
}

// Imports returns what each peer exports to this domain, as last heard.
func (c *Controlplane) Imports() map[string]controlplane.Import {
	c.impMu.Lock()
	defer c.impMu.Unlock()
	out := map[string]controlplane.Import{}
	for p, pi := range c.importers {
		out[p] = pi.im.Import()
	}
	return out
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func (c *Controlplane) goRun(f func()) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); f() }()
}

// XDSAddr is where gateways connect.
func (c *Controlplane) XDSAddr() string { return c.xdsLn.Addr().String() }

// AdminAddr serves /v1/config and the rest of the admin endpoints.
func (c *Controlplane) AdminAddr() string { return c.admin.Addr() }

// RegistryEndpoint is the registry's address (the embedded one, or the first configured).
func (c *Controlplane) RegistryEndpoint() string {
	if c.embedded != nil {
		return c.embedded.Endpoint()
	}
	return c.cp.Domain().Registry.Endpoints[0]
}

// Registry is the domain's registry client.
func (c *Controlplane) Registry() registrysync.Registry { return c.reg }

// Core is the controlplane itself (its domain, version, xDS server).
func (c *Controlplane) Core() *controlplane.Controlplane { return c.cp }

// GossipAddr is the controlplane's address in the gossip of the role's cluster, the seed
// gateways join through; "" without gossip.
func (c *Controlplane) GossipAddr(role string) string {
	if m := c.gossip[role]; m != nil {
		return m.Addr()
	}
	return ""
}

// Members returns the live serving members of the domain's egress or ingress cluster.
func (c *Controlplane) Members(role string) []membership.Member {
	m := c.gossip[role]
	if m == nil {
		return nil
	}
	return serving(m.Members())
}

func serving(ms []membership.Member) []membership.Member {
	out := ms[:0:0]
	for _, m := range ms {
		if m.Meta.State == membership.StateServing {
			out = append(out, m)
		}
	}
	return out
}

// Close stops everything at once; gateways keep their last configuration.
func (c *Controlplane) Close() {
	c.once.Do(func() {
		for _, stop := range c.stopWatch {
			stop()
		}
		for _, m := range c.gossip {
			_ = m.Close()
		}
		c.impMu.Lock()
		c.impClosed = true // no importer starts after this
		c.impMu.Unlock()
		if c.cancel != nil {
			c.cancel()
		}
		if c.cp != nil {
			c.cp.XDS().Stop()
		}
		if c.admin != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = c.admin.Shutdown(ctx)
			cancel()
		}
		if c.xdsLn != nil {
			c.xdsLn.Close()
		}
		c.wg.Wait()
		for _, cc := range c.conns {
			cc.Close()
		}
		if c.reg != nil {
			_ = c.reg.Close()
		}
		if c.embedded != nil {
			c.embedded.Close()
		}
	})
}

func (c *Controlplane) watchFile(ctx context.Context, w *fsnotify.Watcher) {
	defer w.Close()
	var timer *time.Timer
	fire := make(chan struct{}, 1)
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) != filepath.Clean(c.file) || ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) == 0 {
				continue
			}
			// Editors write in several steps: settle for a moment.
			if timer != nil {
				timer.Stop()
			}
			timer = time.AfterFunc(50*time.Millisecond, func() {
				select {
				case fire <- struct{}{}:
				default:
				}
			})
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			c.log.Warn("watching the domain file", "err", err)
		case <-fire:
			d, err := config.Load(c.file)
			if err != nil {
				c.log.Error("domain file refused; the configuration in force stays", "file", c.file, "err", err)
				continue
			}
			v, err := c.cp.SetDomain(d)
			if err != nil {
				c.log.Error("domain file refused; the configuration in force stays", "file", c.file, "err", err)
				continue
			}
			c.log.Info("domain file applied", "file", c.file, "version", v)
		}
	}
}

// serveConfig is the admin API: GET returns the domain document in force, PUT replaces it
// after the same validation as `strait validate`.
func (c *Controlplane) serveConfig(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		b, err := yaml.Marshal(c.cp.Domain())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Strait-Config-Version", c.cp.Version())
		_, _ = w.Write(b)
	case http.MethodPut:
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
		if err != nil {
			http.Error(w, "config: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		d, err := config.Parse(b)
		if err == nil {
			var v string
			if v, err = c.cp.SetDomain(d); err == nil {
				w.Header().Set("Strait-Config-Version", v)
				_, _ = fmt.Fprintf(w, "applied %s\n", v)
				return
			}
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

var (
	fedStaleDesc = prometheus.NewDesc("strait_federation_peer_stale",
		"1 while a peer domain cannot be reached: its catalog is kept (calls keep flowing) but may be out of date.", []string{"peer"}, nil)
	fedServicesDesc = prometheus.NewDesc("strait_federation_imported_services",
		"Services imported from a peer domain.", []string{"peer"}, nil)
	fedWithdrawnDesc = prometheus.NewDesc("strait_federation_withdrawn_total",
		"Services a peer domain withdrew (removed from this domain's imports).", []string{"peer"}, nil)
)

// federationCollector reports each peer's import state at scrape time.
type federationCollector struct{ c *Controlplane }

func (f federationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fedStaleDesc
	ch <- fedServicesDesc
	ch <- fedWithdrawnDesc
}

func (f federationCollector) Collect(ch chan<- prometheus.Metric) {
	for p, im := range f.c.Imports() {
		stale := 0.0
		if im.Stale {
			stale = 1
		}
		ch <- prometheus.MustNewConstMetric(fedStaleDesc, prometheus.GaugeValue, stale, p)
		ch <- prometheus.MustNewConstMetric(fedServicesDesc, prometheus.GaugeValue, float64(len(im.Services)), p)
		ch <- prometheus.MustNewConstMetric(fedWithdrawnDesc, prometheus.CounterValue, float64(im.Withdrawn), p)
	}
}
