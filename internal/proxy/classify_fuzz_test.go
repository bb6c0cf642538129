package proxy

import (
	"math"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
)

// FuzzClassifyParts: classification never panics, Classify (on a request) and
// ClassifyParts (on its parts) agree, and a classified call round-trips: its service and
// method rebuild the path, contain no '/', and carry the Triple version and group as sent.
func FuzzClassifyParts(f *testing.F) {
	for _, s := range [][5]string{
		{"POST", "/grpc.testing.TestService/EmptyCall", "application/grpc", "", ""},
		{"POST", "/a.Greeter/Greet", "application/grpc+proto", "1.0.0", "g"},
		{"POST", "/a.Greeter/Greet", "application/json", "", ""},
		{"POST", "/a.Greeter/Greet", "application/proto", "", "g"},
		{"GET", "/a.Greeter/Greet", "application/json", "", ""},
		{"POST", "/api/v1/users", "application/json", "", ""},
		{"POST", "/bad", "application/grpc", "", ""},
		{"POST", "//x", "application/grpc", "", ""},
		{"POST", "/a//b", "application/grpc", "", ""},
		{"POST", "/a/b/", "application/grpc", "", ""},
		{"POST", "", "", "", ""},
		{"PRI", "*", "application/grpc\x00", "\xff", "\x00"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, method, path, ct, triV, triG string) {
		c, rpc := ClassifyParts(method, path, ct, triV, triG)
		if !rpc {
			if c != (Call{Protocol: mesh.ProtocolHTTP, Style: StyleHTTP}) {
				t.Fatalf("not rpc but %+v", c)
			}
		} else {
			switch c.Style {
			case StyleGRPC:
				if !strings.HasPrefix(ct, "application/grpc") {
					t.Fatalf("gRPC style for content-type %q", ct)
				}
				want := mesh.ProtocolGRPC
				if triV != "" || triG != "" {
					want = mesh.ProtocolTriple
				}
				if c.Protocol != want {
					t.Fatalf("protocol %q, want %q", c.Protocol, want)
				}
			case StyleTripleUnary:
				if method != http.MethodPost || c.Protocol != mesh.ProtocolTriple || c.Service.Name == "" {
					t.Fatalf("triple unary: %+v for %s %q", c, method, path)
				}
			default:
				t.Fatalf("rpc with style %v", c.Style)
			}
			if c.Service.Name == "" {
				// Only a gRPC call with a malformed path is rpc without a service.
				if c.Style != StyleGRPC || c.Method != "" || c.Service != (mesh.ServiceKey{}) {
					t.Fatalf("rpc without a service: %+v", c)
				}
			} else {
				if strings.Contains(c.Service.Name, "/") || strings.Contains(c.Method, "/") || c.Method == "" {
					t.Fatalf("service %q method %q", c.Service.Name, c.Method)
				}
				if "/"+c.Service.Name+"/"+c.Method != path {
					t.Fatalf("service %q method %q do not rebuild path %q", c.Service.Name, c.Method, path)
				}
				if c.Service.Version != triV || c.Service.Group != triG {
					t.Fatalf("version %q group %q, sent %q %q", c.Service.Version, c.Service.Group, triV, triG)
				}
			}
		}

		// Classify reads the same parts from a request.
		r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}}
		for k, v := range map[string]string{"Content-Type": ct, HeaderTriVersion: triV, HeaderTriGroup: triG} {
			if v != "" {
				r.Header[k] = []string{v}
			}
		}
		if c2, rpc2 := Classify(r); c2 != c || rpc2 != rpc {
			t.Fatalf("Classify %+v %v, ClassifyParts %+v %v", c2, rpc2, c, rpc)
		}

		// SplitPath round-trips.
		if s, m, ok := SplitPath(path); ok {
			if s == "" || m == "" || strings.Contains(s, "/") || strings.Contains(m, "/") || "/"+s+"/"+m != path {
				t.Fatalf("SplitPath(%q) = %q, %q", path, s, m)
			}
		}
		if s, m := triV, triG; s != "" && m != "" && !strings.Contains(s, "/") && !strings.Contains(m, "/") {
			if s2, m2, ok := SplitPath("/" + s + "/" + m); !ok || s2 != s || m2 != m {
				t.Fatalf("SplitPath(/%s/%s) = %q, %q, %v", s, m, s2, m2, ok)
			}
		}
	})
}

