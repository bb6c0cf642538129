package relay

import (
	"errors"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// The header rules of RFC 9113 §8.2 and §8.3 for what a caller sends. A request or
// trailer block that breaks one is malformed: a stream error of type PROTOCOL_ERROR.

var (
	errUpperName      = errors.New("header field name has upper-case letters or is not a token")
	errBadValue       = errors.New("header field value has a forbidden character")
	errUnknownPseudo  = errors.New("unknown or response pseudo-header field")
	errPseudoOrder    = errors.New("pseudo-header field after a regular field")
	errDupPseudo      = errors.New("duplicated pseudo-header field")
	errMissingPseudo  = errors.New(":method, :scheme or :path is missing or empty")
	errConnSpecific   = errors.New("connection-specific header field")
	errTE             = errors.New("te header field other than \"trailers\"")
	errTrailerPseudo  = errors.New("pseudo-header field in trailers")
	errContentLength  = errors.New("content-length is not a single non-negative number")
	errBodyLength     = errors.New("DATA length differs from content-length")
	errTrailersNoEnd  = errors.New("trailers without END_STREAM")
	errDupTrailers    = errors.New("a second trailer block")
	errSelfDependency = errors.New("stream depends on itself")
)

// checkRequest checks a request header block and, in the same pass, fills the fields of
// req a router sees; it returns the content-length (-1 if none).
func checkRequest(fields []hpack.HeaderField, req *Request) (int64, error) {
	const (
		method = 1 << iota
		scheme
		path
		authority
	)
	var seen int
	var isConnect bool
	regular := false
	cl := int64(-1)
	for i := range fields {
		f := &fields[i]
		if len(f.Name) > 0 && f.Name[0] == ':' {
			if regular {
				return -1, errPseudoOrder
			}
			var bit int
			switch f.Name {
			case ":method":
				bit = method
				isConnect = f.Value == "CONNECT"
				req.Method = f.Value
			case ":scheme":
				bit = scheme
			case ":path":
				bit = path
				if f.Value == "" {
					return -1, errMissingPseudo
				}
				req.Path = f.Value
			case ":authority":
				bit = authority
				req.Authority = f.Value
			default:
				return -1, errUnknownPseudo
			}
			if seen&bit != 0 {
				return -1, errDupPseudo
			}
			seen |= bit
			if !httpguts.ValidHeaderFieldValue(f.Value) {
				return -1, errBadValue
			}
			continue
		}
		regular = true
		if err := checkField(f); err != nil {
			return -1, err
		}
		switch f.Name {
		case "content-length":
			n, ok := parseContentLength(f.Value)
			if !ok || (cl >= 0 && cl != n) {
				return -1, errContentLength
			}
			cl = n
		case "content-type":
			req.ContentType = f.Value
		case "tri-service-version":
			req.TriVersion = f.Value
		case "tri-service-group":
			req.TriGroup = f.Value
		case "tri-consumer-appname":
			req.App = f.Value
		case "grpc-timeout":
			req.Timeout = f.Value
		case "strait-protocol":
			req.Protocol = f.Value
		case "strait-service":
			req.Service = f.Value
		}
	}
	if isConnect {
		if seen&authority == 0 || seen&(scheme|path) != 0 {
			return -1, errMissingPseudo
		}
		return cl, nil
	}
	if seen&(method|scheme|path) != method|scheme|path {
		return -1, errMissingPseudo
	}
	return cl, nil
}

// checkTrailers checks a trailer block.
func checkTrailers(fields []hpack.HeaderField) error {
	for i := range fields {
		f := &fields[i]
		if len(f.Name) > 0 && f.Name[0] == ':' {
			return errTrailerPseudo
		}
		if err := checkField(f); err != nil {
			return err
		}
	}
	return nil
}

// checkField checks a regular field: a lower-case token name, a value without NUL, CR or
// LF, and none of the fields HTTP/2 forbids.
func checkField(f *hpack.HeaderField) error {
	if f.Name == "" {
		return errUpperName
	}
	for i := 0; i < len(f.Name); i++ {
		b := f.Name[i]
		if b >= 'A' && b <= 'Z' || !httpguts.IsTokenRune(rune(b)) {
			return errUpperName
		}
	}
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		return errBadValue
	}
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return errConnSpecific
	case "te":
		if f.Value != "trailers" {
			return errTE
		}
	}
	return nil
}

func parseContentLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	return n, true
}
