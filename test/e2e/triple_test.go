package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/samples"
)

// TestTripleDubboGo: dubbo-go's Triple client, gRPC-compatible HTTP/2 mode, unary and bidi.
func TestTripleDubboGo(t *testing.T) {
	for i, e := range topo.Egress {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := samples.TripleGreet(ctx, e, "alpha")
		if err != nil || got != "hello alpha" {
			cancel()
			t.Fatalf("egress %d: Greet = %q, %v", i, got, err)
		}
		names := []string{"a", "b", "c"}
		stream, err := samples.TripleGreetStream(ctx, e, names)
		cancel()
		if err != nil || strings.Join(stream, ",") != "hello a,hello b,hello c" {
			t.Fatalf("egress %d: GreetStream = %q, %v", i, stream, err)
		}
	}
}

// TestTripleHTTP1JSON: a plain net/http client in Triple's HTTP/1.1 JSON unary mode.
func TestTripleHTTP1JSON(t *testing.T) {
	for i, e := range topo.Egress {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := samples.TripleGreetJSON(ctx, "http://"+e, "alpha")
		cancel()
		if err != nil || got != "hello alpha" {
			t.Fatalf("egress %d: Greet = %q, %v", i, got, err)
		}
	}
}

// TestTripleUnknownService: an unknown service in JSON mode gets Triple's 404 with an
// unimplemented code naming the service.
func TestTripleUnknownService(t *testing.T) {
	c := httpClient(t)
	resp, err := c.Post("http://"+topo.Egress[0]+"/com.example.Nope/Call", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	if resp.StatusCode != http.StatusNotFound || e.Code != "unimplemented" || !strings.Contains(e.Message, "com.example.Nope") {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
}
