package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
)

// TestMain ends the package with a goroutine leak check (the handshakes run on loopback).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const alpn = "strait-tunnel-test"

// pki is four trust domains, each with its CA, and their bundles on disk.
type pki struct {
	dir                       string
	alpha, beta, gamma, delta *CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	for _, x := range []struct {
		ca **CA
		td string
	}{{&p.alpha, "alpha.strait.local"}, {&p.beta, "beta.strait.local"}, {&p.gamma, "gamma.strait.local"}, {&p.delta, "delta.strait.local"}} {
		ca, err := NewCA(x.td, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := ca.WriteBundle(filepath.Join(p.dir, x.td+".pem")); err != nil {
			t.Fatal(err)
		}
		*x.ca = ca
	}
	return p
}

// bundles loads the bundles of the given CAs from their files, each bound to its own
// trust domain.
func (p *pki) bundles(t *testing.T, cas ...*CA) *x509bundle.Set {
	t.Helper()
	var pbs []PeerBundle
	for _, ca := range cas {
		td := ca.TrustDomain.Name()
		pbs = append(pbs, PeerBundle{TrustDomain: td, File: filepath.Join(p.dir, td+".pem")})
	}
	set, err := LoadBundles(pbs)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func mustID(t *testing.T, td, role, name string) spiffeid.ID {
	t.Helper()
	id, err := ID(td, role, name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// svid issues an SVID for id with ca (which need not be id's trust domain's CA), written
// to files and loaded back as a gateway does.
func (p *pki) svid(t *testing.T, ca *CA, id spiffeid.ID, o IssueOptions) *x509svid.SVID {
	t.Helper()
	name := strings.NewReplacer("/", "_", ":", "_").Replace(id.String()) + "-" + ca.TrustDomain.Name()
	f, err := ca.WriteSVID(p.dir, name, id, o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSVID(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// craft signs a leaf for id with ca's key, shaped by edit, without the checks LoadSVID
// makes: the certificates a misconfigured or hostile peer presents.
func craft(t *testing.T, ca *CA, id spiffeid.ID, edit func(*x509.Certificate)) (*x509svid.SVID, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}, key
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// outcome is what each end of one TLS exchange saw.
type outcome struct {
	serverErr, clientErr error
	server, client       tls.ConnectionState
}

// exchange runs a real handshake on loopback and one round trip of application data (so
// that a client whose certificate the server refuses learns it).
func exchange(t *testing.T, sconf, cconf *tls.Config) outcome {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var o outcome
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			o.serverErr = err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, sconf)
		if err := tc.Handshake(); err != nil {
			o.serverErr = err
			return
		}
		o.server = tc.ConnectionState()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(tc, buf); err != nil {
			o.serverErr = err
			return
		}
		_, o.serverErr = tc.Write([]byte("pong"))
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, cconf)
	o.clientErr = func() error {
		if err := tc.Handshake(); err != nil {
			return err
		}
		o.client = tc.ConnectionState()
		if _, err := tc.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := io.ReadFull(tc, buf)
		return err
	}()
	c.Close() // ends the server's wait if the client gave up
	<-done
	return o
}

func TestID(t *testing.T) {
	id, err := ID("alpha.strait.local", RoleEgress, "egress-1")
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != "spiffe://alpha.strait.local/egress/egress-1" || id.TrustDomain().Name() != "alpha.strait.local" || id.Path() != "/egress/egress-1" {
		t.Errorf("ID: %s (trust domain %s, path %s)", id, id.TrustDomain(), id.Path())
	}
	for _, tc := range []struct{ td, role, name, want string }{
		{"Alpha.strait.local", RoleEgress, "e1", `identity: trust domain "Alpha.strait.local": `},
		{"", RoleEgress, "e1", `identity: trust domain "": `},
		{"alpha strait", RoleEgress, "e1", `identity: trust domain "alpha strait": `},
		{"alpha.strait.local", RoleEgress, "", "identity: "},
		{"alpha.strait.local", RoleEgress, "a/b", "identity: "},
		{"alpha.strait.local", RoleEgress, "..", "identity: "},
		{"alpha.strait.local", "", "e1", "identity: "},
	} {
		id, err := ID(tc.td, tc.role, tc.name)
		if err == nil {
			t.Errorf("ID(%q, %q, %q) = %s, want an error", tc.td, tc.role, tc.name, id)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ID(%q, %q, %q): %v, want it to start with %q", tc.td, tc.role, tc.name, err, tc.want)
		}
	}
	if _, err := NewCA("Not A Trust Domain", time.Hour); err == nil || !strings.HasPrefix(err.Error(), "identity: ca: ") {
		t.Errorf("NewCA of a bad trust domain: %v", err)
	}
}

// TestCAIssues: the CA is a CA of its trust domain; what it issues is a valid X.509 SVID
// (a leaf for signatures, never a signer) that chains to it, for the times asked.
func TestCAIssues(t *testing.T) {
	ca, err := NewCA("alpha.strait.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://alpha.strait.local" {
		t.Errorf("CA certificate: CA %v, key usage %b, URIs %v", c.IsCA, c.KeyUsage, c.URIs)
	}
	if d := time.Until(c.NotAfter); d < 59*time.Minute || d > time.Hour {
		t.Errorf("CA valid for %v more, want about an hour", d)
	}
	if blk, rest := pem.Decode(ca.BundlePEM()); blk == nil || blk.Type != "CERTIFICATE" || !bytes.Equal(blk.Bytes, c.Raw) || len(rest) != 0 {
		t.Error("BundlePEM is not the CA certificate alone")
	}

	id := mustID(t, "alpha.strait.local", RoleIngress, "ingress-7")
	nb, na := time.Now().Add(-time.Hour).Truncate(time.Second), time.Now().Add(2*time.Hour).Truncate(time.Second)
	certPEM, keyPEM, err := ca.Issue(id, IssueOptions{NotBefore: nb, NotAfter: na})
	if err != nil {
		t.Fatal(err)
	}
	s, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("not a valid X.509 SVID: %v", err)
	}
	leaf := s.Certificates[0]
	if s.ID != id {
		t.Errorf("SVID ID %s, want %s", s.ID, id)
	}
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		t.Errorf("leaf: CA %v, key usage %b", leaf.IsCA, leaf.KeyUsage)
	}
	eku := map[x509.ExtKeyUsage]bool{}
	for _, u := range leaf.ExtKeyUsage {
		eku[u] = true
	}
	if !eku[x509.ExtKeyUsageServerAuth] || !eku[x509.ExtKeyUsageClientAuth] {
		t.Errorf("extended key usage %v: a gateway is both a TLS server and client", leaf.ExtKeyUsage)
	}
	if !leaf.NotBefore.Equal(nb) || !leaf.NotAfter.Equal(na) {
		t.Errorf("validity %v–%v, want %v–%v", leaf.NotBefore, leaf.NotAfter, nb, na)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the SVID does not chain to its CA: %v", err)
	}
	other, err := NewCA("alpha.strait.local", time.Hour) // same name, another key
	if err != nil {
		t.Fatal(err)
	}
	roots2 := x509.NewCertPool()
	roots2.AddCert(other.Cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots2}); err == nil {
		t.Error("the SVID chains to another CA of the same name")
	}
	// Defaults: valid from a minute ago for a day; each certificate its own serial.
	c1, _, err := ca.Issue(id, IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c2, _, _ := ca.Issue(id, IssueOptions{})
	p1, p2 := parseCert(t, c1), parseCert(t, c2)
	if d := p1.NotAfter.Sub(p1.NotBefore); d != 24*time.Hour+time.Minute {
		t.Errorf("default validity %v", d)
	}
	if p1.SerialNumber.Cmp(p2.SerialNumber) == 0 {
		t.Error("two certificates with one serial number")
	}
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFiles: SVIDs and bundles written and loaded back; every way the files can be wrong
// is an error that names the file.
func TestFiles(t *testing.T) {
	p := newPKI(t)
	dir := p.dir
	id := mustID(t, "alpha.strait.local", RoleEgress, "e1")
	f, err := p.alpha.WriteSVID(dir, "e1", id, IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Cert != filepath.Join(dir, "e1.pem") || f.Key != filepath.Join(dir, "e1-key.pem") {
		t.Errorf("files %+v", f)
	}
	if st, err := os.Stat(f.Key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", st.Mode(), err)
	}
	s, err := LoadSVID(f)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != id {
		t.Errorf("loaded %s", s.ID)
	}
	other, err := p.alpha.WriteSVID(dir, "e2", mustID(t, "alpha.strait.local", RoleEgress, "e2"), IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem at all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A CA certificate (and its key) used as an SVID.
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	writePEM(t, caCert, "CERTIFICATE", p.alpha.Cert.Raw)
	kder, err := x509.MarshalPKCS8PrivateKey(p.alpha.key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, caKey, "PRIVATE KEY", kder)
	// A leaf without the digitalSignature key usage, and one that may sign certificates.
	for name, edit := range map[string]func(*x509.Certificate){
		"nosig":    func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment },
		"certsign": func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign },
	} {
		s, key := craft(t, p.alpha, id, edit)
		writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", s.Certificates[0].Raw)
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, name+"-key.pem"), "PRIVATE KEY", kder)
	}
	for _, tc := range []struct {
		name string
		f    Files
		want string
	}{
		{"no cert file", Files{Cert: filepath.Join(dir, "missing.pem"), Key: f.Key}, "cannot read certificate file"},
		{"no key file", Files{Cert: f.Cert, Key: filepath.Join(dir, "missing-key.pem")}, "cannot read key file"},
		{"key of another SVID", Files{Cert: f.Cert, Key: other.Key}, "leaf certificate does not match private key"},
		{"cert file not PEM", Files{Cert: garbage, Key: f.Key}, "x509svid: "},
		{"empty cert file", Files{Cert: empty, Key: f.Key}, "x509svid: "},
		{"key in the cert file", Files{Cert: f.Key, Key: f.Key}, "x509svid: "},
		{"cert in the key file", Files{Cert: f.Cert, Key: f.Cert}, "x509svid: "},
		{"a CA as an SVID", Files{Cert: caCert, Key: caKey}, "x509svid: "},
		{"leaf without digitalSignature", Files{Cert: filepath.Join(dir, "nosig.pem"), Key: filepath.Join(dir, "nosig-key.pem")}, "must have 'digitalSignature'"},
		{"leaf that signs certificates", Files{Cert: filepath.Join(dir, "certsign.pem"), Key: filepath.Join(dir, "certsign-key.pem")}, "must not have 'keyCertSign'"},
	} {
		_, err := LoadSVID(tc.f)
		if err == nil {
			t.Errorf("%s: loaded", tc.name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "identity: load svid "+tc.f.Cert+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to name %s and say %q", tc.name, err, tc.f.Cert, tc.want)
		}
	}

	// Bundles.
	set := p.bundles(t, p.alpha, p.beta)
	for _, ca := range []*CA{p.alpha, p.beta} {
		b, err := set.GetX509BundleForTrustDomain(ca.TrustDomain)
		if err != nil || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(ca.Cert) {
			t.Errorf("bundle of %s: %v", ca.TrustDomain, err)
		}
	}
	if set.Has(p.gamma.TrustDomain) {
		t.Error("a bundle of gamma appeared")
	}
	betaFile := filepath.Join(dir, "beta.strait.local.pem")
	for _, tc := range []struct {
		name  string
		peers []PeerBundle
		want  string
	}{
		{"bad trust domain", []PeerBundle{{"Beta", betaFile}}, `identity: trust domain "Beta": `},
		{"two bundles for one trust domain", []PeerBundle{{"beta.strait.local", betaFile}, {"beta.strait.local", betaFile}}, `identity: trust domain "beta.strait.local" has two bundles`},
		{"missing file", []PeerBundle{{"beta.strait.local", filepath.Join(dir, "nope.pem")}}, "identity: bundle of beta.strait.local: "},
		{"empty file", []PeerBundle{{"beta.strait.local", empty}}, "identity: bundle of beta.strait.local in " + empty + " holds no certificate"},
		{"not PEM", []PeerBundle{{"beta.strait.local", garbage}}, "identity: bundle of beta.strait.local"},
		{"a key, not a certificate", []PeerBundle{{"beta.strait.local", f.Key}}, "identity: bundle of beta.strait.local"},
	} {
		_, err := LoadBundles(tc.peers)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to start with %q", tc.name, err, tc.want)
		}
	}
}

// TestTunnelHandshake: the tunnel's mutual TLS between an egress of alpha and an ingress
// of beta, over real handshakes on loopback. Each peer's bundle vouches for its own trust
// domain only.
func TestTunnelHandshake(t *testing.T) {
	p := newPKI(t)
	alphaEgress := mustID(t, "alpha.strait.local", RoleEgress, "egress-1")
	betaIngress := mustID(t, "beta.strait.local", RoleIngress, "ingress-1")
	// The ingress of beta admits alpha and gamma, and holds their bundles (and, to show
	// that holding a bundle is not admission, delta's).
	ingressBundles := p.bundles(t, p.alpha, p.gamma, p.delta)
	allowed := []spiffeid.TrustDomain{p.alpha.TrustDomain, p.gamma.TrustDomain}
	server := func(s *x509svid.SVID) *tls.Config { return ServerConfig(s, ingressBundles, allowed, alpn) }
	// The egress of alpha dials beta, and holds beta's and gamma's bundles.
	egressBundles := p.bundles(t, p.beta, p.gamma)
	client := func(s *x509svid.SVID) *tls.Config { return ClientConfig(s, egressBundles, p.beta.TrustDomain, alpn) }
	goodServer := p.svid(t, p.beta, betaIngress, IssueOptions{})
	goodClient := p.svid(t, p.alpha, alphaEgress, IssueOptions{})

	t.Run("ok", func(t *testing.T) {
		o := exchange(t, server(goodServer), client(goodClient))
		if o.serverErr != nil || o.clientErr != nil {
			t.Fatalf("server: %v; client: %v", o.serverErr, o.clientErr)
		}
		if o.client.Version != tls.VersionTLS13 || o.client.NegotiatedProtocol != alpn {
			t.Errorf("version %x, ALPN %q", o.client.Version, o.client.NegotiatedProtocol)
		}
		if id, err := PeerID(&o.server); err != nil || id != alphaEgress {
			t.Errorf("the ingress sees %s, %v", id, err)
		}
		if id, err := PeerID(&o.client); err != nil || id != betaIngress {
			t.Errorf("the egress sees %s, %v", id, err)
		}
	})

	expired := IssueOptions{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}
	future := IssueOptions{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)}
	// An intermediate that is not a CA: an SVID of alpha signs another.
	notCA, notCAKey := craft(t, p.alpha, mustID(t, "alpha.strait.local", RoleEgress, "signer"), nil)
	underNotCA := func() *x509svid.SVID {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{alphaEgress.URL()},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, notCA.Certificates[0], &key.PublicKey, notCAKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return &x509svid.SVID{ID: alphaEgress, Certificates: []*x509.Certificate{leaf, notCA.Certificates[0]}, PrivateKey: key}
	}()
	leafCA, _ := craft(t, p.alpha, alphaEgress, func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign })
	leafCertSign, _ := craft(t, p.alpha, alphaEgress, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign })
	leafCRLSign, _ := craft(t, p.alpha, alphaEgress, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCRLSign })
	noURI, _ := craft(t, p.alpha, alphaEgress, func(c *x509.Certificate) { c.URIs = nil; c.DNSNames = []string{"egress-1.alpha"} })
	tls12 := client(goodClient)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	otherALPN := ClientConfig(goodClient, egressBundles, p.beta.TrustDomain, "h2")
	noCert := client(goodClient)
	noCert.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }

	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		// wantServer / wantClient: the refusal the refusing end reports; the other end
		// must fail too.
		wantServer, wantClient string
	}{
		{name: "server of beta's name signed by gamma's CA",
			server: server(p.svid(t, p.gamma, betaIngress, IssueOptions{})), client: client(goodClient),
			wantClient: "x509svid: could not verify leaf certificate"},
		{name: "client of alpha's name signed by gamma's CA",
			server: server(goodServer), client: client(p.svid(t, p.gamma, alphaEgress, IssueOptions{})),
			wantServer: "x509svid: could not verify leaf certificate"},
		{name: "client of alpha's name signed by beta's CA, a bundle the ingress does not hold",
			server: server(goodServer), client: client(p.svid(t, p.beta, alphaEgress, IssueOptions{})),
			wantServer: "x509svid: could not verify leaf certificate"},
		{name: "server of gamma, a trust domain the egress did not dial",
			server: server(p.svid(t, p.gamma, mustID(t, "gamma.strait.local", RoleIngress, "i"), IssueOptions{})), client: client(goodClient),
			wantClient: `"gamma.strait.local"`},
		{name: "client of delta, held but not an allowed peer",
			server: server(goodServer), client: client(p.svid(t, p.delta, mustID(t, "delta.strait.local", RoleEgress, "e"), IssueOptions{})),
			wantServer: `trust domain "delta.strait.local" is not a peer`},
		{name: "client of beta, whose bundle the ingress does not hold",
			server: server(goodServer), client: client(p.svid(t, p.beta, mustID(t, "beta.strait.local", RoleEgress, "e"), IssueOptions{})),
			wantServer: "could not get X509 bundle"},
		{name: "expired client certificate",
			server: server(goodServer), client: client(p.svid(t, p.alpha, alphaEgress, expired)),
			wantServer: "expired or is not yet valid"},
		{name: "server certificate not yet valid",
			server: server(p.svid(t, p.beta, betaIngress, future)), client: client(goodClient),
			wantClient: "expired or is not yet valid"},
		{name: "client leaf with the CA flag",
			server: server(goodServer), client: client(leafCA),
			wantServer: "leaf certificate with CA flag set to true"},
		{name: "client leaf that may sign certificates",
			server: server(goodServer), client: client(leafCertSign),
			wantServer: "leaf certificate with KeyCertSign key usage"},
		{name: "client leaf that may sign CRLs",
			server: server(goodServer), client: client(leafCRLSign),
			wantServer: "leaf certificate with KeyCrlSign key usage"},
		{name: "client chain through a leaf that is not a CA",
			server: server(goodServer), client: client(underNotCA),
			wantServer: "parent certificate cannot sign this kind of certificate"},
		{name: "client certificate without a SPIFFE ID",
			server: server(goodServer), client: client(noURI),
			wantServer: "could not get leaf SPIFFE ID"},
		{name: "client without a certificate",
			server: server(goodServer), client: noCert,
			wantServer: "client didn't provide a certificate"},
		{name: "TLS 1.2", server: server(goodServer), client: tls12, wantServer: "client offered only unsupported versions"},
		{name: "another ALPN", server: server(goodServer), client: otherALPN, wantServer: "unsupported application protocols"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := exchange(t, tc.server, tc.client)
			t.Logf("server: %v; client: %v", o.serverErr, o.clientErr)
			if o.serverErr == nil || o.clientErr == nil {
				t.Fatalf("not refused: server %v; client %v", o.serverErr, o.clientErr)
			}
			if tc.wantServer != "" && !strings.Contains(o.serverErr.Error(), tc.wantServer) {
				t.Errorf("the server refused with %q, want %q", o.serverErr, tc.wantServer)
			}
			if tc.wantClient != "" && !strings.Contains(o.clientErr.Error(), tc.wantClient) {
				t.Errorf("the client refused with %q, want %q", o.clientErr, tc.wantClient)
			}
		})
	}
}

