// Package topology starts the two-domain picture of Strait inside one process: domain
// alpha (consumers) and domain beta (providers), each with its own embedded etcd
// registry, trust domain and CA; egress instances in alpha, ingress instances in beta,
// and the sample providers in beta registered in beta's registry. `strait demo` and the
// end-to-end tests run on it.
package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/strait-mesh/strait/controlplane"
	egress "github.com/strait-mesh/strait/egress-cluster"
	ingress "github.com/strait-mesh/strait/ingress-cluster"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/routing"
	"github.com/strait-mesh/strait/internal/samples"
	"github.com/strait-mesh/strait/internal/tunnel"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/embedded"
	etcdreg "github.com/strait-mesh/strait/registry-sync/etcd"
)

// Names of the sample services.
const (
	GRPCService   = "grpc.testing.TestService"
	TripleService = "strait.demo.greet.v1.GreetService"
	TripleMethod  = "Greet"
	TripleVersion = "1.0.0"
	HTTPService   = "echo"
	HTTPHost      = "echo.beta.strait"
	HTTPPrefix    = "/echo"
)

// Options shape a topology.
type Options struct {
	// Dir holds certificates and registry data; a temporary directory, removed by Close,
	// if empty.
	Dir     string
	Egress  int // instances in alpha, default 2
	Ingress int // instances in beta, default 2
	Logger  *slog.Logger
}

// Topology is a running two-domain topology.
type Topology struct {
	Dir string
	// Egress lists host:port of alpha's egress consumer listeners.
	Egress []string
	// Ingress lists host:port of beta's ingress tunnel listeners.
	Ingress []string
	// IngressGateways are beta's ingress instances, in the order of Ingress.
	IngressGateways []*ingress.Gateway
	// Providers in beta.
	GRPCAddr, TripleAddr, HTTPAddr string
	// Alpha and Beta are the domain configurations in force.
	Alpha, Beta *config.Domain
	// Certs names the identity files.
	Certs Certs
	// BetaRegistry is beta's registry (embedded etcd).
	BetaRegistry registrysync.Registry
	// BetaCatalog is the ingress' view of beta's providers.
	BetaCatalog *registrysync.Catalog
	// AlphaRoutes and BetaRoutes hold the route tables in force.
	AlphaRoutes, BetaRoutes *routing.Store

	ownDir  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closers []func(context.Context) // run in reverse order
	closed  sync.Once
}

// Certs are the identity files the topology generated.
type Certs struct {
	AlphaCA, BetaCA *identity.CA
	AlphaBundle     string
	BetaBundle      string
	Egress          []identity.Files
	Ingress         []identity.Files
}

// Trust domains of the two domains.
const (
	AlphaTrustDomain = "alpha.strait.local"
	BetaTrustDomain  = "beta.strait.local"
)

