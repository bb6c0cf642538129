package relay

// Raw-frame tests of the relay against RFC 9113 and the behaviour contract of issue 9
// (the harness is in tester_test.go). Each case wants the error and the code the RFC
// names, as h2spec v2.2.1 words it; h2spec also passes a connection error on any close,
// whatever the GOAWAY's code, these do not. Where the RFC lets a stream error be treated
// as a connection error (§5.4), a GOAWAY with the same code is accepted too, and logged.
//
// Most cases write a probe request after the offending frames: if the probe is answered
// while the error is awaited, the relay went on without it, and the case fails at once
// instead of waiting out its timeout. Run: go test -count=1 -run TestFrames ./internal/relay/

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/test/wait"
)

func ftSettings(s ...http2.Setting) func(*ftTester) {
	return func(st *ftTester) { st.writeSettings(s...) }
}

// 1. The one frame first: an invalid SETTINGS frame, then a gRPC call. The connection
// ends with GOAWAY and the RFC's code; the relay's goroutines for it end; the heap does
// not grow and nothing spins.
func TestFramesOneFrame(t *testing.T) {
	r := ftNewRig(t)
	warm := r.connect(t) // the pool's connection to the backend exists before the heap is measured
	warm.handshake()
	warm.emptyCall(1)
	warm.wantGRPCOK(1)
	warm.nc.Close()
	warm.wantServed()
	heap := ftWatchHeap(t)

	set := func(id http2.SettingID, v uint32) http2.Setting { return http2.Setting{ID: id, Val: v} }
	cases := []struct {
		name  string
		send  func(*ftTester) // after the preface
		code  http2.ErrCode
		ok    bool // valid: acknowledged, and the call is answered
		noAck bool // the only SETTINGS frame is invalid: it must not be acknowledged
	}{
		{name: "max_frame_size_0", send: ftSettings(set(http2.SettingMaxFrameSize, 0)), code: http2.ErrCodeProtocol, noAck: true},
		{name: "max_frame_size_16383", send: ftSettings(set(http2.SettingMaxFrameSize, 16383)), code: http2.ErrCodeProtocol, noAck: true},
		{name: "max_frame_size_2^24", send: ftSettings(set(http2.SettingMaxFrameSize, 1<<24)), code: http2.ErrCodeProtocol, noAck: true},
		{name: "enable_push_2", send: ftSettings(set(http2.SettingEnablePush, 2)), code: http2.ErrCodeProtocol, noAck: true},
		{name: "initial_window_size_2^31", send: ftSettings(set(http2.SettingInitialWindowSize, 1<<31)), code: http2.ErrCodeFlowControl, noAck: true},
		{name: "length_7", send: func(st *ftTester) {
			st.writeRaw(ftFrame(http2.FrameSettings, 0, 0, []byte{0, 4, 0, 0, 0xff, 0xff, 0}))
		}, code: http2.ErrCodeFrameSize, noAck: true},
		{name: "ack_with_payload", send: func(st *ftTester) {
			st.writeSettings()
			st.writeRaw(ftFrame(http2.FrameSettings, http2.FlagSettingsAck, 0, []byte{0, 4, 0, 0, 0xff, 0xff}))
		}, code: http2.ErrCodeFrameSize},
		{name: "on_stream_1", send: func(st *ftTester) {
			st.writeSettings()
			st.writeRaw(ftFrame(http2.FrameSettings, 0, 1, []byte{0, 4, 0, 0, 0xff, 0xff}))
		}, code: http2.ErrCodeProtocol},
		{name: "unknown_ids_ignored", send: ftSettings(set(0x99, 1), set(0xffff, 7)), ok: true},
		{name: "max_frame_size_16384", send: ftSettings(set(http2.SettingMaxFrameSize, 16384)), ok: true},
		{name: "max_frame_size_2^24-1", send: ftSettings(set(http2.SettingMaxFrameSize, 1<<24-1)), ok: true},
		{name: "enable_push_0", send: ftSettings(set(http2.SettingEnablePush, 0)), ok: true},
		{name: "enable_push_1", send: ftSettings(set(http2.SettingEnablePush, 1)), ok: true},
		{name: "initial_window_size_2^31-1", send: ftSettings(set(http2.SettingInitialWindowSize, ftMaxWindow)), ok: true},
		{name: "header_table_size_0", send: ftSettings(set(http2.SettingHeaderTableSize, 0)), ok: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			heap.reset(t)
			st := r.connect(t)
			st.batch(func() {
				st.writePreface()
				c.send(st)
				st.emptyCall(1)
			})
			if c.ok {
				st.wantSettings()
				st.writeSettingsAck()
				st.wantSettingsAck()
				st.wantGRPCOK(1)
				st.nc.Close()
				st.wantServed()
			} else {
				st.guard = 1 // an answer to the call means the relay went on
				start := time.Now()
				st.wantConnError(c.code)
				t.Logf("GOAWAY %v and close after %v", c.code, time.Since(start).Round(time.Microsecond))
				if c.noAck && st.acks > 0 {
					t.Errorf("the relay acknowledged a SETTINGS frame it must refuse")
				}
			}
			heap.check(t, c.name, 8<<20, 0)
		})
	}
	ftWantQuiet(t)
}

// ftCase is one connection: frames written after the handshake, then the wanted answer.
type ftCase struct {
	name     string
	settings []http2.Setting // of the handshake
	run      func(st *ftTester)
	// Exactly one of: a connection error with conn; a stream error on stream with one
	// of codes (RST_STREAM only if strictRST); ok (no error).
	conn      http2.ErrCode
	stream    uint32
	codes     []http2.ErrCode
	strictRST bool
	ok        bool
	// probe is a stream on which an EmptyCall is written after run: while an error is
	// awaited, its answer shows the relay went on without the error; after a stream
	// error, or if ok, it must be answered. 0: none.
	probe uint32
}

func ftRunCases(t *testing.T, r *ftRig, cases []ftCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := r.connect(t)
			st.handshake(c.settings...)
			c.run(st)
			if c.probe != 0 {
				if !c.ok {
					st.guard = c.probe
				}
				st.emptyCall(c.probe)
			}
			switch {
			case c.ok:
				if c.probe != 0 {
					st.wantGRPCOK(c.probe)
				}
			case c.stream != 0:
				if c.strictRST {
					st.wantRST(c.stream, ftWait, c.codes...)
				} else if st.wantStreamError(c.stream, c.codes...) {
					return
				}
				if c.probe != 0 {
					st.guard = 0
					st.wantGRPCOK(c.probe)
				}
			default:
				st.wantConnError(c.conn)
			}
		})
	}
}