// TestControlplaneHandshake: the link between gateways and their controlplane admits only
// egress and ingress SVIDs of the controlplane's own trust domain, and the gateways accept
// only spiffe://<td>/controlplane/… as their controlplane.
func TestControlplaneHandshake(t *testing.T) {
	p := newPKI(t)
	td := p.alpha.TrustDomain
	own := p.bundles(t, p.alpha)
	cpSVID := p.svid(t, p.alpha, mustID(t, "alpha.strait.local", RoleControlplane, "cp-1"), IssueOptions{})
	server := ControlplaneServerConfig(cpSVID, own, td)
	gw := func(role, name string) *tls.Config {
		return ControlplaneClientConfig(p.svid(t, p.alpha, mustID(t, "alpha.strait.local", role, name), IssueOptions{}), own, td)
	}
	for _, role := range []string{RoleEgress, RoleIngress} {
		o := exchange(t, server, gw(role, "gw-1"))
		if o.serverErr != nil || o.clientErr != nil {
			t.Fatalf("%s: server %v; client %v", role, o.serverErr, o.clientErr)
		}
		if o.client.NegotiatedProtocol != "h2" || o.client.Version != tls.VersionTLS13 {
			t.Errorf("%s: ALPN %q, version %x", role, o.client.NegotiatedProtocol, o.client.Version)
		}
	}
	// The trust domain is right in all of these; the role is not.
	for _, tc := range []struct {
		name   string
		client *tls.Config
		want   string
	}{
		{"a controlplane as a gateway", gw(RoleControlplane, "cp-2"), "is not a gateway"},
		{"a role named like egress", gw("egressx", "gw-1"), "is not a gateway"},
		{"an unknown role", gw("admin", "root"), "is not a gateway"},
	} {
		o := exchange(t, server, tc.client)
		if o.serverErr == nil || !strings.Contains(o.serverErr.Error(), tc.want) || o.clientErr == nil {
			t.Errorf("%s: server %v (want %q); client %v", tc.name, o.serverErr, tc.want, o.clientErr)
		}
	}
	// A gateway of another trust domain, even one whose bundle the controlplane were to
	// hold, is refused.
	both := p.bundles(t, p.alpha, p.beta)
	o := exchange(t, ControlplaneServerConfig(cpSVID, both, td),
		ControlplaneClientConfig(p.svid(t, p.beta, mustID(t, "beta.strait.local", RoleEgress, "gw"), IssueOptions{}), both, td))
	if o.serverErr == nil || !strings.Contains(o.serverErr.Error(), "is not of trust domain alpha.strait.local") {
		t.Errorf("a gateway of beta: server %v; client %v", o.serverErr, o.clientErr)
	}
	// The gateways' side: only a controlplane SVID of their own trust domain is their
	// controlplane.
	for _, tc := range []struct {
		name string
		svid *x509svid.SVID
	}{
		{"an egress posing as the controlplane", p.svid(t, p.alpha, mustID(t, "alpha.strait.local", RoleEgress, "e9"), IssueOptions{})},
		{"the controlplane of beta", p.svid(t, p.beta, mustID(t, "beta.strait.local", RoleControlplane, "cp-1"), IssueOptions{})},
	} {
		o := exchange(t, ControlplaneServerConfig(tc.svid, both, tc.svid.ID.TrustDomain()), ControlplaneClientConfig(p.svid(t, p.alpha, mustID(t, "alpha.strait.local", RoleEgress, "e1"), IssueOptions{}), both, td))
		if o.clientErr == nil || !strings.Contains(o.clientErr.Error(), "is not the controlplane of alpha.strait.local") {
			t.Errorf("%s: client %v; server %v", tc.name, o.clientErr, o.serverErr)
		}
	}
}

