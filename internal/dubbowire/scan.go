package dubbowire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// MaxDepth is how deeply hessian2 values may nest in a body (lists, maps, objects, and
// class definitions before a value). Deeper bodies are refused: decoders recurse once per
// level, and Java's own hessian2 runs out of stack a few thousand levels down.
const MaxDepth = 128

// ErrMalformed matches (errors.Is) every *FormatError.
var ErrMalformed = errors.New("dubbowire: malformed body")

// FormatError is a body that is not the hessian2 a Dubbo frame should hold.
type FormatError struct {
	Part   string // what was being read: "method", "argument 2 of 3 (Ljava/util/Map;)", "attachments"
	Offset int    // where, in bytes from the start of the frame
	Reason string
}

func (e *FormatError) Error() string {
	part := e.Part
	if part == "" {
		part = "body"
	}
	return fmt.Sprintf("dubbowire: malformed %s at frame byte %d: %s", part, e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrMalformed) true.
func (e *FormatError) Is(target error) bool { return target == ErrMalformed }

// inPart names the part of the body err happened in, if err is a *FormatError without one.
func inPart(err error, format string, args ...any) error {
	var fe *FormatError
	if errors.As(err, &fe) && fe.Part == "" {
		fe.Part = fmt.Sprintf(format, args...)
	}
	return err
}

// scanner walks hessian2 values in a body without building them, checking that every
// length fits in the bytes that remain and that values nest at most MaxDepth deep. It
// follows the grammar of the Hessian 2.0 serialization protocol as dubbo-go-hessian2 and
// Dubbo Java's hessian-lite read it (strings in UTF-16 units, CESU-8 surrogate pairs).
type scanner struct {
	b       []byte
	off     int
	base    int   // offset of b in the frame, for errors
	classes []int // field counts of the class definitions met so far, in order
	scratch []byte
}

func (s *scanner) fail(format string, args ...any) error {
	return &FormatError{Offset: s.base + s.off, Reason: fmt.Sprintf(format, args...)}
}

func (s *scanner) truncated(what string) error {
	return &FormatError{Offset: s.base + len(s.b), Reason: "body ends inside " + what}
}

func (s *scanner) left() int { return len(s.b) - s.off }

func (s *scanner) peek() (byte, bool) {
	if s.off >= len(s.b) {
		return 0, false
	}
	return s.b[s.off], true
}

func (s *scanner) next(what string) (byte, error) {
	if s.off >= len(s.b) {
		return 0, s.truncated(what)
	}
	c := s.b[s.off]
	s.off++
	return c, nil
}

func (s *scanner) skip(n int, what string) error {
	if n > s.left() {
		return s.truncated(what)
	}
	s.off += n
	return nil
}

// isStringTag reports whether c starts a string (a final or non-final chunk).
func isStringTag(c byte) bool {
	return c <= 0x1f || (c >= 0x30 && c <= 0x33) || c == 'S' || c == 'R'
}

// isIntTag reports whether c starts a 32-bit int.
func isIntTag(c byte) bool {
	return (c >= 0x80 && c <= 0xd7) || c == 'I'
}

// readInt reads an int (or null, which hessian readers take as 0).
func (s *scanner) readInt(what string) (int64, error) {
	start := s.off
	c, err := s.next(what)
	if err != nil {
		return 0, err
	}
	switch {
	case c >= 0x80 && c <= 0xbf:
		return int64(c) - 0x90, nil
	case c >= 0xc0 && c <= 0xcf:
		b, err := s.next(what)
		if err != nil {
			return 0, err
		}
		return (int64(c)-0xc8)<<8 | int64(b), nil
	case c >= 0xd0 && c <= 0xd7:
		if err := s.skip(2, what); err != nil {
			return 0, err
		}
		return (int64(c)-0xd4)<<16 | int64(s.b[s.off-2])<<8 | int64(s.b[s.off-1]), nil
	case c == 'I':
		if err := s.skip(4, what); err != nil {
			return 0, err
		}
		return int64(int32(binary.BigEndian.Uint32(s.b[s.off-4:]))), nil
	case c == 'N':
		return 0, nil
	}
	s.off = start
	return 0, s.fail("%s: tag %#02x is not an int", what, c)
}

// readCount reads a count of items that each take at least one byte.
func (s *scanner) readCount(what string) (int, error) {
	start := s.off
	n, err := s.readInt(what)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > int64(s.left()) {
		s.off = start
		return 0, s.fail("%s %d with %d bytes left", what, n, s.left())
	}
	return int(n), nil
}

// skipChars skips n UTF-16 units of hessian2 string data: 1-byte, 2-byte and 3-byte
// sequences, a surrogate pair being two 3-byte sequences.
func (s *scanner) skipChars(n int) error {
	if n <= s.left() && isASCII(s.b[s.off:s.off+n]) {
		s.off += n
		return nil
	}
	for range n {
		if s.off >= len(s.b) {
			return s.truncated("a string")
		}
		c := s.b[s.off]
		switch {
		case c < 0x80:
			s.off++
		case c&0xe0 == 0xc0:
			s.off += 2
		case c&0xf0 == 0xe0:
			s.off += 3
		default:
			return s.fail("bad utf-8 lead byte %#02x in a string", c)
		}
	}
	if s.off > len(s.b) {
		s.off = len(s.b)
		return s.truncated("a string")
	}
	return nil
}

func isASCII(b []byte) bool {
	var acc uint64
	for len(b) >= 32 {
		acc |= binary.LittleEndian.Uint64(b) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:])
		b = b[32:]
	}
	for len(b) >= 8 {
		acc |= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	for _, c := range b {
		acc |= uint64(c)
	}
	return acc&0x8080808080808080 == 0
}

