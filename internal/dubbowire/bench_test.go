package dubbowire

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"dubbo.apache.org/dubbo-go/v3/protocol/dubbo/impl"
)

// benchFrame is a call as a dubbo-go consumer sends it: one 1 KiB string argument and
// three attachments (path and version, which dubbo-go always sends, and a trace ID).
func benchFrame(b *testing.B) []byte {
	svc := impl.Service{Path: "org.apache.dubbo.strait.EchoService", Version: "1.0.0", Method: "Echo", Timeout: 0}
	frame := dubbogoRequest(b, 2, svc, []any{strings.Repeat("x", 1024)}, map[string]any{"traceid": "0af7651916cd43dd8448eb211c80319c"}, true)
	req, err := ParseRequest(frame)
	if err != nil {
		b.Fatal(err)
	}
	if len(req.Attachments) != 3 {
		b.Fatalf("attachments %v", req.Attachments)
	}
	return frame
}

func BenchmarkParseRequest(b *testing.B) {
	frame := benchFrame(b)
	b.Run("ParseRequest", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if _, err := ParseRequest(frame); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("RequestParser", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		var p RequestParser
		var req Request
		for b.Loop() {
			if err := p.Parse(frame, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	// For comparison: decoding the arguments with dubbo-go-hessian2 as well.
	b.Run("ParseRequest+DecodeArgs", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			if _, err := DecodeArgs(frame); err != nil {
				b.Fatal(err)
			}
		}
	})
	// For comparison: dubbo-go's own decoder of a request (what its provider runs).
	b.Run("dubbo-go", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			pkg := impl.NewDubboPackage(bytes.NewBuffer(frame))
			pkg.SetBody(make([]any, 7))
			if err := pkg.Unmarshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkReadFrame(b *testing.B) {
	frame := benchFrame(b)
	stream := bytes.Repeat(frame, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	rd := bytes.NewReader(stream)
	br := bufio.NewReaderSize(rd, 32<<10)
	var buf []byte
	for b.Loop() {
		f, _, err := ReadFrame(br, DefaultMaxBody, buf[:0])
		if err != nil {
			rd.Reset(stream)
			br.Reset(rd)
			continue
		}
		buf = f
	}
}

func BenchmarkAppendErrorResponse(b *testing.B) {
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		buf = AppendErrorResponse(buf[:0], 12345, StatusServiceNotFound, "no route to org.apache.dubbo.strait.EchoService:1.0.0")
	}
}
