package launch_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/launch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// svid writes an SVID of spiffe://alpha.strait.local/<role>/1 and the trust domain's
// bundle into dir.
func svid(t *testing.T, dir, role string) (identity.Files, string) {
	t.Helper()
	ca, err := identity.NewCA("alpha.strait.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.WriteSVID(dir, role, spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("alpha.strait.local"), "/"+role+"/1"), identity.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle.pem")
	if err := ca.WriteBundle(bundle); err != nil {
		t.Fatal(err)
	}
	return f, bundle
}

// closedAddr is an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func gatewayFile(t *testing.T, role string, f identity.Files, bundle, xds string) *config.Gateway {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, role+".yaml")
	y := "domain: alpha\nrole: " + role + "\ninstance: \"1\"\nlisten: 127.0.0.1:0\nadmin: 127.0.0.1:0\n" +
		"controlplane: {xds: \"" + xds + "\"}\n" +
		"identity: {cert: " + f.Cert + ", key: " + f.Key + ", bundle: " + bundle + "}\n"
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	gw, err := config.LoadGateway(p)
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

// TestStartGatewayRefuses: a gateway that cannot start says why and leaves nothing
// running (the leak check after the tests).
func TestStartGatewayRefuses(t *testing.T) {
	dir := t.TempDir()
	f, bundle := svid(t, dir, "egress")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name   string
		change func(*config.Gateway)
		want   string
	}{
		{"no certificate", func(g *config.Gateway) { g.Identity.Cert = filepath.Join(dir, "missing.pem") }, "missing.pem"},
		{"no bundle", func(g *config.Gateway) { g.Identity.Bundle = filepath.Join(dir, "missing-bundle.pem") }, "missing-bundle.pem"},
		{"listener taken", func(g *config.Gateway) { g.Listen = busy.Addr().String() }, "listen"},
		{"admin taken", func(g *config.Gateway) { g.Admin = busy.Addr().String() }, "address already in use"},
		{"unknown role", func(g *config.Gateway) { g.Role = "sidecar" }, "role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := gatewayFile(t, "egress", f, bundle, closedAddr(t))
			tc.change(gw)
			g, err := launch.StartGateway(gw, nil)
			if err == nil {
				g.Kill()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestGatewayWithoutControlplane: a gateway whose controlplane is not there serves at
// once, reports not ready, answers calls UNAVAILABLE with the reason, and drains.
func TestGatewayWithoutControlplane(t *testing.T) {
	for _, role := range []string{"egress", "ingress"} {
		t.Run(role, func(t *testing.T) {
			f, bundle := svid(t, t.TempDir(), role)
			g, err := launch.StartGateway(gatewayFile(t, role, f, bundle, closedAddr(t)), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := g.Shutdown(ctx); err != nil {
					t.Errorf("shutdown: %v", err)
				}
			}()
			if g.Ready() {
				t.Fatal("ready without a configuration")
			}
			resp, err := http.Get("http://" + g.AdminAddr() + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("/readyz %d, want 503", resp.StatusCode)
			}
			if role != "egress" {
				return // the ingress refuses handshakes until configured (tested in test/e2e)
			}
			cc, err := grpc.NewClient(g.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "no configuration yet") {
				t.Fatalf("call: %v, want UNAVAILABLE: no configuration yet", err)
			}
		})
	}
}
