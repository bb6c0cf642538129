// Package demo is the two-domain topology `strait demo` runs and the tests use: alpha
// (consumers) and beta (providers), their domain files and certificates, the sample
// providers, and the checks tests make on it. Tests may add gamma, a second consumer
// domain calling beta (TopologyOptions.Gamma). Production commands do not link it (build
// the binary with -tags nodemo to leave it and the samples out).
package demo

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/membership"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/samples"
	"github.com/strait-mesh/strait/internal/xdsres"
	"github.com/strait-mesh/strait/launch"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/registries"
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

// TopologyOptions shape a topology.
type TopologyOptions struct {
	// Dir holds certificates and registry data; a temporary directory, removed by Close,
	// if empty.
	Dir     string
	Egress  int // instances in alpha, default 2
	Ingress int // instances in beta, default 2
	// Transport is the tunnel transport from alpha (and, with Gamma, from gamma) to beta:
	// "h2" (default) or "quic".
	Transport string
	// BothWays makes calls cross in both directions: alpha gets ingress instances and a
	// provider of its own (AlphaService, in alpha's registry), beta gets egress instances,
	// and each domain exports every native gRPC/Triple service to the other with a pattern
	// export ("*"), besides beta's exact exports.
	BothWays bool
	// DataPath is the gateways' data path: "relay" (default) or "http".
	DataPath string
	// EgressListen and EgressAdvertise are the listen address (default 127.0.0.1:0) and
	// the advertise setting of alpha's egress instances.
	EgressListen, EgressAdvertise string
	// DrainDelay is every gateway's drainDelay (default 0).
	DrainDelay time.Duration
	// Registry is the kind of registry of both domains: "embedded" (default: an embedded
	// etcd per domain, in Dir), or "etcd", "zookeeper" or "nacos", servers that run already
	// at AlphaRegistry and BetaRegistry (host:port; for Nacos its HTTP port), one per domain.
	Registry                    string
	AlphaRegistry, BetaRegistry []string
	// Gamma adds a second consumer domain, gamma (trust domain GammaTrustDomain), shaped
	// like alpha: its own CA, its own registry (of the kind Registry names; embedded, its
	// own etcd in Dir), its own controlplane and GammaEgress egress instances. Gamma's
	// only peer is beta, and it routes the sample services there as alpha does; beta takes
	// gamma as a peer (gamma's trust bundle) and exports to it whatever it exports to
	// alpha.
	Gamma bool
	// GammaEgress is the number of gamma's egress instances with Gamma, default 1.
	GammaEgress int
	// GammaRegistry is, with Gamma and a Registry other than "embedded", host:port of
	// gamma's registry server, as AlphaRegistry is alpha's.
	GammaRegistry []string
	Logger        *slog.Logger
}

// Topology is a running topology: two domains, three with Gamma.
type Topology struct {
	Dir string
	// Egress lists host:port of alpha's egress consumer listeners.
	Egress []string
	// Ingress lists host:port of beta's ingress tunnel listeners.
	Ingress []string
	// Gateways are every gateway instance: beta's ingress, then alpha's egress, then (with
	// Gamma) gamma's egress, then (with BothWays) alpha's ingress and beta's egress.
	Gateways []*launch.Gateway
	// AlphaCP and BetaCP are the domains' controlplanes.
	AlphaCP, BetaCP *controlplane.Server
	// Providers in beta.
	GRPCAddr, TripleAddr, HTTPAddr string
	// Certs names the identity files.
	Certs Certs
	// BetaRegistry is a client of beta's registry that the sample providers registered with.
	BetaRegistry registrysync.Registry
	// With BothWays: AlphaIngress lists alpha's ingress tunnel listeners, BetaEgress beta's
	// egress consumer listeners, AlphaProviderAddr alpha's provider of AlphaService.
	AlphaIngress, BetaEgress []string
	AlphaProviderAddr        string
	// With Gamma: GammaEgress lists host:port of gamma's egress consumer listeners, GammaCP
	// is gamma's controlplane.
	GammaEgress []string
	GammaCP     *controlplane.Server

	ownDir   bool
	dataPath string
	// egressListen and egressAdvertise: TopologyOptions' EgressListen and EgressAdvertise.
	egressListen, egressAdvertise string
	drainDelay                    time.Duration
	closers                       []func(context.Context) // run in reverse order
	closed                        sync.Once
}