var ftRoutes = []string{"grpc", "fallback"}

// 2. Window arithmetic (RFC 9113 §6.9).
func TestFramesWindows(t *testing.T) {
	r := ftNewRig(t)
	cases := []ftCase{
		{name: "conn_window_over_2^31-1", run: func(st *ftTester) {
			st.writeWindowUpdate(0, ftMaxWindow)
			st.writeWindowUpdate(0, ftMaxWindow)
		}, conn: http2.ErrCodeFlowControl, probe: 1},
		{name: "conn_increment_0", run: func(st *ftTester) {
			st.writeWindowUpdate(0, 0)
		}, conn: http2.ErrCodeProtocol, probe: 1},
		{name: "conn_window_to_2^31-1_ok", run: func(st *ftTester) {
			st.writeWindowUpdate(0, ftMaxWindow-65535)
		}, ok: true, probe: 1},
		{name: "data_over_stream_window", run: func(st *ftTester) {
			// The fallback handler never reads the body, so no credit comes back (credit
			// is returned only as the receiver drains): one byte over the stream's window
			// is over it whatever the relay has sent meanwhile.
			st.openStream(1, "fallback", false)
			win := int(st.peerSetting(http2.SettingInitialWindowSize, 65535))
			frame := int(min(16384, st.peerSetting(http2.SettingMaxFrameSize, 16384)))
			if int64(win+1) > st.connWin {
				st.t.Logf("the connection window (%d) is smaller than a stream's (%d)", st.connWin, win)
			}
			buf := make([]byte, frame)
			st.batch(func() {
				for left := win + 1; left > 0; left -= frame {
					st.writeData(1, false, buf[:min(left, frame)])
				}
			})
		}, stream: 1, codes: []http2.ErrCode{http2.ErrCodeFlowControl}, probe: 3},
	}
	for _, route := range ftRoutes {
		cases = append(cases,
			ftCase{name: "stream_window_over_2^31-1_" + route, run: func(st *ftTester) {
				st.openStream(1, route, false)
				st.writeWindowUpdate(1, ftMaxWindow)
				st.writeWindowUpdate(1, ftMaxWindow)
			}, stream: 1, codes: []http2.ErrCode{http2.ErrCodeFlowControl}, strictRST: true, probe: 3},
			ftCase{name: "stream_increment_0_" + route, run: func(st *ftTester) {
				st.openStream(1, route, false)
				st.writeWindowUpdate(1, 0)
			}, stream: 1, codes: []http2.ErrCode{http2.ErrCodeProtocol}, probe: 3},
			ftCase{name: "initial_window_size_change_overflows_" + route, run: func(st *ftTester) {
				st.openStream(1, route, false)
				st.writeWindowUpdate(1, ftMaxWindow-65535) // the stream's window is now 2^31-1
				st.writeSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
			}, conn: http2.ErrCodeFlowControl, probe: 3},
			ftCase{name: "initial_window_1_" + route, settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1}},
				run: func(st *ftTester) {
					ftStartCall(st, 1, route)
					if n := ftNextData(st, 1); n != 1 {
						st.t.Errorf("first DATA of %d bytes with a stream window of 1", n)
					}
				}, ok: true},
			ftCase{name: "initial_window_raised_after_headers_" + route, settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 0}},
				run: func(st *ftTester) {
					ftStartCall(st, 1, route)
					st.writeSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
					if n := ftNextData(st, 1); n != 1 {
						st.t.Errorf("first DATA of %d bytes after the window went from 0 to 1", n)
					}
				}, ok: true},
			ftCase{name: "negative_window_" + route, settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 3}},
				run: func(st *ftTester) {
					ftStartCall(st, 1, route)
					if n := ftNextData(st, 1); n != 3 {
						st.t.Errorf("first DATA of %d bytes with a stream window of 3", n)
					}
					st.writeSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 2}) // window -1
					st.wantSettingsAck()
					st.writeWindowUpdate(1, 2) // window 1
					if n := ftNextData(st, 1); n != 1 {
						st.t.Errorf("DATA of %d bytes once the window went from -1 to 1", n)
					}
				}, ok: true},
			ftCase{name: "stream_window_to_2^31-1_ok_" + route, run: func(st *ftTester) {
				st.openStream(1, route, false)
				st.writeWindowUpdate(1, ftMaxWindow-65535)
			}, ok: true, probe: 3},
		)
	}
	ftRunCases(t, r, cases)
}

// ftStartCall writes a whole request whose answer has a body of 5 bytes: EmptyCall
// (grpc) or GET /fallback/hello.
func ftStartCall(st *ftTester, id uint32, route string) {
	if route == "grpc" {
		st.emptyCall(id)
		return
	}
	st.writeHeaders(id, true, true, ftPlainRequest("GET", "/fallback/hello")...)
}

// ftNextData is the length of the next DATA frame with a payload on stream id.
func ftNextData(st *ftTester, id uint32) int {
	st.t.Helper()
	e := st.expect(fmt.Sprintf("DATA on stream %d", id), ftWait, func(e *ftEvent) ftVerdict {
		switch {
		case e.id != id:
			return ftPass
		case e.typ == http2.FrameData && len(e.data) > 0:
			return ftDone
		case e.typ == http2.FrameRSTStream:
			st.t.Fatalf("want DATA on stream %d, got %v", id, e)
		}
		return ftTake
	})
	return len(e.data)
}

// ftSplitHeaders writes the first half of a header block in HEADERS without
// END_HEADERS and returns the rest.
func ftSplitHeaders(st *ftTester, id uint32, fields []hpack.HeaderField) []byte {
	block := st.encode(fields...)
	st.writeHeadersBlock(id, true, false, block[:len(block)/2])
	return block[len(block)/2:]
}

// ftBigHeaders is a HEADERS frame payload (PADDED) of exactly n bytes.
func ftBigHeaders(st *ftTester, n int) []byte {
	base := st.encode(ftGRPCRequest(ftSink)...)
	var big bytes.Buffer
	e := hpack.NewEncoder(&big)
	_ = e.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("~", n-len(base)-100), Sensitive: true}) // "~" is longer in Huffman: sent literally
	block := append(base, big.Bytes()...)
	pad := n - 1 - len(block)
	if pad < 0 || pad > 255 {
		st.t.Fatalf("ftBigHeaders: padding %d", pad)
	}
	p := append([]byte{byte(pad)}, block...)
	return append(p, make([]byte, pad)...)
}