// Start brings the topology up and returns when every component is ready.
func Start(ctx context.Context, o Options) (t *Topology, err error) {
	if o.Egress <= 0 {
		o.Egress = 2
	}
	if o.Ingress <= 0 {
		o.Ingress = 2
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	t = &Topology{Dir: o.Dir}
	if t.Dir == "" {
		if t.Dir, err = os.MkdirTemp("", "strait-demo-"); err != nil {
			return nil, fmt.Errorf("topology: %w", err)
		}
		t.ownDir = true
	}
	runCtx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()

	if err := t.makeCerts(o); err != nil {
		return t, err
	}

	// Registries, started side by side.
	var alphaReg, betaReg *embedded.Server
	var aerr, berr error
	var swg sync.WaitGroup
	swg.Add(2)
	go func() {
		defer swg.Done()
		alphaReg, aerr = embedded.Start("alpha", filepath.Join(t.Dir, "alpha", "etcd"))
	}()
	go func() { defer swg.Done(); betaReg, berr = embedded.Start("beta", filepath.Join(t.Dir, "beta", "etcd")) }()
	swg.Wait()
	if alphaReg != nil {
		t.onClose(func(context.Context) { alphaReg.Close() })
	}
	if betaReg != nil {
		t.onClose(func(context.Context) { betaReg.Close() })
	}
	if err := errors.Join(aerr, berr); err != nil {
		return t, err
	}

	// Providers in beta, registered in beta's registry.
	gp, err := samples.StartGRPC("127.0.0.1:0")
	if err != nil {
		return t, fmt.Errorf("topology: grpc provider: %w", err)
	}
	t.onClose(func(ctx context.Context) { _ = gp.Close(ctx) })
	tp, err := samples.StartTripleProvider("127.0.0.1:0")
	if err != nil {
		return t, fmt.Errorf("topology: triple provider: %w", err)
	}
	t.onClose(func(ctx context.Context) { _ = tp.Close(ctx) })
	hp, err := samples.StartEcho("127.0.0.1:0")
	if err != nil {
		return t, fmt.Errorf("topology: http provider: %w", err)
	}
	t.onClose(func(ctx context.Context) { _ = hp.Close(ctx) })
	t.GRPCAddr, t.TripleAddr, t.HTTPAddr = gp.Addr(), tp.Addr(), hp.Addr()

	breg, err := etcdreg.New([]string{betaReg.Endpoint()}, etcdreg.Options{Logger: o.Logger})
	if err != nil {
		return t, err
	}
	t.onClose(func(context.Context) { _ = breg.Close() })
	t.BetaRegistry = breg
	for _, inst := range []mesh.Instance{
		{Service: mesh.ServiceKey{Name: GRPCService}, Protocol: mesh.ProtocolGRPC, Address: t.GRPCAddr},
		{Service: mesh.ServiceKey{Name: TripleService, Version: TripleVersion}, Protocol: mesh.ProtocolTriple, Address: t.TripleAddr},
		{Service: mesh.ServiceKey{Name: HTTPService}, Protocol: mesh.ProtocolHTTP, Address: t.HTTPAddr},
	} {
		if err := breg.Register(ctx, inst); err != nil {
			return t, err
		}
	}

	// Beta: catalog and ingress instances.
	t.Beta = BetaConfig(t.Certs.AlphaBundle, betaReg.Endpoint())
	if err := t.Beta.Validate(); err != nil {
		return t, fmt.Errorf("topology: beta config: %w", err)
	}
	t.BetaRoutes = routing.NewStore(controlplane.RouteTable(t.Beta))
	creg, err := etcdreg.New([]string{betaReg.Endpoint()}, etcdreg.Options{Logger: o.Logger})
	if err != nil {
		return t, err
	}
	t.onClose(func(context.Context) { _ = creg.Close() })
	t.BetaCatalog = registrysync.NewCatalog(creg, o.Logger.With("domain", "beta", "component", "catalog"))
	t.wg.Add(1)
	go func() { defer t.wg.Done(); t.BetaCatalog.Run(runCtx) }()

	for i := range o.Ingress {
		name := fmt.Sprintf("ingress-%d", i+1)
		g, addr, err := StartIngress(t.Beta, t.Certs.Ingress[i], name, "127.0.0.1:0", t.BetaRoutes, t.BetaCatalog, o.Logger)
		if err != nil {
			return t, err
		}
		t.serve(func() error { return g.Serve(addr) }, func(ctx context.Context) { _ = g.Shutdown(ctx) })
		t.Ingress = append(t.Ingress, addr.Addr().String())
		t.IngressGateways = append(t.IngressGateways, g)
	}

	// Alpha: egress instances.
	t.Alpha = AlphaConfig(t.Certs.BetaBundle, alphaReg.Endpoint(), t.Ingress)
	if err := t.Alpha.Validate(); err != nil {
		return t, fmt.Errorf("topology: alpha config: %w", err)
	}
	t.AlphaRoutes = routing.NewStore(controlplane.RouteTable(t.Alpha))
	for i := range o.Egress {
		name := fmt.Sprintf("egress-%d", i+1)
		g, ln, closeTunnels, err := StartEgress(t.Alpha, t.Certs.Egress[i], name, "127.0.0.1:0", t.AlphaRoutes, o.Logger)
		if err != nil {
			return t, err
		}
		t.serve(func() error { return g.Serve(ln) }, func(ctx context.Context) { _ = g.Shutdown(ctx); closeTunnels() })
		t.Egress = append(t.Egress, ln.Addr().String())
	}

	// Ready when the ingress sees every provider.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if len(t.BetaCatalog.Endpoints(mesh.ServiceKey{Name: GRPCService}, mesh.ProtocolGRPC)) > 0 &&
			len(t.BetaCatalog.Endpoints(mesh.ServiceKey{Name: TripleService}, mesh.ProtocolTriple)) > 0 &&
			len(t.BetaCatalog.Endpoints(mesh.ServiceKey{Name: HTTPService}, mesh.ProtocolHTTP)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return t, errors.New("topology: beta's providers did not appear in its catalog within 15s")
		}
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return t, nil
}

func (t *Topology) onClose(f func(context.Context)) { t.closers = append(t.closers, f) }

// serve runs a server's loop in a goroutine the topology owns, and stops it on Close.
func (t *Topology) serve(run func() error, stop func(context.Context)) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		_ = run()
	}()
	t.onClose(stop)
}