// Certs are the identity files the topology generated.
type Certs struct {
	AlphaCA, BetaCA *identity.CA
	AlphaBundle     string
	BetaBundle      string
	Egress          []identity.Files
	Ingress         []identity.Files
	// With BothWays: alpha's ingress and beta's egress instances.
	AlphaIngress, BetaEgress []identity.Files
	// AlphaOwnBundle and BetaOwnBundle are each domain's own CA, for the links between its
	// controlplane and its gateways (the same certificates as BetaBundle and AlphaBundle,
	// which the peers hold).
	AlphaOwnBundle, BetaOwnBundle       string
	AlphaControlplane, BetaControlplane identity.Files
	// With Gamma: gamma's CA; GammaBundle, its CA's certificate that beta holds, and
	// GammaOwnBundle the same for gamma's own controlplane and gateways; the identities of
	// gamma's controlplane and egress instances.
	GammaCA                     *identity.CA
	GammaBundle, GammaOwnBundle string
	GammaControlplane           identity.Files
	GammaEgress                 []identity.Files
}

// AlphaService is the service alpha provides with BothWays: gRPC's health service.
const AlphaService = "grpc.health.v1.Health"

// Trust domains of the two domains.
const (
	AlphaTrustDomain = "alpha.strait.local"
	BetaTrustDomain  = "beta.strait.local"
)