// ftCompleteCall makes a whole call on stream id, answered: both sides end the stream.
func ftCompleteCall(st *ftTester, id uint32, route string) {
	st.t.Helper()
	if route == "grpc" {
		st.emptyCall(id)
		st.wantGRPCOK(id)
		return
	}
	st.writeHeaders(id, true, true, ftPlainRequest("GET", "/fallback/hello")...)
	if r := st.wantResponse(id); r.status() != "200" || r.rst {
		st.t.Fatalf("GET /fallback/hello: status %q rst=%v", r.status(), r.rst)
	}
}

// 3. Stream states and identifiers (§5.1, §5.1.1), frame sizes (§4.2, §6), header
// blocks (§6.10), priorities (§5.3.1, §6.3).
func TestFramesStreamStates(t *testing.T) {
	r := ftNewRig(t)
	protocol := []http2.ErrCode{http2.ErrCodeProtocol}
	closed := []http2.ErrCode{http2.ErrCodeStreamClosed}
	sink := ftGRPCRequest(ftSink)
	cases := []ftCase{
		// idle streams
		{name: "idle_data", run: func(st *ftTester) { st.writeData(1, true, []byte("test")) }, conn: http2.ErrCodeProtocol, probe: 3},
		{name: "idle_window_update", run: func(st *ftTester) { st.writeWindowUpdate(1, 100) }, conn: http2.ErrCodeProtocol, probe: 3},
		{name: "idle_rst_stream", run: func(st *ftTester) { st.writeRST(1, http2.ErrCodeCancel) }, conn: http2.ErrCodeProtocol, probe: 3},
		{name: "idle_continuation", run: func(st *ftTester) {
			st.writeContinuation(1, true, st.encode(sink...))
		}, conn: http2.ErrCodeProtocol, probe: 3},
		{name: "idle_priority_ok", run: func(st *ftTester) {
			st.writePriority(3, http2.PriorityParam{Weight: 15})
		}, ok: true, probe: 5},
		// identifiers
		{name: "even_stream_id", run: func(st *ftTester) {
			st.writeHeaders(2, true, true, sink...)
		}, conn: http2.ErrCodeProtocol, probe: 3},
		{name: "decreasing_stream_id", run: func(st *ftTester) {
			st.writeHeaders(5, true, true, sink...)
			st.writeHeaders(3, true, true, sink...)
		}, conn: http2.ErrCodeProtocol, probe: 7},
		// closed streams: per route, below
		// priorities
		{name: "priority_self_dependency", run: func(st *ftTester) {
			st.writePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 15})
		}, stream: 1, codes: protocol, probe: 3},
		{name: "headers_self_dependency", run: func(st *ftTester) {
			st.writeHeadersParam(http2.HeadersFrameParam{StreamID: 1, BlockFragment: st.encode(sink...), EndStream: true,
				EndHeaders: true, Priority: http2.PriorityParam{StreamDep: 1, Weight: 15}})
		}, stream: 1, codes: protocol, probe: 3},
		{name: "priority_length_4", run: func(st *ftTester) {
			st.writeRawFrame(http2.FramePriority, 0, 1, []byte{0, 0, 0, 0})
		}, stream: 1, codes: []http2.ErrCode{http2.ErrCodeFrameSize}, probe: 3},
		{name: "priority_on_stream_0", run: func(st *ftTester) {
			st.writeRawFrame(http2.FramePriority, 0, 0, ftPriorityPayload(http2.PriorityParam{StreamDep: 1, Weight: 15}))
		}, conn: http2.ErrCodeProtocol, probe: 3},
		// header blocks
		{name: "data_inside_header_block", run: func(st *ftTester) {
			ftSplitHeaders(st, 1, sink)
			st.writeData(1, true, ftEmptyMsg)
		}, conn: http2.ErrCodeProtocol},
		{name: "priority_inside_header_block", run: func(st *ftTester) {
			ftSplitHeaders(st, 1, sink)
			st.writePriority(1, http2.PriorityParam{Weight: 15})
		}, conn: http2.ErrCodeProtocol},
		{name: "ping_inside_header_block", run: func(st *ftTester) {
			ftSplitHeaders(st, 1, sink)
			st.writePing(false, [8]byte{1})
		}, conn: http2.ErrCodeProtocol},
		{name: "headers_inside_header_block", run: func(st *ftTester) {
			ftSplitHeaders(st, 1, sink)
			st.writeHeaders(3, true, true, sink...)
		}, conn: http2.ErrCodeProtocol},
		{name: "unknown_frame_inside_header_block", run: func(st *ftTester) {
			ftSplitHeaders(st, 1, sink)
			st.writeRawFrame(0xee, 0, 0, []byte("ext"))
		}, conn: http2.ErrCodeProtocol},
		{name: "continuation_on_another_stream", run: func(st *ftTester) {
			rest := ftSplitHeaders(st, 1, sink)
			st.writeContinuation(3, true, rest)
		}, conn: http2.ErrCodeProtocol},
		{name: "continuation_on_stream_0", run: func(st *ftTester) {
			rest := ftSplitHeaders(st, 1, sink)
			st.writeContinuation(0, true, rest)
		}, conn: http2.ErrCodeProtocol},
		{name: "continuation_after_continuation_end_headers", run: func(st *ftTester) {
			rest := ftSplitHeaders(st, 1, sink)
			st.writeContinuation(1, true, rest)
			st.writeContinuation(1, true, st.encode(hpack.HeaderField{Name: "x-a", Value: "b"}))
		}, conn: http2.ErrCodeProtocol},
		{name: "continuation_after_data", run: func(st *ftTester) {
			st.writeHeaders(1, false, true, sink...)
			st.writeData(1, true, ftEmptyMsg)
			st.writeContinuation(1, true, st.encode(hpack.HeaderField{Name: "x-a", Value: "b"}))
		}, conn: http2.ErrCodeProtocol},
		{name: "data_invalid_pad_length", run: func(st *ftTester) {
			st.openStream(1, "grpc", false)
			st.writeRawFrame(http2.FrameData, http2.FlagDataPadded|http2.FlagDataEndStream, 1, []byte{6, 'a', 'b', 'c', 'd', 'e'})
		}, conn: http2.ErrCodeProtocol},
		{name: "headers_invalid_pad_length", run: func(st *ftTester) {
			block := st.encode(sink...)
			p := append([]byte{byte(len(block) + 1)}, block...)
			st.writeRawFrame(http2.FrameHeaders, http2.FlagHeadersPadded|http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, p)
		}, stream: 1, codes: protocol},
		{name: "continuation_after_end_headers", run: func(st *ftTester) {
			st.writeHeaders(1, false, true, sink...)
			st.writeContinuation(1, true, st.encode(hpack.HeaderField{Name: "x-a", Value: "b"}))
		}, conn: http2.ErrCodeProtocol},
		// frame sizes and stream 0
		{name: "rst_stream_length_3", run: func(st *ftTester) {
			st.openStream(1, "grpc", false)
			st.writeRawFrame(http2.FrameRSTStream, 0, 1, []byte{0, 0, 8})
		}, conn: http2.ErrCodeFrameSize},
		{name: "rst_stream_length_5", run: func(st *ftTester) {
			st.openStream(1, "grpc", false)
			st.writeRawFrame(http2.FrameRSTStream, 0, 1, []byte{0, 0, 0, 8, 0})
		}, conn: http2.ErrCodeFrameSize},
		{name: "rst_stream_on_stream_0", run: func(st *ftTester) {
			st.writeRawFrame(http2.FrameRSTStream, 0, 0, []byte{0, 0, 0, 8})
		}, conn: http2.ErrCodeProtocol, probe: 1},
		{name: "window_update_length_3", run: func(st *ftTester) {
			st.writeRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 1})
		}, conn: http2.ErrCodeFrameSize, probe: 1},
		{name: "window_update_length_5_on_stream", run: func(st *ftTester) {
			st.openStream(1, "grpc", false)
			st.writeRawFrame(http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 1, 0})
		}, conn: http2.ErrCodeFrameSize, probe: 3},
		{name: "ping_length_6", run: func(st *ftTester) {
			st.writeRawFrame(http2.FramePing, 0, 0, []byte{1, 2, 3, 4, 5, 6})
		}, conn: http2.ErrCodeFrameSize, probe: 1},
		{name: "ping_on_stream_1", run: func(st *ftTester) {
			st.writeRawFrame(http2.FramePing, 0, 1, make([]byte, 8))
		}, conn: http2.ErrCodeProtocol, probe: 3},
		{name: "data_on_stream_0", run: func(st *ftTester) {
			st.writeRawFrame(http2.FrameData, 0, 0, []byte("test"))
		}, conn: http2.ErrCodeProtocol, probe: 1},
		{name: "headers_on_stream_0", run: func(st *ftTester) {
			st.writeHeaders(0, true, true, sink...)
		}, conn: http2.ErrCodeProtocol, probe: 1},
		{name: "goaway_on_stream_1", run: func(st *ftTester) {
			st.writeRawFrame(http2.FrameGoAway, 0, 1, make([]byte, 8))
		}, conn: http2.ErrCodeProtocol, probe: 3},
		{name: "data_over_max_frame_size", run: func(st *ftTester) {
			st.openStream(1, "fallback", false)
			st.writeData(1, true, make([]byte, st.peerSetting(http2.SettingMaxFrameSize, 16384)+1))
		}, stream: 1, codes: []http2.ErrCode{http2.ErrCodeFrameSize}, probe: 3},
		{name: "headers_over_max_frame_size", run: func(st *ftTester) {
			n := int(st.peerSetting(http2.SettingMaxFrameSize, 16384)) + 1
			st.writeRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream|http2.FlagHeadersPadded, 1, ftBigHeaders(st, n))
		}, conn: http2.ErrCodeFrameSize},
		// what is valid goes through
		{name: "unknown_frame_type_ok", run: func(st *ftTester) {
			st.writeRawFrame(0xee, 0, 0, []byte("ext"))
			st.writeRawFrame(0xee, 0xff, 7, []byte("ext"))
		}, ok: true, probe: 1},
		{name: "padding_ok", run: func(st *ftTester) {
			st.writeHeadersParam(http2.HeadersFrameParam{StreamID: 1, BlockFragment: st.encode(ftGRPCRequest(ftEmptyCall)...),
				EndHeaders: true, PadLength: 8})
			st.writeDataPadded(1, true, ftEmptyMsg, make([]byte, 8))
			st.wantGRPCOK(1)
		}, ok: true, probe: 3},
		{name: "data_16384_ok", run: func(st *ftTester) {
			st.writeHeaders(1, false, true, ftPlainRequest("POST", "/fallback/echo")...)
			st.writeData(1, true, make([]byte, 16384))
			r := st.wantResponse(1)
			if r.status() != "200" || len(r.body) != 16384 {
				st.t.Errorf("echo of 16384 bytes: status %q, %d bytes", r.status(), len(r.body))
			}
		}, ok: true, probe: 3},
	}
	for _, route := range ftRoutes {
		cases = append(cases,
			ftCase{name: "half_closed_remote_data_" + route, run: func(st *ftTester) {
				st.openStream(1, route, true)
				st.writeData(1, true, ftEmptyMsg)
			}, stream: 1, codes: closed, probe: 3},
			ftCase{name: "half_closed_remote_headers_" + route, run: func(st *ftTester) {
				st.openStream(1, route, true)
				st.openStream(1, route, true)
			}, stream: 1, codes: closed, probe: 3},
			ftCase{name: "closed_after_end_data_" + route, run: func(st *ftTester) {
				ftCompleteCall(st, 1, route)
				st.writeData(1, true, ftEmptyMsg)
			}, stream: 1, codes: closed, probe: 3},
			ftCase{name: "closed_after_end_headers_" + route, run: func(st *ftTester) {
				ftCompleteCall(st, 1, route)
				st.writeHeaders(1, true, true, ftGRPCRequest(ftEmptyCall)...)
			}, conn: http2.ErrCodeStreamClosed, probe: 3},
			ftCase{name: "closed_after_rst_data_" + route, run: func(st *ftTester) {
				st.openStream(1, route, false)
				st.writeRST(1, http2.ErrCodeCancel)
				st.writeData(1, true, ftEmptyMsg)
			}, stream: 1, codes: closed, probe: 3},
			ftCase{name: "closed_after_rst_headers_" + route, run: func(st *ftTester) {
				st.openStream(1, route, false)
				st.writeRST(1, http2.ErrCodeCancel)
				st.openStream(1, route, true)
			}, stream: 1, codes: closed, probe: 3},
		)
	}
	ftRunCases(t, r, cases)
}

