package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		method, path, ct string
		hdr              map[string]string
		rpc              bool
		style            ErrorStyle
		proto            mesh.Protocol
		svc, m, version  string
	}{
		{"POST", "/grpc.testing.TestService/EmptyCall", "application/grpc", nil, true, StyleGRPC, mesh.ProtocolGRPC, "grpc.testing.TestService", "EmptyCall", ""},
		{"POST", "/a.Greeter/Greet", "application/grpc+proto", map[string]string{"tri-service-version": "1.0.0"}, true, StyleGRPC, mesh.ProtocolTriple, "a.Greeter", "Greet", "1.0.0"},
		{"POST", "/a.Greeter/Greet", "application/json", nil, true, StyleTripleUnary, mesh.ProtocolTriple, "a.Greeter", "Greet", ""},
		{"POST", "/api/v1/users", "application/json", nil, false, StyleHTTP, mesh.ProtocolHTTP, "", "", ""},
		{"GET", "/a.Greeter/Greet", "application/json", nil, false, StyleHTTP, mesh.ProtocolHTTP, "", "", ""},
		{"POST", "/bad", "application/grpc", nil, true, StyleGRPC, mesh.ProtocolGRPC, "", "", ""},
	} {
		r := httptest.NewRequest(c.method, c.path, nil)
		r.Header.Set("Content-Type", c.ct)
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		call, rpc := Classify(r)
		if rpc != c.rpc || call.Style != c.style || call.Protocol != c.proto || call.Service.Name != c.svc || call.Method != c.m || call.Service.Version != c.version {
			t.Errorf("%s %s %s: got %+v rpc=%v", c.method, c.path, c.ct, call, rpc)
		}
	}
}

func TestDeadline(t *testing.T) {
	for v, want := range map[string]time.Duration{"100m": 100 * time.Millisecond, "2S": 2 * time.Second, "1H": time.Hour, "5u": 5 * time.Microsecond, "x": 0, "": 0, "1000000000S": 0} {
		h := http.Header{}
		if v != "" {
			h.Set("Grpc-Timeout", v)
		}
		got, _ := Deadline(h)
		if got != want {
			t.Errorf("%q: got %v want %v", v, got, want)
		}
	}
	h := http.Header{}
	h.Set("Triple-Timeout-Ms", "250")
	if got, ok := Deadline(h); !ok || got != 250*time.Millisecond {
		t.Errorf("triple timeout: %v %v", got, ok)
	}
}

func TestGRPCMessageEncoding(t *testing.T) {
	if got := EncodeGRPCMessage("a%b\n\t\u00e9"); got != "a%25b%0A%09%C3%A9" {
		t.Fatalf("got %q", got)
	}
}