// StartTopology brings the topology up and returns when every gateway is configured and
// beta's ingress knows every sample provider.
func StartTopology(ctx context.Context, o TopologyOptions) (t *Topology, err error) {
	if o.Egress <= 0 {
		o.Egress = 2
	}
	if o.Ingress <= 0 {
		o.Ingress = 2
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry != "" && o.Registry != "embedded" && (len(o.AlphaRegistry) == 0 || len(o.BetaRegistry) == 0) {
		return nil, fmt.Errorf("topology: a %s registry needs AlphaRegistry and BetaRegistry addresses", o.Registry)
	}
	if o.Gamma && o.GammaEgress <= 0 {
		o.GammaEgress = 1
	}
	if o.Gamma && o.Registry != "" && o.Registry != "embedded" && len(o.GammaRegistry) == 0 {
		return nil, fmt.Errorf("topology: gamma with a %s registry needs GammaRegistry addresses", o.Registry)
	}
	t = &Topology{Dir: o.Dir, dataPath: o.DataPath, egressListen: o.EgressListen, egressAdvertise: o.EgressAdvertise, drainDelay: o.DrainDelay}
	if t.Dir == "" {
		if t.Dir, err = os.MkdirTemp("", "strait-demo-"); err != nil {
			return nil, fmt.Errorf("topology: %w", err)
		}
		t.ownDir = true
	}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	if err := t.makeCerts(o); err != nil {
		return t, err
	}
	alphaKey, err := writeGossipKey(filepath.Join(t.Dir, "alpha", "certs", "gossip-egress.key"))
	if err != nil {
		return t, err
	}
	betaKey, err := writeGossipKey(filepath.Join(t.Dir, "beta", "certs", "gossip-ingress.key"))
	if err != nil {
		return t, err
	}

	// Beta: controlplane (with its embedded registry), providers, ingress instances (closed in
	// reverse order: the ingress lets go of its provider connections first).
	beta := BetaConfig(t.Certs.AlphaBundle)
	beta.Registry = o.registry(beta.Registry, o.BetaRegistry)
	beta.Controlplane.Identity = &config.Identity{Cert: t.Certs.BetaControlplane.Cert, Key: t.Certs.BetaControlplane.Key, Bundle: t.Certs.BetaOwnBundle}
	// The controlplane's gossip address is fixed, so that after a restart it is found
	// again by the gateways that use it as their seed. Its port is held until the
	// controlplane starts.
	var betaGossip heldAddrs
	betaBind, err := betaGossip.hold(t)
	if err != nil {
		return t, err
	}
	beta.Gossip.Ingress = &config.Gossip{Bind: betaBind, KeyFile: betaKey}
	var alphaIngress []string
	var alphaIngressLns []net.Listener
	var betaEgressKey, alphaIngressKey string
	if o.BothWays {
		// Alpha's ingress addresses are chosen now: beta's controlplane follows alpha's
		// catalog through them from its start. Their listeners stay open until the
		// gateways take them, so that no other process takes the ports meanwhile.
		for range o.Ingress {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return t, fmt.Errorf("topology: %w", err)
			}
			t.onClose(func(context.Context) { ln.Close() })
			alphaIngressLns = append(alphaIngressLns, ln)
			alphaIngress = append(alphaIngress, ln.Addr().String())
		}
		if betaEgressKey, err = writeGossipKey(filepath.Join(t.Dir, "beta", "certs", "gossip-egress.key")); err != nil {
			return t, err
		}
		if alphaIngressKey, err = writeGossipKey(filepath.Join(t.Dir, "alpha", "certs", "gossip-ingress.key")); err != nil {
			return t, err
		}
		beta.Peers[0].Ingress = alphaIngress
		bind, err := betaGossip.hold(t)
		if err != nil {
			return t, err
		}
		beta.Gossip.Egress = &config.Gossip{Bind: bind, KeyFile: betaEgressKey}
		beta.Exports = append(beta.Exports, config.Export{Service: "*", Protocol: mesh.ProtocolGRPC, To: []string{"alpha"}})
	}
	if o.Gamma {
		addGammaPeer(beta, t.Certs.GammaBundle)
	}
	betaGossip.release()
	if t.BetaCP, err = controlplane.Start(controlplane.ServerOptions{
		Domain: beta, DataDir: filepath.Join(t.Dir, "beta", "etcd"), Logger: o.Logger,
	}); err != nil {
		return t, err
	}
	t.onClose(func(context.Context) { t.BetaCP.Close() })
	// Providers in beta, registered in beta's registry.
	if err := t.startProviders(ctx, o); err != nil {
		return t, err
	}

	for i := range o.Ingress {
		g, err := t.startGateway("beta", xdsres.RoleIngress, i, t.Certs.Ingress[i], t.BetaCP.XDSAddr(),
			&config.Gossip{Bind: "127.0.0.1:0", Join: []string{t.BetaCP.GossipAddr(xdsres.RoleIngress)}, KeyFile: betaKey}, o.Logger)
		if err != nil {
			return t, err
		}
		t.Ingress = append(t.Ingress, g.Addr())
	}

	// Alpha: controlplane and egress instances; beta's ingress instances are its peer.
	alpha := AlphaConfig(t.Certs.BetaBundle, t.Ingress)
	alpha.Registry = o.registry(alpha.Registry, o.AlphaRegistry)
	alpha.Controlplane.Identity = &config.Identity{Cert: t.Certs.AlphaControlplane.Cert, Key: t.Certs.AlphaControlplane.Key, Bundle: t.Certs.AlphaOwnBundle}
	if o.Transport != "" {
		alpha.Peers[0].Transport = o.Transport
	}
	var alphaGossip heldAddrs
	alphaBind, err := alphaGossip.hold(t)
	if err != nil {
		return t, err
	}
	alpha.Gossip.Egress = &config.Gossip{Bind: alphaBind, KeyFile: alphaKey}
	if o.BothWays {
		bind, err := alphaGossip.hold(t)
		if err != nil {
			return t, err
		}
		alpha.Gossip.Ingress = &config.Gossip{Bind: bind, KeyFile: alphaIngressKey}
		alpha.Exports = []config.Export{{Service: "*", Protocol: mesh.ProtocolGRPC, To: []string{"beta"}}}
	}
	alphaGossip.release()
	if t.AlphaCP, err = controlplane.Start(controlplane.ServerOptions{
		Domain: alpha, DataDir: filepath.Join(t.Dir, "alpha", "etcd"), Logger: o.Logger,
	}); err != nil {
		return t, err
	}
	t.onClose(func(context.Context) { t.AlphaCP.Close() })
	for i := range o.Egress {
		g, err := t.startGateway("alpha", xdsres.RoleEgress, i, t.Certs.Egress[i], t.AlphaCP.XDSAddr(),
			&config.Gossip{Bind: "127.0.0.1:0", Join: []string{t.AlphaCP.GossipAddr(xdsres.RoleEgress)}, KeyFile: alphaKey}, o.Logger)
		if err != nil {
			return t, err
		}
		t.Egress = append(t.Egress, g.Advertised())
	}
	if o.Gamma {
		if err := t.startGamma(o); err != nil {
			return t, err
		}
	}
	if o.BothWays {
		if err := t.startOtherWay(ctx, o, alphaIngressLns, alphaIngressKey, betaEgressKey); err != nil {
			return t, err
		}
	}

	// Ready when every gateway is configured, the ingress sees every provider and gamma's
	// egress routes the sample gRPC and Triple services.
	return t, t.waitFor(ctx, 20*time.Second, "gateways configured and providers known", func() bool {
		for _, g := range t.Gateways {
			if !g.Ready() {
				return false
			}
			if eg := g.Egress(); eg != nil && g.Config().Domain == "gamma" {
				for _, n := range []string{GRPCService, TripleService} {
					if _, ok := eg.Routes().LookupRPC(mesh.ServiceKey{Name: n}); !ok {
						return false
					}
				}
			}
			if ig := g.Ingress(); ig != nil && g.Config().Domain == "alpha" {
				if len(ig.Endpoints(mesh.ServiceKey{Name: AlphaService}, mesh.ProtocolGRPC)) == 0 {
					return false
				}
			} else if ig != nil {
				for _, k := range []struct {
					n string
					p mesh.Protocol
				}{{GRPCService, mesh.ProtocolGRPC}, {TripleService, mesh.ProtocolTriple}, {HTTPService, mesh.ProtocolHTTP}} {
					if len(ig.Endpoints(mesh.ServiceKey{Name: k.n}, k.p)) == 0 {
						return false
					}
				}
			}
		}
		return true
	})
}

