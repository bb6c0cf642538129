package dubbowire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseHeaderErrors(t *testing.T) {
	good := AppendHeartbeatRequest(nil, 1)
	for n := range HeaderLen {
		if _, err := ParseHeader(good[:n]); !errors.Is(err, ErrTruncated) {
			t.Errorf("%d bytes: %v, want ErrTruncated", n, err)
		}
	}
	bad := bytes.Clone(good)
	bad[1] = 0xbc
	if _, err := ParseHeader(bad); !errors.Is(err, ErrBadMagic) {
		t.Errorf("bad magic: %v", err)
	}
	h, err := ParseHeader(good)
	if err != nil || h.ID() != 1 {
		t.Fatalf("%v %s", err, h)
	}
	SetID(good, 0xfedcba9876543210)
	if h, _ := ParseHeader(good); h.ID() != 0xfedcba9876543210 || !h.Event() || h.BodyLen() != 1 {
		t.Errorf("after SetID: %s", h)
	}
}

func TestStrings(t *testing.T) {
	if s := StatusServerThreadpoolExhausted.String(); s != "SERVER_THREADPOOL_EXHAUSTED_ERROR" {
		t.Error(s)
	}
	if s := Status(99).String(); s != "STATUS_99" {
		t.Error(s)
	}
	if s := SerializationFastjson2.String(); s != "fastjson2" {
		t.Error(s)
	}
	if s := ResultNullValueWithAttachments.String(); s != "RESPONSE_NULL_VALUE_WITH_ATTACHMENTS" {
		t.Error(s)
	}
	h, _ := ParseHeader(AppendErrorResponse(nil, 3, StatusBadRequest, "x"))
	if s := h.String(); s != "response BAD_REQUEST id=3 hessian2 body=2" {
		t.Error(s)
	}
}

// chunkReader hands out its data a few bytes at a time and records the largest read.
type chunkReader struct {
	data    []byte
	step    int
	maxRead int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.maxRead = max(r.maxRead, len(p))
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data[:min(len(r.data), r.step)])
	r.data = r.data[n:]
	return n, nil
}

func TestReadFrame(t *testing.T) {
	req, err := AppendRequest(nil, 11, Request{Path: "S", Method: "M", ParamTypes: "[B"}, []any{bytes.Repeat([]byte("x"), 100000)}, true)
	if err != nil {
		t.Fatal(err)
	}
	stream := append(bytes.Clone(req), AppendHeartbeatRequest(nil, 12)...)
	r := bufio.NewReader(&chunkReader{data: stream, step: 1000})

	buf := make([]byte, 0, 64)
	f1, h1, err := ReadFrame(r, 1<<20, buf)
	if err != nil || h1.ID() != 11 || !bytes.Equal(f1, req) {
		t.Fatalf("frame 1: %v %s", err, h1)
	}
	f2, h2, err := ReadFrame(r, 1<<20, f1[:0])
	if err != nil || h2.ID() != 12 || !h2.Event() {
		t.Fatalf("frame 2: %v %s", err, h2)
	}
	if &f2[0] != &f1[0] {
		t.Error("ReadFrame did not reuse a large enough buffer")
	}
	if _, _, err := ReadFrame(r, 1<<20, f2[:0]); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}

	// Over the limit: the header comes back, the body stays unread.
	r = bufio.NewReader(bytes.NewReader(stream))
	_, h, err := ReadFrame(r, 99999, nil)
	var tooLarge *BodyTooLargeError
	if !errors.As(err, &tooLarge) || !errors.Is(err, ErrBodyTooLarge) || tooLarge.Header.ID() != 11 || h.ID() != 11 {
		t.Fatalf("over the limit: %v", err)
	}
	if r.Buffered() == 0 {
		t.Error("the body was read")
	}

	// A peer announces 8 MiB and sends 10 bytes: buffers grow with what arrives.
	big := appendHeader(nil, FlagRequest|FlagTwoWay|byte(SerializationHessian2), 0, 1)
	big[13] = 0x80 // 8 MiB
	cr := &chunkReader{data: append(big, make([]byte, 10)...), step: 1 << 30}
	if _, _, err := readFrame(cr, DefaultMaxBody, nil); !errors.Is(err, ErrTruncated) {
		t.Fatalf("short body: %v", err)
	}
	if cr.maxRead > 4096 {
		t.Errorf("ReadFrame read into a buffer of %d bytes for a body of which 10 arrived", cr.maxRead)
	}

	for _, tc := range []struct {
		name  string
		input []byte
		want  error
	}{
		{"truncated header", stream[:9], ErrTruncated},
		{"truncated body", stream[:HeaderLen+50], ErrTruncated},
		{"bad magic", append([]byte{0xca, 0xfe}, stream[2:]...), ErrBadMagic},
	} {
		_, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(tc.input)), 1<<20, nil)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// frameWithBody builds a hessian2 request frame with the given body.
