package relay

// A raw-frame harness for the relay, after x/net's serverTester (http2/server_test.go):
// a test writes frames byte for byte on a loopback TCP connection to a relay Server and
// expects frames back (HEADERS, DATA, RST_STREAM, GOAWAY with codes), each wait bounded.
//
// The Server's router sends application/grpc requests to a Pool that dials an in-test
// grpc-go backend (the interop TestService, plus two methods of its own: one that
// streams without end and one that never reads); everything else goes to a fallback
// http.Handler of the test's. Every top-level name here starts with "ft" (frame test) so
// that it cannot collide with the package's own.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/interop"
	"google.golang.org/grpc/status"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/test/wait"
)

const (
	// ftWait bounds every wait for a frame, a close or a call: a bound against a hang,
	// generous for a loaded machine.
	ftWait = 10 * time.Second

	ftEmptyCall = "/grpc.testing.TestService/EmptyCall"
	// ftForever streams 16 KiB messages until the call ends; ftSink never reads its
	// request and never answers.
	ftForever = "/strait.test.Frames/Forever"
	ftSink    = "/strait.test.Frames/Sink"

	// Requests with this :authority are routed to ftBlockedAddr, whose dial blocks until
	// the test releases it.
	ftBlockedAuthority = "blocked.test"
	ftBlockedAddr      = "blocked.test:1"

	// ftHeapAbort: a heap this large means the relay allocates without bound (the
	// SETTINGS_MAX_FRAME_SIZE=0 loop grows by GB/s); the test binary is stopped before it
	// takes the machine down.
	ftHeapAbort = 512 << 20

	ftMaxWindow = 1<<31 - 1
)

// ftEmptyMsg is an empty gRPC message: uncompressed, length 0.
var ftEmptyMsg = []byte{0, 0, 0, 0, 0}

// ---------------------------------------------------------------------------------------
// The backend.

type ftBackend struct {
	srv  *grpc.Server
	addr string
	done chan struct{}
	// sent counts the bytes ftForever handed to grpc-go.
	sent atomic.Int64
	// headers counts the HEADERS frames the backend received from the relay, on every
	// connection: a malformed request the relay forwarded shows up here.
	headers atomic.Int64
	once    sync.Once
}

func ftStartBackend(t *testing.T) *ftBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &ftBackend{addr: ln.Addr().String(), done: make(chan struct{})}
	// Fixed 64 KiB windows (no BDP growth): a stream the backend does not read holds
	// at most that much, so the relay's leg to it blocks.
	b.srv = grpc.NewServer(grpc.UnknownServiceHandler(b.unknown),
		grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	testgrpc.RegisterTestServiceServer(b.srv, interop.NewTestServer())
	go func() {
		defer close(b.done)
		_ = b.srv.Serve(&ftCountingListener{Listener: ln, n: &b.headers})
	}()
	return b
}

func (b *ftBackend) stop() {
	b.once.Do(func() {
		b.srv.Stop()
		<-b.done
	})
}

func (b *ftBackend) unknown(_ any, ss grpc.ServerStream) error {
	m, _ := grpc.MethodFromServerStream(ss)
	switch m {
	case ftForever:
		resp := &testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, 16<<10)}}
		for {
			if err := ss.SendMsg(resp); err != nil {
				return err
			}
			b.sent.Add(16<<10 + 10)
		}
	case ftSink:
		<-ss.Context().Done()
		return ss.Context().Err()
	}
	return status.Errorf(codes.Unimplemented, "no method %s", m)
}

// ftCountingListener counts the HEADERS frames its connections read.
type ftCountingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *ftCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &ftCountingConn{Conn: c, n: l.n, skip: len(http2.ClientPreface)}, nil
}

type ftCountingConn struct {
	net.Conn
	n    *atomic.Int64
	skip int // preface bytes still to pass
	left int // payload bytes of the current frame still to pass
	hdr  [9]byte
	hn   int
}

func (c *ftCountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	b := p[:n]
	for len(b) > 0 {
		switch {
		case c.skip > 0:
			k := min(c.skip, len(b))
			c.skip, b = c.skip-k, b[k:]
		case c.left > 0:
			k := min(c.left, len(b))
			c.left, b = c.left-k, b[k:]
		default:
			k := copy(c.hdr[c.hn:], b)
			c.hn, b = c.hn+k, b[k:]
			if c.hn == len(c.hdr) {
				c.hn = 0
				c.left = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
				if http2.FrameType(c.hdr[3]) == http2.FrameHeaders {
					c.n.Add(1)
				}
			}
		}
	}
	return n, err
}

// ---------------------------------------------------------------------------------------
// The fallback handler.

type ftFallback struct {
	hang chan struct{} // closed at the end of the test
	// marked counts requests that carried the x-case field: the malformed requests of
	// the header tests do, and must never reach a handler.
	marked atomic.Int64
}