// More streams than SETTINGS_MAX_CONCURRENT_STREAMS (§5.1.2): REFUSED_STREAM (or
// PROTOCOL_ERROR, which h2spec accepts too).
func TestFramesConcurrency(t *testing.T) {
	r := ftNewRig(t, func(o *Options) { o.MaxConcurrentStreams = 4 })
	for _, route := range ftRoutes {
		t.Run(route, func(t *testing.T) {
			st := r.connect(t)
			st.handshake()
			if v := st.peerSetting(http2.SettingMaxConcurrentStreams, 0); v != 4 {
				t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 4", v)
			}
			for id := uint32(1); id <= 9; id += 2 {
				st.openStream(id, route, false)
			}
			st.wantStreamError(9, http2.ErrCodeRefusedStream, http2.ErrCodeProtocol)
		})
	}
}

// Header field mutations.
func ftAppendField(name, value string) func([]hpack.HeaderField) []hpack.HeaderField {
	return func(f []hpack.HeaderField) []hpack.HeaderField {
		return append(f, hpack.HeaderField{Name: name, Value: value})
	}
}

func ftDelField(name string) func([]hpack.HeaderField) []hpack.HeaderField {
	return func(f []hpack.HeaderField) []hpack.HeaderField {
		return slices.DeleteFunc(f, func(h hpack.HeaderField) bool { return h.Name == name })
	}
}