func frameWithBody(flags byte, body []byte) []byte {
	f := appendHeader(nil, flags, 0, 1)
	f = append(f, body...)
	setBodyLen(f)
	return f
}

// hstr is s as a hessian2 string.
func hstr(s string) []byte { return appendString(nil, s) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParseRequestBadInput(t *testing.T) {
	call := FlagRequest | FlagTwoWay | byte(SerializationHessian2)
	front := func(desc string) []byte { // version, path, service version, method, descriptor
		return cat(hstr("2.0.2"), hstr("com.example.S"), hstr(""), hstr("m"), hstr(desc))
	}
	noAtt := []byte("HZ")
	cases := []struct {
		name  string
		frame []byte
		want  error
		part  string // in the message
	}{
		{"empty body", frameWithBody(call, nil), ErrMalformed, "Dubbo version"},
		{"garbage", frameWithBody(call, []byte("\xff\xfe garbage")), ErrMalformed, "Dubbo version"},
		{"version not a string", frameWithBody(call, []byte{0x91}), ErrMalformed, "Dubbo version"},
		{"string longer than the body", frameWithBody(call, []byte{0x1f, 'a'}), ErrMalformed, "Dubbo version"},
		{"bad utf-8", frameWithBody(call, []byte{0x02, 0xff, 0xff}), ErrMalformed, "Dubbo version"},
		{"no attachments", frameWithBody(call, front("")), ErrMalformed, "attachments"},
		{"attachments not a map", frameWithBody(call, cat(front(""), hstr("x"))), ErrMalformed, "attachments"},
		{"unterminated attachments", frameWithBody(call, cat(front(""), []byte("H"), hstr("k"), hstr("v"))), ErrMalformed, "attachments"},
		{"missing argument", frameWithBody(call, cat(front("II"), []byte{0x91})), ErrMalformed, "argument 2 of 2 (I)"},
		{"list of 2^31-1 items", frameWithBody(call, cat(front("Ljava/util/List;"), []byte{'X', 'I', 0x7f, 0xff, 0xff, 0xff}, noAtt)),
			ErrMalformed, "argument 1 of 1"},
		{"list of -1 items", frameWithBody(call, cat(front("Ljava/util/List;"), []byte{'X', 0x8f}, noAtt)), ErrMalformed, "argument 1"},
		{"class with 2^31-1 fields", frameWithBody(call, cat(front("Lx;"), []byte{'C'}, hstr("x"), []byte{'I', 0x7f, 0xff, 0xff, 0xff}, noAtt)),
			ErrMalformed, "argument 1"},
		{"object of an undefined class", frameWithBody(call, cat(front("Lx;"), []byte{0x61}, noAtt)), ErrMalformed, "argument 1"},
		{"nesting deeper than MaxDepth", frameWithBody(call, cat(front("Ljava/util/List;"), bytes.Repeat([]byte{0x79}, MaxDepth+2), noAtt)),
			ErrMalformed, "nested"},
		{"reserved tag", frameWithBody(call, cat(front("I"), []byte{0x40}, noAtt)), ErrMalformed, "argument 1"},
		{"terminator for a value", frameWithBody(call, cat(front("I"), []byte{'Z'}, noAtt)), ErrMalformed, "argument 1"},
		{"negative reference", frameWithBody(call, cat(front("I"), []byte{'Q', 0x8f}, noAtt)), ErrMalformed, "argument 1"},
		{"binary chunk then a string", frameWithBody(call, cat(front("[B"), []byte{'A', 0, 1, 'x', 0x01, 'y'}, noAtt)), ErrMalformed, "argument 1"},
		{"truncated frame", frameWithBody(call, cat(front(""), noAtt))[:HeaderLen+3], ErrTruncated, ""},
		{"fastjson2", frameWithBody(FlagRequest|FlagTwoWay|byte(SerializationFastjson2), []byte{0, 0, 0, 1, 0xaf}),
			ErrUnsupportedSerialization, "23 (fastjson2)"},
		{"a response", AppendErrorResponse(nil, 1, StatusBadRequest, "x"), ErrNotCall, "response"},
		{"a heartbeat", AppendHeartbeatRequest(nil, 1), ErrNotCall, "event"},
		{"bad magic", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrBadMagic, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRequest(tc.frame)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.part) {
				t.Fatalf("ParseRequest: %v, want %v mentioning %q", err, tc.want, tc.part)
			}
			if _, err2 := DecodeArgs(tc.frame); !errors.Is(err2, tc.want) {
				t.Errorf("DecodeArgs: %v", err2)
			}
			var fe *FormatError
			if errors.As(err, &fe) && (fe.Offset < HeaderLen || fe.Offset > len(tc.frame)) {
				t.Errorf("offset %d outside the body", fe.Offset)
			}
			t.Log(err)
		})
	}
}

