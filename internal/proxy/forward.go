package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
)

// hopHeaders are meaningful for one connection only and never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Trailer", "Transfer-Encoding", "Upgrade",
}

// copyHeader copies src into dst without hop-by-hop headers, headers named by Connection,
// tunnel metadata, and TE other than "trailers".
func copyHeader(dst, src http.Header, dropMeta bool) {
	var named []string
	for _, v := range src["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				named = append(named, http.CanonicalHeaderKey(f))
			}
		}
	}
next:
	for k, vv := range src {
		for _, h := range hopHeaders {
			if k == h {
				continue next
			}
		}
		for _, h := range named {
			if k == h {
				continue next
			}
		}
		if k == "Te" {
			if len(vv) == 1 && strings.EqualFold(vv[0], "trailers") {
				dst[k] = vv
			}
			continue
		}
		if dropMeta && strings.HasPrefix(k, headerPrefix) {
			continue
		}
		dst[k] = vv
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Upstream is where Forward sends a request.
type Upstream struct {
	Transport http.RoundTripper
	// Scheme is "https" for the tunnel, "http" for a provider (h2c or HTTP/1.1).
	Scheme string
	// Addr is host:port.
	Addr string
}

// Forward sends r to u with the same method, path, query, Host and headers (less the hop-by-hop
// ones and, if dropMeta, tunnel metadata), then meta (may be nil) adjusts the outgoing
// headers. Both bodies stream; response trailers follow the body. ctx bounds the call.
//
// If Forward returns an error, nothing was written to w and the caller should answer with
// WriteError. Once the response has started, failures are reported in-band: a gRPC call
// ends with grpc-status UNAVAILABLE, any other response is aborted.
//
// The outcome names how the call ended for metrics: a gRPC code name for gRPC calls, an
// HTTP status class ("2xx") otherwise.
func Forward(ctx context.Context, w http.ResponseWriter, r *http.Request, c Call, u Upstream, dropMeta bool, meta func(http.Header)) (outcome string, err error) {
	if r.ProtoMajor == 1 {
		// Stream the response while the request body is still arriving, as HTTP/2 does.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	out := &http.Request{
		Method:        r.Method,
		URL:           &url.URL{Scheme: u.Scheme, Host: u.Addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header, len(r.Header)+2),
		Body:          r.Body,
		ContentLength: r.ContentLength,
		Host:          r.Host,
	}
	if r.ContentLength == 0 {
		out.Body = nil
	}
	copyHeader(out.Header, r.Header, dropMeta)
	if meta != nil {
		meta(out.Header)
	}
	out = out.WithContext(ctx)

	resp, err := u.Transport.RoundTrip(out)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()

	h := w.Header()
	copyHeader(h, resp.Header, false)
	w.WriteHeader(resp.StatusCode)
	if c.Style == StyleGRPC && resp.Header.Get("Grpc-Status") != "" {
		// A trailers-only response: the status is in the headers and there is no body.
		return grpcOutcome(resp.Header.Get("Grpc-Status")), nil
	}
	rc := http.NewResponseController(w)
	_ = rc.Flush()

	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var rerr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				// The caller went away; returning cancels the upstream call.
				return codes.Canceled.String(), nil
			}
			if ferr := rc.Flush(); ferr != nil {
				return codes.Canceled.String(), nil
			}
		}
		if err != nil {
			if err != io.EOF {
				rerr = err
			}
			break
		}
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	if rerr != nil {
		if c.Style == StyleGRPC && len(resp.Trailer) == 0 {
			code := codeOf(ctx, rerr)
			h[http.TrailerPrefix+"Grpc-Status"] = []string{itoa(int(code))}
			h[http.TrailerPrefix+"Grpc-Message"] = []string{EncodeGRPCMessage("strait: upstream stream broken: " + rerr.Error())}
			return code.String(), nil
		}
		// Abort the response so that the caller sees a broken stream, not a short body.
		panic(http.ErrAbortHandler)
	}
	if c.Style == StyleGRPC {
		return grpcOutcome(resp.Trailer.Get("Grpc-Status")), nil
	}
	return StatusClass(resp.StatusCode), nil
}

// grpcOutcome names a grpc-status value; a missing or malformed one is "Unknown".
func grpcOutcome(v string) string {
	if len(v) == 0 || len(v) > 2 {
		return codes.Unknown.String()
	}
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return codes.Unknown.String()
		}
		n = n*10 + int(v[i]-'0')
	}
	return codes.Code(n).String()
}

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// StatusClass is "2xx" for 200 and so on; "unknown" outside 100-599.
func StatusClass(status int) string {
	if status < 100 || status > 599 {
		return "unknown"
	}
	return statusClasses[status/100-1]
}

// Outcome names how a call answered with WriteError ended, for metrics.
func Outcome(style ErrorStyle, code codes.Code) string {
	if style == StyleHTTP {
		return StatusClass(httpStatus(code))
	}
	return code.String()
}

// Observer records calls (a gateway's metrics). Implementations are safe for concurrent
// use and cheap: they run on every call.
type Observer interface {
	CallStarted()
	CallEnded()
	Observe(protocol, peer, outcome string, d time.Duration)
}

// NopObserver records nothing.
type NopObserver struct{}

func (NopObserver) CallStarted()                                  {}
func (NopObserver) CallEnded()                                    {}
func (NopObserver) Observe(string, string, string, time.Duration) {}

// codeOf maps a forwarding error to a status code.
func codeOf(ctx context.Context, err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return codes.Canceled
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		switch se.Code {
		case http2.ErrCodeCancel:
			// The next hop gave up on the stream. Its clock runs a little ahead of ours for
			// the same deadline: if ours is about to expire, it gave up for the deadline.
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 5*time.Millisecond {
				return codes.DeadlineExceeded
			}
			return codes.Canceled
		case http2.ErrCodeEnhanceYourCalm:
			return codes.ResourceExhausted
		case http2.ErrCodeRefusedStream:
			return codes.Unavailable
		}
	}
	return codes.Unavailable
}

// ForwardError answers a call whose Forward failed before anything was written, and
// returns its outcome.
func ForwardError(ctx context.Context, w http.ResponseWriter, c Call, what string, err error) string {
	code := codeOf(ctx, err)
	WriteError(w, c.Style, code, "strait: "+what+": "+err.Error())
	return Outcome(c.Style, code)
}
