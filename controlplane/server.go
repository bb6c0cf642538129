package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	"github.com/strait-mesh/strait/internal/admin"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/membership"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/embedded"
	"github.com/strait-mesh/strait/registry-sync/registries"
)

// ServerOptions configure Start.
type ServerOptions struct {
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

// Server is a running controlplane: its registry (or the embedded one), the xDS and
// admin listeners, the peers' importers, the publisher of imports, the config sources
// (the watched domain file and PUT /v1/config) and its metrics.
type Server struct {
	cp       *Controlplane
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

// Start starts a domain's controlplane: registry, xDS server, admin API, and a
// watch of the domain file.
func Start(o ServerOptions) (c *Server, err error) {
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
	cp := &Server{log: o.Logger.With("component", "controlplane", "domain", d.Domain), file: o.File}
	c = cp
	defer func() {
		if err != nil {
			cp.Close()
		}
	}()

	endpoints := d.Registry.Addresses
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
	if c.cp, err = New(Options{Domain: d, BaseDir: o.BaseDir, Registry: c.reg, XDSTLS: xdsTLS, Logger: o.Logger}); err != nil {
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
		m, err := membership.JoinConfigured(g, d.Domain, role, d.Domain+"-controlplane-"+role, membership.Meta{
			Domain: d.Domain, Role: membership.RoleControlplane, Instance: "controlplane", State: membership.StateObserver,
		}, true, c.log)
		if err != nil {
			return nil, err
		}
		c.gossip[role] = m
		gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "strait_cluster_members", Help: "Live serving members of a gateway cluster, as the controlplane sees them.",
			ConstLabels: prometheus.Labels{"cluster": d.Domain + "/" + role},
		}, func() float64 { return float64(len(membership.Serving(m.Members()))) })
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
			members[role] = membership.Views(m.Members())
		}
		imports := map[string]any{}
		for p, im := range c.Imports() {
			var svcs []string
			for _, s := range im.Services {
				svcs = append(svcs, ServiceKey(s))
			}
			imports[p] = map[string]any{"services": svcs, "ingress": im.Ingress, "stale": im.Stale, "withdrawn": im.Withdrawn, "epoch": im.Epoch, "revision": im.Revision, "lastError": im.LastErr,
				"quota": im.Quota, "refused": im.Refused}
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
			for _, x := range membership.Serving(ms) {
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

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func (c *Server) goRun(f func()) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); f() }()
}

// XDSAddr is where gateways connect.
func (c *Server) XDSAddr() string { return c.xdsLn.Addr().String() }

// AdminAddr serves /v1/config and the rest of the admin endpoints.
func (c *Server) AdminAddr() string { return c.admin.Addr() }

// RegistryEndpoint is the registry's address (the embedded one, or the first configured).
func (c *Server) RegistryEndpoint() string {
	if c.embedded != nil {
		return c.embedded.Endpoint()
	}
	return c.cp.Domain().Registry.Addresses[0]
}

// Registry is the domain's registry client.
func (c *Server) Registry() registrysync.Registry { return c.reg }

// Core is the controlplane itself (its domain, version, xDS server).
func (c *Server) Core() *Controlplane { return c.cp }

// GossipAddr is the controlplane's address in the gossip of the role's cluster, the seed
// gateways join through; "" without gossip.
func (c *Server) GossipAddr(role string) string {
	if m := c.gossip[role]; m != nil {
		return m.Addr()
	}
	return ""
}

// Members returns the live serving members of the domain's egress or ingress cluster.
func (c *Server) Members(role string) []membership.Member {
	m := c.gossip[role]
	if m == nil {
		return nil
	}
	return membership.Serving(m.Members())
}

// Close stops everything at once; gateways keep their last configuration.
func (c *Server) Close() {
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