func (f *ftFallback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Case") != "" {
		f.marked.Add(1)
	}
	switch r.URL.Path {
	case "/fallback/hang":
		select {
		case <-r.Context().Done():
		case <-f.hang:
		}
	case "/fallback/missing":
		http.Error(w, "not found", http.StatusNotFound)
	case "/fallback/hello":
		_, _ = w.Write([]byte("hello"))
	default: // echo
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		w.Header().Set("X-Body-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	}
}

// ---------------------------------------------------------------------------------------
// The rig: a Server on a loopback listener, its Pool, the backend and the fallback.

type ftRig struct {
	srv      *Server
	pool     *Pool
	addr     string
	be       *ftBackend
	fb       *ftFallback
	set      *balance.Set
	blocked  *balance.Set
	release  chan struct{}
	relOnce  sync.Once
	blockedN atomic.Int32 // dials to ftBlockedAddr started

	mu     sync.Mutex
	served map[string]chan struct{} // caller's address → closed when ServeConn returned
}

// ftNewRig starts a rig; mods are func(*Options) and func(*PoolOptions), applied to
// the Server's and the Pool's options.
func ftNewRig(t *testing.T, mods ...any) *ftRig {
	t.Helper()
	r := &ftRig{
		be:      ftStartBackend(t),
		fb:      &ftFallback{hang: make(chan struct{})},
		release: make(chan struct{}),
		served:  map[string]chan struct{}{},
		blocked: balance.NewSet([]string{ftBlockedAddr}),
	}
	r.set = balance.NewSet([]string{r.be.addr})
	po := PoolOptions{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		if addr == ftBlockedAddr {
			r.blockedN.Add(1)
			select {
			case <-r.release:
				return nil, errors.New("ft: blocked dial released")
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, DialTimeout: 10 * time.Second}
	o := Options{Fallback: r.fb, MaxHeaderBytes: 16 << 10}
	for _, m := range mods {
		switch f := m.(type) {
		case func(*Options):
			f(&o)
		case func(*PoolOptions):
			f(&po)
		default:
			t.Fatalf("ftNewRig: %T is not an option", m)
		}
	}
	r.pool = NewPool(po)
	router := routerFunc(func(q *Request) Decision {
		if !strings.HasPrefix(q.ContentType, "application/grpc") || strings.HasPrefix(q.Path, "/fallback/") {
			return Decision{}
		}
		set := r.set
		if q.Authority == ftBlockedAuthority {
			set = r.blocked
		}
		return Decision{Pool: r.pool, Set: set, Protocol: "grpc", Peer: "frames"}
	})
	o.Router = router
	r.srv = NewServer(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	var wg sync.WaitGroup
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			done := r.servedChan(c.RemoteAddr().String())
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(done)
				r.srv.ServeConn(context.Background(), c, nil, nil)
			}()
		}
	}()
	t.Cleanup(func() {
		r.releaseDial()
		close(r.fb.hang)
		ln.Close()
		<-acceptDone
		r.srv.Close()
		wg.Wait()
		r.be.stop()
		r.pool.Close()
		r.pool.Wait()
	})
	return r
}

func (r *ftRig) releaseDial() { r.relOnce.Do(func() { close(r.release) }) }

func (r *ftRig) servedChan(key string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := r.served[key]
	if ch == nil {
		ch = make(chan struct{})
		r.served[key] = ch
	}
	return ch
}

// ftSetIfPresent sets the field name of the struct *ptr to v if it has such a field of
// v's type, for options that not every version of the package has.
func ftSetIfPresent(ptr any, name string, v any) bool {
	f := reflect.ValueOf(ptr).Elem().FieldByName(name)
	if !f.IsValid() || !f.CanSet() || f.Type() != reflect.TypeOf(v) {
		return false
	}
	f.Set(reflect.ValueOf(v))
	return true
}

// ---------------------------------------------------------------------------------------
// The tester: one caller connection.

type ftTester struct {
	t      *testing.T
	r      *ftRig
	nc     net.Conn
	served <-chan struct{}

	wmu      sync.Mutex
	out      bytes.Buffer
	wfr      *http2.Framer
	batching int
	werr     error
	henc     *hpack.Encoder
	hbuf     bytes.Buffer

	rfr       *http2.Framer
	backlog   []*ftEvent // stream frames read while waiting for something else
	recent    []string   // the last frames read, for failure messages
	closedErr error
	peer      map[http2.SettingID]uint32 // the relay's SETTINGS
	acks      int                        // SETTINGS ACKs received
	acksTaken int
	connWin   int64            // what the relay lets us send on the connection
	streamInc map[uint32]int64 // WINDOW_UPDATE increments received per stream
	dataRecv  map[uint32]int   // DATA bytes received per stream
	// guard is a stream whose end, while an error is awaited, shows that the relay went
	// on without the error (a probe request written after the offending frames).
	guard uint32
}

type ftConnOption func(*net.TCPConn)

// ftRcvBuf shrinks the connection's receive buffer: a caller that stops reading then
// fills its socket soon.
func ftRcvBuf(n int) ftConnOption {
	return func(c *net.TCPConn) { _ = c.SetReadBuffer(n) }
}

func (r *ftRig) connect(t *testing.T, opts ...ftConnOption) *ftTester {
	t.Helper()
	nc, err := net.DialTimeout("tcp", r.addr, ftWait)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(nc.(*net.TCPConn))
	}
	t.Cleanup(func() { nc.Close() })
	st := &ftTester{
		t: t, r: r, nc: nc,
		served:    r.servedChan(nc.LocalAddr().String()),
		connWin:   65535,
		streamInc: map[uint32]int64{},
		dataRecv:  map[uint32]int{},
	}
	st.wfr = http2.NewFramer(&st.out, nil)
	st.wfr.AllowIllegalWrites = true
	st.henc = hpack.NewEncoder(&st.hbuf)
	st.rfr = http2.NewFramer(io.Discard, nc)
	st.rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	st.rfr.SetMaxReadFrameSize(16384)
	return st
}

