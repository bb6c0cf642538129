package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/tunnel"
)

// TestOversizedHeaders: a consumer sending too large a header block gets 431 and the
// egress keeps serving.
func TestOversizedHeaders(t *testing.T) {
	c, err := net.DialTimeout("tcp", topo.Egress[0], 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /echo/x HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 2<<20))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, "431") {
		t.Fatalf("got %q, %v; want 431", line, err)
	}
	// Still serving.
	resp, err := httpClient(t).Get("http://" + topo.Egress[0] + "/echo/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after oversized headers: %d", resp.StatusCode)
	}
}

// TestGarbageToListeners: bytes that are neither HTTP nor TLS are refused without harm.
func TestGarbageToListeners(t *testing.T) {
	for _, addr := range []string{topo.Egress[0], topo.Ingress[0]} {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(15 * time.Second))
		c.Write([]byte("\x00\x01\x02 not a protocol \r\n\r\n"))
		io.Copy(io.Discard, c) // the server closes the connection
		c.Close()
	}
	TestHTTPUnknownRoute(t)
	TestTripleHTTP1JSON(t)
}

// TestTunnelRequestWithoutMetadata: an authenticated peer sending a request that names
// no service, or a service that is not exported, gets a clear error.
func TestTunnelRequestWithoutMetadata(t *testing.T) {
	id, _ := identity.ID(demo.AlphaTrustDomain, identity.RoleEgress, "probe")
	cert, key, err := topo.Certs.AlphaCA.Issue(id, identity.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := x509svid.Parse(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: demo.BetaTrustDomain, File: topo.Certs.BetaBundle}})
	if err != nil {
		t.Fatal(err)
	}
	conf := identity.ClientConfig(svid, bundles, spiffeid.RequireTrustDomainFromString(demo.BetaTrustDomain), tunnel.ALPN)
	c := tunnel.NewClient(conf, tunnel.ClientOptions{})
	defer c.Close()
	for _, tc := range []struct {
		name   string
		header map[string]string
		path   string
		status int
	}{
		{"no metadata", nil, "/x", http.StatusBadRequest},
		{"http service not exported", map[string]string{"Strait-Protocol": "http", "Strait-Service": "secret"}, "/x", http.StatusNotFound},
		{"http service exported", map[string]string{"Strait-Protocol": "http", "Strait-Service": demo.HTTPService}, "/x", http.StatusOK},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+topo.Ingress[0]+tc.path, nil)
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, err := c.RoundTrip(req)
		if err != nil {
			cancel()
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: got %d %q, want %d", tc.name, resp.StatusCode, b, tc.status)
		}
	}
}