func ftSetField(name, value string) func([]hpack.HeaderField) []hpack.HeaderField {
	return func(f []hpack.HeaderField) []hpack.HeaderField {
		for i := range f {
			if f[i].Name == name {
				f[i].Value = value
				return f
			}
		}
		return append(f, hpack.HeaderField{Name: name, Value: value})
	}
}

func ftInsertPseudo(name, value string) func([]hpack.HeaderField) []hpack.HeaderField {
	return func(f []hpack.HeaderField) []hpack.HeaderField {
		return slices.Insert(f, 1, hpack.HeaderField{Name: name, Value: value})
	}
}

func ftDupField(name string) func([]hpack.HeaderField) []hpack.HeaderField {
	return func(f []hpack.HeaderField) []hpack.HeaderField {
		i := slices.IndexFunc(f, func(h hpack.HeaderField) bool { return h.Name == name })
		return slices.Insert(f, i+1, f[i])
	}
}

func ftMoveLast(name string) func([]hpack.HeaderField) []hpack.HeaderField {
	return func(f []hpack.HeaderField) []hpack.HeaderField {
		i := slices.IndexFunc(f, func(h hpack.HeaderField) bool { return h.Name == name })
		h := f[i]
		return append(slices.Delete(f, i, i+1), h)
	}
}

// 4. Header rules (§8.2, §8.3; h2spec 8.1.2.x): a malformed request is a stream error
// PROTOCOL_ERROR, and is not forwarded (§8.1.1: intermediaries MUST NOT): the backend
// counts the HEADERS frames it reads, the fallback handler the requests marked x-case;
// after the probe is answered, only the probe may have reached the backend. Cases whose
// header block is valid (content-length, trailers) may have been forwarded before the
// error showed. Each case runs on the relayed (grpc) and the fallback route.
func TestFramesHeaderRules(t *testing.T) {
	r := ftNewRig(t)
	type hcase struct {
		name          string
		mod           func([]hpack.HeaderField) []hpack.HeaderField
		bodies        int // DATA frames of the route's body; default 1
		trailers      []hpack.HeaderField
		trailersNoEnd bool
		forwardable   bool // the header block is valid: the relay may have passed it on
		ok            bool
		only          string
	}
	tr := func(name, value string) []hpack.HeaderField { return []hpack.HeaderField{{Name: name, Value: value}} }
	cases := []hcase{
		{name: "uppercase_name", mod: ftAppendField("X-Upper", "1")},
		{name: "name_with_space", mod: ftAppendField("x bad", "1")},
		{name: "unknown_pseudo", mod: ftInsertPseudo(":foo", "bar")},
		{name: "response_pseudo_in_request", mod: ftInsertPseudo(":status", "200")},
		{name: "pseudo_after_regular", mod: ftMoveLast(":path")},
		{name: "duplicated_path", mod: ftDupField(":path")},
		{name: "duplicated_method", mod: ftDupField(":method")},
		{name: "duplicated_scheme", mod: ftDupField(":scheme")},
		{name: "missing_method", mod: ftDelField(":method")},
		{name: "missing_scheme", mod: ftDelField(":scheme")},
		{name: "missing_path", mod: ftDelField(":path")},
		{name: "empty_path", mod: ftSetField(":path", "")},
		{name: "connection", mod: ftAppendField("connection", "keep-alive")},
		{name: "keep_alive", mod: ftAppendField("keep-alive", "timeout=5")},
		{name: "proxy_connection", mod: ftAppendField("proxy-connection", "keep-alive")},
		{name: "transfer_encoding", mod: ftAppendField("transfer-encoding", "chunked")},
		{name: "upgrade", mod: ftAppendField("upgrade", "h2c")},
		{name: "te_gzip", mod: ftSetField("te", "gzip")},
		{name: "value_with_crlf", mod: ftAppendField("x-bad", "a\r\nb")},
		{name: "value_with_nul", mod: ftAppendField("x-bad", "a\x00b")},
		{name: "content_length_over_data", mod: ftSetField("content-length", "100"), forwardable: true},
		{name: "content_length_under_data", mod: ftSetField("content-length", "1"), forwardable: true},
		{name: "content_length_under_data_2_frames", mod: ftSetField("content-length", "5"), bodies: 2, forwardable: true},
		{name: "trailers_without_end_stream", trailers: tr("x-trailer", "v"), trailersNoEnd: true, forwardable: true},
		{name: "pseudo_in_trailers", trailers: tr(":method", "POST"), forwardable: true},
		{name: "uppercase_in_trailers", trailers: tr("X-Trailer", "v"), forwardable: true},
		{name: "te_trailers_ok", mod: ftSetField("te", "trailers"), ok: true},
		{name: "content_length_ok", mod: ftSetField("content-length", "5"), ok: true},
		{name: "trailers_ok", trailers: tr("x-trailer", "v"), ok: true, only: "fallback"},
	}
	for _, route := range ftRoutes {
		for _, c := range cases {
			if c.only != "" && c.only != route {
				continue
			}
			t.Run(route+"/"+c.name, func(t *testing.T) {
				var fields []hpack.HeaderField
				body := []byte("hello")
				marker := hpack.HeaderField{Name: "x-case", Value: c.name}
				switch {
				case route == "fallback":
					fields = ftPlainRequest("POST", "/fallback/echo", hpack.HeaderField{Name: "content-type", Value: "text/plain"}, marker)
				case c.ok:
					fields, body = ftGRPCRequest(ftEmptyCall, marker), ftEmptyMsg
				default:
					fields, body = ftGRPCRequest(ftSink, marker), ftEmptyMsg
				}
				if c.mod != nil {
					fields = c.mod(fields)
				}
				nb := max(c.bodies, 1)
				st := r.connect(t)
				st.handshake()
				headersBefore, markedBefore := r.be.headers.Load(), r.fb.marked.Load()
				st.batch(func() {
					st.writeHeaders(1, false, true, fields...)
					for i := range nb {
						st.writeData(1, i == nb-1 && c.trailers == nil, body)
					}
					if c.trailers != nil {
						st.writeHeaders(1, !c.trailersNoEnd, true, c.trailers...)
					}
				})
				if c.ok {
					if route == "grpc" {
						st.wantGRPCOK(1)
					} else if resp := st.wantResponse(1); resp.status() != "200" || string(resp.body) != strings.Repeat("hello", nb) {
						t.Errorf("status %q body %q rst=%v", resp.status(), resp.body, resp.rst)
					}
					return
				}
				st.guard = 3
				st.emptyCall(3)
				if st.wantStreamError(1, http2.ErrCodeProtocol) {
					p := r.connect(t)
					p.handshake()
					p.emptyCall(1)
					p.wantGRPCOK(1)
				} else {
					st.guard = 0
					st.wantGRPCOK(3)
				}
				if c.forwardable {
					return
				}
				if n := r.be.headers.Load() - headersBefore; n != 1 {
					t.Errorf("the relay forwarded the malformed request: the backend got %d HEADERS frames, want 1 (the probe's)", n)
				}
				if r.fb.marked.Load() != markedBefore {
					t.Errorf("the relay passed the malformed request to the fallback handler")
				}
			})
		}
	}
}