// --- writing ---

func (st *ftTester) write(f func(fr *http2.Framer) error) error {
	st.t.Helper()
	st.wmu.Lock()
	defer st.wmu.Unlock()
	if err := f(st.wfr); err != nil {
		st.t.Fatalf("framing: %v", err)
	}
	if st.batching > 0 {
		return nil
	}
	return st.flushLocked()
}

func (st *ftTester) flushLocked() error {
	if st.out.Len() == 0 {
		return nil
	}
	_ = st.nc.SetWriteDeadline(time.Now().Add(ftWait))
	_, err := st.nc.Write(st.out.Bytes())
	st.out.Reset()
	if err != nil && st.werr == nil {
		st.werr = err
	}
	return err
}

// batch writes what f writes in one socket write.
func (st *ftTester) batch(f func()) error {
	st.wmu.Lock()
	st.batching++
	st.wmu.Unlock()
	f()
	st.wmu.Lock()
	defer st.wmu.Unlock()
	st.batching--
	if st.batching > 0 {
		return nil
	}
	return st.flushLocked()
}

func (st *ftTester) writeRaw(b []byte) error {
	return st.write(func(*http2.Framer) error { st.out.Write(b); return nil })
}

func (st *ftTester) writePreface() error { return st.writeRaw([]byte(http2.ClientPreface)) }

func (st *ftTester) writeSettings(s ...http2.Setting) error {
	for _, x := range s {
		if x.ID == http2.SettingMaxFrameSize && x.Val >= 16384 && x.Val <= 1<<24-1 {
			st.rfr.SetMaxReadFrameSize(x.Val)
		}
	}
	return st.write(func(fr *http2.Framer) error { return fr.WriteSettings(s...) })
}

func (st *ftTester) writeSettingsAck() error {
	return st.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
}

// encode HPACK-encodes fields with the connection's encoder (its dynamic table is the
// one the relay decodes with: what is encoded must be sent).
func (st *ftTester) encode(fields ...hpack.HeaderField) []byte {
	st.hbuf.Reset()
	for _, f := range fields {
		_ = st.henc.WriteField(f)
	}
	return bytes.Clone(st.hbuf.Bytes())
}

func (st *ftTester) writeHeaders(id uint32, endStream, endHeaders bool, fields ...hpack.HeaderField) error {
	return st.writeHeadersBlock(id, endStream, endHeaders, st.encode(fields...))
}

func (st *ftTester) writeHeadersBlock(id uint32, endStream, endHeaders bool, block []byte) error {
	return st.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: endStream, EndHeaders: endHeaders})
	})
}

func (st *ftTester) writeHeadersParam(p http2.HeadersFrameParam) error {
	return st.write(func(fr *http2.Framer) error { return fr.WriteHeaders(p) })
}

func (st *ftTester) writeContinuation(id uint32, endHeaders bool, frag []byte) error {
	return st.write(func(fr *http2.Framer) error { return fr.WriteContinuation(id, endHeaders, frag) })
}

func (st *ftTester) writeData(id uint32, end bool, data []byte) error {
	return st.write(func(fr *http2.Framer) error { return fr.WriteData(id, end, data) })
}

func (st *ftTester) writeDataPadded(id uint32, end bool, data, pad []byte) error {
	return st.write(func(fr *http2.Framer) error { return fr.WriteDataPadded(id, end, data, pad) })
}

func (st *ftTester) writeRST(id uint32, code http2.ErrCode) error {
	return st.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

func (st *ftTester) writePing(ack bool, data [8]byte) error {
	return st.write(func(fr *http2.Framer) error { return fr.WritePing(ack, data) })
}

func (st *ftTester) writeWindowUpdate(id, incr uint32) error {
	return st.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, incr) })
}

func (st *ftTester) writePriority(id uint32, p http2.PriorityParam) error {
	return st.writeRawFrame(http2.FramePriority, 0, id, ftPriorityPayload(p))
}