// chunkLen reads the length of a string chunk whose tag c was read.
func (s *scanner) chunkLen(c byte) (int, error) {
	switch {
	case c <= 0x1f:
		return int(c), nil
	case c >= 0x30 && c <= 0x33:
		b, err := s.next("a string length")
		return int(c-0x30)<<8 | int(b), err
	default: // 'S', 'R'
		if err := s.skip(2, "a string length"); err != nil {
			return 0, err
		}
		return int(binary.BigEndian.Uint16(s.b[s.off-2:])), nil
	}
}

// readString reads a string value (or null) whose tag c was read, and returns its UTF-8
// bytes: a slice of the body, or of s.scratch for chunked strings and surrogate pairs,
// valid until the next readString.
func (s *scanner) readString(c byte) (b []byte, null bool, err error) {
	if c == 'N' {
		return nil, true, nil
	}
	if !isStringTag(c) {
		s.off--
		return nil, false, s.fail("tag %#02x is not a string", c)
	}
	chunked := false
	s.scratch = s.scratch[:0]
	for {
		n, err := s.chunkLen(c)
		if err != nil {
			return nil, false, err
		}
		start := s.off
		if err := s.skipChars(n); err != nil {
			return nil, false, err
		}
		if c != 'R' && !chunked {
			b = s.b[start:s.off]
			break
		}
		chunked = true
		s.scratch = append(s.scratch, s.b[start:s.off]...)
		if c != 'R' {
			b = s.scratch
			break
		}
		if c, err = s.next("a chunked string"); err != nil {
			return nil, false, err
		}
		if !isStringTag(c) {
			s.off--
			return nil, false, s.fail("tag %#02x follows a string chunk", c)
		}
	}
	if hasSurrogate(b) {
		if chunked {
			b = append([]byte(nil), b...)
		}
		s.scratch = cesuToUTF8(s.scratch[:0], b)
		b = s.scratch
	}
	return b, false, nil
}

// skipString skips string chunks whose first tag c was read.
func (s *scanner) skipString(c byte) error {
	for {
		n, err := s.chunkLen(c)
		if err != nil {
			return err
		}
		if err := s.skipChars(n); err != nil {
			return err
		}
		if c != 'R' {
			return nil
		}
		if c, err = s.next("a chunked string"); err != nil {
			return err
		}
		if !isStringTag(c) {
			s.off--
			return s.fail("tag %#02x follows a string chunk", c)
		}
	}
}

