package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"
)

func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// TestHTTPEchoLargeBody sends 1 MiB through the chain over HTTP/1.1, routed by path and by
// Host, and gets it back byte-identical with its headers.
func TestHTTPEchoLargeBody(t *testing.T) {
	body := make([]byte, 1<<20)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	c := httpClient(t)
	for _, tc := range []struct {
		name, path, host string
	}{
		{"by path", demo.HTTPPrefix + "/upload?x=1", ""},
		{"by host", "/anything", demo.HTTPHost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, e := range topo.Egress {
				req, _ := http.NewRequest(http.MethodPut, "http://"+e+tc.path, bytes.NewReader(body))
				if tc.host != "" {
					req.Host = tc.host
				}
				req.Header.Set("X-Custom", "v1")
				req.Header.Add("X-Multi", "a")
				req.Header.Add("X-Multi", "b")
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("egress %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, got)
				}
				if !bytes.Equal(got, body) {
					t.Fatalf("body differs: got %d bytes", len(got))
				}
				if resp.Header.Get("X-Custom") != "v1" || strings.Join(resp.Header.Values("X-Multi"), ",") != "a,b" {
					t.Fatalf("headers not echoed: %v", resp.Header)
				}
				if got := resp.Header.Get("X-Echo-Path"); got != tc.path {
					t.Fatalf("provider saw path %q, want %q", got, tc.path)
				}
				if tc.host != "" && resp.Header.Get("X-Echo-Host") != tc.host {
					t.Fatalf("provider saw host %q", resp.Header.Get("X-Echo-Host"))
				}
				// Tunnel metadata never reaches the provider.
				for k := range resp.Header {
					if strings.HasPrefix(k, "Strait-") {
						t.Fatalf("provider saw tunnel header %s", k)
					}
				}
			}
		})
	}
}

func TestHTTPUnknownRoute(t *testing.T) {
	c := httpClient(t)
	resp, err := c.Get("http://" + topo.Egress[0] + "/nowhere")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "/nowhere") {
		t.Fatalf("got %d %q, want 404 naming the path", resp.StatusCode, b)
	}
}

// TestConsumerCannotForgeTunnelMetadata: Strait-* headers from a consumer are dropped.
func TestConsumerCannotForgeTunnelMetadata(t *testing.T) {
	c := httpClient(t)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+topo.Egress[0]+demo.HTTPPrefix+"/x", nil)
	req.Header.Set("Strait-Service", "grpc.testing.TestService")
	req.Header.Set("Strait-Forged", "1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Strait-Forged") != "" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
}