func (st *ftTester) writeRawFrame(typ http2.FrameType, flags http2.Flags, id uint32, payload []byte) error {
	return st.write(func(fr *http2.Framer) error { return fr.WriteRawFrame(typ, flags, id, payload) })
}

func ftPriorityPayload(p http2.PriorityParam) []byte {
	v := p.StreamDep
	if p.Exclusive {
		v |= 1 << 31
	}
	return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v), p.Weight}
}

// ftFrame is a frame's bytes, for floods built ahead of time.
func ftFrame(typ http2.FrameType, flags http2.Flags, id uint32, payload []byte) []byte {
	n := len(payload)
	b := []byte{byte(n >> 16), byte(n >> 8), byte(n), byte(typ), byte(flags),
		byte(id>>24) & 0x7f, byte(id >> 16), byte(id >> 8), byte(id)}
	return append(b, payload...)
}

// writeAsync writes the chunks next returns (nil ends) from a goroutine of its own,
// until next ends, a write fails or times out. The returned wait reports how many bytes
// went out and the first error. written counts them as they go.
func (st *ftTester) writeAsync(written *atomic.Int64, next func() []byte) (wait func() (int64, error)) {
	done := make(chan error, 1)
	go func() {
		var err error
		for b := next(); b != nil; b = next() {
			st.wmu.Lock()
			_ = st.nc.SetWriteDeadline(time.Now().Add(ftWait))
			var n int
			n, err = st.nc.Write(b)
			st.wmu.Unlock()
			written.Add(int64(n))
			if err != nil {
				break
			}
		}
		done <- err
	}()
	return func() (int64, error) {
		err := <-done
		return written.Load(), err
	}
}

// --- requests ---

func ftGRPCRequest(path string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: path},
		{Name: ":authority", Value: "relay.test"}, {Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}, extra...)
}

func ftPlainRequest(method, path string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: path},
		{Name: ":authority", Value: "relay.test"},
	}, extra...)
}

// emptyCall writes a whole EmptyCall on stream id.
func (st *ftTester) emptyCall(id uint32) {
	st.batch(func() {
		st.writeHeaders(id, false, true, ftGRPCRequest(ftEmptyCall)...)
		st.writeData(id, true, ftEmptyMsg)
	})
}

// openStream opens stream id with a request that is never answered and stays open:
// the backend's Sink (grpc) or the fallback's hang handler.
func (st *ftTester) openStream(id uint32, route string, endStream bool) {
	if route == "fallback" {
		st.writeHeaders(id, endStream, true, ftPlainRequest("POST", "/fallback/hang")...)
		return
	}
	st.writeHeaders(id, endStream, true, ftGRPCRequest(ftSink)...)
}

// handshake writes the preface and SETTINGS, and waits for the relay's SETTINGS and
// its acknowledgement of ours.
func (st *ftTester) handshake(settings ...http2.Setting) {
	st.t.Helper()
	if err := st.batch(func() {
		st.writePreface()
		st.writeSettings(settings...)
	}); err != nil {
		st.t.Fatalf("handshake: %v", err)
	}
	st.wantSettings()
	st.writeSettingsAck()
	st.wantSettingsAck()
}

// --- reading ---

const ftClosed http2.FrameType = 0xfe // the connection ended (event, not a frame)

type ftEvent struct {
	typ    http2.FrameType
	id     uint32
	flags  http2.Flags
	length uint32
	end    bool
	fields []hpack.HeaderField
	data   []byte
	code   http2.ErrCode
	incr   uint32
	last   uint32
	debug  string
	ack    bool
	ping   [8]byte
	err    error
	at     time.Time // when it was read
}

func (e *ftEvent) endsStream() bool {
	return e.typ == http2.FrameRSTStream || (e.end && (e.typ == http2.FrameHeaders || e.typ == http2.FrameData))
}

func (e *ftEvent) String() string {
	switch e.typ {
	case ftClosed:
		return fmt.Sprintf("closed (%v)", e.err)
	case http2.FrameHeaders:
		var b strings.Builder
		for i, f := range e.fields {
			if i > 0 {
				b.WriteByte(' ')
			}
			v := f.Value
			if len(v) > 40 {
				v = v[:40] + "…"
			}
			fmt.Fprintf(&b, "%s=%q", f.Name, v)
		}
		return fmt.Sprintf("HEADERS stream=%d end=%v [%s]", e.id, e.end, b.String())
	case http2.FrameData:
		return fmt.Sprintf("DATA stream=%d len=%d end=%v", e.id, len(e.data), e.end)
	case http2.FrameRSTStream:
		return fmt.Sprintf("RST_STREAM stream=%d %v", e.id, e.code)
	case http2.FrameGoAway:
		return fmt.Sprintf("GOAWAY last=%d %v %q", e.last, e.code, e.debug)
	case http2.FrameSettings:
		if e.ack {
			return "SETTINGS ACK"
		}
		return "SETTINGS"
	case http2.FramePing:
		return fmt.Sprintf("PING ack=%v", e.ack)
	case http2.FrameWindowUpdate:
		return fmt.Sprintf("WINDOW_UPDATE stream=%d +%d", e.id, e.incr)
	}
	return fmt.Sprintf("%v stream=%d len=%d", e.typ, e.id, e.length)
}