// skipBinary skips binary chunks whose first tag c was read.
func (s *scanner) skipBinary(c byte) error {
	for {
		var n int
		switch {
		case c >= 0x20 && c <= 0x2f:
			n = int(c - 0x20)
		case c >= 0x34 && c <= 0x37:
			b, err := s.next("a binary length")
			if err != nil {
				return err
			}
			n = int(c-0x34)<<8 | int(b)
		default: // 'A', 'B'
			if err := s.skip(2, "a binary length"); err != nil {
				return err
			}
			n = int(binary.BigEndian.Uint16(s.b[s.off-2:]))
		}
		if err := s.skip(n, "binary data"); err != nil {
			return err
		}
		if c != 'A' {
			return nil
		}
		var err error
		if c, err = s.next("chunked binary data"); err != nil {
			return err
		}
		if !(c == 'A' || c == 'B' || (c >= 0x20 && c <= 0x2f) || (c >= 0x34 && c <= 0x37)) {
			s.off--
			return s.fail("tag %#02x follows a binary chunk", c)
		}
	}
}

// skipType skips the type of a typed list or map: a type name, or a reference to one.
func (s *scanner) skipType() error {
	c, err := s.next("a type")
	if err != nil {
		return err
	}
	if isStringTag(c) {
		return s.skipString(c)
	}
	s.off--
	if isIntTag(c) {
		_, err = s.readInt("a type reference")
		return err
	}
	return s.fail("tag %#02x is not a type", c)
}

// skipValues skips n values.
func (s *scanner) skipValues(n, depth int) error {
	for range n {
		if err := s.skipValue(depth); err != nil {
			return err
		}
	}
	return nil
}

// skipToEnd skips values up to and including the terminator 'Z'; pairs counts map entries.
func (s *scanner) skipToEnd(depth int, pairs bool) error {
	for {
		c, ok := s.peek()
		if !ok {
			return s.truncated("a list or map")
		}
		if c == 'Z' {
			s.off++
			return nil
		}
		if err := s.skipValue(depth); err != nil {
			return err
		}
		if pairs {
			if err := s.skipValue(depth); err != nil {
				return err
			}
		}
	}
}

// classDef reads a class definition ('C' was read): name, field count, field names.
func (s *scanner) classDef() error {
	c, err := s.next("a class name")
	if err != nil {
		return err
	}
	if !isStringTag(c) {
		s.off--
		return s.fail("tag %#02x is not a class name", c)
	}
	if err := s.skipString(c); err != nil {
		return err
	}
	n, err := s.readCount("class field count")
	if err != nil {
		return err
	}
	for range n {
		c, err := s.next("a field name")
		if err != nil {
			return err
		}
		if !isStringTag(c) {
			s.off--
			return s.fail("tag %#02x is not a field name", c)
		}
		if err := s.skipString(c); err != nil {
			return err
		}
	}
	s.classes = append(s.classes, n)
	return nil
}

// object skips the fields of an instance of class definition idx.
func (s *scanner) object(idx int64, depth int) error {
	if idx < 0 || idx >= int64(len(s.classes)) {
		return s.fail("object of class definition %d, %d defined", idx, len(s.classes))
	}
	return s.skipValues(s.classes[idx], depth)
}

