package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	federationv1 "github.com/strait-mesh/strait/proto/federation/v1"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/tunnel"
)

// peerImporter is the importer of one peer's catalog, with what stops it.
type peerImporter struct {
	im     *Importer
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
func (c *Server) startImporters(ctx context.Context, d *config.Domain, baseDir string, svid *x509svid.SVID) error {
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
func (c *Server) syncImporters(ctx context.Context, d *config.Domain, baseDir string, svid *x509svid.SVID) error {
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
			old.im.SetQuota(p.Quota)
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

func (c *Server) startImporterLocked(ctx context.Context, self string, p config.Peer, baseDir string, svid *x509svid.SVID, carry *peerImporter) error {
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
	var im *Importer
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
	im = NewImporter(self, p.Domain, federationv1.NewFederationClient(cc), func() {
		c.cp.Refresh()
		c.republish()
	}, c.log.With("component", "importer"))
	im.SetQuota(p.Quota)
	if carry != nil {
		im.Carry(carry.im)
	}
	ictx, cancel := context.WithCancel(ctx)
	c.importers[p.Domain] = &peerImporter{im: im, cc: cc, cancel: cancel, key: key}
	c.goRun(func() { im.Run(ictx) })
	return nil
}

// Imports returns what each peer exports to this domain, as last heard.
func (c *Server) Imports() map[string]Import {
	c.impMu.Lock()
	defer c.impMu.Unlock()
	out := map[string]Import{}
	for p, pi := range c.importers {
		out[p] = pi.im.Import()
	}
	return out
}