// read reads the next frame before deadline; nil on timeout.
func (st *ftTester) read(deadline time.Time) *ftEvent {
	st.t.Helper()
	if st.closedErr != nil {
		return &ftEvent{typ: ftClosed, err: st.closedErr}
	}
	_ = st.nc.SetReadDeadline(deadline)
	f, err := st.rfr.ReadFrame()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		var ce http2.ConnectionError
		var se http2.StreamError
		if errors.As(err, &ce) || errors.As(err, &se) || errors.Is(err, http2.ErrFrameTooLarge) {
			st.t.Fatalf("the relay sent an invalid frame: %v; last frames: %s", err, st.lastFrames())
		}
		st.closedErr = err
		e := &ftEvent{typ: ftClosed, err: err}
		st.note(e)
		return e
	}
	h := f.Header()
	e := &ftEvent{typ: h.Type, id: h.StreamID, flags: h.Flags, length: h.Length, at: time.Now()}
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		e.typ = http2.FrameHeaders
		e.end = f.StreamEnded()
		e.fields = slices.Clone(f.Fields)
	case *http2.DataFrame:
		e.end = f.StreamEnded()
		e.data = bytes.Clone(f.Data())
		st.dataRecv[e.id] += len(e.data)
	case *http2.RSTStreamFrame:
		e.code = f.ErrCode
	case *http2.GoAwayFrame:
		e.last, e.code, e.debug = f.LastStreamID, f.ErrCode, string(f.DebugData())
	case *http2.SettingsFrame:
		e.ack = f.IsAck()
		if e.ack {
			st.acks++
		} else {
			if st.peer == nil {
				st.peer = map[http2.SettingID]uint32{}
			}
			_ = f.ForeachSetting(func(s http2.Setting) error { st.peer[s.ID] = s.Val; return nil })
		}
	case *http2.PingFrame:
		e.ack, e.ping = f.IsAck(), f.Data
	case *http2.WindowUpdateFrame:
		e.incr = f.Increment
		if e.id == 0 {
			st.connWin += int64(e.incr)
		} else {
			st.streamInc[e.id] += int64(e.incr)
		}
	case *http2.PushPromiseFrame:
		st.t.Errorf("the relay sent PUSH_PROMISE")
	}
	st.note(e)
	return e
}

func (st *ftTester) note(e *ftEvent) {
	if len(st.recent) == 12 {
		st.recent = st.recent[1:]
	}
	st.recent = append(st.recent, e.String())
}

func (st *ftTester) lastFrames() string {
	if len(st.recent) == 0 {
		return "(none)"
	}
	return strings.Join(st.recent, " | ")
}

type ftVerdict int

const (
	ftPass ftVerdict = iota // not this wait's: stream frames are kept for a later one
	ftTake                  // consumed; keep reading
	ftDone                  // consumed; the wait is over
)

// expect reads frames, the kept ones first, until match says done, for at most d. A
// close or a GOAWAY with an error that match passes on fails the test, and so does the
// end of the guard stream.
func (st *ftTester) expect(what string, d time.Duration, match func(*ftEvent) ftVerdict) *ftEvent {
	st.t.Helper()
	for i := 0; i < len(st.backlog); i++ {
		switch e := st.backlog[i]; match(e) {
		case ftTake:
			st.backlog = slices.Delete(st.backlog, i, i+1)
			i--
		case ftDone:
			st.backlog = slices.Delete(st.backlog, i, i+1)
			return e
		}
	}
	deadline := time.Now().Add(d)
	for {
		e := st.read(deadline)
		if e == nil {
			st.t.Fatalf("%s: nothing came in %v; last frames: %s", what, d, st.lastFrames())
		}
		switch match(e) {
		case ftDone:
			return e
		case ftTake:
			continue
		}
		switch {
		case e.typ == ftClosed:
			st.t.Fatalf("%s: the connection ended (%v); last frames: %s", what, e.err, st.lastFrames())
		case e.typ == http2.FrameGoAway && e.code != http2.ErrCodeNo:
			st.t.Fatalf("%s: got %v", what, e)
		case st.guard != 0 && e.id == st.guard && e.endsStream():
			st.t.Fatalf("%s: none came, and the relay went on: it answered the request written after (stream %d: %v); last frames: %s",
				what, st.guard, e, st.lastFrames())
		case e.id != 0 && (e.typ == http2.FrameHeaders || e.typ == http2.FrameData || e.typ == http2.FrameRSTStream):
			if len(st.backlog) < 20000 {
				st.backlog = append(st.backlog, e)
			}
		}
	}
}

