// Package scenarios is the cross-domain suite a running two-domain topology must pass,
// whoever runs it: test/e2e runs it on the in-process topology (launch/demo), test/local
// on deploy/local/up.sh's separate processes. Both topologies have the demo's services:
// beta provides grpc-go's interop TestService, the dubbo-go Triple GreetService and the
// HTTP echo, and alpha routes them to beta.
package scenarios

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/samples"
	"github.com/strait-mesh/strait/launch/demo"
	"github.com/strait-mesh/strait/test/interopcases"
)

// Topology is what the suite needs of a running topology.
type Topology struct {
	// Egress lists alpha's egress consumer addresses (host:port); each is tried.
	Egress []string
}

// Scenario is one case of the suite.
type Scenario struct {
	Name string
	Run  func(t *testing.T, egress string)
}

// All is the suite.
var All = []Scenario{
	{"grpc-interop", interop},
	{"grpc-8MiB", largeMessages},
	{"grpc-unknown-service", unknownService},
	{"triple-dubbo-go", tripleDubboGo},
	{"triple-http1-json", tripleJSON},
	{"triple-unknown-service", tripleUnknownService},
	{"http-by-path", httpByPath},
	{"http-by-host", httpByHost},
	{"http-1MiB", httpLarge},
}

// Run runs every scenario through every egress instance of tp.
func Run(t *testing.T, tp Topology) {
	t.Helper()
	if len(tp.Egress) == 0 {
		t.Fatal("scenarios: the topology has no egress")
	}
	for i, e := range tp.Egress {
		for _, s := range All {
			t.Run(fmt.Sprintf("egress%d/%s", i+1, s.Name), func(t *testing.T) { s.Run(t, e) })
		}
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20), grpc.MaxCallSendMsgSize(32<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// interop runs grpc-go's interop client cases (each ends the process on failure, as
// grpc-go's interop client does).
func interop(t *testing.T, egress string) {
	for _, c := range interopcases.Cases(dial(t, egress)) {
		t.Run(c.Name, func(t *testing.T) { c.Run(timeout(t)) })
	}
}

func largeMessages(t *testing.T, egress string) {
	const size = 8 << 20
	resp, err := testgrpc.NewTestServiceClient(dial(t, egress)).UnaryCall(timeout(t), &testpb.SimpleRequest{
		ResponseSize: size, Payload: &testpb.Payload{Body: make([]byte, size)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetPayload().GetBody()); n != size {
		t.Fatalf("response of %d bytes, want %d", n, size)
	}
}

func unknownService(t *testing.T, egress string) {
	_, err := testgrpc.NewUnimplementedServiceClient(dial(t, egress)).UnimplementedCall(timeout(t), &testpb.Empty{})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), "grpc.testing.UnimplementedService") {
		t.Fatalf("got %v, want UNIMPLEMENTED naming the service", err)
	}
}

func tripleDubboGo(t *testing.T, egress string) {
	ctx := timeout(t)
	got, err := samples.TripleGreet(ctx, egress, "alpha")
	if err != nil || got != "hello alpha" {
		t.Fatalf("Greet = %q, %v", got, err)
	}
	stream, err := samples.TripleGreetStream(ctx, egress, []string{"a", "b", "c"})
	if err != nil || strings.Join(stream, ",") != "hello a,hello b,hello c" {
		t.Fatalf("GreetStream = %q, %v", stream, err)
	}
}

func tripleJSON(t *testing.T, egress string) {
	got, err := samples.TripleGreetJSON(timeout(t), "http://"+egress, "alpha")
	if err != nil || got != "hello alpha" {
		t.Fatalf("Greet = %q, %v", got, err)
	}
}

func tripleUnknownService(t *testing.T, egress string) {
	resp := do(t, http.MethodPost, "http://"+egress+"/com.example.Nope/Call", "", "application/json", []byte(`{}`))
	var e struct{ Code, Message string }
	if err := json.Unmarshal(resp.body, &e); err != nil {
		t.Fatalf("body %q: %v", resp.body, err)
	}
	if resp.status != http.StatusNotFound || e.Code != "unimplemented" || !strings.Contains(e.Message, "com.example.Nope") {
		t.Fatalf("got %d %q, want 404 unimplemented naming the service", resp.status, resp.body)
	}
}

func httpByPath(t *testing.T, egress string) {
	if r := do(t, http.MethodPost, "http://"+egress+demo.HTTPPrefix+"/x", "", "text/plain", []byte("hi")); r.status != 200 || string(r.body) != "hi" {
		t.Fatalf("got %d %q", r.status, r.body)
	}
}

func httpByHost(t *testing.T, egress string) {
	if r := do(t, http.MethodPost, "http://"+egress+"/anything", demo.HTTPHost, "text/plain", []byte("by host")); r.status != 200 || string(r.body) != "by host" {
		t.Fatalf("got %d %q", r.status, r.body)
	}
}

func httpLarge(t *testing.T, egress string) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	if r := do(t, http.MethodPost, "http://"+egress+demo.HTTPPrefix+"/big", "", "application/octet-stream", body); r.status != 200 || !bytes.Equal(r.body, body) {
		t.Fatalf("got %d, %d bytes back of %d", r.status, len(r.body), len(body))
	}
}

type response struct {
	status int
	body   []byte
}

func do(t *testing.T, method, url, host, contentType string, body []byte) response {
	t.Helper()
	req, err := http.NewRequestWithContext(timeout(t), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Content-Type", contentType)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, b}
}
