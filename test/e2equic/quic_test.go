// Package e2equic runs the cross-domain scenarios with alpha reaching beta over the QUIC
// tunnel (HTTP/3, same mutual-TLS identities) instead of HTTP/2 over TLS.
package e2equic

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch/demo"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/strait-mesh/strait/internal/samples"
	"github.com/strait-mesh/strait/test/interopcases"
)

var topo *demo.Topology

func TestMain(m *testing.M) {
	t, err := demo.StartTopology(context.Background(), demo.TopologyOptions{Transport: "quic"})
	if err != nil {
		println("e2equic: start topology:", err.Error())
		os.Exit(1)
	}
	topo = t
	code := m.Run()
	topo.Close()
	if code == 0 {
		var opts []goleak.Option
		for _, f := range samples.TripleClientGoroutines {
			opts = append(opts, goleak.IgnoreAnyFunction(f))
		}
		if err := goleak.Find(opts...); err != nil {
			println("e2equic: goroutine leak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

func TestInteropOverQUIC(t *testing.T) {
	for i, e := range topo.Egress {
		cc, err := grpc.NewClient(e, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20)))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range interopcases.Cases(cc) {
			t.Run(fmt.Sprintf("egress%d/%s", i+1, c.Name), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c.Run(ctx)
			})
		}
		cc.Close()
	}
	// The calls went over QUIC: beta's ingress accepted QUIC tunnels, and one HTTP/2 tunnel
	// at most: the Federation stream of alpha's controlplane, which rides HTTP/2.
	var all, quic uint64
	for _, g := range topo.Gateways {
		if ig := g.Ingress(); ig != nil {
			all += ig.TunnelsEstablished()
			quic += ig.QUICTunnelsEstablished()
		}
	}
	if quic == 0 || all-quic > 1 {
		t.Fatalf("%d tunnels, %d of them QUIC", all, quic)
	}
}

func TestTripleAndHTTPOverQUIC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if g, err := samples.TripleGreet(ctx, topo.Egress[0], "quic"); err != nil || g != "hello quic" {
		t.Fatalf("triple: %q %v", g, err)
	}
	body := bytes.Repeat([]byte("q"), 1<<20)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("http://"+topo.Egress[1]+demo.HTTPPrefix+"/x", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, body) {
		t.Fatalf("echo over quic: %d bytes back", len(got))
	}
}