func (st *ftTester) wantSettings() map[http2.SettingID]uint32 {
	st.t.Helper()
	if st.peer == nil {
		st.expect("the relay's SETTINGS", ftWait, func(e *ftEvent) ftVerdict {
			if e.typ == http2.FrameSettings && !e.ack {
				return ftDone
			}
			return ftPass
		})
	}
	return st.peer
}

func (st *ftTester) wantSettingsAck() {
	st.t.Helper()
	if st.acks > st.acksTaken {
		st.acksTaken++
		return
	}
	st.expect("SETTINGS ACK", ftWait, func(e *ftEvent) ftVerdict {
		if e.typ == http2.FrameSettings && e.ack {
			return ftDone
		}
		return ftPass
	})
	st.acksTaken++
}

// peerSetting is one of the relay's SETTINGS, or its default.
func (st *ftTester) peerSetting(id http2.SettingID, def uint32) uint32 {
	if v, ok := st.peer[id]; ok {
		return v
	}
	return def
}

func (st *ftTester) wantHeaders(id uint32) ([]hpack.HeaderField, bool) {
	st.t.Helper()
	e := st.expect(fmt.Sprintf("HEADERS on stream %d", id), ftWait, func(e *ftEvent) ftVerdict {
		if e.id != id {
			return ftPass
		}
		switch e.typ {
		case http2.FrameHeaders:
			return ftDone
		case http2.FrameData, http2.FrameRSTStream:
			st.t.Fatalf("want HEADERS on stream %d, got %v", id, e)
		}
		return ftPass
	})
	return e.fields, e.end
}

func (st *ftTester) wantData(id uint32) ([]byte, bool) {
	st.t.Helper()
	e := st.expect(fmt.Sprintf("DATA on stream %d", id), ftWait, func(e *ftEvent) ftVerdict {
		if e.id != id {
			return ftPass
		}
		switch e.typ {
		case http2.FrameData:
			return ftDone
		case http2.FrameHeaders, http2.FrameRSTStream:
			st.t.Fatalf("want DATA on stream %d, got %v", id, e)
		}
		return ftPass
	})
	return e.data, e.end
}

// wantRST waits for RST_STREAM on stream id with one of codes (any code if none);
// HEADERS or DATA on the stream meanwhile are skipped.
func (st *ftTester) wantRST(id uint32, d time.Duration, codes ...http2.ErrCode) *ftEvent {
	st.t.Helper()
	e := st.expect(fmt.Sprintf("RST_STREAM %v on stream %d", codes, id), d, func(e *ftEvent) ftVerdict {
		if e.id != id {
			return ftPass
		}
		if e.typ == http2.FrameRSTStream {
			if len(codes) > 0 && !slices.Contains(codes, e.code) {
				st.t.Fatalf("want RST_STREAM %v on stream %d, got %v", codes, id, e)
			}
			return ftDone
		}
		return ftTake
	})
	return e
}

// wantStreamError waits for a stream error on stream id: RST_STREAM with one of codes,
// or (RFC 9113 §5.4: a stream error may be treated as a connection error) GOAWAY with
// one of them, reported by conn. A response on the stream fails: the relay took the
// request.
func (st *ftTester) wantStreamError(id uint32, codes ...http2.ErrCode) (conn bool) {
	st.t.Helper()
	e := st.expect(fmt.Sprintf("stream error %v on stream %d", codes, id), ftWait, func(e *ftEvent) ftVerdict {
		switch {
		case e.typ == http2.FrameGoAway && slices.Contains(codes, e.code):
			return ftDone
		case e.id != id:
			return ftPass
		case e.typ == http2.FrameRSTStream:
			if !slices.Contains(codes, e.code) {
				st.t.Fatalf("want RST_STREAM %v on stream %d, got %v", codes, id, e)
			}
			return ftDone
		case e.typ == http2.FrameHeaders || e.typ == http2.FrameData:
			st.t.Fatalf("want a stream error %v on stream %d, but the relay answered: %v", codes, id, e)
		}
		return ftPass
	})
	if e.typ == http2.FrameGoAway {
		st.t.Logf("stream error %v on stream %d came as a connection error: %v", codes, id, e)
		st.wantClosed()
		return true
	}
	return false
}

// wantGoAway waits for GOAWAY with code (a GOAWAY NO_ERROR before it is skipped).
func (st *ftTester) wantGoAway(code http2.ErrCode) *ftEvent {
	st.t.Helper()
	return st.expect(fmt.Sprintf("GOAWAY %v", code), ftWait, func(e *ftEvent) ftVerdict {
		if e.typ != http2.FrameGoAway {
			return ftPass
		}
		if e.code == code {
			return ftDone
		}
		if e.code == http2.ErrCodeNo && code != http2.ErrCodeNo {
			return ftTake
		}
		st.t.Fatalf("want GOAWAY %v, got %v", code, e)
		return ftPass
	})
}

