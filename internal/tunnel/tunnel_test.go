package tunnel_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type pki struct {
	dir                string
	alpha, beta, gamma *identity.CA
	alphaTD, betaTD    spiffeid.TrustDomain
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	var err error
	if p.alpha, err = identity.NewCA("alpha.test", time.Hour); err != nil {
		t.Fatal(err)
	}
	if p.beta, err = identity.NewCA("beta.test", time.Hour); err != nil {
		t.Fatal(err)
	}
	if p.gamma, err = identity.NewCA("gamma.test", time.Hour); err != nil {
		t.Fatal(err)
	}
	p.alphaTD = spiffeid.RequireTrustDomainFromString("alpha.test")
	p.betaTD = spiffeid.RequireTrustDomainFromString("beta.test")
	for name, ca := range map[string]*identity.CA{"alpha": p.alpha, "beta": p.beta} {
		if err := ca.WriteBundle(filepath.Join(p.dir, name+"-bundle.pem")); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *pki) svid(t *testing.T, ca *identity.CA, id string, o identity.IssueOptions) *x509svid.SVID {
	t.Helper()
	c, k, err := ca.Issue(spiffeid.RequireFromString(id), o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := x509svid.Parse(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startIngress runs a tunnel server of beta that admits alpha only.
func startIngress(t *testing.T, p *pki) string {
	t.Helper()
	bundles, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: "alpha.test", File: filepath.Join(p.dir, "alpha-bundle.pem")}})
	if err != nil {
		t.Fatal(err)
	}
	conf := identity.ServerConfig(p.svid(t, p.beta, "spiffe://beta.test/ingress/i1", identity.IssueOptions{}), bundles, []spiffeid.TrustDomain{p.alphaTD}, tunnel.ALPN)
	srv := tunnel.NewServer(conf, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := identity.PeerID(tunnel.ConnectionState(r))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		io.WriteString(w, id.String())
	}), tunnel.ServerOptions{HandshakeTimeout: 2 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

func call(t *testing.T, conf *tls.Config, addr string) (string, error) {
	t.Helper()
	c := tunnel.NewClient(conf, tunnel.ClientOptions{DialTimeout: 2 * time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestAdmitsPeerAndRefusesOthers(t *testing.T) {
	p := newPKI(t)
	addr := startIngress(t, p)
	betaBundle, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: "beta.test", File: filepath.Join(p.dir, "beta-bundle.pem")}})
	if err != nil {
		t.Fatal(err)
	}
	client := func(s *x509svid.SVID) *tls.Config {
		return identity.ClientConfig(s, betaBundle, p.betaTD, tunnel.ALPN)
	}
	good := client(p.svid(t, p.alpha, "spiffe://alpha.test/egress/e1", identity.IssueOptions{}))

	got, err := call(t, good, addr)
	if err != nil || got != "spiffe://alpha.test/egress/e1" {
		t.Fatalf("peer refused: %q %v", got, err)
	}

	noCert := tlsconfig.TLSClientConfig(betaBundle, tlsconfig.AuthorizeMemberOf(p.betaTD))
	noCert.MinVersion = tls.VersionTLS13
	wrongALPN := good.Clone()
	wrongALPN.NextProtos = []string{"h2"}
	refusals := map[string]*tls.Config{
		"no client certificate": noCert,
		// alpha's identity, but signed by a CA nobody configured.
		"unknown CA": client(p.svid(t, p.gamma, "spiffe://alpha.test/egress/e1", identity.IssueOptions{})),
		// a trust domain that is not a peer, with its own CA.
		"foreign trust domain": client(p.svid(t, p.gamma, "spiffe://gamma.test/egress/e1", identity.IssueOptions{})),
		// alpha's CA vouching for another trust domain: bundles are bound to their domain.
		"foreign trust domain signed by a peer CA": client(p.svid(t, p.alpha, "spiffe://gamma.test/egress/e1", identity.IssueOptions{})),
		"expired certificate": client(p.svid(t, p.alpha, "spiffe://alpha.test/egress/e1", identity.IssueOptions{
			NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		})),
	}
	for name, conf := range refusals {
		t.Run(name, func(t *testing.T) {
			if got, err := call(t, conf, addr); err == nil {
				t.Fatalf("admitted: %q", got)
			}
		})
	}
	t.Run("wrong ALPN", func(t *testing.T) {
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err := tls.DialWithDialer(&d, "tcp", addr, wrongALPN)
		if err == nil {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("a connection offering only h2 was served")
			}
		}
	})
	// The listener keeps serving its peer after all of that.
	if got, err := call(t, good, addr); err != nil || got != "spiffe://alpha.test/egress/e1" {
		t.Fatalf("after refusals: %q %v", got, err)
	}
}

func TestClientRefusesWrongServer(t *testing.T) {
	p := newPKI(t)
	addr := startIngress(t, p)
	// The egress expects its peer gamma at this address, but finds beta.
	dir := t.TempDir()
	if err := p.gamma.WriteBundle(filepath.Join(dir, "g.pem")); err != nil {
		t.Fatal(err)
	}
	gb, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: "gamma.test", File: filepath.Join(dir, "g.pem")}})
	if err != nil {
		t.Fatal(err)
	}
	conf := identity.ClientConfig(p.svid(t, p.alpha, "spiffe://alpha.test/egress/e1", identity.IssueOptions{}), gb, spiffeid.RequireTrustDomainFromString("gamma.test"), tunnel.ALPN)
	if _, err := call(t, conf, addr); err == nil {
		t.Fatal("client accepted a server of the wrong trust domain")
	}
	_ = os.Remove(filepath.Join(dir, "g.pem"))
}
