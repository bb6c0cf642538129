// Package proxy is the L7 core that egress and ingress share: it classifies a request from
// its headers alone, forwards it as one stream without touching the payload (streaming
// both ways, trailers, deadlines and cancellation included), and writes errors the way
// the caller's protocol expects them.
package proxy

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/strait-mesh/strait/internal/mesh"
)

// Header names of the tunnel metadata that an egress adds and an ingress reads. An egress
// strips any of them that a consumer sends.
const (
	HeaderProtocol = "Strait-Protocol"
	HeaderService  = "Strait-Service"
	headerPrefix   = "Strait-"
)

// Triple's service key headers and timeout header.
const (
	HeaderTriVersion = "Tri-Service-Version"
	HeaderTriGroup   = "Tri-Service-Group"
	// HeaderTriApp is the calling application Triple clients (dubbo-go, Java Dubbo)
	// declare.
	HeaderTriApp       = "Tri-Consumer-Appname"
	headerTripleTimout = "Triple-Timeout-Ms"
	headerGRPCTimeout  = "Grpc-Timeout"
)

// ErrorStyle says how a failure must be reported to the caller.
type ErrorStyle uint8

// Error styles.
const (
	// StyleHTTP: an HTTP status with a text body.
	StyleHTTP ErrorStyle = iota
	// StyleGRPC: HTTP 200 with grpc-status and grpc-message in a trailers-only response.
	StyleGRPC
	// StyleTripleUnary: Triple's unary mode, an HTTP status with a JSON {code, message} body.
	StyleTripleUnary
	// StyleDubbo: a classic Dubbo call, answered with a Dubbo response frame (its status
	// and message); over a tunnel, the frame is the body of an HTTP 200 response.
	StyleDubbo
)

// ContentTypeDubbo is the content type of a Dubbo frame carried as an HTTP/2 stream's
// body over a tunnel (POST /<service>/<method>; the response's body is the response frame).
const ContentTypeDubbo = "application/x-dubbo"

// Call is what classification learned about a request.
type Call struct {
	Protocol mesh.Protocol
	Service  mesh.ServiceKey
	Method   string
	Style    ErrorStyle
}

// Classify reads a consumer's request headers. rpc is true when the request has the shape
// of a gRPC or Triple call (service and method in the path); such a call is a Triple unary
// call only if the route table knows its service, which the caller decides.
func Classify(r *http.Request) (c Call, rpc bool) {
	return ClassifyParts(r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get(HeaderTriVersion), r.Header.Get(HeaderTriGroup))
}

// ClassifyParts is Classify on the only parts of a request it reads.
func ClassifyParts(method, path, contentType, triVersion, triGroup string) (c Call, rpc bool) {
	ct := contentType
	switch {
	case strings.HasPrefix(ct, "application/grpc"):
		c.Style = StyleGRPC
		c.Protocol = mesh.ProtocolGRPC
		if triVersion != "" || triGroup != "" {
			c.Protocol = mesh.ProtocolTriple
		}
	case method == http.MethodPost && ct == ContentTypeDubbo:
		c.Style = StyleDubbo
		c.Protocol = mesh.ProtocolDubbo
	case method == http.MethodPost && (strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "application/proto")):
		c.Style = StyleTripleUnary
		c.Protocol = mesh.ProtocolTriple
	default:
		return Call{Protocol: mesh.ProtocolHTTP, Style: StyleHTTP}, false
	}
	svc, m, ok := SplitPath(path)
	if !ok {
		if c.Style == StyleGRPC {
			// A gRPC request with a malformed path is still answered in gRPC terms.
			return c, true
		}
		return Call{Protocol: mesh.ProtocolHTTP, Style: StyleHTTP}, false
	}
	c.Service = mesh.ServiceKey{Name: svc, Version: triVersion, Group: triGroup}
	c.Method = m
	return c, true
}

// SplitPath splits "/<service>/<method>".
func SplitPath(p string) (service, method string, ok bool) {
	if len(p) < 4 || p[0] != '/' {
		return "", "", false
	}
	i := strings.LastIndexByte(p, '/')
	if i <= 1 || i == len(p)-1 {
		return "", "", false
	}
	service, method = p[1:i], p[i+1:]
	if strings.IndexByte(service, '/') >= 0 {
		return "", "", false
	}
	return service, method, true
}

// Deadline returns the call's own timeout (grpc-timeout or Triple-Timeout-Ms), if any.
func Deadline(h http.Header) (time.Duration, bool) {
	if v := h.Get(headerGRPCTimeout); v != "" {
		return parseGRPCTimeout(v)
	}
	if v := h.Get(headerTripleTimout); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 {
			return 0, false
		}
		return mulSat(ms, time.Millisecond), true
	}
	return 0, false
}

// mulSat is n×unit (n ≥ 0, unit > 0), saturated at the largest Duration: a timeout too
// long for a Duration (grpc-timeout 99999999H, say) means "no deadline", not a wrapped
// negative one that expires at once (grpc-go saturates the same way).
func mulSat(n int64, unit time.Duration) time.Duration {
	if n > math.MaxInt64/int64(unit) {
		return math.MaxInt64
	}
	return time.Duration(n) * unit
}

func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return mulSat(n, unit), true
}
