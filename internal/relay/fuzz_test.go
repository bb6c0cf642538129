package relay_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/relay"
	"github.com/strait-mesh/strait/test/wait"
)

// Bounds of one fuzz iteration of FuzzServeConn.
const (
	// fuzzWriteTimeout bounds writing the input: a relay whose read loop stops reading
	// while its output is being drained is hung.
	fuzzWriteTimeout = 5 * time.Second
	// fuzzEndTimeout bounds the end of ServeConn after the client closed its side.
	fuzzEndTimeout = 5 * time.Second
	// fuzzHeapSlack is how far HeapInuse may grow over its value before the first
	// iteration, with the connection open and after it ended.
	fuzzHeapSlack = 64 << 20
	// fuzzGoroutineSlack is how many goroutines more than before the first iteration may
	// be left once a connection ended (the pool's connections to the backend and the
	// backend's own).
	fuzzGoroutineSlack = 64
	// fuzzEngineJump: heap growth between two iterations (no relay connection is open
	// then) larger than this is the fuzzing engine's own (its mutator allocates a 100 MB
	// scratch buffer before its first mutation) and moves the baseline.
	fuzzEngineJump = 32 << 20
	// fuzzRunaway is the heap growth at which a watchdog ends the process (a panic the
	// fuzzer records with its input) before the machine runs out of memory: a relay that
	// allocates without bound would otherwise take the OOM killer to the test.
	fuzzRunaway = 256 << 20
)

// fuzzRig is one relay server, with a router that sends gRPC streams to a pool dialing a
// small h2c backend (it echoes the request body with grpc-status 0) and every other stream
// to an echoing fallback handler. One rig serves every iteration.
type fuzzRig struct {
	srv      *relay.Server
	pool     *relay.Pool
	set      *balance.Set
	ln       net.Listener // the relay's listener
	backend  net.Listener
	mu       sync.Mutex
	bconns   map[net.Conn]struct{}
	wg       sync.WaitGroup
	heapBase uint64 // HeapInuse before the first iteration, plus the fuzzer's own jumps
	heapEnd  uint64 // heap object bytes at the end of the last iteration
	goBase   int
}

type fuzzRouter struct{ r *fuzzRig }

func (fr fuzzRouter) Route(q *relay.Request) relay.Decision {
	if !strings.HasPrefix(q.ContentType, "application/grpc") {
		return relay.Decision{}
	}
	return relay.Decision{Pool: fr.r.pool, Set: fr.r.set, Protocol: "grpc", Peer: "fuzz"}
}

func newFuzzRig(f testing.TB) *fuzzRig {
	r := &fuzzRig{bconns: map[net.Conn]struct{}{}}
	var err error
	if r.backend, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		f.Fatal(err)
	}
	if r.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		f.Fatal(err)
	}
	backend := http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(q.Body, 1<<20))
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		_, _ = w.Write(b)
		w.Header().Set("Grpc-Status", "0")
	})
	h2 := &http2.Server{}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := r.backend.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.bconns[c] = struct{}{}
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				h2.ServeConn(c, &http2.ServeConnOpts{Handler: backend, BaseConfig: &http.Server{}})
				c.Close()
				r.mu.Lock()
				delete(r.bconns, c)
				r.mu.Unlock()
			}()
		}
	}()
	r.set = balance.NewSet([]string{r.backend.Addr().String()})
	r.pool = relay.NewPool(relay.PoolOptions{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, DialTimeout: time.Second})
	fallback := http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(200)
		_, _ = io.Copy(w, io.LimitReader(q.Body, 1<<20))
	})
	r.srv = relay.NewServer(relay.Options{Router: fuzzRouter{r}, Fallback: fallback, MaxHeaderBytes: 16 << 10, DropPrefix: "strait-"})
	f.Cleanup(func() {
		r.ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.srv.Shutdown(ctx); err != nil {
			f.Errorf("shutdown: %v", err)
		}
		r.pool.Close()
		r.pool.Wait()
		r.backend.Close()
		r.mu.Lock()
		for c := range r.bconns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
		if heap := heapInuse(true); heap > r.heapBase+fuzzHeapSlack {
			f.Errorf("HeapInuse %d MiB after the run, %d MiB before", heap>>20, r.heapBase>>20)
		}
	})
	r.heapBase = heapInuse(true)
	r.goBase = runtime.NumGoroutine()
	return r
}

