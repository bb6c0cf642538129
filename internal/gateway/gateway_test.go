package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/mesh"
	"github.com/strait-mesh/strait/internal/proxy"
	"github.com/strait-mesh/strait/internal/relay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// kind records the calls it is asked about and answers with d.
type kind struct {
	d    Decision
	seen []Call
}

func (k *kind) Decide(c Call) Decision {
	k.seen = append(k.seen, c)
	d := k.d
	d.Call = c
	return d
}

// TestClassifySamePaths: the relay's headers and net/http's request of one call give the
// same Call, at a consumer port and over a tunnel.
func TestClassifySamePaths(t *testing.T) {
	type req struct {
		method, path, ct, ver, group, proto, svc string
	}
	for _, tc := range []struct {
		name   string
		tunnel bool
		r      req
		want   proxy.Call
		rpc    bool
	}{
		{"grpc", false, req{"POST", "/a.B/M", "application/grpc", "", "", "", ""},
			proxy.Call{Protocol: mesh.ProtocolGRPC, Service: mesh.ServiceKey{Name: "a.B"}, Method: "M", Style: proxy.StyleGRPC}, true},
		{"triple over grpc", false, req{"POST", "/a.B/M", "application/grpc+proto", "1.0.0", "g", "", ""},
			proxy.Call{Protocol: mesh.ProtocolTriple, Service: mesh.ServiceKey{Name: "a.B", Version: "1.0.0", Group: "g"}, Method: "M", Style: proxy.StyleGRPC}, true},
		{"triple unary json", false, req{"POST", "/a.B/M", "application/json", "", "", "", ""},
			proxy.Call{Protocol: mesh.ProtocolTriple, Service: mesh.ServiceKey{Name: "a.B"}, Method: "M", Style: proxy.StyleTripleUnary}, true},
		{"tunnel metadata names the protocol", true, req{"POST", "/a.B/M", "application/grpc", "", "", "triple", "a.B"},
			proxy.Call{Protocol: mesh.ProtocolTriple, Service: mesh.ServiceKey{Name: "a.B"}, Method: "M", Style: proxy.StyleGRPC}, true},
		{"tunnel plain http", true, req{"GET", "/echo/x", "", "", "", "http", "echo"},
			proxy.Call{Protocol: mesh.ProtocolHTTP, Service: mesh.ServiceKey{Name: "echo"}, Style: proxy.StyleHTTP}, false},
		{"tunnel without metadata is plain http", true, req{"POST", "/a.B/M", "application/grpc", "", "", "", ""},
			proxy.Call{Protocol: mesh.ProtocolHTTP, Style: proxy.StyleHTTP}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &kind{d: Decision{Code: codes.Unavailable, Message: "no"}}
			c := New(Options{Kind: k, Tunnel: tc.tunnel})
			// The relay's view.
			c.Route(&relay.Request{Method: tc.r.method, Path: tc.r.path, Authority: "h", ContentType: tc.r.ct,
				TriVersion: tc.r.ver, TriGroup: tc.r.group, Protocol: tc.r.proto, Service: tc.r.svc})
			// net/http's view.
			hr := httptest.NewRequest(tc.r.method, "http://h"+tc.r.path, strings.NewReader(""))
			for k, v := range map[string]string{"Content-Type": tc.r.ct, proxy.HeaderTriVersion: tc.r.ver, proxy.HeaderTriGroup: tc.r.group,
				proxy.HeaderProtocol: tc.r.proto, proxy.HeaderService: tc.r.svc} {
				if v != "" {
					hr.Header.Set(k, v)
				}
			}
			c.ServeHTTP(httptest.NewRecorder(), hr)
			relayed := tc.want.Style == proxy.StyleGRPC && tc.want.Service.Name != ""
			var got []Call
			if relayed {
				if len(k.seen) != 2 {
					t.Fatalf("decided %d times, want once per path", len(k.seen))
				}
				if !k.seen[0].Relayed || k.seen[1].Relayed {
					t.Fatalf("Relayed marks: %v %v", k.seen[0].Relayed, k.seen[1].Relayed)
				}
				got = k.seen
			} else {
				// Not the relay's kind of call: it goes to the general path undecided.
				if len(k.seen) != 1 {
					t.Fatalf("decided %d times, want once", len(k.seen))
				}
				got = k.seen[:1]
			}
			for _, g := range got {
				if g.Call != tc.want || g.RPC != tc.rpc || g.HTTPMethod != tc.r.method || g.Path != tc.r.path || g.Host != "h" {
					t.Errorf("call %+v, want %+v (rpc %v)", g, tc.want, tc.rpc)
				}
			}
		})
	}
}

