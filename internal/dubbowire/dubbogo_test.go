package dubbowire

// Round trips against dubbo-go v3.3.2's own codec (protocol/dubbo/impl), which is what
// protocol/dubbo.DubboCodec runs for a dubbo-go consumer or provider: its frames are what
// such a process sends, and its decoder is what it runs on ours.

import (
	"bytes"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"dubbo.apache.org/dubbo-go/v3/protocol/dubbo/impl"
	"dubbo.apache.org/dubbo-go/v3/remoting"
	hessian "github.com/apache/dubbo-go-hessian2"
	"github.com/apache/dubbo-go-hessian2/java_exception"
)

// testUser is a hessian2 POJO registered with dubbo-go-hessian2 (as dubbo-go programs do).
type testUser struct {
	ID   string
	Name string
	Age  int32
}

func (*testUser) JavaClassName() string { return "org.apache.dubbo.strait.User" }

func init() { hessian.RegisterPOJO(&testUser{}) }

// dubbogoRequest encodes a request the way protocol/dubbo.DubboCodec.EncodeRequest does
// for a dubbo-go consumer: an impl.DubboPackage with the service, the arguments and the
// invocation's attachments, marshalled by dubbo-go's hessian2 serializer.
func dubbogoRequest(t testing.TB, id int64, svc impl.Service, args []any, attachments map[string]any, twoWay bool) []byte {
	t.Helper()
	typ := impl.PackageRequest
	if twoWay {
		typ = impl.PackageRequest_TwoWay
	}
	att := maps.Clone(attachments) // marshalRequest writes into it
	pkg := &impl.DubboPackage{
		Header:  impl.DubboHeader{SerialID: byte(SerializationHessian2), ID: id, Type: typ},
		Service: svc,
		Body:    impl.NewRequestPayload(args, att),
		Codec:   impl.NewDubboCodec(nil),
	}
	if err := impl.LoadSerializer(pkg); err != nil {
		t.Fatal(err)
	}
	buf, err := pkg.Marshal()
	if err != nil {
		t.Fatalf("dubbo-go encodes the request: %v", err)
	}
	return buf.Bytes()
}

// dubbogoHeartbeat encodes a heartbeat request (dubbo-go's DubboCodec.encodeHeartbeatRequest)
// or, with response, the answer dubbo-go's server writes to one.
func dubbogoHeartbeat(t testing.TB, id int64, response bool) []byte {
	t.Helper()
	h := impl.DubboHeader{SerialID: byte(SerializationHessian2), ID: id, Type: impl.PackageHeartbeat}
	if response {
		h.ResponseStatus = impl.Response_OK
	}
	codec := impl.NewDubboCodec(nil)
	b, err := codec.Encode(impl.DubboPackage{Header: h, Body: impl.NewRequestPayload([]any{}, nil)})
	if err != nil {
		t.Fatalf("dubbo-go encodes a heartbeat: %v", err)
	}
	return b
}

// dubbogoResponse encodes a response as dubbo-go's DubboCodec.EncodeResponse does.
func dubbogoResponse(t testing.TB, id int64, status byte, result any, exception error, attachments map[string]any) []byte {
	t.Helper()
	codec := impl.NewDubboCodec(nil)
	b, err := codec.Encode(impl.DubboPackage{
		Header: impl.DubboHeader{SerialID: byte(SerializationHessian2), ID: id, Type: impl.PackageResponse, ResponseStatus: status},
		Body:   &impl.ResponsePayload{RspObj: result, Exception: exception, Attachments: attachments},
	})
	if err != nil {
		t.Fatalf("dubbo-go encodes a response: %v", err)
	}
	return b
}

// dubbogoDecode decodes a frame with dubbo-go's codec. reply receives an OK response's value.
func dubbogoDecode(t testing.TB, frame []byte, reply any) *impl.DubboPackage {
	t.Helper()
	h, err := ParseHeader(frame)
	if err != nil {
		t.Fatal(err)
	}
	pkg := impl.NewDubboPackage(bytes.NewBuffer(bytes.Clone(frame)))
	if h.IsRequest() {
		pkg.SetBody(make([]any, 7))
	} else if !h.Event() && h.Status() == StatusOK {
		pr := remoting.NewPendingResponse(int64(h.ID()))
		pr.Reply = reply
		remoting.AddPendingResponse(pr)
		defer remoting.RemovePendingResponse(remoting.SequenceType(h.ID()))
	}
	if err := pkg.Unmarshal(); err != nil {
		t.Fatalf("dubbo-go decodes %s: %v", h, err)
	}
	return pkg
}

