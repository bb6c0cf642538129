package dubbowire

import (
	"errors"
	"fmt"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// DubboProtocolVersion is the Dubbo protocol version that requests carry first in their
// body (Dubbo Java 2.7 and later, dubbo-go).
const DubboProtocolVersion = "2.0.2"

// Errors of the kind of a frame.
var (
	// ErrNotCall is returned by ParseRequest for a frame that is not a call: a response,
	// or an event (a heartbeat).
	ErrNotCall = errors.New("dubbowire: not a call")
	// ErrNotResponse is returned by ParseResponse for a request.
	ErrNotResponse = errors.New("dubbowire: not a response")
	// ErrUnsupportedSerialization matches (errors.Is) every *UnsupportedSerializationError.
	ErrUnsupportedSerialization = errors.New("dubbowire: unsupported serialization")
	// ErrUndecodable is returned (wrapped) when dubbo-go-hessian2 cannot decode a value
	// of a body that is well-formed hessian2 (DecodeArgs, ParseResponse).
	ErrUndecodable = errors.New("dubbowire: hessian2 decoder")
)

// UnsupportedSerializationError is a body in a serialization other than hessian2.
type UnsupportedSerializationError struct {
	Serialization Serialization
}

func (e *UnsupportedSerializationError) Error() string {
	return fmt.Sprintf("dubbowire: unsupported serialization %d (%s): only hessian2 (2) is parsed",
		byte(e.Serialization), e.Serialization)
}

// Is makes errors.Is(err, ErrUnsupportedSerialization) true.
func (e *UnsupportedSerializationError) Is(target error) bool {
	return target == ErrUnsupportedSerialization
}

// Request is what routing needs of a call. Its body holds, in this order, the Dubbo
// protocol version, the service path, the service version, the method, the parameter type
// descriptor, one value per parameter, and the attachments.
type Request struct {
	DubboVersion string // "2.0.2"
	// Path is the service path: its interface name, unless the provider was exported
	// under another path. Dubbo Java writes the "interface" attachment here if it has one.
	Path    string
	Version string // the service version: "" or, from Java consumers, "0.0.0" if none
	Method  string
	// ParamTypes is the JVM descriptor of the parameter types, one per argument, e.g.
	// "Ljava/lang/String;[B" for (String, byte[]); "" for none.
	ParamTypes string
	// Attachments are the string-valued attachments: "path", "interface", "version",
	// "group", "timeout" (ms), "application", ... and the user's. Values of other types
	// are left out. ParseRequest leaves the map nil if there is none.
	Attachments map[string]string
}

// Group is the service group (the "group" attachment), "" if none.
func (r *Request) Group() string { return r.Attachments["group"] }

// Interface is the service interface: the "interface" attachment, else Path.
func (r *Request) Interface() string {
	if i := r.Attachments["interface"]; i != "" {
		return i
	}
	return r.Path
}

// ParseRequest parses a hessian2 call frame (from ReadFrame). It does not modify frame and
// keeps no reference to it. The arguments are checked but not decoded (see DecodeArgs).
//
// Errors: ErrNotCall for a response or an event (check Header.Event first to answer
// heartbeats), *UnsupportedSerializationError, ErrTruncated, and *FormatError (errors.Is
// ErrMalformed) naming the part of the body that is wrong and where.
func ParseRequest(frame []byte) (Request, error) {
	var p RequestParser
	var r Request
	if err := p.parse(frame, &r, false); err != nil {
		return Request{}, err
	}
	return r, nil
}

// RequestParser parses requests like ParseRequest and keeps memory between calls: the
// strings a connection sends over and over (service, method, attachment keys and values)
// are made once, and the Attachments map of the Request it fills is reused. A connection's
// read loop keeps one; it is not safe for concurrent use. The zero value is ready.
type RequestParser struct {
	strs    map[string]string // interned strings
	classes []int
	scratch []byte
}

// Interning limits: at most internMax strings of at most internLen bytes each; the table
// is emptied when full.
const (
	internMax = 256
	internLen = 128
)

// Parse parses frame into req like ParseRequest. If req.Attachments is not nil it is
// cleared and reused: a caller that keeps a Request past the next Parse must pass another.
// After an error req holds what was read before it.
func (p *RequestParser) Parse(frame []byte, req *Request) error {
	return p.parse(frame, req, true)
}

func (p *RequestParser) str(b []byte, intern bool) string {
	if !intern || len(b) > internLen {
		return string(b)
	}
	if s, ok := p.strs[string(b)]; ok {
		return s
	}
	if p.strs == nil {
		p.strs = make(map[string]string, 32)
	} else if len(p.strs) >= internMax {
		clear(p.strs)
	}
	s := string(b)
	p.strs[s] = s
	return s
}

// requestHeader checks that frame is a hessian2 call and returns its body.
func requestHeader(frame []byte) (Header, []byte, error) {
	h, body, err := splitFrame(frame)
	if err != nil {
		return h, nil, err
	}
	switch {
	case !h.IsRequest():
		return h, nil, fmt.Errorf("%w: a response (%s)", ErrNotCall, h)
	case h.Event():
		return h, nil, fmt.Errorf("%w: an event (%s)", ErrNotCall, h)
	case h.Serialization() != SerializationHessian2:
		return h, nil, &UnsupportedSerializationError{Serialization: h.Serialization()}
	}
	return h, body, nil
}

func (p *RequestParser) parse(frame []byte, req *Request, intern bool) error {
	_, body, err := requestHeader(frame)
	if err != nil {
		return err
	}
	s := scanner{b: body, base: HeaderLen, classes: p.classes[:0], scratch: p.scratch[:0]}
	defer func() {
		// Keep the buffers for the next call, unless one body made them large.
		if cap(s.classes) <= 1024 {
			p.classes = s.classes[:0]
		}
		if cap(s.scratch) <= 64<<10 {
			p.scratch = s.scratch[:0]
		}
	}()
	fields := [...]struct {
		name string
		dst  *string
	}{
		{"Dubbo version", &req.DubboVersion},
		{"service path", &req.Path},
		{"service version", &req.Version},
		{"method", &req.Method},
		{"parameter types", &req.ParamTypes},
	}
	for _, f := range fields {
		c, err := s.next(f.name)
		if err != nil {
			return inPart(err, "%s", f.name)
		}
		b, _, err := s.readString(c)
		if err != nil {
			return inPart(err, "%s", f.name)
		}
		*f.dst = p.str(b, intern)
	}

	n := countParamTypes(req.ParamTypes)
	for i := range n {
		if err := s.skipValue(0); err != nil {
			return inPart(err, "argument %d of %d (%s)", i+1, n, paramTypeAt(req.ParamTypes, i))
		}
	}

	if req.Attachments != nil {
		if len(req.Attachments) > 64 {
			req.Attachments = nil // do not keep a map one request made large
		} else {
			clear(req.Attachments)
		}
	}
	if err := p.attachments(&s, req, intern); err != nil {
		return inPart(err, "attachments")
	}
	return nil
}

// attachments reads the attachments map, keeping its string entries.
func (p *RequestParser) attachments(s *scanner, req *Request, intern bool) error {
	c, err := s.next("the attachments")
	if err != nil {
		return err
	}
	switch c {
	case 'N':
		return nil
	case 'H':
	case 'M':
		if err := s.skipType(); err != nil {
			return err
		}
	default:
		s.off--
		return s.fail("tag %#02x is not a map", c)
	}
	for {
		c, ok := s.peek()
		if !ok {
			return s.truncated("the attachments")
		}
		if c == 'Z' {
			s.off++
			return nil
		}
		if !isStringTag(c) {
			// A key that is not a string: skip the entry.
			if err := s.skipValue(1); err != nil {
				return err
			}
			if err := s.skipValue(1); err != nil {
				return err
			}
			continue
		}
		s.off++
		b, _, err := s.readString(c)
		if err != nil {
			return err
		}
		key := p.str(b, intern)
		c, ok = s.peek()
		if !ok {
			return s.truncated("the attachments")
		}
		if !isStringTag(c) {
			if err := s.skipValue(1); err != nil {
				return err
			}
			delete(req.Attachments, key) // the last entry of a key counts, as in a decoded map
			continue
		}
		s.off++
		b, _, err = s.readString(c)
		if err != nil {
			return err
		}
		if req.Attachments == nil {
			req.Attachments = make(map[string]string, 8)
		}
		req.Attachments[key] = p.str(b, intern)
	}
}

// countParamTypes counts the parameter types in a descriptor the way Dubbo does
// (ReflectUtils.DESC_PATTERN in Java, hessian.DescRegex in dubbo-go): every match of
// (?:[VZBCDFIJS]|L<class>;|\[+(?:[VZBCDFIJS]|L<class>;)), skipping what does not match.
func countParamTypes(d string) int {
	n := 0
	for i := 0; i < len(d); {
		if m := matchParamType(d, i); m > 0 {
			n++
			i += m
		} else {
			i++
		}
	}
	return n
}

// paramTypeAt returns the i-th parameter type of descriptor d, for messages.
func paramTypeAt(d string, i int) string {
	for j := 0; j < len(d); {
		m := matchParamType(d, j)
		if m == 0 {
			j++
			continue
		}
		if i == 0 {
			return d[j : j+m]
		}
		i--
		j += m
	}
	return "?"
}

func isPrimitiveDesc(c byte) bool {
	switch c {
	case 'V', 'Z', 'B', 'C', 'D', 'F', 'I', 'J', 'S':
		return true
	}
	return false
}

// matchParamType returns the length of the parameter type at d[i:], 0 if none starts there.
func matchParamType(d string, i int) int {
	switch c := d[i]; {
	case isPrimitiveDesc(c):
		return 1
	case c == 'L':
		return matchClassDesc(d, i)
	case c == '[':
		j := i
		for j < len(d) && d[j] == '[' {
			j++
		}
		if j == len(d) {
			return 0
		}
		if isPrimitiveDesc(d[j]) {
			return j + 1 - i
		}
		if d[j] == 'L' {
			if m := matchClassDesc(d, j); m > 0 {
				return j - i + m
			}
		}
	}
	return 0
}

// matchClassDesc matches L<ident>(/<ident>)*; at d[i:] (d[i] is 'L'), identifiers being
// [_$a-zA-Z][_$a-zA-Z0-9]*.
func matchClassDesc(d string, i int) int {
	j := i + 1
	for {
		if j >= len(d) || !isIdentStart(d[j]) {
			return 0
		}
		j++
		for j < len(d) && (isIdentStart(d[j]) || (d[j] >= '0' && d[j] <= '9')) {
			j++
		}
		if j >= len(d) {
			return 0
		}
		switch d[j] {
		case ';':
			return j + 1 - i
		case '/':
			j++
		default:
			return 0
		}
	}
}

func isIdentStart(c byte) bool {
	return c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// DecodeArgs decodes the arguments of a hessian2 call frame with dubbo-go-hessian2, after
// checking the frame as ParseRequest does. Java classes not registered with hessian2
// (hessian.RegisterPOJO) decode to map[string]any holding their fields; exceptions to
// hessian's java_exception types. An argument the decoder cannot decode is an error that
// names it (errors.Is ErrUndecodable). Decoding is not for a relay's hot path: it costs
// about ten times ParseRequest, and dubbo-go-hessian2 registers every unknown exception
// class it meets in its process-wide type registry.
func DecodeArgs(frame []byte) (args []any, err error) {
	req, err := ParseRequest(frame)
	if err != nil {
		return nil, err
	}
	_, body, _ := requestHeader(frame)
	n := countParamTypes(req.ParamTypes)
	i := -1
	defer func() {
		if r := recover(); r != nil {
			what := "the request header strings"
			if i >= 0 {
				what = fmt.Sprintf("argument %d of %d (%s)", i+1, n, paramTypeAt(req.ParamTypes, i))
			}
			args, err = nil, fmt.Errorf("%w panicked on %s: %v", ErrUndecodable, what, r)
		}
	}()
	dec := hessian.NewDecoder(body)
	for range 5 {
		if _, err := dec.Decode(); err != nil {
			return nil, fmt.Errorf("%w: the request header strings: %w", ErrUndecodable, err)
		}
	}
	args = make([]any, n)
	for i = range n {
		v, err := dec.Decode()
		if err != nil {
			return nil, fmt.Errorf("%w cannot decode argument %d of %d (%s): %w",
				ErrUndecodable, i+1, n, paramTypeAt(req.ParamTypes, i), err)
		}
		args[i] = v
	}
	return args, nil
}