// startOtherWay starts what BothWays adds: alpha's provider (registered in alpha's
// registry), alpha's ingress instances on the addresses beta was given, and beta's egress
// instances.
func (t *Topology) startOtherWay(ctx context.Context, o TopologyOptions, alphaIngress []net.Listener, alphaKey, betaKey string) error {
	hp, err := startHealthProvider()
	if err != nil {
		return err
	}
	t.onClose(func(context.Context) { hp.Stop() })
	t.AlphaProviderAddr = hp.addr
	areg, err := openDomainRegistry(t.AlphaCP, o.Logger)
	if err != nil {
		return err
	}
	t.onClose(func(context.Context) { _ = areg.Close() })
	if err := registerProvider(ctx, areg, mesh.Instance{Service: mesh.ServiceKey{Name: AlphaService}, Protocol: mesh.ProtocolGRPC, Address: hp.addr}); err != nil {
		return err
	}
	for i, ln := range alphaIngress {
		g, err := t.startGatewayOn(ln, "alpha", xdsres.RoleIngress, i, t.Certs.AlphaIngress[i], t.AlphaCP.XDSAddr(),
			&config.Gossip{Bind: "127.0.0.1:0", Join: []string{t.AlphaCP.GossipAddr(xdsres.RoleIngress)}, KeyFile: alphaKey}, o.Logger)
		if err != nil {
			return err
		}
		t.AlphaIngress = append(t.AlphaIngress, g.Addr())
	}
	for i := range o.Egress {
		g, err := t.startGateway("beta", xdsres.RoleEgress, i, t.Certs.BetaEgress[i], t.BetaCP.XDSAddr(),
			&config.Gossip{Bind: "127.0.0.1:0", Join: []string{t.BetaCP.GossipAddr(xdsres.RoleEgress)}, KeyFile: betaKey}, o.Logger)
		if err != nil {
			return err
		}
		t.BetaEgress = append(t.BetaEgress, g.Addr())
	}
	return nil
}

func (t *Topology) startGateway(domain, role string, i int, svid identity.Files, xds string, gossip *config.Gossip, log *slog.Logger) (*launch.Gateway, error) {
	return t.startGatewayOn(nil, domain, role, i, svid, xds, gossip, log)
}

// startGatewayOn starts a gateway on ln, or on a port of its own if ln is nil.
func (t *Topology) startGatewayOn(ln net.Listener, domain, role string, i int, svid identity.Files, xds string, gossip *config.Gossip, log *slog.Logger) (*launch.Gateway, error) {
	listen, adv := "127.0.0.1:0", ""
	if domain == "alpha" && role == xdsres.RoleEgress {
		if t.egressListen != "" {
			listen = t.egressListen
		}
		adv = t.egressAdvertise
	}
	if ln != nil {
		listen = ln.Addr().String()
	}
	gw := &config.Gateway{
		Domain: domain, Role: role, Instance: fmt.Sprintf("%s-%d", role, i+1),
		Listen: listen, Advertise: adv, Admin: "127.0.0.1:0", Controlplane: config.ControlplaneLink{XDS: xds}, Gossip: gossip,
		DataPath: t.dataPath, DrainDelay: config.Duration(t.drainDelay),
	}
	gw.Identity.Cert, gw.Identity.Key = svid.Cert, svid.Key
	switch domain {
	case "beta":
		gw.Identity.Bundle = t.Certs.BetaOwnBundle
	case "gamma":
		gw.Identity.Bundle = t.Certs.GammaOwnBundle
	default:
		gw.Identity.Bundle = t.Certs.AlphaOwnBundle
	}
	var (
		g   *launch.Gateway
		err error
	)
	if ln != nil {
		g, err = launch.StartGatewayOn(gw, ln, log)
	} else {
		g, err = launch.StartGateway(gw, log)
	}
	if err != nil {
		return nil, err
	}
	t.Gateways = append(t.Gateways, g)
	t.onClose(func(ctx context.Context) { _ = g.Shutdown(ctx) })
	return g, nil
}

