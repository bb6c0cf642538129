package dubbowire

import (
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// AppendErrorResponse appends a response with status (not StatusOK) and the error message
// msg, for a request the gateway answers itself (BAD_REQUEST, SERVICE_NOT_FOUND,
// SERVER_THREADPOOL_EXHAUSTED_ERROR, ...).
//
// The body is a hessian2 string, whatever serialization the request used: Dubbo Java and
// dubbo-go consumers decode a response by the serialization id in its own header, and
// hessian2 is the one every Dubbo has (Java 3.3 ships hessian2 and fastjson2).
// AppendErrorResponse panics if status is StatusOK.
func AppendErrorResponse(dst []byte, id uint64, status Status, msg string) []byte {
	if status == StatusOK {
		panic("dubbowire: AppendErrorResponse with StatusOK")
	}
	start := len(dst)
	dst = appendHeader(dst, byte(SerializationHessian2), status, id)
	dst = appendString(dst, msg)
	setBodyLen(dst[start:])
	return dst
}

// AppendHeartbeatResponse appends the answer to a heartbeat request: an OK event response
// whose body is hessian2 null. Dubbo Java recognizes a heartbeat answer by its body being
// the null of the serialization its header names, so hessian2 is right whatever the
// request used.
func AppendHeartbeatResponse(dst []byte, id uint64) []byte {
	start := len(dst)
	dst = appendHeader(dst, FlagEvent|byte(SerializationHessian2), StatusOK, id)
	dst = append(dst, 'N')
	setBodyLen(dst[start:])
	return dst
}

// AppendHeartbeatRequest appends a two-way heartbeat request (an event whose body is
// hessian2 null), as Dubbo Java and dubbo-go send on idle connections.
func AppendHeartbeatRequest(dst []byte, id uint64) []byte {
	start := len(dst)
	dst = appendHeader(dst, FlagRequest|FlagTwoWay|FlagEvent|byte(SerializationHessian2), 0, id)
	dst = append(dst, 'N')
	setBodyLen(dst[start:])
	return dst
}

// ReadonlyEvent is the data of the event a Dubbo server sends its consumers when it shuts
// down (Java's Request.READONLY_EVENT): a consumer sends no new request on a connection
// that announced it, and picks another provider.
const ReadonlyEvent = "R"

// AppendReadonlyEvent appends a oneway readonly event request (body: the hessian2 string
// "R"), as Dubbo Java's HeaderExchangeServer sends to every channel when it closes.
func AppendReadonlyEvent(dst []byte, id uint64) []byte {
	start := len(dst)
	dst = appendHeader(dst, FlagRequest|FlagEvent|byte(SerializationHessian2), 0, id)
	dst = appendString(dst, ReadonlyEvent)
	setBodyLen(dst[start:])
	return dst
}

// IsReadonlyEvent reports whether frame is a readonly event (AppendReadonlyEvent).
func IsReadonlyEvent(frame []byte) bool {
	h, err := ParseHeader(frame)
	return err == nil && h.IsRequest() && h.Event() && h.Serialization() == SerializationHessian2 &&
		string(frame[HeaderLen:]) == "\x01"+ReadonlyEvent
}

// AppendRequest appends a hessian2 request: req's five strings (DubboVersion defaults to
// DubboProtocolVersion), args encoded by dubbo-go-hessian2 (register Go types that stand
// for Java classes with hessian.RegisterPOJO), and req.Attachments completed as Dubbo
// consumers do: "path" and "interface" default to req.Path, "version" to req.Version if it
// is set. Attachments are written in key order, so equal requests are equal bytes.
// req.ParamTypes must describe len(args) parameters. On error dst is returned unchanged.
func AppendRequest(dst []byte, id uint64, req Request, args []any, twoWay bool) ([]byte, error) {
	if n := countParamTypes(req.ParamTypes); n != len(args) {
		return dst, fmt.Errorf("dubbowire: parameter types %q describe %d arguments, have %d", req.ParamTypes, n, len(args))
	}
	start := len(dst)
	flags := FlagRequest | byte(SerializationHessian2)
	if twoWay {
		flags |= FlagTwoWay
	}
	dst = appendHeader(dst, flags, 0, id)
	version := req.DubboVersion
	if version == "" {
		version = DubboProtocolVersion
	}
	for _, s := range [...]string{version, req.Path, req.Version, req.Method, req.ParamTypes} {
		dst = appendString(dst, s)
	}
	if len(args) > 0 {
		enc := hessian.NewEncoder()
		for i, a := range args {
			if err := enc.Encode(a); err != nil {
				return dst[:start], fmt.Errorf("dubbowire: encode argument %d of %d (%s): %w",
					i+1, len(args), paramTypeAt(req.ParamTypes, i), err)
			}
		}
		dst = append(dst, enc.Buffer()...)
	}

	att := make(map[string]string, len(req.Attachments)+3)
	if req.Path != "" {
		att["path"] = req.Path
		att["interface"] = req.Path
	}
	if req.Version != "" {
		att["version"] = req.Version
	}
	for k, v := range req.Attachments {
		att[k] = v
	}
	keys := make([]string, 0, len(att))
	for k := range att {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, 'H')
	for _, k := range keys {
		dst = appendString(dst, k)
		dst = appendString(dst, att[k])
	}
	dst = append(dst, 'Z')

	if len(dst)-start-HeaderLen > math.MaxInt32 {
		return dst[:start], fmt.Errorf("dubbowire: request body of %d bytes", len(dst)-start-HeaderLen)
	}
	setBodyLen(dst[start:])
	return dst, nil
}

// stringChunk is the most UTF-16 units in one string chunk, as Dubbo Java writes them.
const stringChunk = 0x8000

// appendString appends s as a hessian2 string: its length in UTF-16 units, then its
// characters in UTF-8, with those above U+FFFF as a surrogate pair of two 3-byte
// sequences (as Java and dubbo-go-hessian2 write them). Invalid UTF-8 is written as
// U+FFFD. Strings over stringChunk units are split into chunks.
func appendString(dst []byte, s string) []byte {
	for {
		n, ascii := utf16Len(s)
		if n <= stringChunk {
			switch {
			case n <= 0x1f:
				dst = append(dst, byte(n))
			case n <= 0x3ff:
				dst = append(dst, 0x30+byte(n>>8), byte(n))
			default:
				dst = append(dst, 'S', byte(n>>8), byte(n))
			}
			if ascii {
				return append(dst, s...)
			}
			return appendCESU(dst, s)
		}
		// A non-final chunk of at most stringChunk units, not splitting a surrogate pair.
		i, u := 0, 0
		for i < len(s) {
			r, w := utf8.DecodeRuneInString(s[i:])
			ru := 1
			if r > 0xffff {
				ru = 2
			}
			if u+ru > stringChunk {
				break
			}
			u += ru
			i += w
		}
		dst = append(dst, 'R', byte(u>>8), byte(u))
		dst = appendCESU(dst, s[:i])
		s = s[i:]
	}
}

// utf16Len returns the length of s in UTF-16 units as appendCESU writes it, and whether s
// is ASCII.
func utf16Len(s string) (int, bool) {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return len(s), true
	}
	n := 0
	for _, r := range s {
		if r > 0xffff {
			n += 2
		} else {
			n++
		}
	}
	return n, false
}

// appendCESU appends s in hessian2's UTF-8 (see appendString).
func appendCESU(dst []byte, s string) []byte {
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf:
			dst = append(dst, byte(r))
		case r <= 0xffff:
			dst = utf8.AppendRune(dst, r)
		default:
			r -= 0x10000
			dst = appendUnit(dst, 0xd800+(r>>10))
			dst = appendUnit(dst, 0xdc00+(r&0x3ff))
		}
	}
	return dst
}

// appendUnit appends a UTF-16 surrogate as a 3-byte sequence.
func appendUnit(dst []byte, u rune) []byte {
	return append(dst, 0xe0|byte(u>>12), 0x80|byte(u>>6)&0x3f, 0x80|byte(u)&0x3f)
}