// Close stops every component, in reverse order of start, and removes the temporary files.
func (t *Topology) Close() {
	t.closed.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := len(t.closers) - 1; i >= 0; i-- {
			t.closers[i](ctx)
		}
		if t.cancel != nil {
			t.cancel()
		}
		t.wg.Wait()
		if t.ownDir {
			os.RemoveAll(t.Dir)
		}
	})
}

func (t *Topology) makeCerts(o Options) error {
	var err error
	c := &t.Certs
	if c.AlphaCA, err = identity.NewCA(AlphaTrustDomain, 24*time.Hour); err != nil {
		return err
	}
	if c.BetaCA, err = identity.NewCA(BetaTrustDomain, 24*time.Hour); err != nil {
		return err
	}
	for _, d := range []string{"alpha", "beta"} {
		if err := os.MkdirAll(filepath.Join(t.Dir, d, "certs"), 0o700); err != nil {
			return fmt.Errorf("topology: %w", err)
		}
	}
	c.AlphaBundle = filepath.Join(t.Dir, "alpha", "certs", "bundle.pem")
	c.BetaBundle = filepath.Join(t.Dir, "beta", "certs", "bundle.pem")
	if err := c.AlphaCA.WriteBundle(c.AlphaBundle); err != nil {
		return err
	}
	if err := c.BetaCA.WriteBundle(c.BetaBundle); err != nil {
		return err
	}
	for i := range o.Egress {
		name := fmt.Sprintf("egress-%d", i+1)
		id, err := identity.ID(AlphaTrustDomain, identity.RoleEgress, name)
		if err != nil {
			return err
		}
		f, err := c.AlphaCA.WriteSVID(filepath.Join(t.Dir, "alpha", "certs"), name, id, identity.IssueOptions{})
		if err != nil {
			return err
		}
		c.Egress = append(c.Egress, f)
	}
	for i := range o.Ingress {
		name := fmt.Sprintf("ingress-%d", i+1)
		id, err := identity.ID(BetaTrustDomain, identity.RoleIngress, name)
		if err != nil {
			return err
		}
		f, err := c.BetaCA.WriteSVID(filepath.Join(t.Dir, "beta", "certs"), name, id, identity.IssueOptions{})
		if err != nil {
			return err
		}
		c.Ingress = append(c.Ingress, f)
	}
	return nil
}

// AlphaConfig is the consumer domain's configuration: beta is its peer, and the sample
// services are routed there.
func AlphaConfig(betaBundle, registry string, betaIngress []string) *config.Domain {
	return &config.Domain{
		Domain:      "alpha",
		TrustDomain: AlphaTrustDomain,
		Registry:    config.Registry{Kind: "etcd", Endpoints: []string{registry}},
		Peers: []config.Peer{{
			Domain: "beta", TrustDomain: BetaTrustDomain, TrustBundle: betaBundle,
			Ingress: betaIngress, Transport: "h2",
		}},
		Routes: []config.Route{
			{Service: GRPCService, Protocol: mesh.ProtocolGRPC, Peer: "beta"},
			{Service: TripleService, Protocol: mesh.ProtocolTriple, Peer: "beta"},
			{Service: HTTPService, Protocol: mesh.ProtocolHTTP, Peer: "beta", Host: HTTPHost},
			{Service: HTTPService, Protocol: mesh.ProtocolHTTP, Peer: "beta", PathPrefix: HTTPPrefix},
		},
	}
}