// 5. Floods: each ends its connection with GOAWAY ENHANCE_YOUR_CALM, and a well-behaved
// caller on another connection of the same Server sees no failure meanwhile.
func TestFramesFloods(t *testing.T) {
	r := ftNewRig(t)
	heap := ftWatchHeap(t)
	calm := http2.ErrCodeEnhanceYourCalm

	t.Run("rapid_reset", func(t *testing.T) {
		good := ftStartCalls(t, r.addr)
		heap.reset(t)
		st := r.connect(t)
		st.handshake()
		const pairs = 2000
		start := time.Now()
		good.begin()
		st.batch(func() {
			for i := range uint32(pairs) {
				id := 2*i + 1
				st.writeHeaders(id, false, true, ftGRPCRequest(ftEmptyCall)...)
				st.writeRST(id, http2.ErrCodeCancel)
			}
		})
		g := st.wantGoAway(calm)
		t.Logf("GOAWAY %v last stream %d after %v", g.code, g.last, time.Since(start).Round(time.Millisecond))
		if g.last >= 2*pairs-1 {
			t.Errorf("GOAWAY names stream %d as processed: all %d resets were taken", g.last, pairs)
		}
		st.wantClosed()
		st.wantServed()
		good.finish(t, "rapid reset")
		heap.check(t, "rapid reset", 8<<20, 96<<20)
	})

	t.Run("ping", func(t *testing.T) {
		good := ftStartCalls(t, r.addr)
		st := r.connect(t)
		st.handshake()
		good.begin()
		st.batch(func() {
			for i := range 1000 {
				st.writePing(false, [8]byte{byte(i >> 8), byte(i)})
			}
		})
		g := st.wantGoAway(calm)
		if g.debug != "too_many_pings" {
			t.Errorf("GOAWAY debug data %q, want \"too_many_pings\"", g.debug)
		}
		st.wantClosed()
		st.wantServed()
		good.finish(t, "ping flood")
	})

	t.Run("settings", func(t *testing.T) {
		good := ftStartCalls(t, r.addr)
		st := r.connect(t)
		st.handshake()
		good.begin()
		st.batch(func() {
			for range 10000 {
				st.writeSettings()
			}
		})
		st.wantGoAway(calm)
		st.wantClosed()
		st.wantServed()
		good.finish(t, "settings flood")
	})

	t.Run("window_update", func(t *testing.T) {
		good := ftStartCalls(t, r.addr)
		heap.reset(t)
		st := r.connect(t)
		st.handshake()
		chunk := bytes.Repeat(ftFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 1}), 1000)
		var written atomic.Int64
		left := 100 // 100k WINDOW_UPDATEs of 1
		good.begin()
		wait := st.writeAsync(&written, func() []byte {
			if left == 0 {
				return nil
			}
			left--
			return chunk
		})
		g := st.wantGoAway(calm)
		t.Logf("GOAWAY %v after %d KiB of WINDOW_UPDATE", g.code, written.Load()>>10)
		st.wantClosed()
		wait()
		st.wantServed()
		good.finish(t, "window update flood")
		heap.check(t, "window update flood", 8<<20, 96<<20)
	})

	t.Run("continuation", func(t *testing.T) {
		good := ftStartCalls(t, r.addr)
		heap.reset(t)
		st := r.connect(t)
		st.handshake()
		// 16 KiB CONTINUATION frames of never-indexed literal fields: each decodes.
		var frag bytes.Buffer
		enc := hpack.NewEncoder(&frag)
		for i := 0; frag.Len() < 15<<10; i++ {
			_ = enc.WriteField(hpack.HeaderField{Name: "x-flood-" + strconv.Itoa(i), Value: strings.Repeat("a", 1000), Sensitive: true})
		}
		cont := ftFrame(http2.FrameContinuation, 0, 1, frag.Bytes())
		chunk := bytes.Repeat(cont, 4)
		good.begin()
		st.writeHeadersBlock(1, true, false, st.encode(ftGRPCRequest(ftEmptyCall)...))
		var written atomic.Int64
		const limit = 64 << 20
		wait := st.writeAsync(&written, func() []byte {
			if written.Load() >= limit {
				return nil
			}
			return chunk
		})
		g := st.wantGoAway(calm)
		at := written.Load()
		t.Logf("GOAWAY %v after %d KiB of CONTINUATION written (socket buffers included)", g.code, at>>10)
		if at > 32<<20 {
			t.Errorf("the relay took %d MiB of one header block before it ended the connection", at>>20)
		}
		st.wantClosed()
		total, err := wait()
		t.Logf("%d KiB of CONTINUATION written in all before the write failed (%v)", total>>10, err)
		st.wantServed()
		good.finish(t, "continuation flood")
		heap.check(t, "continuation flood", 8<<20, 96<<20)
	})

	t.Run("ping_without_reading", func(t *testing.T) {
		good := ftStartCalls(t, r.addr)
		heap.reset(t)
		st := r.connect(t, ftRcvBuf(4<<10))
		st.handshake()
		pings := bytes.Repeat(ftFrame(http2.FramePing, 0, 0, make([]byte, 8)), 1024)
		var written atomic.Int64
		const limit = 64 << 20
		start := time.Now()
		good.begin()
		n, err := st.writeAsync(&written, func() []byte {
			if written.Load() >= limit {
				return nil
			}
			return pings
		})()
		t.Logf("wrote %d KiB of PINGs without reading, in %v: %v", n>>10, time.Since(start).Round(time.Millisecond), err)
		var ne net.Error
		switch {
		case err == nil:
			t.Errorf("%d MiB of PINGs went in while the caller read nothing, and the connection is still open", n>>20)
		case ftIsTimeout(err, &ne):
			t.Errorf("the relay stopped reading but did not end the connection (the write timed out after %d KiB)", n>>10)
		default:
			st.wantClosed()
			st.wantServed()
		}
		good.finish(t, "ping flood without reading")
		heap.check(t, "ping flood without reading", 8<<20, 96<<20)
	})
}

