package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
)

// Fail answers c with a failure (WriteError) and returns its outcome for metrics.
func Fail(w http.ResponseWriter, c Call, code codes.Code, msg string) string {
	WriteError(w, c.Style, code, msg)
	return Outcome(c.Style, code)
}

// WriteError answers a call with a failure in the style its protocol expects.
func WriteError(w http.ResponseWriter, style ErrorStyle, code codes.Code, msg string) {
	h := w.Header()
	switch style {
	case StyleGRPC:
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", itoa(int(code)))
		h.Set("Grpc-Message", EncodeGRPCMessage(msg))
		w.WriteHeader(http.StatusOK)
	case StyleTripleUnary:
		b, _ := json.Marshal(struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}{codeName(code), msg})
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", itoa(len(b)))
		w.WriteHeader(tripleHTTPStatus(code))
		_, _ = w.Write(b)
	default:
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(httpStatus(code))
		_, _ = w.Write([]byte(msg + "\n"))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// EncodeGRPCMessage percent-encodes a grpc-message value as the gRPC spec requires.
func EncodeGRPCMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// httpStatus maps a status code to the status a plain HTTP caller gets.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.Unimplemented, codes.NotFound:
		return http.StatusNotFound
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.ResourceExhausted:
		return http.StatusRequestEntityTooLarge
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.Canceled:
		return 499
	}
	return http.StatusBadGateway
}

// tripleHTTPStatus is Triple's (Connect's) mapping of codes to HTTP statuses.
func tripleHTTPStatus(c codes.Code) int {
	switch c {
	case codes.Canceled, codes.DeadlineExceeded:
		return 408
	case codes.InvalidArgument, codes.OutOfRange:
		return 400
	case codes.NotFound, codes.Unimplemented:
		return 404
	case codes.AlreadyExists, codes.Aborted:
		return 409
	case codes.PermissionDenied:
		return 403
	case codes.ResourceExhausted:
		return 429
	case codes.FailedPrecondition:
		return 412
	case codes.Unavailable:
		return 503
	case codes.Unauthenticated:
		return 401
	}
	return 500
}

// codeName is the lower-case name Triple's JSON errors use.
func codeName(c codes.Code) string {
	switch c {
	case codes.Canceled:
		return "canceled"
	case codes.Unknown:
		return "unknown"
	case codes.InvalidArgument:
		return "invalid_argument"
	case codes.DeadlineExceeded:
		return "deadline_exceeded"
	case codes.NotFound:
		return "not_found"
	case codes.AlreadyExists:
		return "already_exists"
	case codes.PermissionDenied:
		return "permission_denied"
	case codes.ResourceExhausted:
		return "resource_exhausted"
	case codes.FailedPrecondition:
		return "failed_precondition"
	case codes.Aborted:
		return "aborted"
	case codes.OutOfRange:
		return "out_of_range"
	case codes.Unimplemented:
		return "unimplemented"
	case codes.Internal:
		return "internal"
	case codes.Unavailable:
		return "unavailable"
	case codes.DataLoss:
		return "data_loss"
	case codes.Unauthenticated:
		return "unauthenticated"
	}
	return "unknown"
}