func heapInuse(gc bool) uint64 {
	if gc {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// heapObjects is the bytes of heap objects, live or not yet collected (no stop-the-world).
func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// checkHeap fails the test if the heap (after a collection, when over the bound) is more
// than fuzzHeapSlack over its value before the first iteration.
func (r *fuzzRig) checkHeap(t testing.TB, when string) {
	t.Helper()
	if heapInuse(false) <= r.heapBase+fuzzHeapSlack {
		return
	}
	if heap := heapInuse(true); heap > r.heapBase+fuzzHeapSlack {
		t.Fatalf("HeapInuse %d MiB %s, baseline %d MiB (bound +%d MiB)", heap>>20, when, r.heapBase>>20, fuzzHeapSlack>>20)
	}
}

// watch starts the runaway-heap watchdog for one iteration; stop ends it.
func (r *fuzzRig) watch(in []byte) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if heapObjects() <= r.heapBase+fuzzRunaway {
				continue
			}
			if heap := heapInuse(true); heap > r.heapBase+fuzzRunaway {
				panic(fmt.Sprintf("relay fuzz: HeapInuse %d MiB, baseline %d MiB, while serving a %d-byte input: the relay allocates without bound",
					heap>>20, r.heapBase>>20, len(in)))
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// run serves one connection whose caller writes the preface, then in, then closes its
// side, reading (and discarding) everything the relay writes.
func (r *fuzzRig) run(t testing.TB, in []byte) {
	if now := heapObjects(); r.heapEnd != 0 && now > r.heapEnd+fuzzEngineJump {
		r.heapBase += now - r.heapEnd
	}
	c, err := net.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := r.ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		r.srv.ServeConn(context.Background(), sc, nil, nil)
	}()
	read := make(chan struct{})
	go func() {
		defer close(read)
		_, _ = io.Copy(io.Discard, c)
	}()
	defer r.watch(in)()
	ended := false
	defer func() {
		if !ended {
			// Failing: do not leave the connection to a later iteration.
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			sc.Close()
			<-served
			<-read
		}
	}()

	_ = c.SetWriteDeadline(time.Now().Add(fuzzWriteTimeout))
	_, err = c.Write(append([]byte(relay.Preface), in...))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the relay did not read %d bytes of input within %v", len(in), fuzzWriteTimeout)
	}
	r.checkHeap(t, "with the connection open")
	_ = c.(*net.TCPConn).CloseWrite()
	select {
	case <-served:
	case <-time.After(fuzzEndTimeout):
		t.Fatalf("ServeConn did not return within %v of the client closing its side", fuzzEndTimeout)
	}
	ended = true
	_ = c.(*net.TCPConn).SetLinger(0) // no TIME_WAIT left per iteration
	c.Close()
	<-read

	r.checkHeap(t, "after the connection ended")
	wait.ForNil(t, 10*time.Second, "the connection's goroutines to end", func() error {
		if n := runtime.NumGoroutine(); n > r.goBase+fuzzGoroutineSlack {
			return fmt.Errorf("%d goroutines after the connection ended, %d before the first iteration", n, r.goBase)
		}
		return nil
	})
	r.heapEnd = heapObjects()
}

// TestFuzzRig checks that the rig relays: the good gRPC call of the seeds is answered by
// the backend through the relay.
func TestFuzzRig(t *testing.T) {
	r := newFuzzRig(t)
	c, err := net.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := r.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		r.srv.ServeConn(context.Background(), sc, nil, nil)
	}()
	defer func() { c.Close(); <-served }()
	if _, err := c.Write(append([]byte(relay.Preface), fuzzSeeds()[0]...)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	fr := http2.NewFramer(io.Discard, c)
	var body []byte
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("before the response ended: %v (body %q)", err, body)
		}
		if f.Header().StreamID != 1 {
			continue
		}
		if d, ok := f.(*http2.DataFrame); ok {
			body = append(body, d.Data()...)
		}
		if f.Header().Flags.Has(http2.FlagHeadersEndStream) || f.Header().Type == http2.FrameRSTStream {
			break
		}
	}
	if !bytes.Equal(body, grpcMessage([]byte("hello"))) {
		t.Fatalf("response body %q", body)
	}
	if relayed, fallback := r.srv.Stats(); relayed != 1 || fallback != 0 {
		t.Fatalf("relayed %d, fallback %d", relayed, fallback)
	}
}

// FuzzServeConn writes arbitrary bytes after the client preface to a relay connection:
// the relay must not panic, must keep reading, must end the connection within
// fuzzEndTimeout once the caller closed its side, and must not keep memory or goroutines.
func FuzzServeConn(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	r := newFuzzRig(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		r.run(t, in)
	})
}

