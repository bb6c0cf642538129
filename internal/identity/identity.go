// Package identity gives Strait processes their X.509 SVIDs and builds the mutual-TLS
// configurations of the tunnel: TLS 1.3 only, the tunnel's ALPN value, SPIFFE IDs as
// identities, and each peer's trust bundle bound to that peer's trust domain alone.
package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Roles of gateway identities, the first segment of an SVID's path.
const (
	RoleEgress       = "egress"
	RoleIngress      = "ingress"
	RoleControlplane = "controlplane"
)

// ID returns spiffe://<trustDomain>/<role>/<name>.
func ID(trustDomain, role, name string) (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: trust domain %q: %w", trustDomain, err)
	}
	id, err := spiffeid.FromSegments(td, role, name)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: %w", err)
	}
	return id, nil
}

// Files names the PEM files of one SVID.
type Files struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// LoadSVID reads an SVID (leaf first, then intermediates) and its private key.
func LoadSVID(f Files) (*x509svid.SVID, error) {
	svid, err := x509svid.Load(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("identity: load svid %s: %w", f.Cert, err)
	}
	return svid, nil
}

// PeerBundle is one peer trust domain and the file of its CA certificates.
type PeerBundle struct {
	TrustDomain string
	File        string
}

// LoadBundles reads the peers' bundles into a set in which each bundle is bound to its
// own trust domain: a certificate is checked against the bundle of the trust domain its
// SPIFFE ID names, so one peer's CA can never vouch for another trust domain.
func LoadBundles(peers []PeerBundle) (*x509bundle.Set, error) {
	set := x509bundle.NewSet()
	for _, p := range peers {
		td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("identity: trust domain %q: %w", p.TrustDomain, err)
		}
		if set.Has(td) {
			return nil, fmt.Errorf("identity: trust domain %q has two bundles", p.TrustDomain)
		}
		b, err := x509bundle.Load(td, p.File)
		if err != nil {
			return nil, fmt.Errorf("identity: bundle of %s: %w", p.TrustDomain, err)
		}
		if b.Empty() {
			return nil, fmt.Errorf("identity: bundle of %s in %s holds no certificate", p.TrustDomain, p.File)
		}
		set.Add(b)
	}
	return set, nil
}

// ServerConfig is the TLS configuration of a tunnel listener: it requires a client SVID
// that chains to the bundle of its own trust domain, and only trust domains in allowed.
func ServerConfig(svid x509svid.Source, bundles x509bundle.Source, allowed []spiffeid.TrustDomain, alpn string) *tls.Config {
	c := tlsconfig.MTLSServerConfig(svid, bundles, authorizeMemberOfAny(allowed))
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{alpn}
	return c
}

// ClientConfig is the TLS configuration for dialing a peer's tunnel listener: the server
// must present an SVID of the peer trust domain signed by that domain's bundle.
func ClientConfig(svid x509svid.Source, bundles x509bundle.Source, peer spiffeid.TrustDomain, alpn string) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svid, bundles, tlsconfig.AuthorizeMemberOf(peer))
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{alpn}
	return c
}

func authorizeMemberOfAny(allowed []spiffeid.TrustDomain) tlsconfig.Authorizer {
	set := make(map[spiffeid.TrustDomain]bool, len(allowed))
	for _, td := range allowed {
		set[td] = true
	}
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if !set[id.TrustDomain()] {
			return fmt.Errorf("identity: %s: trust domain %q is not a peer", id, id.TrustDomain())
		}
		return nil
	}
}

// PeerID returns the SPIFFE ID of the peer of a completed handshake.
func PeerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("identity: no peer certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: peer certificate: %w", err)
	}
	return id, nil
}

// ControlplaneServerConfig is the TLS configuration of a controlplane's xDS listener: it
// presents svid and admits only egress and ingress SVIDs of its own trust domain td, each
// checked against bundle. ALPN is h2 (gRPC).
func ControlplaneServerConfig(svid x509svid.Source, bundle x509bundle.Source, td spiffeid.TrustDomain) *tls.Config {
	c := tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if id.TrustDomain() != td {
			return fmt.Errorf("identity: %s is not of trust domain %s", id, td)
		}
		if !id.MemberOf(td) || !(strings.HasPrefix(id.Path(), "/"+RoleEgress+"/") || strings.HasPrefix(id.Path(), "/"+RoleIngress+"/")) {
			return fmt.Errorf("identity: %s is not a gateway", id)
		}
		return nil
	}))
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{"h2"}
	return c
}

// ControlplaneClientConfig is a gateway's TLS configuration for its controlplane: it
// presents svid and accepts only spiffe://<td>/controlplane/… checked against bundle.
func ControlplaneClientConfig(svid x509svid.Source, bundle x509bundle.Source, td spiffeid.TrustDomain) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if id.TrustDomain() != td || !strings.HasPrefix(id.Path(), "/"+RoleControlplane+"/") {
			return fmt.Errorf("identity: %s is not the controlplane of %s", id, td)
		}
		return nil
	}))
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{"h2"}
	return c
}