// TestDecodeArgsDecoderError: a body the scanner accepts and dubbo-go-hessian2 cannot
// decode (a typed list whose type is a reference to a type never named) is reported as such.
func TestDecodeArgsDecoderError(t *testing.T) {
	frame := withArgBytes(t, "S", "m", "Ljava/lang/Object;", []byte{'V', 0x95, 0x90}, nil)
	if _, err := ParseRequest(frame); err != nil {
		t.Fatalf("ParseRequest: %v", err)
	}
	_, err := DecodeArgs(frame)
	if err == nil || !strings.Contains(err.Error(), "cannot decode argument 1 of 1 (Ljava/lang/Object;)") {
		t.Fatalf("DecodeArgs: %v", err)
	}
	t.Log(err)
}

func TestParseResponseBadInput(t *testing.T) {
	ok := byte(SerializationHessian2)
	okResp := func(body []byte) []byte {
		f := appendHeader(nil, ok, StatusOK, 1)
		f = append(f, body...)
		setBodyLen(f)
		return f
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", okResp(nil), ErrMalformed},
		{"unknown flag", okResp([]byte{0x99}), ErrMalformed},
		{"value missing", okResp([]byte{0x91}), ErrMalformed},
		{"attachments not a map", okResp([]byte{0x95, 'T'}), ErrMalformed},
		{"huge list", okResp([]byte{0x91, 'X', 'I', 0x7f, 0xff, 0xff, 0xff}), ErrMalformed},
		{"a request", AppendHeartbeatRequest(nil, 1), ErrNotResponse},
		{"fastjson2", frameWithBody(byte(SerializationFastjson2), []byte{0}), ErrUnsupportedSerialization},
		{"error message not a string", func() []byte {
			f := appendHeader(nil, ok, StatusServerError, 1)
			f = append(f, 0x91)
			setBodyLen(f)
			return f
		}(), ErrMalformed},
	} {
		if _, err := ParseResponse(tc.frame); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestAppendErrorResponseOKPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	AppendErrorResponse(nil, 1, StatusOK, "x")
}