// seedBuf builds frame sequences.
type seedBuf struct {
	buf  bytes.Buffer
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func newSeedBuf() *seedBuf {
	s := &seedBuf{}
	s.fr = http2.NewFramer(&s.buf, nil)
	s.fr.AllowIllegalWrites = true
	s.henc = hpack.NewEncoder(&s.hbuf)
	return s
}

func (s *seedBuf) block(kv ...string) []byte {
	s.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = s.henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(s.hbuf.Bytes())
}

func (s *seedBuf) headers(id uint32, endStream, endHeaders bool, kv ...string) {
	_ = s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.block(kv...), EndStream: endStream, EndHeaders: endHeaders})
}

func (s *seedBuf) grpcHeaders(id uint32, endStream bool) {
	s.headers(id, endStream, true, ":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/UnaryCall",
		":authority", "relay", "content-type", "application/grpc", "te", "trailers", "grpc-timeout", "5S")
}

func (s *seedBuf) raw(typ http2.FrameType, flags http2.Flags, id uint32, payload []byte) {
	_ = s.fr.WriteRawFrame(typ, flags, id, payload)
}

// grpcMessage is a gRPC length-prefixed message.
func grpcMessage(body []byte) []byte {
	m := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(m[1:], uint32(len(body)))
	return append(m, body...)
}