// skipValue skips one value at nesting depth depth.
func (s *scanner) skipValue(depth int) error {
	if depth > MaxDepth {
		return s.fail("values nested more than %d deep", MaxDepth)
	}
	c, err := s.next("a value")
	if err != nil {
		return err
	}
	switch {
	case c <= 0x1f: // string, 0-31 units
		return s.skipChars(int(c))
	case c <= 0x2f: // binary, 0-15 bytes
		return s.skip(int(c-0x20), "binary data")
	case c <= 0x33: // string, 0-1023 units
		return s.skipString(c)
	case c <= 0x37: // binary, 0-1023 bytes
		return s.skipBinary(c)
	case c <= 0x3f: // long, 3 bytes
		return s.skip(2, "a long")
	case c >= 0x80 && c <= 0xbf, c >= 0xd8 && c <= 0xef: // int, long, 1 byte
		return nil
	case c >= 0xc0 && c <= 0xcf, c >= 0xf0: // int, long, 2 bytes
		return s.skip(1, "a number")
	case c >= 0xd0 && c <= 0xd7: // int, 3 bytes
		return s.skip(2, "an int")
	case c >= 0x60 && c <= 0x6f: // object, class definition 0-15
		return s.object(int64(c-0x60), depth+1)
	case c >= 0x70 && c <= 0x77: // typed list, 0-7 items
		if err := s.skipType(); err != nil {
			return err
		}
		return s.skipValues(int(c-0x70), depth+1)
	case c >= 0x78 && c <= 0x7f: // untyped list, 0-7 items
		return s.skipValues(int(c-0x78), depth+1)
	}
	switch c {
	case 'N', 'T', 'F', 0x5b, 0x5c: // null, true, false, 0.0, 1.0
		return nil
	case 0x5d: // double as byte
		return s.skip(1, "a double")
	case 0x5e: // double as short
		return s.skip(2, "a double")
	case 0x5f, 'Y', 'I', 0x4b: // double as float, long as int, int, date in minutes
		return s.skip(4, "a number")
	case 'D', 'L', 0x4a: // double, long, date in milliseconds
		return s.skip(8, "a number")
	case 'S', 'R':
		return s.skipString(c)
	case 'A', 'B':
		return s.skipBinary(c)
	case 'H': // untyped map
		return s.skipToEnd(depth+1, true)
	case 'M': // typed map
		if err := s.skipType(); err != nil {
			return err
		}
		return s.skipToEnd(depth+1, true)
	case 'U': // typed list, variable length
		if err := s.skipType(); err != nil {
			return err
		}
		return s.skipToEnd(depth+1, false)
	case 'W': // untyped list, variable length
		return s.skipToEnd(depth+1, false)
	case 'V': // typed list, fixed length
		if err := s.skipType(); err != nil {
			return err
		}
		n, err := s.readCount("list length")
		if err != nil {
			return err
		}
		return s.skipValues(n, depth+1)
	case 'X': // untyped list, fixed length
		n, err := s.readCount("list length")
		if err != nil {
			return err
		}
		return s.skipValues(n, depth+1)
	case 'C': // class definition, then the value that uses it
		if err := s.classDef(); err != nil {
			return err
		}
		return s.skipValue(depth + 1)
	case 'O': // object
		idx, err := s.readInt("an object's class")
		if err != nil {
			return err
		}
		return s.object(idx, depth+1)
	case 'Q': // reference to an earlier list, map or object
		start := s.off
		idx, err := s.readInt("a reference")
		if err != nil {
			return err
		}
		if idx < 0 {
			s.off = start
			return s.fail("reference to %d", idx)
		}
		return nil
	}
	s.off--
	return s.fail("tag %#02x does not start a value", c) // 0x40, 0x45, 0x47, 0x50, 'Z'
}

// hasSurrogate reports whether b holds a CESU-8 surrogate (ED A0..BF xx).
func hasSurrogate(b []byte) bool {
	for {
		i := bytes.IndexByte(b, 0xed)
		if i < 0 || i+1 >= len(b) {
			return false
		}
		if b[i+1] >= 0xa0 {
			return true
		}
		b = b[i+1:]
	}
}

// cesuToUTF8 appends src to dst with each CESU-8 surrogate pair (two 3-byte sequences, as
// Java's hessian2 writes a character above U+FFFF) turned into one 4-byte UTF-8 sequence.
// Lone surrogates are kept as they are, as dubbo-go-hessian2 does.
func cesuToUTF8(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		if i+5 < len(src) && src[i] == 0xed && src[i+1]&0xf0 == 0xa0 && src[i+3] == 0xed && src[i+4]&0xf0 == 0xb0 {
			hi := rune(src[i+1]&0x0f)<<6 | rune(src[i+2]&0x3f)
			lo := rune(src[i+4]&0x0f)<<6 | rune(src[i+5]&0x3f)
			dst = utf8.AppendRune(dst, 0x10000+hi<<10|lo)
			i += 6
			continue
		}
		dst = append(dst, src[i])
		i++
	}
	return dst
}