// wantClosed waits until the relay closes the connection (EOF or reset).
func (st *ftTester) wantClosed() {
	st.t.Helper()
	st.expect("the connection closed", ftWait, func(e *ftEvent) ftVerdict {
		if e.typ == ftClosed {
			return ftDone
		}
		return ftTake
	})
}

// wantServed waits until ServeConn returned for this connection.
func (st *ftTester) wantServed() {
	st.t.Helper()
	select {
	case <-st.served:
	case <-time.After(ftWait):
		st.t.Fatalf("ServeConn did not return %v after the connection ended", ftWait)
	}
}

// wantConnError: GOAWAY with code, then the close, then ServeConn returns.
func (st *ftTester) wantConnError(code http2.ErrCode) *ftEvent {
	st.t.Helper()
	g := st.wantGoAway(code)
	st.wantClosed()
	st.wantServed()
	return g
}

func (st *ftTester) wantPingAck(data [8]byte) {
	st.t.Helper()
	st.expect("PING ACK", ftWait, func(e *ftEvent) ftVerdict {
		if e.typ == http2.FramePing && e.ack && e.ping == data {
			return ftDone
		}
		return ftPass
	})
}

type ftResponse struct {
	header   []hpack.HeaderField
	info     [][]hpack.HeaderField // 1xx
	body     []byte
	trailer  []hpack.HeaderField
	rst      bool
	rstCode  http2.ErrCode
	dataSeen int // DATA frames
}

func ftField(fields []hpack.HeaderField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

func (r *ftResponse) status() string { return ftField(r.header, ":status") }

func (r *ftResponse) grpcStatus() string {
	if r.trailer != nil {
		return ftField(r.trailer, "grpc-status")
	}
	return ftField(r.header, "grpc-status") // trailers-only
}

// wantResponse reads the response on stream id up to its end (END_STREAM or RST_STREAM).
func (st *ftTester) wantResponse(id uint32) *ftResponse {
	st.t.Helper()
	r := &ftResponse{}
	st.expect(fmt.Sprintf("the response on stream %d", id), ftWait, func(e *ftEvent) ftVerdict {
		if e.id != id {
			return ftPass
		}
		switch e.typ {
		case http2.FrameHeaders:
			switch {
			case r.header == nil && strings.HasPrefix(ftField(e.fields, ":status"), "1"):
				r.info = append(r.info, e.fields)
			case r.header == nil:
				r.header = e.fields
			default:
				r.trailer = e.fields
			}
		case http2.FrameData:
			r.body = append(r.body, e.data...)
			r.dataSeen++
		case http2.FrameRSTStream:
			r.rst, r.rstCode = true, e.code
			return ftDone
		}
		if e.end {
			return ftDone
		}
		return ftTake
	})
	return r
}

// wantGRPCOK waits for a whole successful gRPC response on stream id.
func (st *ftTester) wantGRPCOK(id uint32) {
	st.t.Helper()
	r := st.wantResponse(id)
	if r.rst || r.status() != "200" || r.grpcStatus() != "0" {
		st.t.Fatalf("stream %d: want a gRPC OK, got status %q grpc-status %q grpc-message %q rst=%v %v",
			id, r.status(), r.grpcStatus(), ftField(append(r.header, r.trailer...), "grpc-message"), r.rst, r.rstCode)
	}
}

// ---------------------------------------------------------------------------------------
// Well-behaved callers, heap and CPU.

// ftCaller makes EmptyCalls on a connection of its own (grpc-go), from two goroutines
// paced at up to 1,000 calls/s each, until finish, and counts the failures.
type ftCaller struct {
	n, fails atomic.Int64
	maxLat   atomic.Int64
	mark     atomic.Int64 // n when begin was called
	mu       sync.Mutex
	firstErr error
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func (c *ftCaller) halt() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
}

func ftStartCalls(t *testing.T, addr string) *ftCaller {
	t.Helper()
	tc := testgrpc.NewTestServiceClient(dial(t, addr))
	c := &ftCaller{stop: make(chan struct{})}
	t.Cleanup(c.halt) // before the client connection closes, if the test ends early
	first := make(chan struct{})
	var once sync.Once
	for range 2 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			tick := time.NewTicker(time.Millisecond) // pacing, not synchronization
			defer tick.Stop()
			for {
				select {
				case <-c.stop:
					return
				case <-tick.C:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				start := time.Now()
				_, err := tc.EmptyCall(ctx, &testpb.Empty{})
				cancel()
				lat := time.Since(start)
				c.n.Add(1)
				for {
					m := c.maxLat.Load()
					if int64(lat) <= m || c.maxLat.CompareAndSwap(m, int64(lat)) {
						break
					}
				}
				if err != nil {
					c.fails.Add(1)
					c.mu.Lock()
					if c.firstErr == nil {
						c.firstErr = err
					}
					c.mu.Unlock()
					continue
				}
				once.Do(func() { close(first) })
			}
		}()
	}
	select {
	case <-first:
	case <-time.After(ftWait):
		c.halt()
		t.Fatalf("the well-behaved caller got no call through in %v: %v", ftWait, c.firstErr)
	}
	return c
}

