package e2equic

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/test/dubbogo"
)

// TestDubboOverQUIC: with a QUIC peer, Dubbo calls ride HTTP/3 streams (the frame as the
// body) rather than Dubbo tunnel connections; a real dubbo-go consumer reaches a real
// dubbo-go provider through both gateways.
func TestDubboOverQUIC(t *testing.T) {
	addr := dubbogo.Provider(t)
	key := mesh.ServiceKey{Name: dubbogo.Interface, Version: dubbogo.Version, Group: dubbogo.Group}
	inst := mesh.Instance{Service: key, Protocol: mesh.ProtocolDubbo, Address: addr, Metadata: map[string]string{"application": "dubbogo-echo"}}
	ctx := context.Background()
	if err := topo.BetaRegistry.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.BetaRegistry.Deregister(context.Background(), inst) })
	restore, err := topo.ChangeDomains(ctx, nil, func(b *config.Domain) {
		b.Exports = append(b.Exports, config.Export{Service: key.Name, Protocol: mesh.ProtocolDubbo, To: []string{"alpha"}})
	})
	t.Cleanup(func() {
		if err := restore(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.WaitServiceRouted(ctx, 30*time.Second, key, mesh.ProtocolDubbo); err != nil {
		t.Fatal(err)
	}
	var r struct {
		Echo    string `json:"echo"`
		BytesOK bool   `json:"bytesOK"`
		UserAge int32  `json:"userAge"`
		FailErr string `json:"failErr"`
	}
	out := dubbogo.Consumer(t, topo.Egress[0])
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.Echo != "hello" || !r.BytesOK || r.UserAge != 42 || r.FailErr == "" {
		t.Fatalf("dubbo-go consumer over QUIC: %s", out)
	}
	t.Logf("dubbo-go consumer over QUIC: %s", out)
}