func ftIsTimeout(err error, ne *net.Error) bool {
	if e, ok := err.(net.Error); ok && e.Timeout() {
		*ne = e
		return true
	}
	return false
}

// ftWaitStalled waits until *n passed least and then stayed still for a while: the
// sender is blocked. A stall announces nothing: it is the counter standing still for
// 250 ms.
func ftWaitStalled(t *testing.T, n *atomic.Int64, least int64) int64 {
	t.Helper()
	last, since := n.Load(), time.Now()
	wait.ForNil(t, 30*time.Second, "the backend to stall", func() error {
		if v := n.Load(); v != last {
			last, since = v, time.Now()
		}
		if last < least || time.Since(since) < 250*time.Millisecond {
			return fmt.Errorf("%d bytes sent (want at least %d, then no progress)", last, least)
		}
		return nil
	})
	return last
}

// 6a. A caller that does not read its socket while a backend streams to it without end:
// another caller on the same Server (sharing the Pool's connection to the backend) is
// served promptly.
func TestFramesIsolationStuckReader(t *testing.T) {
	r := ftNewRig(t)
	heap := ftWatchHeap(t)
	stuck := r.connect(t, ftRcvBuf(4<<10))
	stuck.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: ftMaxWindow})
	stuck.writeWindowUpdate(0, ftMaxWindow-65535)
	stuck.batch(func() {
		stuck.writeHeaders(1, false, true, ftGRPCRequest(ftForever)...)
		stuck.writeData(1, true, ftEmptyMsg)
	})
	sent := ftWaitStalled(t, &r.be.sent, 256<<10)
	t.Logf("the backend stalled after %d KiB for a caller that does not read", sent>>10)

	tc := testgrpc.NewTestServiceClient(dial(t, r.addr))
	payload := &testpb.Payload{Body: make([]byte, 1024)}
	var lats []time.Duration
	for i := range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 1024, Payload: payload})
		cancel()
		if err != nil {
			t.Fatalf("call %d of 50, while another caller of the same next hop does not read: %v (after %v)", i+1, err, time.Since(start))
		}
		lats = append(lats, time.Since(start))
	}
	slices.Sort(lats)
	t.Logf("50 unary calls: p50 %v, max %v", lats[len(lats)/2].Round(time.Microsecond), lats[len(lats)-1].Round(time.Microsecond))
	if lats[len(lats)-1] > time.Second {
		t.Errorf("slowest call %v while another caller does not read", lats[len(lats)-1])
	}
	heap.check(t, "stuck reader", 8<<20, 64<<20)
}

// 6b. A next hop whose dial blocks holds only the streams bound for it: another stream
// on the same caller connection, to a reachable next hop, completes meanwhile.
func TestFramesIsolationBlockedDial(t *testing.T) {
	r := ftNewRig(t)
	st := r.connect(t)
	st.handshake()
	blocked := ftSetField(":authority", ftBlockedAuthority)(ftGRPCRequest(ftEmptyCall))
	st.batch(func() {
		st.writeHeaders(1, false, true, blocked...)
		st.writeData(1, true, ftEmptyMsg)
	})
	wait.For(t, ftWait, "the relay to dial the blocked next hop", func() bool { return r.blockedN.Load() > 0 })
	start := time.Now()
	st.emptyCall(3)
	st.wantGRPCOK(3)
	el := time.Since(start)
	t.Logf("stream 3 answered %v after it was sent, while the dial for stream 1 blocks", el.Round(time.Microsecond))
	r.releaseDial()
	resp := st.wantResponse(1)
	t.Logf("stream 1 after the dial failed: status %q grpc-status %q %q rst=%v %v", resp.status(), resp.grpcStatus(),
		ftField(append(resp.header, resp.trailer...), "grpc-message"), resp.rst, resp.rstCode)
	if !resp.rst && resp.grpcStatus() != "14" {
		t.Errorf("stream 1 ended with grpc-status %q after its dial failed, want 14 (UNAVAILABLE) or RST_STREAM", resp.grpcStatus())
	}
}