// begin marks the start of the abuse: finish wants calls made after it.
func (c *ftCaller) begin() { c.mark.Store(c.n.Load()) }

// finish waits until the caller made at least 20 calls since begin, stops it, and fails
// t if any call failed.
func (c *ftCaller) finish(t *testing.T, what string) {
	t.Helper()
	// Polling the counter; past ftWait the check below fails.
	_, _ = wait.Until(context.Background(), ftWait, func() error {
		if n := c.n.Load() - c.mark.Load(); n < 20 {
			return fmt.Errorf("%d calls", n)
		}
		return nil
	})
	c.halt()
	since := c.n.Load() - c.mark.Load()
	t.Logf("%s: the well-behaved caller made %d calls (%d since the abuse began), %d failed, slowest %v", what,
		c.n.Load(), since, c.fails.Load(), time.Duration(c.maxLat.Load()).Round(time.Millisecond))
	if c.fails.Load() > 0 {
		t.Errorf("%s: %d of the well-behaved caller's %d calls failed; first: %v", what, c.fails.Load(), c.n.Load(), c.firstErr)
	}
	if since < 20 {
		t.Errorf("%s: the well-behaved caller made only %d calls in %v after the abuse began", what, since, ftWait)
	}
}

// ftHeapInUse is the heap in use after a full collection.
func ftHeapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// ftHeapWatch samples the heap every few milliseconds during a test: it keeps the peak,
// and stops the test binary if the heap passes ftHeapAbort.
type ftHeapWatch struct {
	base     uint64 // HeapInuse after GC, at the start or the last reset
	baseObjs uint64
	peak     atomic.Uint64 // heap object bytes (live and not yet swept)
	name     atomic.Pointer[string]
	stop     chan struct{}
	done     chan struct{}
}

func ftWatchHeap(t *testing.T) *ftHeapWatch {
	h := &ftHeapWatch{stop: make(chan struct{}), done: make(chan struct{})}
	h.reset(t)
	go func() {
		defer close(h.done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
			metrics.Read(s)
			v := s[0].Value.Uint64()
			if v > h.peak.Load() {
				h.peak.Store(v)
			}
			if v > ftHeapAbort {
				name := *h.name.Load()
				fmt.Fprintf(os.Stderr, "\n%s: heap at %d MiB (limit %d MiB): the relay allocates without bound; stopping the test binary\n",
					name, v>>20, ftHeapAbort>>20)
				panic(fmt.Sprintf("%s: heap grew past %d MiB", name, ftHeapAbort>>20))
			}
		}
	}()
	t.Cleanup(func() { close(h.stop); <-h.done })
	return h
}

// reset takes the heap now as the base of t's checks.
func (h *ftHeapWatch) reset(t *testing.T) {
	name := t.Name()
	h.name.Store(&name)
	h.base = ftHeapInUse()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	h.baseObjs = s[0].Value.Uint64()
	h.peak.Store(0)
}

// check fails t if the heap in use grew by more than maxGrowth since the last reset, or
// its peak by more than maxPeak (0: not checked).
func (h *ftHeapWatch) check(t *testing.T, what string, maxGrowth, maxPeak uint64) {
	t.Helper()
	after := ftHeapInUse()
	peak := h.peak.Load()
	var growth, peakGrowth int64 = int64(after) - int64(h.base), int64(peak) - int64(h.baseObjs)
	t.Logf("%s: heap in use %d → %d KiB (%+d KiB), peak +%d KiB", what, h.base>>10, after>>10, growth>>10, max(peakGrowth, 0)>>10)
	if growth > int64(maxGrowth) {
		t.Errorf("%s: the heap in use grew by %d KiB (bound %d KiB)", what, growth>>10, maxGrowth>>10)
	}
	if maxPeak > 0 && peakGrowth > int64(maxPeak) {
		t.Errorf("%s: the heap peaked %d MiB over its start (bound %d MiB)", what, peakGrowth>>20, maxPeak>>20)
	}
}

// ftProcCPU is the CPU time this process used so far (Linux /proc; ok false elsewhere).
func ftProcCPU() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stt, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+stt) * 10 * time.Millisecond, true // USER_HZ = 100
}

// ftWantQuiet fails t if the process keeps a core busy while nothing is asked of it.
func ftWantQuiet(t *testing.T) {
	t.Helper()
	c0, ok := ftProcCPU()
	if !ok {
		t.Log("no /proc/self/stat: CPU not checked")
		return
	}
	const window = 300 * time.Millisecond
	time.Sleep(window) // a measurement window, not a synchronization
	c1, _ := ftProcCPU()
	t.Logf("CPU used in %v idle: %v", window, c1-c0)
	if c1-c0 > window/2 {
		t.Errorf("the process used %v of CPU in %v with nothing to do: something spins", c1-c0, window)
	}
}