func fuzzSeeds() [][]byte {
	var seeds [][]byte
	add := func(build func(s *seedBuf)) {
		s := newSeedBuf()
		build(s)
		seeds = append(seeds, bytes.Clone(s.buf.Bytes()))
	}

	// A good gRPC call, and two on one connection with the SETTINGS ACK.
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		s.grpcHeaders(1, false)
		_ = s.fr.WriteData(1, true, grpcMessage([]byte("hello")))
	})
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
		_ = s.fr.WriteSettingsAck()
		_ = s.fr.WriteWindowUpdate(0, 1<<20)
		for id := uint32(1); id <= 3; id += 2 {
			s.grpcHeaders(id, false)
			_ = s.fr.WriteData(id, false, grpcMessage(bytes.Repeat([]byte{'x'}, 100)))
			_ = s.fr.WriteData(id, true, nil)
		}
		_ = s.fr.WritePing(false, [8]byte{1})
		_ = s.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	// Fallback streams: a GET, and a POST with a body and trailers.
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		s.headers(1, true, true, ":method", "GET", ":scheme", "http", ":path", "/x", ":authority", "relay")
		s.headers(3, false, true, ":method", "POST", ":scheme", "http", ":path", "/echo", ":authority", "relay", "content-type", "text/plain")
		_ = s.fr.WriteData(3, false, []byte("body"))
		s.headers(3, true, true, "x-trailer", "t")
	})
	// Invalid SETTINGS values and shapes.
	for _, st := range []http2.Setting{
		{ID: http2.SettingMaxFrameSize, Val: 0},
		{ID: http2.SettingMaxFrameSize, Val: 16383},
		{ID: http2.SettingMaxFrameSize, Val: 1 << 24},
		{ID: http2.SettingEnablePush, Val: 2},
		{ID: http2.SettingInitialWindowSize, Val: 1 << 31},
		{ID: http2.SettingHeaderTableSize, Val: 1<<32 - 1},
		{ID: http2.SettingMaxHeaderListSize, Val: 0},
	} {
		add(func(s *seedBuf) {
			_ = s.fr.WriteSettings(st)
			s.grpcHeaders(1, false)
			_ = s.fr.WriteData(1, true, grpcMessage(bytes.Repeat([]byte{'y'}, 20000)))
		})
	}
	// MAX_FRAME_SIZE 0 with many responses in flight (each response written to this
	// connection must then be refused or split into frames of at least 16384).
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 0})
		for id := uint32(1); id < 80; id += 4 {
			s.grpcHeaders(id, true)
			s.headers(id+2, true, true, ":method", "GET", ":scheme", "http", ":path", "/x", ":authority", "relay")
		}
	})
	add(func(s *seedBuf) { s.raw(http2.FrameSettings, 0, 0, make([]byte, 5)) })
	add(func(s *seedBuf) { s.raw(http2.FrameSettings, http2.FlagSettingsAck, 0, make([]byte, 6)) })
	add(func(s *seedBuf) { s.raw(http2.FrameSettings, 0, 1, nil) })
	// WINDOW_UPDATE overflow, on the connection and on a stream; a zero increment.
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		_ = s.fr.WriteWindowUpdate(0, 1<<31-1)
		_ = s.fr.WriteWindowUpdate(0, 1<<31-1)
	})
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		s.grpcHeaders(1, false)
		_ = s.fr.WriteWindowUpdate(1, 1<<31-1)
		_ = s.fr.WriteWindowUpdate(1, 1<<31-1)
		_ = s.fr.WriteData(1, true, grpcMessage(nil))
	})
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		s.grpcHeaders(1, false)
		_ = s.fr.WriteWindowUpdate(1, 0)
		_ = s.fr.WriteWindowUpdate(0, 0)
	})
	// Rapid reset: HEADERS + RST_STREAM pairs, gRPC and fallback.
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		for id := uint32(1); id < 3000; id += 2 {
			s.grpcHeaders(id, false)
			_ = s.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	})
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		for id := uint32(1); id < 400; id += 2 {
			s.headers(id, false, true, ":method", "POST", ":scheme", "http", ":path", "/echo", ":authority", "relay")
			_ = s.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	})
	// CONTINUATION without END_HEADERS: empty ones, and ones that grow the block.
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		b := s.block(":method", "POST", ":scheme", "http", ":path", "/a.B/C", ":authority", "relay", "content-type", "application/grpc")
		_ = s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b})
		for range 5000 {
			_ = s.fr.WriteContinuation(1, false, nil)
		}
	})
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		_ = s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: s.block(":method", "POST")})
		lit := s.block("x-pad", strings.Repeat("p", 200))
		for range 1000 {
			_ = s.fr.WriteContinuation(1, false, lit)
		}
	})
	// A PING flood, and a SETTINGS flood.
	add(func(s *seedBuf) {
		_ = s.fr.WriteSettings()
		for i := range 3000 {
			_ = s.fr.WritePing(false, [8]byte{byte(i), byte(i >> 8)})
		}
	})
	add(func(s *seedBuf) {
		for range 3000 {
			_ = s.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
		}
	})
	// Protocol errors: DATA on stream 0, HEADERS on an even stream, a stream ID going
	// backwards, a self-dependent PRIORITY, bad header fields, DATA over the window,
	// invalid HPACK, an oversized frame.
	add(func(s *seedBuf) { _ = s.fr.WriteData(0, true, []byte("x")) })
	add(func(s *seedBuf) { s.grpcHeaders(2, true) })
	add(func(s *seedBuf) {
		s.grpcHeaders(5, false)
		s.grpcHeaders(3, true)
		_ = s.fr.WriteData(5, true, grpcMessage(nil))
	})
	add(func(s *seedBuf) {
		_ = s.fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 15})
		s.grpcHeaders(1, true)
	})
	add(func(s *seedBuf) {
		s.headers(1, true, true, ":method", "POST", ":scheme", "http", ":path", "/a.B/C", ":authority", "relay", "content-type", "application/grpc", "Upper", "x")
		s.headers(3, true, true, ":method", "POST", ":path", "/a.B/C", "content-type", "application/grpc", "connection", "close")
		s.headers(5, true, true, "content-type", "application/grpc", ":method", "POST", ":scheme", "http", ":path", "/a.B/C")
		s.headers(7, true, true, ":method", "POST", ":scheme", "http", ":path", "", ":authority", "relay", "content-type", "application/grpc")
		s.headers(9, false, true, ":method", "POST", ":scheme", "http", ":path", "/a.B/C", ":authority", "relay", "content-type", "application/grpc", "content-length", "1")
		_ = s.fr.WriteData(9, true, []byte("too long"))
	})
	add(func(s *seedBuf) {
		s.grpcHeaders(1, false)
		chunk := bytes.Repeat([]byte{'z'}, 16384)
		for range 6 {
			_ = s.fr.WriteData(1, false, chunk)
		}
	})
	add(func(s *seedBuf) {
		_ = s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x80, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x3f, 0xe1, 0xff, 0xff, 0xff}, EndHeaders: true, EndStream: true})
	})
	add(func(s *seedBuf) { s.buf.Write([]byte{0xff, 0xff, 0xff, 0x0, 0x0, 0x0, 0x0, 0x0, 0x1}) })
	add(func(s *seedBuf) {
		s.grpcHeaders(1, false)
		_ = s.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = s.fr.WriteData(1, true, []byte("after reset"))
		_ = s.fr.WriteRSTStream(7, http2.ErrCodeCancel) // idle stream
		_ = s.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: s.block(":method", "GET"), EndHeaders: true})
	})
	// Garbage.
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 9, 64, 4096} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		seeds = append(seeds, b)
	}
	seeds = append(seeds, nil, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	return seeds
}