// TestRouteFallsBack: the relay takes only allowed gRPC-style calls with a pool and a
// non-empty set; the general path answers the rest.
func TestRouteFallsBack(t *testing.T) {
	pool := relay.NewPool(relay.PoolOptions{})
	defer pool.Wait()
	defer pool.Close()
	set := balance.NewSet([]string{"127.0.0.1:1"})
	lim := config.Limits{}.WithDefaults()
	ok := Decision{Code: codes.OK, Peer: "beta", Set: set, Pool: pool, Limits: &lim, Metadata: true}
	grpcReq := &relay.Request{Method: "POST", Path: "/a.B/M", ContentType: "application/grpc"}
	for _, tc := range []struct {
		name  string
		d     Decision
		r     *relay.Request
		relay bool
	}{
		{"allowed", ok, grpcReq, true},
		{"refused", Decision{Code: codes.PermissionDenied}, grpcReq, false},
		{"no pool (QUIC peer, plain HTTP)", func() Decision { d := ok; d.Pool = nil; return d }(), grpcReq, false},
		{"empty set", func() Decision { d := ok; d.Set = balance.NewSet(nil); return d }(), grpcReq, false},
		{"served locally", func() Decision { d := ok; d.Local = localFunc(nil); return d }(), grpcReq, false},
		{"triple unary", ok, &relay.Request{Method: "POST", Path: "/a.B/M", ContentType: "application/json"}, false},
		{"no service", ok, &relay.Request{Method: "POST", Path: "/", ContentType: "application/grpc"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{Kind: &kind{d: tc.d}})
			rd := c.Route(tc.r)
			if (rd.Pool != nil) != tc.relay {
				t.Fatalf("relayed %v, want %v", rd.Pool != nil, tc.relay)
			}
			if tc.relay && (rd.NAdd != 2 || rd.Add[0].Value != "grpc" || rd.Add[1].Value != "a.B" || rd.Peer != "beta") {
				t.Fatalf("decision %+v", rd)
			}
		})
	}
}

type localFunc func(http.ResponseWriter, *http.Request, *Decision) string

func (f localFunc) ServeCall(w http.ResponseWriter, r *http.Request, d *Decision) string {
	return f(w, r, d)
}

// TestServeRefusal: a refusal is answered in the call's own style (gRPC status, HTTP
// status) by the general path.
func TestServeRefusal(t *testing.T) {
	c := New(Options{Kind: &kind{d: Decision{Code: codes.PermissionDenied, Message: "strait: no"}}})
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "http://h/a.B/M", nil)
	r.Header.Set("Content-Type", "application/grpc")
	c.ServeHTTP(w, r)
	if got := w.Header().Get("Grpc-Status"); got != "7" {
		t.Fatalf("grpc-status %q, want 7 (headers %v)", got, w.Header())
	}
	w = httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest("GET", "http://h/x", nil))
	if w.Code != http.StatusForbidden {
		t.Fatalf("status %d, want 403", w.Code)
	}
}

// TestRouteAllocations: deciding a relayed call allocates nothing.
func TestRouteAllocations(t *testing.T) {
	pool := relay.NewPool(relay.PoolOptions{})
	defer pool.Wait()
	defer pool.Close()
	lim := config.Limits{}.WithDefaults()
	c := New(Options{Kind: staticKind{Decision{Code: codes.OK, Peer: "beta", Set: balance.NewSet([]string{"127.0.0.1:1"}), Pool: pool, Limits: &lim, Metadata: true}}, Tunnel: true})
	id := spiffeid.RequireFromString("spiffe://alpha.strait.local/egress/e1")
	r := &relay.Request{Method: "POST", Path: "/a.B/M", ContentType: "application/grpc", Protocol: "grpc", Service: "a.B", Info: id}
	if n := testing.AllocsPerRun(1000, func() { c.Route(r) }); n != 0 {
		t.Fatalf("Route allocates %v times per call", n)
	}
}

type staticKind struct{ d Decision }

func (k staticKind) Decide(c Call) Decision { d := k.d; d.Call = c; return d }

func BenchmarkRoute(b *testing.B) {
	pool := relay.NewPool(relay.PoolOptions{})
	defer pool.Wait()
	defer pool.Close()
	lim := config.Limits{}.WithDefaults()
	c := New(Options{Kind: staticKind{Decision{Code: codes.OK, Peer: "beta", Set: balance.NewSet([]string{"127.0.0.1:1"}), Pool: pool, Limits: &lim, Metadata: true}}})
	r := &relay.Request{Method: "POST", Path: "/a.B/M", ContentType: "application/grpc"}
	b.ReportAllocs()
	for b.Loop() {
		c.Route(r)
	}
}