// unknownObject is a hessian2 instance of a Java class no Go type is registered for, as
// Java's Hessian2Output writes it: class definition, then the instance (0x60 + index).
func unknownObject(class string, fields map[string]string) []byte {
	var b []byte
	b = append(b, 'C')
	b = appendString(b, class)
	b = append(b, 0x90+byte(len(fields)))
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	for _, k := range keys {
		b = appendString(b, k)
	}
	b = append(b, 0x60)
	for _, k := range keys {
		b = appendString(b, fields[k])
	}
	return b
}

// withArgBytes returns a copy of the hessian2 frame whose arguments are replaced by raw
// (hessian2 values written by hand) and whose parameter types are desc.
func withArgBytes(t testing.TB, path, method, desc string, raw []byte, attachments map[string]string) []byte {
	t.Helper()
	var b []byte
	b = appendHeader(b, FlagRequest|FlagTwoWay|byte(SerializationHessian2), 0, 7)
	for _, s := range []string{DubboProtocolVersion, path, "", method, desc} {
		b = appendString(b, s)
	}
	b = append(b, raw...)
	b = append(b, 'H')
	for k, v := range attachments {
		b = appendString(b, k)
		b = appendString(b, v)
	}
	b = append(b, 'Z')
	setBodyLen(b)
	return b
}

func TestParseDubbogoRequests(t *testing.T) {
	big := bytes.Repeat([]byte{0, 1, 2, 3, 4, 5, 6, 7}, 1<<17) // 1 MiB
	svc := impl.Service{
		Path:      "org.apache.dubbo.strait.EchoService",
		Interface: "org.apache.dubbo.strait.EchoService",
		Group:     "g1",
		Version:   "1.0.0",
		Timeout:   1500 * time.Millisecond,
	}
	cases := []struct {
		name       string
		method     string
		args       []any
		paramTypes string
		check      func(t *testing.T, args []any)
	}{
		{name: "string", method: "Echo", args: []any{"héllo, 世界 😀"}, paramTypes: "Ljava/lang/String;"},
		{name: "registered POJO", method: "EchoUser", args: []any{&testUser{ID: "u1", Name: "n", Age: 41}},
			paramTypes: "Lorg/apache/dubbo/strait/User;"},
		{name: "1 MiB byte[]", method: "EchoBytes", args: []any{big}, paramTypes: "[B"},
		{name: "null", method: "EchoNull", args: []any{nil}, paramTypes: "V"}, // dubbo-go's descriptor for nil
		{name: "nested lists and maps", method: "EchoTree",
			args: []any{
				[]any{int32(1), "a", []any{[]any{true, nil}}, map[any]any{"k": []any{"v", int64(1) << 40}}},
				map[any]any{"inner": map[any]any{"list": []any{map[any]any{"deep": 2.5}}}},
			},
			paramTypes: "Ljava/util/List;Ljava/util/Map;"},
		{name: "Java exception", method: "Raise", args: []any{java_exception.NewThrowable("boom")},
			paramTypes: "Ljava/lang/Throwable;",
			check: func(t *testing.T, args []any) {
				if e, ok := args[0].(*java_exception.Throwable); !ok || e.DetailMessage != "boom" {
					t.Errorf("argument decodes to %#v, want a Throwable boom", args[0])
				}
			}},
		{name: "several", method: "Mixed", args: []any{"a", int32(7), int64(8), true, 1.5, []byte("xy")},
			paramTypes: "Ljava/lang/String;IJZD[B"},
		{name: "no arguments", method: "Ping", args: []any{}, paramTypes: ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			attachments := map[string]any{"traceid": "t-1", "count": int64(3), "tags": []string{"x"}}
			frame := dubbogoRequest(t, int64(100+i), impl.Service{
				Path: svc.Path, Interface: svc.Interface, Group: svc.Group, Version: svc.Version,
				Method: tc.method, Timeout: svc.Timeout,
			}, tc.args, attachments, true)
			orig := bytes.Clone(frame)

			h, err := ParseHeader(frame)
			if err != nil {
				t.Fatal(err)
			}
			if !h.IsRequest() || !h.TwoWay() || h.Event() || h.Serialization() != SerializationHessian2 ||
				h.ID() != uint64(100+i) || h.BodyLen() != len(frame)-HeaderLen {
				t.Fatalf("header %s", h)
			}
			req, err := ParseRequest(frame)
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			want := Request{
				DubboVersion: "2.0.2",
				Path:         svc.Path,
				Version:      "1.0.0",
				Method:       tc.method,
				ParamTypes:   tc.paramTypes,
				Attachments: map[string]string{
					"path": svc.Path, "interface": svc.Interface, "version": "1.0.0", "group": "g1",
					"timeout": "1500", "traceid": "t-1", // count and tags are not strings
				},
			}
			if !reflect.DeepEqual(req, want) {
				t.Fatalf("ParseRequest:\n got %+v\nwant %+v", req, want)
			}
			if req.Group() != "g1" || req.Interface() != svc.Interface {
				t.Errorf("Group %q, Interface %q", req.Group(), req.Interface())
			}
			if !bytes.Equal(frame, orig) {
				t.Fatal("ParseRequest modified the frame")
			}

			var p RequestParser
			reused := Request{Attachments: map[string]string{"stale": "x"}}
			for range 2 {
				if err := p.Parse(frame, &reused); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(reused, want) {
					t.Fatalf("RequestParser.Parse:\n got %+v\nwant %+v", reused, want)
				}
			}

			args, err := DecodeArgs(frame)
			if err != nil {
				t.Fatalf("DecodeArgs: %v", err)
			}
			if tc.check != nil {
				tc.check(t, args)
			} else if !reflect.DeepEqual(args, tc.args) {
				t.Errorf("DecodeArgs:\n got %#v\nwant %#v", args, tc.args)
			}
		})
	}
}

