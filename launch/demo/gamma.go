package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/strait-mesh/strait/controlplane"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/xdsres"
)

// GammaTrustDomain is the trust domain of gamma, the second consumer domain
// (TopologyOptions.Gamma).
const GammaTrustDomain = "gamma.strait.local"

// errNoGamma is what gamma's operations return on a topology started without Gamma.
var errNoGamma = errors.New("topology: no domain gamma (TopologyOptions.Gamma is not set)")

// GammaConfig is the second consumer domain's configuration: beta is its only peer, and
// the sample services are routed there, as in alpha's (AlphaConfig).
func GammaConfig(betaBundle string, betaIngress []string) *config.Domain {
	d := AlphaConfig(betaBundle, betaIngress)
	d.Domain, d.TrustDomain = "gamma", GammaTrustDomain
	return d
}

// addGammaPeer makes gamma a peer of beta, trusted through gammaBundle, and lets it call
// every service beta exports to alpha. Each export changed gets a To of its own.
func addGammaPeer(beta *config.Domain, gammaBundle string) {
	beta.Peers = append(beta.Peers, config.Peer{Domain: "gamma", TrustDomain: GammaTrustDomain, TrustBundle: gammaBundle})
	for i, e := range beta.Exports {
		if slices.Contains(e.To, "alpha") && !slices.Contains(e.To, "gamma") {
			beta.Exports[i].To = append(slices.Clone(e.To), "gamma")
		}
	}
}

// startGamma starts domain gamma once beta's ingress instances run: its controlplane (with
// its registry) and its egress instances, whose peer is beta.
func (t *Topology) startGamma(o TopologyOptions) error {
	key, err := writeGossipKey(filepath.Join(t.Dir, "gamma", "certs", "gossip-egress.key"))
	if err != nil {
		return err
	}
	gamma := GammaConfig(t.Certs.BetaBundle, t.Ingress)
	gamma.Registry = o.registry(gamma.Registry, o.GammaRegistry)
	gamma.Controlplane.Identity = &config.Identity{Cert: t.Certs.GammaControlplane.Cert, Key: t.Certs.GammaControlplane.Key, Bundle: t.Certs.GammaOwnBundle}
	if o.Transport != "" {
		gamma.Peers[0].Transport = o.Transport
	}
	var held heldAddrs
	bind, err := held.hold(t)
	if err != nil {
		return err
	}
	gamma.Gossip.Egress = &config.Gossip{Bind: bind, KeyFile: key}
	held.release()
	if t.GammaCP, err = controlplane.Start(controlplane.ServerOptions{
		Domain: gamma, DataDir: filepath.Join(t.Dir, "gamma", "etcd"), Logger: o.Logger,
	}); err != nil {
		return fmt.Errorf("topology: gamma: %w", err)
	}
	t.onClose(func(context.Context) { t.GammaCP.Close() })
	for i := range o.GammaEgress {
		g, err := t.startGateway("gamma", xdsres.RoleEgress, i, t.Certs.GammaEgress[i], t.GammaCP.XDSAddr(),
			&config.Gossip{Bind: "127.0.0.1:0", Join: []string{t.GammaCP.GossipAddr(xdsres.RoleEgress)}, KeyFile: key}, o.Logger)
		if err != nil {
			return fmt.Errorf("topology: gamma: %w", err)
		}
		t.GammaEgress = append(t.GammaEgress, g.Advertised())
	}
	return nil
}

// makeGammaCerts makes gamma's CA, its bundles, and the identities of its controlplane
// and egress instances, in Dir/gamma/certs.
func (t *Topology) makeGammaCerts(o TopologyOptions) error {
	c := &t.Certs
	var err error
	if c.GammaCA, err = identity.NewCA(GammaTrustDomain, 24*time.Hour); err != nil {
		return err
	}
	dir := filepath.Join(t.Dir, "gamma", "certs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	c.GammaBundle = filepath.Join(dir, "bundle.pem")
	c.GammaOwnBundle = filepath.Join(dir, "own-bundle.pem")
	for _, f := range []string{c.GammaBundle, c.GammaOwnBundle} {
		if err := c.GammaCA.WriteBundle(f); err != nil {
			return err
		}
	}
	id, err := identity.ID(GammaTrustDomain, identity.RoleControlplane, "controlplane-1")
	if err != nil {
		return err
	}
	if c.GammaControlplane, err = c.GammaCA.WriteSVID(dir, "controlplane-1", id, identity.IssueOptions{}); err != nil {
		return err
	}
	for i := range o.GammaEgress {
		name := fmt.Sprintf("egress-%d", i+1)
		id, err := identity.ID(GammaTrustDomain, identity.RoleEgress, name)
		if err != nil {
			return err
		}
		f, err := c.GammaCA.WriteSVID(dir, name, id, identity.IssueOptions{})
		if err != nil {
			return err
		}
		c.GammaEgress = append(c.GammaEgress, f)
	}
	return nil
}

// ChangeGamma applies a changed copy of gamma's domain file (its routes, exports and peers
// may be appended to freely) and returns, once every gateway of gamma runs it, what puts
// the previous one back. Beta is left as it is: what gamma needs of beta (an export to
// gamma) goes through ChangeDomains first. A nil function changes nothing.
func (t *Topology) ChangeGamma(ctx context.Context, gamma func(*config.Domain)) (restore func(context.Context) error, err error) {
	if t.GammaCP == nil {
		return func(context.Context) error { return nil }, errNoGamma
	}
	old := t.GammaCP.Core().Domain()
	d := *old
	d.Routes = slices.Clone(d.Routes)
	d.Exports = slices.Clone(d.Exports)
	d.Peers = slices.Clone(d.Peers)
	if gamma != nil {
		gamma(&d)
	}
	restore = func(ctx context.Context) error {
		_, err := t.SetDomain(ctx, old)
		return err
	}
	if _, err := t.SetDomain(ctx, &d); err != nil {
		return restore, err
	}
	return restore, nil
}

// WaitGammaServiceRouted is WaitServiceRouted for gamma: it waits up to limit until every
// egress instance of gamma routes service k over protocol p and every ingress instance of
// beta knows a provider of it.
func (t *Topology) WaitGammaServiceRouted(ctx context.Context, limit time.Duration, k mesh.ServiceKey, p mesh.Protocol) error {
	if t.GammaCP == nil {
		return errNoGamma
	}
	return t.waitServiceRouted(ctx, "gamma", limit, k, p)
}