// FuzzDeadline: a call's timeout header never panics and never gives a negative or
// wrapped-around duration: a value too large for a time.Duration saturates, as grpc-go
// does.
func FuzzDeadline(f *testing.F) {
	for _, s := range [][2]string{
		{"100m", ""}, {"2S", ""}, {"1H", ""}, {"5u", ""}, {"7n", ""}, {"3M", ""},
		{"x", ""}, {"", ""}, {"1000000000S", ""}, {"-1S", ""}, {"+1S", ""}, {"0m", ""},
		{"99999999H", ""}, {"2562048H", ""}, {"99999999M", ""},
		{"", "250"}, {"", "0"}, {"", "-5"}, {"", "9223372036854775807"}, {"", "x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, grpcTimeout, tripleMs string) {
		h := http.Header{}
		if grpcTimeout != "" {
			h[headerGRPCTimeout] = []string{grpcTimeout}
		}
		if tripleMs != "" {
			h[headerTripleTimout] = []string{tripleMs}
		}
		d, ok := Deadline(h)
		if !ok {
			if d != 0 {
				t.Fatalf("not ok with %v", d)
			}
			return
		}
		if d < 0 {
			t.Fatalf("grpc-timeout %q triple-timeout-ms %q: negative %v", grpcTimeout, tripleMs, d)
		}
		// The exact value, computed without overflow.
		var n *big.Int
		var unit time.Duration
		if grpcTimeout != "" {
			v := grpcTimeout
			n, _ = new(big.Int).SetString(v[:len(v)-1], 10)
			unit = map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
		} else {
			n, _ = new(big.Int).SetString(tripleMs, 10)
			unit = time.Millisecond
		}
		if n == nil || unit == 0 {
			t.Fatalf("grpc-timeout %q triple-timeout-ms %q accepted as %v", grpcTimeout, tripleMs, d)
		}
		want := n.Mul(n, big.NewInt(int64(unit)))
		if want.Cmp(big.NewInt(math.MaxInt64)) > 0 {
			want.SetInt64(math.MaxInt64)
		}
		if want.Int64() != int64(d) {
			t.Fatalf("grpc-timeout %q triple-timeout-ms %q: %v (%d), want %s ns", grpcTimeout, tripleMs, d, int64(d), want)
		}
	})
}

// FuzzEncodeGRPCMessage: the encoding is printable ASCII and percent-decodes back to the
// message.
func FuzzEncodeGRPCMessage(f *testing.F) {
	for _, s := range []string{"", "ok", "a%b\n\t\u00e9", "100%", "\x00\xff", "~ \x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		enc := EncodeGRPCMessage(msg)
		var dec []byte
		for i := 0; i < len(enc); i++ {
			c := enc[i]
			if c < ' ' || c > '~' {
				t.Fatalf("%q encodes to %q: byte %#x", msg, enc, c)
			}
			if c != '%' {
				dec = append(dec, c)
				continue
			}
			if i+2 >= len(enc) {
				t.Fatalf("%q encodes to %q: short escape", msg, enc)
			}
			b, err := strconv.ParseUint(enc[i+1:i+3], 16, 8)
			if err != nil {
				t.Fatalf("%q encodes to %q: %v", msg, enc, err)
			}
			dec = append(dec, byte(b))
			i += 2
		}
		if string(dec) != msg {
			t.Fatalf("%q encodes to %q, decodes to %q", msg, enc, dec)
		}
	})
}
