package proxy

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
)

// LimitBody bounds the body of calls that are not streams (plain HTTP and Triple unary):
// a declared length over max is refused at once, a longer body is cut off at max. It
// reports whether the call may proceed. gRPC streams are not bounded as a whole; their
// messages are bounded by the peers.
func LimitBody(w http.ResponseWriter, r *http.Request, c Call, max int64) bool {
	if c.Style == StyleGRPC || max <= 0 {
		return true
	}
	if r.ContentLength > max {
		WriteError(w, c.Style, codes.ResourceExhausted, fmt.Sprintf("strait: body of %d bytes is over the limit of %d", r.ContentLength, max))
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, max)
	return true
}

// CallContext is the context of a forwarded call: the caller's own deadline if it sent
// one (grpc-timeout, Triple-Timeout-Ms), else fallback for calls that are not gRPC
// streams. A gRPC stream without a deadline may live as long as its caller keeps it.
func CallContext(r *http.Request, c Call, fallback time.Duration) (context.Context, context.CancelFunc) {
	if d, ok := Deadline(r.Header); ok {
		return context.WithTimeout(r.Context(), d)
	}
	if c.Style == StyleGRPC || fallback <= 0 {
		return context.WithCancel(r.Context())
	}
	return context.WithTimeout(r.Context(), fallback)
}
