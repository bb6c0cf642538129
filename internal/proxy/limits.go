package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
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

// RouteDeadline is the timeout a call carries on, given its own (own, ok: from
// grpc-timeout or Triple-Timeout-Ms) and its route's default and maximum (0: unset): its
// own, cut to max; else the default. ok is false when the call has none.
func RouteDeadline(own time.Duration, hasOwn bool, def, max time.Duration) (time.Duration, bool) {
	switch {
	case hasOwn && max > 0 && own > max:
		return max, true
	case hasOwn:
		return own, true
	case def > 0:
		return def, true
	}
	return 0, false
}

// ParseGRPCTimeout reads a grpc-timeout value.
func ParseGRPCTimeout(v string) (time.Duration, bool) { return parseGRPCTimeout(v) }

// EncodeGRPCTimeout writes d as a grpc-timeout value (at most 8 digits, rounded up to
// its unit so that the next hop never gets less time than d).
func EncodeGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	for _, u := range []struct {
		unit time.Duration
		c    byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'}} {
		n := (d + u.unit - 1) / u.unit
		if n < 1e8 {
			return strconv.FormatInt(int64(n), 10) + string(u.c)
		}
	}
	return "99999999H"
}

// DeadlineContext is the context of a forwarded call under its route's deadline (def
// and max, 0 unset; see RouteDeadline), with the timeout it carries to the next hop (ok
// false for none). Without a route deadline it is CallContext.
func DeadlineContext(r *http.Request, c Call, fallback, def, max time.Duration) (ctx context.Context, cancel context.CancelFunc, timeout time.Duration, ok bool) {
	own, hasOwn := Deadline(r.Header)
	if timeout, ok = RouteDeadline(own, hasOwn, def, max); ok {
		ctx, cancel = context.WithTimeout(r.Context(), timeout)
		return ctx, cancel, timeout, true
	}
	ctx, cancel = CallContext(r, c, fallback)
	return ctx, cancel, 0, false
}

// SetTimeoutHeader sets the timeout a forwarded call carries: grpc-timeout, or
// Triple-Timeout-Ms for Triple's unary mode.
func SetTimeoutHeader(h http.Header, c Call, d time.Duration) {
	if c.Style == StyleTripleUnary {
		h.Del(headerGRPCTimeout)
		h.Set(headerTripleTimout, strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10))
		return
	}
	h.Del(headerTripleTimout)
	h.Set(headerGRPCTimeout, EncodeGRPCTimeout(d))
}