// sendUntilBlocked sends DATA on stream id as far as the relay's windows allow, until
// no credit comes for 500ms, the stream is reset, or limit bytes went; it reports the
// bytes sent and when the last went.
func (st *ftTester) sendUntilBlocked(id uint32, limit int64) (int64, time.Time) {
	st.t.Helper()
	init := int64(st.peerSetting(http2.SettingInitialWindowSize, 65535))
	frame := int64(min(16384, st.peerSetting(http2.SettingMaxFrameSize, 16384)))
	buf := make([]byte, frame)
	var (
		sent int64
		last = time.Now()
	)
	for sent < limit {
		avail := func() int64 { return min(init+st.streamInc[id]-sent, st.connWin-sent) }
		deadline := time.Now().Add(500 * time.Millisecond)
		for avail() <= 0 {
			e := st.read(deadline)
			switch {
			case e == nil:
				return sent, last
			case e.typ == ftClosed:
				st.t.Fatalf("the connection ended while sending on stream %d: %v", id, e.err)
			case e.typ == http2.FrameGoAway && e.code != http2.ErrCodeNo:
				st.t.Fatalf("while sending on stream %d: %v", id, e)
			case e.id != 0 && (e.typ == http2.FrameHeaders || e.typ == http2.FrameData || e.typ == http2.FrameRSTStream):
				st.backlog = append(st.backlog, e)
				if e.id == id && e.typ == http2.FrameRSTStream {
					return sent, last
				}
			}
		}
		n := min(avail(), frame)
		if err := st.writeData(id, false, buf[:n]); err != nil {
			st.t.Fatalf("sending on stream %d: %v", id, err)
		}
		sent += n
		last = time.Now()
	}
	return sent, last
}

// 6c. A stream whose receiver stops reading (the caller, or the provider) is reset after
// the stall time, Options.StallTimeout, and the connection goes on.
func TestFramesStallTimeout(t *testing.T) {
	const stall = 300 * time.Millisecond
	r := ftNewRig(t, func(o *Options) { o.StallTimeout = stall }, func(o *PoolOptions) {
		// The Pool's own stall time, where it has one (else it follows the Server's).
		ftSetIfPresent(o, "StallTimeout", stall)
	})
	t.Run("caller_stops_reading", func(t *testing.T) {
		st := r.connect(t)
		st.handshake() // stream windows of 65535, never credited
		st.writeWindowUpdate(0, 1<<30)
		start := time.Now()
		st.batch(func() {
			st.writeHeaders(1, false, true, ftGRPCRequest(ftForever)...)
			st.writeData(1, true, ftEmptyMsg)
		})
		rst := st.wantRST(1, 10*stall, http2.ErrCodeCancel)
		el := rst.at.Sub(start)
		t.Logf("stream reset (%v) %v after the call began, %d bytes received", rst.code, el.Round(time.Millisecond), st.dataRecv[1])
		if el < stall/2 {
			t.Errorf("reset after %v, before the stall time %v", el, stall)
		}
		if st.dataRecv[1] > 65535 {
			t.Errorf("the relay sent %d bytes on a stream whose window is 65535", st.dataRecv[1])
		}
		st.emptyCall(3)
		st.wantGRPCOK(3)
	})
	t.Run("provider_stops_reading", func(t *testing.T) {
		st := r.connect(t)
		st.handshake()
		st.writeHeaders(1, false, true, ftGRPCRequest(ftSink)...)
		sent, last := st.sendUntilBlocked(1, 64<<20)
		t.Logf("the relay stopped granting window after %d KiB (its stream window: %d)", sent>>10,
			st.peerSetting(http2.SettingInitialWindowSize, 65535))
		rst := st.wantRST(1, 10*stall, http2.ErrCodeCancel)
		t.Logf("stream reset (%v) %v after the last DATA the window allowed", rst.code, rst.at.Sub(last).Round(time.Millisecond))
		st.emptyCall(3)
		st.wantGRPCOK(3)
	})
}

// 7. The fallback bridge: 100-continue is answered when the handler reads the body, and
// a response to HEAD carries no DATA.
func TestFramesFallbackBridge(t *testing.T) {
	r := ftNewRig(t)
	t.Run("expect_100_continue", func(t *testing.T) {
		st := r.connect(t)
		st.handshake()
		start := time.Now()
		st.writeHeaders(1, false, true, ftPlainRequest("POST", "/fallback/echo",
			hpack.HeaderField{Name: "content-type", Value: "text/plain"},
			hpack.HeaderField{Name: "content-length", Value: "5"},
			hpack.HeaderField{Name: "expect", Value: "100-continue"})...)
		fields, end := st.wantHeaders(1)
		t.Logf("first HEADERS after %v: %v", time.Since(start).Round(time.Microsecond), fields)
		if ftField(fields, ":status") != "100" || end {
			t.Fatalf("want :status 100 before the body, got %v end=%v", fields, end)
		}
		st.writeData(1, true, []byte("hello"))
		resp := st.wantResponse(1)
		if resp.status() != "200" || string(resp.body) != "hello" || len(resp.info) != 0 {
			t.Errorf("after 100-continue: status %q body %q, %d more 1xx, rst=%v", resp.status(), resp.body, len(resp.info), resp.rst)
		}
	})
	for _, c := range []struct{ path, status string }{{"/fallback/missing", "404"}, {"/fallback/hello", "200"}} {
		t.Run("head_"+c.status, func(t *testing.T) {
			st := r.connect(t)
			st.handshake()
			st.writeHeaders(1, true, true, ftPlainRequest("HEAD", c.path)...)
			fields, end := st.wantHeaders(1)
			if got := ftField(fields, ":status"); got != c.status {
				t.Errorf("HEAD %s: status %q, want %s", c.path, got, c.status)
			}
			if !end {
				t.Errorf("HEAD %s: the response HEADERS do not end the stream", c.path)
			}
			// Whatever the relay sends on the stream before the PING's answer is looked at.
			ping := [8]byte{'h', 'e', 'a', 'd'}
			st.writePing(false, ping)
			var data, bytesN int
			st.expect("PING ACK after the HEAD response", ftWait, func(e *ftEvent) ftVerdict {
				switch {
				case e.id == 1 && e.typ == http2.FrameData:
					data++
					bytesN += len(e.data)
					return ftTake
				case e.id == 1:
					return ftTake
				case e.typ == http2.FramePing && e.ack && e.ping == ping:
					return ftDone
				}
				return ftPass
			})
			if data > 0 {
				t.Errorf("HEAD %s: %d DATA frames (%d bytes) in the response", c.path, data, bytesN)
			}
		})
	}
}
