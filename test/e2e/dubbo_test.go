package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/dubbowire"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/launch"
	"github.com/strait-mesh/strait/test/dubbogo"
	"github.com/strait-mesh/strait/test/ports"
)

// TestDubboAcrossDomains: a real dubbo-go v3.3.2 consumer calls a real dubbo-go provider
// over the classic Dubbo protocol (dubbo://, hessian2) through alpha's egress and beta's
// ingress: the provider registers in beta's registry, beta exports it with protocol dubbo,
// and the consumer dials alpha's egress. Strings, a 512 KiB byte array and a POJO come
// back, the provider's exception reaches the consumer, and a service alpha does not
// route is answered by the egress with a Dubbo error naming it.
func TestDubboAcrossDomains(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts dubbo-go processes")
	}
	addr := dubbogo.Provider(t)

	key := mesh.ServiceKey{Name: dubbogo.Interface, Version: dubbogo.Version, Group: dubbogo.Group}
	inst := mesh.Instance{Service: key, Protocol: mesh.ProtocolDubbo, Address: addr,
		Metadata: map[string]string{"application": "dubbogo-echo", "methods": "Echo,EchoBytes,EchoUser,Fail"}}
	ctx := context.Background()
	if err := topo.BetaRegistry.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.BetaRegistry.Deregister(context.Background(), inst) })
	setDomains(t, topo, nil, func(b *config.Domain) {
		b.Exports = append(b.Exports, config.Export{Service: dubbogo.Interface, Protocol: mesh.ProtocolDubbo, To: []string{"alpha"}})
	})
	if err := topo.WaitServiceRouted(ctx, 30*time.Second, key, mesh.ProtocolDubbo); err != nil {
		t.Fatal(err)
	}

	var r struct {
		Echo       string `json:"echo"`
		EchoErr    string `json:"echoErr"`
		BytesOK    bool   `json:"bytesOK"`
		BytesErr   string `json:"bytesErr"`
		FailErr    string `json:"failErr"`
		UserAge    int32  `json:"userAge"`
		UserErr    string `json:"userErr"`
		UnknownErr string `json:"unknownErr"`
	}
	for i, egress := range topo.Egress {
		out := dubbogo.Consumer(t, egress)
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("consumer via egress %d: %v: %s", i, err, out)
		}
		t.Logf("dubbo-go consumer via egress %s: %s", egress, out)
		if r.Echo != "hello" || r.EchoErr != "" || !r.BytesOK || r.BytesErr != "" || r.UserAge != 42 || r.UserErr != "" {
			t.Fatalf("calls through egress %s: %+v", egress, r)
		}
		if !strings.Contains(r.FailErr, "fail: boom") {
			t.Fatalf("the provider's exception: %q", r.FailErr)
		}
		if !strings.Contains(r.UnknownErr, "unknown service") || !strings.Contains(r.UnknownErr, dubbogo.Interface+"Missing") {
			t.Fatalf("a service alpha does not route: %q", r.UnknownErr)
		}
	}
}

// TestDubboProviderUnreachable: a Dubbo call whose only provider in beta cannot be reached
// is answered, at once, with a Dubbo SERVICE_ERROR response whose message names the
// provider; the consumer's connection keeps serving. A method the export does not allow
// is refused by beta's ingress, naming the calling domain. Both are counted as dubbo calls.
func TestDubboProviderUnreachable(t *testing.T) {
	res := ports.Reserve(t, 1)[0]
	dead := res.Addr()
	res.Release() // nobody listens there
	key := mesh.ServiceKey{Name: "org.apache.dubbo.strait.Unreachable", Version: "1.0.0"}
	inst := mesh.Instance{Service: key, Protocol: mesh.ProtocolDubbo, Address: dead, Metadata: map[string]string{"application": "gone"}}
	ctx := context.Background()
	if err := topo.BetaRegistry.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.BetaRegistry.Deregister(context.Background(), inst) })
	setDomains(t, topo, nil, func(b *config.Domain) {
		b.Exports = append(b.Exports, config.Export{Service: key.Name, Protocol: mesh.ProtocolDubbo, To: []string{"alpha"}, Methods: []string{"Echo"}})
	})
	if err := topo.WaitServiceRouted(ctx, 30*time.Second, key, mesh.ProtocolDubbo); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", topo.Egress[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := dubbowire.Request{Path: key.Name, Version: key.Version, Method: "Echo", ParamTypes: "Ljava/lang/String;"}
	for id := uint64(1); id <= 2; id++ {
		start := time.Now()
		resp, err := dubbowire.Call(ctx, conn, id, req, []any{"x"}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var re *dubbowire.RemoteError
		if !errors.As(resp.Err(), &re) || re.Status != dubbowire.StatusServiceError || !strings.Contains(re.Message, dead) {
			t.Fatalf("call %d: %v, want SERVICE_ERROR naming %s", id, resp.Err(), dead)
		}
		t.Logf("call %d answered in %v: %s %q", id, time.Since(start).Round(time.Millisecond), re.Status, re.Message)
	}
	req.Method = "Refund"
	resp, err := dubbowire.Call(ctx, conn, 3, req, []any{"x"}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var re *dubbowire.RemoteError
	if !errors.As(resp.Err(), &re) || re.Status != dubbowire.StatusServiceError || !strings.Contains(re.Message, "may not call") {
		t.Fatalf("a method the export does not allow: %v", resp.Err())
	}
	t.Logf("method not allowed: %s %q", re.Status, re.Message)
	var egress, ingress bool
	for _, g := range topo.Gateways {
		m := metricsText(t, g)
		egress = egress || (g.Egress() != nil && strings.Contains(m, `protocol="dubbo",role="egress"`))
		ingress = ingress || (g.Ingress() != nil && strings.Contains(m, `strait_calls_total{code="PermissionDenied",peer="alpha",protocol="dubbo",role="ingress"}`))
	}
	if !egress || !ingress {
		t.Fatalf("dubbo calls counted: egress %v, ingress (PermissionDenied) %v", egress, ingress)
	}
}

// metricsText is g's /metrics.
func metricsText(t *testing.T, g *launch.Gateway) string {
	t.Helper()
	resp, err := http.Get("http://" + g.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", g.Name(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