func TestPeerID(t *testing.T) {
	if _, err := PeerID(nil); err == nil || err.Error() != "identity: no peer certificate" {
		t.Errorf("nil state: %v", err)
	}
	if _, err := PeerID(&tls.ConnectionState{}); err == nil || err.Error() != "identity: no peer certificate" {
		t.Errorf("no certificates: %v", err)
	}
	ca, err := NewCA("alpha.strait.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	plain := &x509.Certificate{Subject: pkix.Name{CommonName: "no spiffe id"}}
	if _, err := PeerID(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{plain}}); err == nil || !strings.HasPrefix(err.Error(), "identity: peer certificate: ") {
		t.Errorf("certificate without URI: %v", err)
	}
	two := &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: "a", Path: "/x"}, {Scheme: "spiffe", Host: "b", Path: "/y"}}}
	if _, err := PeerID(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{two}}); err == nil {
		t.Error("a certificate with two SPIFFE IDs has an ID")
	}
	// PeerID reads, it does not verify (the handshake did): a leaf's ID comes back as is.
	certPEM, _, err := ca.Issue(mustID(t, "alpha.strait.local", RoleIngress, "i1"), IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := PeerID(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{parseCert(t, certPEM)}}); err != nil || id.String() != "spiffe://alpha.strait.local/ingress/i1" {
		t.Errorf("leaf: %s, %v", id, err)
	}
}