func TestParseUnregisteredClassArgument(t *testing.T) {
	raw := unknownObject("com.example.NotRegistered", map[string]string{"name": "n1"})
	raw = append(raw, unknownObject("com.example.BizException", map[string]string{"detailMessage": "bad"})...)
	frame := withArgBytes(t, "com.example.Svc", "Do", "Lcom/example/NotRegistered;Lcom/example/BizException;", raw,
		map[string]string{"group": "g2", "version": "2.0"})
	req, err := ParseRequest(frame)
	if err != nil {
		t.Fatal(err)
	}
	if req.Path != "com.example.Svc" || req.Method != "Do" || req.Group() != "g2" || req.Attachments["version"] != "2.0" {
		t.Fatalf("ParseRequest: %+v", req)
	}
	args, err := DecodeArgs(frame)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := args[0].(map[string]any)
	if !ok || m["name"] != "n1" || m[hessian.ClassKey] != "com.example.NotRegistered" {
		t.Errorf("an unregistered class decodes to %#v, want a map of its fields", args[0])
	}
	if args[1] == nil {
		t.Errorf("an unregistered exception class decodes to nil")
	}
	t.Logf("unregistered exception class decodes to %T", args[1])

	// dubbo-go's provider decodes the same frame.
	pkg := dubbogoDecode(t, frame, nil)
	if got := pkg.Service.Path; got != "com.example.Svc" {
		t.Errorf("dubbo-go reads path %q", got)
	}
}

func TestOnewayRequest(t *testing.T) {
	frame := dubbogoRequest(t, 5, impl.Service{Path: "S", Method: "M", Version: "v"}, []any{"x"}, nil, false)
	h, err := ParseHeader(frame)
	if err != nil {
		t.Fatal(err)
	}
	if !h.IsRequest() || h.TwoWay() {
		t.Fatalf("dubbo-go oneway request: %s", h)
	}
	if _, err := ParseRequest(frame); err != nil {
		t.Fatal(err)
	}

	mine, err := AppendRequest(nil, 6, Request{Path: "S", Method: "M", ParamTypes: "Ljava/lang/String;"}, []any{"x"}, false)
	if err != nil {
		t.Fatal(err)
	}
	pkg := dubbogoDecode(t, mine, nil)
	if pkg.Header.Type&impl.PackageRequest_TwoWay != 0 || pkg.Header.Type&impl.PackageRequest == 0 {
		t.Errorf("dubbo-go reads package type %#x, want a oneway request", pkg.Header.Type)
	}
}

