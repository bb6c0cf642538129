package dubbowire

import (
	"bytes"
	"errors"
	"maps"
	"regexp"
	"strings"
	"testing"
	"time"

	"dubbo.apache.org/dubbo-go/v3/protocol/dubbo/impl"
	hessian "github.com/apache/dubbo-go-hessian2"
	"github.com/apache/dubbo-go-hessian2/java_exception"
)

// requestSeeds are real request frames: dubbo-go's, ours, and hand-made hessian2.
func requestSeeds(t testing.TB) [][]byte {
	svc := impl.Service{Path: "com.example.S", Interface: "com.example.S", Group: "g", Version: "1.0.0",
		Method: "M", Timeout: time.Second}
	att := map[string]any{"traceid": "t", "n": int64(1)}
	seeds := [][]byte{
		dubbogoRequest(t, 1, svc, []any{"héllo 😀"}, att, true),
		dubbogoRequest(t, 2, svc, []any{&testUser{ID: "u", Age: 1}, []byte("bytes")}, att, true),
		dubbogoRequest(t, 3, svc, []any{[]any{int32(1), []any{nil, "x"}}, map[any]any{"k": map[any]any{"v": 1.5}}}, att, false),
		dubbogoRequest(t, 4, svc, []any{java_exception.NewThrowable("boom"), nil, true, int64(-5)}, nil, true),
		dubbogoRequest(t, 5, svc, []any{}, nil, true),
		dubbogoHeartbeat(t, 6, false),
		withArgBytes(t, "com.example.S", "Do", "Lcom/example/X;Lcom/example/X;",
			append(unknownObject("com.example.X", map[string]string{"a": "1", "b": "2"}), 0x60, 0x01, 'c', 0x01, 'd'),
			map[string]string{"group": "g"}),
		AppendErrorResponse(nil, 7, StatusBadRequest, "not a request"),
	}
	mine, err := AppendRequest(nil, 8, Request{Path: "com.example.S", Version: "2", Method: "M",
		ParamTypes: "Ljava/lang/String;[Ljava/lang/String;", Attachments: map[string]string{"group": "g", "k": "v"}},
		[]any{strings.Repeat("long ", 20000), []string{"a", "b"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	return append(seeds, mine)
}

// hessianStrings decodes a call frame that ParseRequest accepted with dubbo-go-hessian2 and
// returns what ParseRequest should have read: the five strings and the string attachments.
// ok is false if the decoder fails, which it may for bodies ParseRequest accepts.
func hessianStrings(frame []byte) (r Request, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_, body, err := splitFrame(frame)
	if err != nil {
		return r, false
	}
	dec := hessian.NewDecoder(body)
	var front [5]string
	for i := range front {
		v, err := dec.Decode()
		if err != nil {
			return r, false
		}
		if v != nil {
			if front[i], ok = v.(string); !ok {
				return r, false
			}
		}
	}
	r = Request{DubboVersion: front[0], Path: front[1], Version: front[2], Method: front[3], ParamTypes: front[4]}
	for range countParamTypes(r.ParamTypes) {
		if _, err := dec.Decode(); err != nil {
			return r, false
		}
	}
	v, err := dec.Decode()
	if err != nil {
		return r, false
	}
	if v == nil {
		return r, true
	}
	m, ok := v.(map[any]any)
	if !ok {
		return r, false
	}
	for k, v := range m {
		ks, kok := k.(string)
		vs, vok := v.(string)
		if kok && vok {
			if r.Attachments == nil {
				r.Attachments = map[string]string{}
			}
			r.Attachments[ks] = vs
		}
	}
	return r, true
}

// sameInBoth reports whether dubbo-go-hessian2 and ParseRequest should agree on s: they
// read lone surrogates (invalid in hessian2) differently.
func sameInBoth(s string) bool { return !strings.Contains(s, "\xed") }

func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		orig := bytes.Clone(frame)
		req, err := ParseRequest(frame)
		if !bytes.Equal(frame, orig) {
			t.Fatal("ParseRequest modified the frame")
		}
		var p RequestParser
		reused := Request{Attachments: map[string]string{"stale": "x"}}
		err2 := p.Parse(frame, &reused)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("ParseRequest: %v; RequestParser.Parse: %v", err, err2)
		}
		if err != nil {
			for _, typed := range []error{ErrMalformed, ErrTruncated, ErrBadMagic, ErrNotCall, ErrUnsupportedSerialization} {
				if errors.Is(err, typed) {
					return
				}
			}
			t.Fatalf("untyped error %v", err)
		}
		if len(reused.Attachments) == 0 {
			reused.Attachments = nil
		}
		if req.DubboVersion != reused.DubboVersion || req.Path != reused.Path || req.Method != reused.Method ||
			!maps.Equal(req.Attachments, reused.Attachments) {
			t.Fatalf("ParseRequest %+v, RequestParser.Parse %+v", req, reused)
		}

		// What dubbo-go-hessian2 reads, where it reads it.
		want, ok := hessianStrings(frame)
		if !ok {
			return
		}
		for _, pair := range [][2]string{
			{req.DubboVersion, want.DubboVersion}, {req.Path, want.Path}, {req.Version, want.Version},
			{req.Method, want.Method}, {req.ParamTypes, want.ParamTypes},
		} {
			if sameInBoth(pair[0]) && pair[0] != pair[1] {
				t.Fatalf("ParseRequest reads %q, dubbo-go-hessian2 %q", pair[0], pair[1])
			}
		}
		for k, v := range want.Attachments {
			if sameInBoth(k) && sameInBoth(v) && req.Attachments[k] != v {
				t.Fatalf("attachment %q: ParseRequest reads %q, dubbo-go-hessian2 %q", k, req.Attachments[k], v)
			}
		}
		for k := range req.Attachments {
			if _, ok := want.Attachments[k]; !ok && sameInBoth(k) && sameInBoth(req.Attachments[k]) {
				t.Fatalf("ParseRequest reads attachment %q that dubbo-go-hessian2 does not", k)
			}
		}
		if _, err := DecodeArgs(frame); err != nil && !errors.Is(err, ErrUndecodable) {
			t.Fatalf("DecodeArgs: %v", err)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	seeds := [][]byte{
		dubbogoResponse(f, 1, impl.Response_OK, "hello", nil, map[string]any{"dubbo": "2.0.2", "k": "v"}),
		dubbogoResponse(f, 2, impl.Response_OK, &testUser{ID: "i", Age: 2}, nil, nil),
		dubbogoResponse(f, 3, impl.Response_OK, nil, nil, map[string]any{"dubbo": "2.0.2"}),
		dubbogoResponse(f, 4, impl.Response_OK, nil, errors.New("it broke"), map[string]any{"dubbo": "2.0.2"}),
		dubbogoResponse(f, 5, impl.Response_OK, []any{int32(1), map[any]any{"a": []byte("b")}}, nil, nil),
		dubbogoResponse(f, 6, impl.Response_SERVER_TIMEOUT, nil, errors.New("too slow"), nil),
		dubbogoHeartbeat(f, 7, true),
		AppendHeartbeatResponse(nil, 8),
		AppendErrorResponse(nil, 9, StatusServiceNotFound, "no route 😀"),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		orig := bytes.Clone(frame)
		r, err := ParseResponse(frame)
		if !bytes.Equal(frame, orig) {
			t.Fatal("ParseResponse modified the frame")
		}
		if err != nil {
			for _, typed := range []error{ErrMalformed, ErrTruncated, ErrBadMagic, ErrNotResponse, ErrUnsupportedSerialization, ErrUndecodable} {
				if errors.Is(err, typed) {
					return
				}
			}
			t.Fatalf("untyped error %v", err)
		}
		if e := r.Err(); e != nil {
			_ = e.Error()
		}
	})
}

// FuzzParamTypes checks countParamTypes against the regular expression Dubbo uses.
func FuzzParamTypes(f *testing.F) {
	re := regexp.MustCompile(impl.DESC_REGEX)
	for _, s := range []string{"", "Ljava/lang/String;[B", "[[Lcom/x/Y;IJ", "Lbad", "L;", "[[", "Lcom//x;Z", "$L_a/b$1;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, d string) {
		want := re.FindAllStringIndex(d, -1)
		if got := countParamTypes(d); got != len(want) {
			t.Fatalf("countParamTypes(%q) = %d, regexp finds %d", d, got, len(want))
		}
		for i, m := range want {
			if got := paramTypeAt(d, i); got != d[m[0]:m[1]] {
				t.Fatalf("paramTypeAt(%q, %d) = %q, regexp %q", d, i, got, d[m[0]:m[1]])
			}
		}
	})
}