func (t *Topology) startProviders(ctx context.Context, o TopologyOptions) error {
	gp, err := samples.StartGRPC("127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("topology: grpc provider: %w", err)
	}
	t.onClose(func(ctx context.Context) { _ = gp.Close(ctx) })
	tp, err := samples.StartTripleProvider("127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("topology: triple provider: %w", err)
	}
	t.onClose(func(ctx context.Context) { _ = tp.Close(ctx) })
	hp, err := samples.StartEcho("127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("topology: http provider: %w", err)
	}
	t.onClose(func(ctx context.Context) { _ = hp.Close(ctx) })
	t.GRPCAddr, t.TripleAddr, t.HTTPAddr = gp.Addr(), tp.Addr(), hp.Addr()

	breg, err := openDomainRegistry(t.BetaCP, o.Logger)
	if err != nil {
		return err
	}
	t.onClose(func(context.Context) { _ = breg.Close() })
	t.BetaRegistry = breg
	for _, inst := range []mesh.Instance{
		{Service: mesh.ServiceKey{Name: GRPCService}, Protocol: mesh.ProtocolGRPC, Address: t.GRPCAddr},
		{Service: mesh.ServiceKey{Name: TripleService, Version: TripleVersion}, Protocol: mesh.ProtocolTriple, Address: t.TripleAddr},
		{Service: mesh.ServiceKey{Name: HTTPService}, Protocol: mesh.ProtocolHTTP, Address: t.HTTPAddr},
	} {
		if err := registerProvider(ctx, breg, inst); err != nil {
			return err
		}
	}
	return nil
}

// registry is a domain's registry section: def (embedded) unless o names another kind.
func (o TopologyOptions) registry(def config.Registry, endpoints []string) config.Registry {
	if o.Registry == "" || o.Registry == "embedded" {
		return def
	}
	return config.Registry{Kind: o.Registry, Addresses: append([]string(nil), endpoints...)}
}

// registerProvider registers inst, trying again for up to 15 s: a registry client that
// has just started can be between connections (a loaded Nacos server's client says "not
// connected" until it reconnects).
func registerProvider(ctx context.Context, reg registrysync.Registry, inst mesh.Instance) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := reg.Register(ctx, inst)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topology: %w (last: %w)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// openDomainRegistry opens a client of cp's registry, of the kind its domain names, for the
// sample providers to register with.
func openDomainRegistry(cp *controlplane.Server, log *slog.Logger) (registrysync.Registry, error) {
	r := cp.Core().Domain().Registry
	return registries.Open(r.Kind, registries.Params{Addresses: []string{cp.RegistryEndpoint()}, Namespace: r.Namespace, Logger: log})
}

// heldAddrs are loopback addresses for a controlplane's gossip, chosen before it starts (its
// gateways and a restarted controlplane use them), whose ports stay bound here, TCP and UDP
// as memberlist binds both, until release, right before the controlplane binds them.
type heldAddrs []io.Closer

// hold picks an address and holds its port; the topology's Close lets it go if release
// was not reached.
func (h *heldAddrs) hold(t *Topology) (string, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("topology: gossip address: %w", err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil { // that UDP port is taken: another one
			ln.Close()
			continue
		}
		*h = append(*h, ln, pc)
		t.onClose(func(context.Context) { ln.Close(); pc.Close() })
		return ln.Addr().String(), nil
	}
	return "", errors.New("topology: gossip address: no port free for both TCP and UDP")
}

// release lets the ports go.
func (h heldAddrs) release() {
	for _, c := range h {
		c.Close()
	}
}