func TestAppendRequestDecodedByDubbogo(t *testing.T) {
	args := []any{"héllo 😀", &testUser{ID: "u", Name: "N", Age: 3}, []byte{1, 2, 3}, nil}
	req := Request{
		Path:       "org.apache.dubbo.strait.EchoService",
		Version:    "1.0.0",
		Method:     "Many",
		ParamTypes: "Ljava/lang/String;Lorg/apache/dubbo/strait/User;[BLjava/lang/Object;",
		Attachments: map[string]string{
			"group": "g1", "timeout": "2000", "long": strings.Repeat("é", 40000),
		},
	}
	frame, err := AppendRequest([]byte("prefix"), 42, req, args, true)
	if err != nil {
		t.Fatal(err)
	}
	if string(frame[:6]) != "prefix" {
		t.Fatal("AppendRequest lost dst")
	}
	frame = frame[6:]

	pkg := dubbogoDecode(t, frame, nil)
	if pkg.Header.ID != 42 || pkg.Header.Type&impl.PackageRequest_TwoWay == 0 || pkg.Header.SerialID != 2 {
		t.Errorf("dubbo-go header %+v", pkg.Header)
	}
	body := pkg.Body.(map[string]any)
	if got := body["args"].([]any); !reflect.DeepEqual(got, args) {
		t.Errorf("dubbo-go decodes the arguments to %#v", got)
	}
	att := body["attachments"].(map[string]any)
	for k, v := range map[string]string{
		"path": req.Path, "interface": req.Path, "version": "1.0.0", "group": "g1", "timeout": "2000",
		"long": req.Attachments["long"], "dubbo": "2.0.2",
	} {
		if att[k] != v {
			t.Errorf("dubbo-go reads attachment %s = %.40q, want %.40q", k, att[k], v)
		}
	}
	if pkg.Service.Path != req.Path || pkg.Service.Method != "Many" || pkg.Service.Version != "1.0.0" || pkg.Service.Group != "g1" {
		t.Errorf("dubbo-go reads service %+v", pkg.Service)
	}

	// And ParseRequest reads back what AppendRequest wrote.
	got, err := ParseRequest(frame)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attachments["long"] != req.Attachments["long"] || got.ParamTypes != req.ParamTypes || got.DubboVersion != "2.0.2" {
		t.Errorf("ParseRequest of AppendRequest: %.200v", got)
	}

	if _, err := AppendRequest(nil, 1, Request{Path: "S", Method: "M", ParamTypes: "I"}, nil, true); err == nil {
		t.Error("AppendRequest accepts a descriptor of 1 parameter with no argument")
	}
}

func TestHeartbeats(t *testing.T) {
	// dubbo-go's heartbeat request.
	hb := dubbogoHeartbeat(t, 77, false)
	h, err := ParseHeader(hb)
	if err != nil {
		t.Fatal(err)
	}
	if !h.IsRequest() || !h.Event() || !h.TwoWay() || h.ID() != 77 || h.BodyLen() != 1 || hb[HeaderLen] != 'N' {
		t.Fatalf("dubbo-go heartbeat: %s % x", h, hb)
	}
	if _, err := ParseRequest(hb); !errors.Is(err, ErrNotCall) {
		t.Errorf("ParseRequest of a heartbeat: %v, want ErrNotCall", err)
	}
	if mine := AppendHeartbeatRequest(nil, 77); !bytes.Equal(mine, hb) {
		t.Errorf("AppendHeartbeatRequest\n % x\nwant (dubbo-go's)\n % x", mine, hb)
	}

	// Our answer, read by dubbo-go's decoder.
	resp := AppendHeartbeatResponse(nil, 77)
	pkg := dubbogoDecode(t, resp, nil)
	if pkg.Header.ID != 77 || pkg.Header.Type&impl.PackageHeartbeat == 0 || pkg.Header.Type&impl.PackageResponse == 0 ||
		pkg.Header.ResponseStatus != impl.Response_OK {
		t.Errorf("dubbo-go reads our heartbeat answer as %+v", pkg.Header)
	}
	r, err := ParseResponse(resp)
	if err != nil || !r.Header.Event() || r.Header.Status() != StatusOK || r.Err() != nil {
		t.Errorf("ParseResponse of our heartbeat answer: %+v, %v", r, err)
	}

	// dubbo-go's answer (its body is null twice).
	theirs := dubbogoHeartbeat(t, 78, true)
	r, err = ParseResponse(theirs)
	if err != nil || !r.Header.Event() || r.Header.ID() != 78 || r.Header.Status() != StatusOK {
		t.Errorf("ParseResponse of dubbo-go's heartbeat answer % x: %+v, %v", theirs, r, err)
	}
	t.Logf("dubbo-go heartbeat answer body: % x; ours: % x", theirs[HeaderLen:], resp[HeaderLen:])
}