// BetaConfig is the provider domain's configuration: alpha is its peer and may call the
// sample services.
func BetaConfig(alphaBundle, registry string) *config.Domain {
	return &config.Domain{
		Domain:      "beta",
		TrustDomain: BetaTrustDomain,
		Registry:    config.Registry{Kind: "etcd", Endpoints: []string{registry}},
		Peers: []config.Peer{{
			Domain: "alpha", TrustDomain: AlphaTrustDomain, TrustBundle: alphaBundle,
		}},
		Exports: []config.Export{
			{Service: GRPCService, Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}},
			{Service: TripleService, Protocol: mesh.ProtocolTriple, To: []string{"alpha"}},
			{Service: HTTPService, Protocol: mesh.ProtocolHTTP, To: []string{"alpha"}},
		},
	}
}

// StartIngress builds one ingress instance of domain d with the SVID in svid, listening
// on listen. The caller runs Serve on the returned listener.
func StartIngress(d *config.Domain, svid identity.Files, name, listen string, routes routing.Source, eps ingress.Endpoints, log *slog.Logger) (*ingress.Gateway, net.Listener, error) {
	src, err := identity.LoadSVID(svid)
	if err != nil {
		return nil, nil, err
	}
	var pbs []identity.PeerBundle
	var tds []spiffeid.TrustDomain
	peers := map[spiffeid.TrustDomain]string{}
	for _, p := range d.Peers {
		pbs = append(pbs, identity.PeerBundle{TrustDomain: p.TrustDomain, File: p.TrustBundle})
		td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
		if err != nil {
			return nil, nil, fmt.Errorf("ingress: peer %s: %w", p.Domain, err)
		}
		tds = append(tds, td)
		peers[td] = p.Domain
	}
	bundles, err := identity.LoadBundles(pbs)
	if err != nil {
		return nil, nil, err
	}
	g, err := ingress.New(ingress.Config{
		Domain: d.Domain, Instance: name,
		TLS:    identity.ServerConfig(src, bundles, tds, tunnel.ALPN),
		Routes: routes, Endpoints: eps, PeerDomains: peers,
		Limits: d.Limits, Logger: log.With("component", "ingress"),
	})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, nil, fmt.Errorf("ingress: %w", err)
	}
	return g, ln, nil
}

// StartEgress builds one egress instance of domain d. closeTunnels releases its tunnel
// connections after Shutdown.
func StartEgress(d *config.Domain, svid identity.Files, name, listen string, routes routing.Source, log *slog.Logger) (g *egress.Gateway, ln net.Listener, closeTunnels func(), err error) {
	src, err := identity.LoadSVID(svid)
	if err != nil {
		return nil, nil, nil, err
	}
	l := d.Limits.WithDefaults()
	var peers []egress.Peer
	var clients []*tunnel.Client
	for _, p := range d.Peers {
		bundles, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: p.TrustDomain, File: p.TrustBundle}})
		if err != nil {
			return nil, nil, nil, err
		}
		td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("egress: peer %s: %w", p.Domain, err)
		}
		c := tunnel.NewClient(identity.ClientConfig(src, bundles, td, tunnel.ALPN), tunnel.ClientOptions{
			DialTimeout: l.DialTimeout.D(), MaxHeaderBytes: uint32(l.MaxHeaderBytes),
		})
		clients = append(clients, c)
		peers = append(peers, egress.Peer{Domain: p.Domain, Tunnel: c, Ingress: p.Ingress})
	}
	closeTunnels = func() {
		for _, c := range clients {
			c.Close()
		}
	}
	g, err = egress.New(egress.Config{
		Domain: d.Domain, Instance: name, Routes: routes, Peers: peers,
		Limits: d.Limits, Logger: log.With("component", "egress"),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	ln, err = net.Listen("tcp", listen)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("egress: %w", err)
	}
	return g, ln, closeTunnels, nil
}