func writeGossipKey(path string) (string, error) {
	k, err := membership.GenerateKey()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("topology: %w", err)
	}
	return path, nil
}

func (t *Topology) waitFor(ctx context.Context, limit time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("topology: not %s within %v", what, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// ChangeDomains applies changed copies of alpha's and beta's domain files (their routes
// and exports may be appended to freely), beta's first so that a route never points at a
// service the peer refuses, and returns what puts the previous ones back. A nil function
// leaves that domain as it is. Gamma's file changes with ChangeGamma.
func (t *Topology) ChangeDomains(ctx context.Context, alpha, beta func(*config.Domain)) (restore func(context.Context) error, err error) {
	oldA, oldB := t.AlphaCP.Core().Domain(), t.BetaCP.Core().Domain()
	a, b := *oldA, *oldB
	a.Routes = append([]config.Route(nil), a.Routes...)
	b.Exports = append([]config.Export(nil), b.Exports...)
	if alpha != nil {
		alpha(&a)
	}
	if beta != nil {
		beta(&b)
	}
	restore = func(ctx context.Context) error {
		var errs []error
		for _, d := range []*config.Domain{oldA, oldB} {
			if _, err := t.SetDomain(ctx, d); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	for _, d := range []*config.Domain{&b, &a} {
		if _, err := t.SetDomain(ctx, d); err != nil {
			return restore, err
		}
	}
	return restore, nil
}

// DataPath is the gateways' data path: "relay" or "http".
func (t *Topology) DataPath() string {
	if t.dataPath == "" {
		return "relay"
	}
	return t.dataPath
}

// RestartGateway stops gateway i (draining, or at once if kill) and starts a new one with
// the same file, listening on the same address. It returns the new gateway once it is
// configured.
func (t *Topology) RestartGateway(ctx context.Context, i int, kill bool, log *slog.Logger) (*launch.Gateway, error) {
	old := t.Gateways[i]
	cfg := old.Config()
	cfg.Listen = old.Addr()
	if kill {
		old.Kill()
	} else if err := old.Shutdown(ctx); err != nil {
		return nil, err
	}
	var g *launch.Gateway
	var err error
	for range 100 { // the port can take a moment to be free
		if g, err = launch.StartGateway(&cfg, log); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	t.Gateways[i] = g
	t.onClose(func(ctx context.Context) { _ = g.Shutdown(ctx) })
	return g, t.waitFor(ctx, 10*time.Second, g.Name()+" configured", g.Ready)
}

// ReplaceControlplane puts cp in place of the controlplane of its domain (after a restart)
// and closes it with the topology.
func (t *Topology) ReplaceControlplane(cp *controlplane.Server) {
	switch cp.Core().Domain().Domain {
	case "beta":
		t.BetaCP = cp
	case "gamma":
		t.GammaCP = cp
	default:
		t.AlphaCP = cp
	}
	t.onClose(func(context.Context) { cp.Close() })
}

// SetDomain applies d through its domain's controlplane, as an operator would, and waits
// until every gateway of that domain runs the new version.
func (t *Topology) SetDomain(ctx context.Context, d *config.Domain) (string, error) {
	cp := t.AlphaCP
	switch d.Domain {
	case "beta":
		cp = t.BetaCP
	case "gamma":
		if t.GammaCP == nil {
			return "", errNoGamma
		}
		cp = t.GammaCP
	}
	if _, err := cp.Core().SetDomain(d); err != nil {
		return "", err
	}
	// The controlplane may publish again meanwhile (registry changes): wait for every
	// gateway to run whatever is latest.
	var v string
	return v, t.waitFor(ctx, 10*time.Second, "running the latest version", func() bool {
		v = cp.Core().Version()
		for _, g := range t.Gateways {
			if g.Config().Domain == d.Domain && g.XDS().Version() != v {
				return false
			}
		}
		return true
	})
}

func (t *Topology) onClose(f func(context.Context)) { t.closers = append(t.closers, f) }

// Close stops every component, in reverse order of start, and removes the temporary files.
func (t *Topology) Close() {
	t.closed.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := len(t.closers) - 1; i >= 0; i-- {
			t.closers[i](ctx)
		}
		if t.ownDir {
			os.RemoveAll(t.Dir)
		}
	})
}

func (t *Topology) makeCerts(o TopologyOptions) error {
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
	c.AlphaOwnBundle = filepath.Join(t.Dir, "alpha", "certs", "own-bundle.pem")
	c.BetaOwnBundle = filepath.Join(t.Dir, "beta", "certs", "own-bundle.pem")
	if err := c.AlphaCA.WriteBundle(c.AlphaOwnBundle); err != nil {
		return err
	}
	if err := c.BetaCA.WriteBundle(c.BetaOwnBundle); err != nil {
		return err
	}
	for _, x := range []struct {
		ca  *identity.CA
		td  string
		dom string
		dst *identity.Files
	}{{c.AlphaCA, AlphaTrustDomain, "alpha", &c.AlphaControlplane}, {c.BetaCA, BetaTrustDomain, "beta", &c.BetaControlplane}} {
		id, err := identity.ID(x.td, identity.RoleControlplane, "controlplane-1")
		if err != nil {
			return err
		}
		if *x.dst, err = x.ca.WriteSVID(filepath.Join(t.Dir, x.dom, "certs"), "controlplane-1", id, identity.IssueOptions{}); err != nil {
			return err
		}
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
	if o.Gamma {
		if err := t.makeGammaCerts(o); err != nil {
			return err
		}
	}
	if !o.BothWays {
		return nil
	}
	for _, x := range []struct {
		ca   *identity.CA
		td   string
		dom  string
		role string
		n    int
		dst  *[]identity.Files
	}{{c.AlphaCA, AlphaTrustDomain, "alpha", identity.RoleIngress, o.Ingress, &c.AlphaIngress}, {c.BetaCA, BetaTrustDomain, "beta", identity.RoleEgress, o.Egress, &c.BetaEgress}} {
		for i := range x.n {
			name := fmt.Sprintf("%s-%d", x.role, i+1)
			id, err := identity.ID(x.td, x.role, name)
			if err != nil {
				return err
			}
			f, err := x.ca.WriteSVID(filepath.Join(t.Dir, x.dom, "certs"), name, id, identity.IssueOptions{})
			if err != nil {
				return err
			}
			*x.dst = append(*x.dst, f)
		}
	}
	return nil
}

// AlphaConfig is the consumer domain's configuration: beta is its peer, and the sample
// services are routed there.
func AlphaConfig(betaBundle string, betaIngress []string) *config.Domain {
	return &config.Domain{
		Domain:      "alpha",
		TrustDomain: AlphaTrustDomain,
		Registry:    config.Registry{Kind: "embedded"},
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
func BetaConfig(alphaBundle string) *config.Domain {
	return &config.Domain{
		Domain:      "beta",
		TrustDomain: BetaTrustDomain,
		Registry:    config.Registry{Kind: "embedded"},
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

type healthProvider struct {
	addr string
	srv  *grpc.Server
}

// startHealthProvider serves gRPC's health service (status SERVING) on a loopback port.
func startHealthProvider() (*healthProvider, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("topology: health provider: %w", err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }() // ends with Stop
	return &healthProvider{addr: ln.Addr().String(), srv: srv}, nil
}

// Stop closes the provider's listener and connections.
func (h *healthProvider) Stop() { h.srv.Stop() }

// WaitServiceRouted waits up to limit until every egress instance of alpha routes service
// k over protocol p and every ingress instance of beta knows a provider of it.
func (t *Topology) WaitServiceRouted(ctx context.Context, limit time.Duration, k mesh.ServiceKey, p mesh.Protocol) error {
	return t.waitServiceRouted(ctx, "alpha", limit, k, p)
}

// waitServiceRouted waits up to limit until every egress instance of domain consumer
// routes service k over protocol p and every ingress instance of beta knows a provider of
// it.
func (t *Topology) waitServiceRouted(ctx context.Context, consumer string, limit time.Duration, k mesh.ServiceKey, p mesh.Protocol) error {
	return t.waitFor(ctx, limit, k.String()+" routed by "+consumer+" and its providers known", func() bool {
		for _, g := range t.Gateways {
			if eg := g.Egress(); eg != nil && g.Config().Domain == consumer {
				var ok bool
				if p == mesh.ProtocolDubbo {
					_, ok = eg.Routes().LookupDubbo(k)
				} else {
					_, ok = eg.Routes().LookupRPC(k)
				}
				if !ok {
					return false
				}
			}
			if ig := g.Ingress(); ig != nil && g.Config().Domain == "beta" && len(ig.Endpoints(k, p)) == 0 {
				return false
			}
		}
		return true
	})
}