func TestErrorResponseDecodedByDubbogo(t *testing.T) {
	for _, msg := range []string{
		"service org.example.Missing:1.0.0 not found",
		"",
		"unicode é 世界 😀 and a lone \xff byte",
		strings.Repeat("长", 0x8000+10) + "😀", // several chunks
	} {
		frame := AppendErrorResponse(nil, 9, StatusServiceNotFound, msg)
		pkg := dubbogoDecode(t, frame, nil)
		if pkg.Header.ResponseStatus != byte(StatusServiceNotFound) || pkg.Header.ID != 9 {
			t.Errorf("dubbo-go header %+v", pkg.Header)
		}
		want := strings.ToValidUTF8(msg, "\uFFFD")
		gotErr := pkg.Body.(*impl.ResponsePayload).Exception
		if gotErr == nil || gotErr.Error() != "java exception:"+want {
			t.Errorf("dubbo-go reads the message as %.80q, want %.80q", gotErr, want)
		}
		r, err := ParseResponse(frame)
		if err != nil {
			t.Fatal(err)
		}
		if r.ErrorMessage != want || r.Header.Status() != StatusServiceNotFound {
			t.Errorf("ParseResponse: %.80q %s", r.ErrorMessage, r.Header.Status())
		}
		var re *RemoteError
		if !errors.As(r.Err(), &re) || re.Status != StatusServiceNotFound {
			t.Errorf("Err: %v", r.Err())
		}
	}
}

func TestParseDubbogoResponses(t *testing.T) {
	att := map[string]any{"dubbo": "2.0.2", "k": "v"}
	cases := []struct {
		name      string
		frame     []byte
		flag      ResultFlag
		value     any
		exception string
		status    Status
		message   string
		att       map[string]any
	}{
		{name: "value with attachments", frame: dubbogoResponse(t, 1, impl.Response_OK, "hello", nil, att),
			flag: ResultValueWithAttachments, value: "hello", att: att},
		{name: "value", frame: dubbogoResponse(t, 2, impl.Response_OK, &testUser{ID: "i", Age: 2}, nil, nil),
			flag: ResultValue, value: &testUser{ID: "i", Age: 2}},
		{name: "null value", frame: dubbogoResponse(t, 3, impl.Response_OK, nil, nil, att),
			flag: ResultNullValueWithAttachments, att: att},
		{name: "exception", frame: dubbogoResponse(t, 4, impl.Response_OK, nil, errors.New("it broke"), nil),
			flag: ResultWithException, exception: "it broke"},
		{name: "error status", frame: dubbogoResponse(t, 5, impl.Response_SERVER_TIMEOUT, nil, errors.New("too slow"), nil),
			status: StatusServerTimeout, message: "too slow"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseResponse(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status != 0 {
				if r.Header.Status() != tc.status || r.ErrorMessage != tc.message {
					t.Fatalf("status %s message %q", r.Header.Status(), r.ErrorMessage)
				}
				return
			}
			if r.Header.Status() != StatusOK || r.Flag != tc.flag || !reflect.DeepEqual(r.Value, tc.value) ||
				!reflect.DeepEqual(r.Attachments, tc.att) {
				t.Fatalf("got %s %s value %#v attachments %v", r.Header, r.Flag, r.Value, r.Attachments)
			}
			if tc.exception != "" {
				var re *RemoteError
				if !errors.As(r.Err(), &re) || !strings.Contains(r.Err().Error(), tc.exception) {
					t.Fatalf("Err() = %v, want the exception %q", r.Err(), tc.exception)
				}
			} else if r.Err() != nil {
				t.Fatalf("Err() = %v", r.Err())
			}
		})
	}
}

// TestReadonlyEvent: the readonly event is a oneway event request whose body is the
// hessian2 string "R", as Dubbo Java's HeaderExchangeServer sends it; dubbo-go decodes it
// as such.
func TestReadonlyEvent(t *testing.T) {
	f := AppendReadonlyEvent(nil, 9)
	h, err := ParseHeader(f)
	if err != nil || !h.IsRequest() || !h.Event() || h.TwoWay() || h.ID() != 9 || !IsReadonlyEvent(f) {
		t.Fatalf("readonly event % x: %v", f, err)
	}
	if IsReadonlyEvent(AppendHeartbeatRequest(nil, 9)) {
		t.Fatal("a heartbeat reads as a readonly event")
	}
	pkg := dubbogoDecode(t, f, nil)
	t.Logf("dubbo-go reads: type %v, body %v", pkg.Header.Type, pkg.Body)
}
