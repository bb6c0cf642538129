package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/proxy"
)

const (
	// streamWindow is the receive window each stream gets from us: what a sender may
	// have in flight on one stream, and so the most one stream can have queued here.
	streamWindow = 256 << 10
	// connWindow is the connection's receive window. Streams bound the memory, so the
	// connection window only has to stay out of the way.
	connWindow = 1 << 30
	// maxReadFrame is the largest frame we accept (SETTINGS_MAX_FRAME_SIZE).
	maxReadFrame = 1 << 20
	// initialMaxStreams is assumed for a next hop until its SETTINGS arrive.
	initialMaxStreams = 100
	writeTimeout      = 10 * time.Second
	readBufferSize    = 64 << 10
)

var errReset = errors.New("relay: stream reset")

// leg is one stream's presence on one connection: legs[0] on the caller's connection,
// legs[1] on the next hop's.
type leg struct {
	s   *stream
	c   *conn
	id  uint32
	idx uint8

	// Guarded by c.wmu.
	sendWin int32  // what the peer lets us send on this stream
	recvWin int32  // what the peer may still send us on this stream
	owed    int32  // credit forwarded onward but not yet returned to the peer
	pend    []byte // DATA waiting for send window, in order
	pendEnd bool   // END_STREAM follows pend
	pendTrl []hpack.HeaderField
	hasTrl  bool // pendTrl (trailers) follow pend
	blocked bool // in c.blocked
	sentEnd bool // we ended our side (END_STREAM or RST)
	recvEnd bool // the peer ended its side
	reset   bool
}

// stream is one relayed call: a stream on the caller's connection and one on the next
// hop's.
type stream struct {
	legs    [2]leg
	srv     *Server
	ep      epDone
	proto   string
	peer    string
	start   time.Time
	halves  atomic.Uint32 // bit 0: the request direction ended; bit 1: the response
	done    atomic.Bool
	started atomic.Bool  // response headers went to the caller
	code    atomic.Int32 // grpc-status for metrics; -1 while unknown
	br      *bridge      // set for streams served by the fallback handler
}

type epDone interface{ Done() }

// halfDone records that direction dir (the index of the leg the data came from) ended,
// and finishes the stream when both have.
func (s *stream) halfDone(lp *loop, dir uint8) {
	if s.halves.Or(1<<dir)|1<<dir == 3 {
		s.finish(lp)
	}
}

func (s *stream) finish(lp *loop) {
	if s.done.Swap(true) {
		return
	}
	for i := range s.legs {
		if l := &s.legs[i]; l.c != nil {
			l.c.removeStream(l)
		}
	}
	if s.ep != nil {
		s.ep.Done()
	}
	if s.srv != nil && s.br == nil {
		code := s.code.Load()
		if code < 0 {
			code = int32(codes.Unknown)
		}
		s.srv.obs.CallEnded()
		s.srv.obs.Observe(s.proto, s.peer, codes.Code(code).String(), time.Since(s.start))
	}
}

// loop is the scratch state of one goroutine that writes into connections: which ones it
// dirtied (flushed together, once per pass) and credits to return.
type loop struct {
	dirty   []*conn
	credits []credit
}

type credit struct {
	l *leg
	n int
}

func (lp *loop) mark(c *conn) {
	for _, d := range lp.dirty {
		if d == c {
			return
		}
	}
	lp.dirty = append(lp.dirty, c)
}

func (lp *loop) flush() {
	for i, c := range lp.dirty {
		c.flush()
		lp.dirty[i] = nil
	}
	lp.dirty = lp.dirty[:0]
}

// conn is one HTTP/2 connection: to a caller (server side, idx 0) or to a next hop
// (client side, idx 1). One goroutine reads it and forwards inline; any goroutine may
// write into it under wmu, and the writer that dirtied it flushes it.
type conn struct {
	nc   net.Conn
	br   *bufio.Reader
	fr   *http2.Framer
	idx  uint8
	srv  *Server // server side
	pool *Pool   // client side
	ep   *poolEP // client side
	log  *slog.Logger
	ctx  context.Context // server side: the context of fallback requests
	stop context.CancelFunc
	info any
	lp   loop
	hb   headerBlock
	done chan struct{}

	wmu          sync.Mutex
	wcond        sync.Cond
	wbuf         []byte
	hbuf         bytes.Buffer
	henc         *hpack.Encoder
	sendConnWin  int64
	connOwed     int64
	peerInitWin  int32
	peerMaxFrame int
	blocked      []*leg
	nextID       uint32
	dead         bool
	wdl          int64 // the write deadline, unix nanoseconds

	mu      sync.Mutex
	streams map[uint32]*leg
	maxID   uint32
	// idleSince is when the last stream ended (server side), for the idle sweep.
	idleSince atomic.Int64

	active         atomic.Int32
	peerMaxStreams atomic.Uint32
	goaway         atomic.Bool
}

func newConn(nc net.Conn, br *bufio.Reader, idx uint8, maxHeaderBytes int, log *slog.Logger) *conn {
	if br == nil {
		br = bufio.NewReaderSize(nc, readBufferSize)
	}
	c := &conn{
		nc:           nc,
		br:           br,
		idx:          idx,
		log:          log,
		done:         make(chan struct{}),
		sendConnWin:  65535,
		peerInitWin:  65535,
		peerMaxFrame: 16384,
		streams:      make(map[uint32]*leg),
		nextID:       1,
	}
	c.wcond.L = &c.wmu
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(io.Discard, br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(maxReadFrame)
	c.hb.init(maxHeaderBytes)
	c.peerMaxStreams.Store(initialMaxStreams)
	return c
}

// settings appends our SETTINGS and the connection window.
func (c *conn) writeSettings(maxStreams uint32, maxHeaderBytes int) {
	s := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxFrameSize, Val: maxReadFrame},
		{ID: http2.SettingMaxHeaderListSize, Val: uint32(maxHeaderBytes)},
	}
	if c.idx == 0 {
		s = append(s, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxStreams})
	} else {
		s = append(s, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	c.wmu.Lock()
	c.wbuf = appendSettings(c.wbuf, s...)
	c.wbuf = appendWindowUpdate(c.wbuf, 0, connWindow-65535)
	c.wmu.Unlock()
}

func (c *conn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.wbuf) == 0 || c.dead {
		c.wbuf = c.wbuf[:0]
		return
	}
	// The write deadline moves only when less than half of it is left: resetting a
	// runtime timer on every write costs more than the write often does.
	if now := time.Now().UnixNano(); c.wdl-now < int64(writeTimeout/2) {
		c.wdl = now + int64(writeTimeout)
		_ = c.nc.SetWriteDeadline(time.Unix(0, c.wdl))
	}
	_, err := c.nc.Write(c.wbuf)
	if cap(c.wbuf) > 4<<20 {
		c.wbuf = nil
	} else {
		c.wbuf = c.wbuf[:0]
	}
	if err != nil {
		c.dead = true
		c.wcond.Broadcast()
		c.nc.Close() // the read loop ends and cleans up
	}
}

func (c *conn) lookup(id uint32) *leg {
	c.mu.Lock()
	l := c.streams[id]
	c.mu.Unlock()
	return l
}

func (c *conn) addStream(l *leg) {
	c.mu.Lock()
	c.streams[l.id] = l
	if c.idx == 0 {
		c.active.Add(1)
	}
	c.mu.Unlock()
}

func (c *conn) removeStream(l *leg) {
	c.mu.Lock()
	if c.streams[l.id] != l {
		c.mu.Unlock()
		return
	}
	delete(c.streams, l.id)
	n := c.active.Add(-1)
	if n == 0 && c.idx == 0 {
		c.idleSince.Store(time.Now().UnixNano())
	}
	c.mu.Unlock()
	if n == 0 && c.goaway.Load() && c.idx == 1 {
		c.nc.Close() // a drained connection to a next hop
	}
}

// goAway stops new streams on a caller's connection and, the first time, tells the caller
// with GOAWAY which streams it took. It returns how many are still open.
func (c *conn) goAway() int32 {
	c.mu.Lock()
	first := !c.goaway.Swap(true)
	last, n := c.maxID, c.active.Load()
	c.mu.Unlock()
	if first {
		c.wmu.Lock()
		c.wbuf = appendGoAway(c.wbuf, last, http2.ErrCodeNo)
		c.wmu.Unlock()
		c.flush()
	}
	return n
}

// reserve takes one stream slot on a next-hop connection.
func (c *conn) reserve() bool {
	if c.goaway.Load() {
		return false
	}
	if n := c.active.Add(1); uint32(n) > c.peerMaxStreams.Load() {
		c.active.Add(-1)
		return false
	}
	return true
}

// serve reads frames until the connection ends, forwarding each inline.
func (c *conn) serve() {
	defer close(c.done)
	defer c.teardown()
	lp := &c.lp
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.streamError(lp, se)
				c.maybeFlush(lp)
				continue
			}
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &ce):
				c.wmu.Lock()
				c.wbuf = appendGoAway(c.wbuf, c.lastID(), http2.ErrCode(ce))
				c.wmu.Unlock()
				lp.mark(c)
			}
			lp.flush()
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.log.Debug("relay connection ended", "remote", c.nc.RemoteAddr().String(), "err", err)
			}
			return
		}
		c.handle(lp, f)
		if c.hb.err != nil {
			c.wmu.Lock()
			c.wbuf = appendGoAway(c.wbuf, c.lastID(), http2.ErrCodeCompression)
			c.wmu.Unlock()
			lp.mark(c)
			lp.flush()
			c.log.Debug("relay connection ended", "remote", c.nc.RemoteAddr().String(), "err", c.hb.err)
			return
		}
		c.maybeFlush(lp)
	}
}

// maybeFlush flushes what this pass wrote once no whole frame is waiting to be read.
func (c *conn) maybeFlush(lp *loop) {
	if len(lp.dirty) == 0 {
		return
	}
	if n := c.br.Buffered(); n >= frameHeaderLen {
		h, _ := c.br.Peek(frameHeaderLen)
		if n >= frameHeaderLen+int(h[0])<<16|int(h[1])<<8|int(h[2]) {
			return
		}
	}
	lp.flush()
}

func (c *conn) lastID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxID
}

func (c *conn) handle(lp *loop, f http2.Frame) {
	switch f := f.(type) {
	case *http2.DataFrame:
		c.onData(lp, f)
	case *http2.HeadersFrame:
		if c.hb.start(f.StreamID, f.StreamEnded(), f.HeaderBlockFragment(), f.HeadersEnded()) {
			c.onHeaders(lp, &c.hb)
		}
	case *http2.ContinuationFrame:
		if c.hb.more(f.HeaderBlockFragment(), f.HeadersEnded()) {
			c.onHeaders(lp, &c.hb)
		}
	case *http2.WindowUpdateFrame:
		c.onWindowUpdate(lp, f.StreamID, f.Increment)
	case *http2.SettingsFrame:
		c.onSettings(lp, f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.wmu.Lock()
			c.wbuf = appendPingAck(c.wbuf, f.Data)
			c.wmu.Unlock()
			lp.mark(c)
		}
	case *http2.RSTStreamFrame:
		if l := c.lookup(f.StreamID); l != nil {
			c.onReset(lp, l, f.ErrCode)
		}
	case *http2.GoAwayFrame:
		c.onGoAway(lp, f.LastStreamID)
	}
}

func (c *conn) onData(lp *loop, f *http2.DataFrame) {
	n := int32(f.Header().Length)
	l := c.lookup(f.StreamID)
	data := f.Data()
	end := f.StreamEnded()
	c.wmu.Lock()
	c.connOwed += int64(n)
	if c.connOwed >= connWindow/2 {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(c.connOwed))
		c.connOwed = 0
		lp.mark(c)
	}
	if l == nil || l.recvEnd {
		c.wmu.Unlock()
		return
	}
	l.recvWin -= n
	if l.recvWin < 0 {
		c.wmu.Unlock()
		c.resetBoth(lp, l, http2.ErrCodeFlowControl, http2.ErrCodeCancel)
		return
	}
	if end {
		l.recvEnd = true
	}
	c.wmu.Unlock()
	if pad := int(n) - len(data); pad > 0 {
		c.credit(lp, l, pad)
	}
	c.forwardData(lp, l, data, end)
}

// forwardData sends data that arrived on leg l to the stream's other leg: at once as far
// as the windows allow, the rest queued until they open.
func (c *conn) forwardData(lp *loop, l *leg, data []byte, end bool) {
	s := l.s
	if s.br != nil {
		s.br.push(lp, data, end)
		return
	}
	dst := &s.legs[1-l.idx]
	dc := dst.c
	if dc == nil {
		c.credit(lp, l, len(data))
		return
	}
	dc.wmu.Lock()
	sent, endSent := dc.sendDataLocked(dst, data, end)
	dc.wmu.Unlock()
	lp.mark(dc)
	if sent > 0 {
		c.credit(lp, l, sent)
	}
	if endSent {
		s.halfDone(lp, l.idx)
	}
}

// sendDataLocked writes data on leg l as far as the windows allow and queues the rest. It
// returns how many bytes left (or were dropped, on a closed leg) and whether END_STREAM
// went out.
func (c *conn) sendDataLocked(l *leg, data []byte, end bool) (sent int, endSent bool) {
	if l.reset || l.sentEnd || c.dead {
		return len(data), false
	}
	if len(l.pend) == 0 && !l.pendEnd && !l.hasTrl {
		n := min(int64(len(data)), int64(l.sendWin), c.sendConnWin)
		if n < 0 {
			n = 0
		}
		if n > 0 || (end && len(data) == 0) {
			fin := end && int(n) == len(data)
			c.wbuf = appendData(c.wbuf, l.id, data[:n], fin, c.peerMaxFrame)
			l.sendWin -= int32(n)
			c.sendConnWin -= n
			if fin {
				l.sentEnd = true
				return int(n), true
			}
		}
		sent = int(n)
		data = data[n:]
		if len(data) == 0 && !end {
			return sent, false
		}
	}
	if l.pend == nil && len(data) > 0 {
		l.pend = make([]byte, 0, max(len(data), 16<<10))
	}
	l.pend = append(l.pend, data...)
	if end {
		l.pendEnd = true
	}
	if !l.blocked {
		l.blocked = true
		c.blocked = append(c.blocked, l)
	}
	return sent, false
}

// drainLocked sends what the blocked legs queued, as far as the windows now allow. The
// credits to return to the senders are collected in lp.credits.
func (c *conn) drainLocked(lp *loop) {
	kept := c.blocked[:0]
	for _, l := range c.blocked {
		if l.reset || l.sentEnd || c.dead {
			l.blocked, l.pend, l.hasTrl, l.pendTrl = false, nil, false, nil
			continue
		}
		n := min(int64(len(l.pend)), int64(l.sendWin), c.sendConnWin)
		if n < 0 {
			n = 0
		}
		rest := len(l.pend) - int(n)
		fin := rest == 0 && l.pendEnd && !l.hasTrl
		if n > 0 || fin {
			c.wbuf = appendData(c.wbuf, l.id, l.pend[:n], fin, c.peerMaxFrame)
			l.sendWin -= int32(n)
			c.sendConnWin -= n
			if n > 0 {
				lp.credits = append(lp.credits, credit{&l.s.legs[1-l.idx], int(n)})
			}
			l.pend = l.pend[:copy(l.pend, l.pend[n:])]
		}
		if rest > 0 {
			kept = append(kept, l)
			continue
		}
		l.blocked = false
		l.pend = nil
		if l.hasTrl {
			c.writeHeadersLocked(l.id, l.pendTrl, "", nil, true)
			l.hasTrl, l.pendTrl = false, nil
			fin = true
		}
		if fin {
			l.sentEnd = true
			lp.credits = append(lp.credits, credit{l: l, n: -1}) // END_STREAM went out
		}
	}
	for i := len(kept); i < len(c.blocked); i++ {
		c.blocked[i] = nil
	}
	c.blocked = kept
}

// returnCredits hands back what drainLocked collected (after c.wmu is released).
func (c *conn) returnCredits(lp *loop) {
	for i, cr := range lp.credits {
		lp.credits[i] = credit{}
		if cr.n < 0 {
			cr.l.s.halfDone(lp, 1-cr.l.idx)
			continue
		}
		cr.l.c.credit(lp, cr.l, cr.n)
	}
	lp.credits = lp.credits[:0]
}

// credit returns n bytes of stream window to the sender of leg l once half the window is
// owed (the connection window is returned as data arrives).
func (c *conn) credit(lp *loop, l *leg, n int) {
	c.wmu.Lock()
	if !l.recvEnd && !l.reset && !c.dead {
		l.recvWin += int32(n)
		l.owed += int32(n)
		if l.owed >= streamWindow/2 {
			c.wbuf = appendWindowUpdate(c.wbuf, l.id, uint32(l.owed))
			l.owed = 0
			lp.mark(c)
		}
	}
	c.wmu.Unlock()
}

func (c *conn) onWindowUpdate(lp *loop, id, incr uint32) {
	c.wmu.Lock()
	if id == 0 {
		c.sendConnWin += int64(incr)
	} else if l := c.lookup(id); l != nil {
		l.sendWin += int32(incr)
	}
	if len(c.blocked) > 0 {
		c.drainLocked(lp)
		lp.mark(c)
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
	c.returnCredits(lp)
}

func (c *conn) onSettings(lp *loop, f *http2.SettingsFrame) {
	if f.IsAck() {
		return
	}
	c.wmu.Lock()
	_ = f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int32(s.Val) - c.peerInitWin
			c.peerInitWin = int32(s.Val)
			c.mu.Lock()
			for _, l := range c.streams {
				l.sendWin += delta
			}
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(s.Val)
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams.Store(s.Val)
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	c.wbuf = appendSettingsAck(c.wbuf)
	if len(c.blocked) > 0 {
		c.drainLocked(lp)
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
	lp.mark(c)
	c.returnCredits(lp)
}

// writeHeadersLocked HPACK-encodes fields for this connection, without connection-specific
// fields and fields whose name starts with drop, then add.
func (c *conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, drop string, add []hpack.HeaderField, end bool) {
	c.hbuf.Reset()
	for _, f := range fields {
		if connectionSpecific(f.Name) || (drop != "" && len(f.Name) >= len(drop) && f.Name[:len(drop)] == drop) {
			continue
		}
		if f.Name == "grpc-timeout" {
			// It changes with every call: indexing it would only churn the table.
			f.Sensitive = true
		}
		_ = c.henc.WriteField(f)
	}
	for _, f := range add {
		_ = c.henc.WriteField(f)
	}
	c.wbuf = appendHeaders(c.wbuf, id, c.hbuf.Bytes(), end, c.peerMaxFrame)
}

func connectionSpecific(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

func (c *conn) onHeaders(lp *loop, f *headerBlock) {
	id := f.StreamID
	end := f.StreamEnded()
	l := c.lookup(id)
	if l == nil {
		if c.idx == 0 {
			c.srv.newStream(lp, c, f)
		}
		return
	}
	if f.Truncated {
		c.resetBoth(lp, l, http2.ErrCodeProtocol, http2.ErrCodeInternal)
		return
	}
	if end {
		c.wmu.Lock()
		l.recvEnd = true
		c.wmu.Unlock()
	}
	s := l.s
	if s.br != nil {
		// Request trailers of a fallback call: net/http has no use for them here.
		if end {
			s.br.push(lp, nil, true)
		}
		return
	}
	if l.idx == 1 {
		// From the next hop: the response headers, then perhaps trailers.
		if code, ok := grpcStatus(f.Fields); ok {
			s.code.Store(code)
		} else if !s.started.Load() && end {
			s.code.Store(int32(codes.Unknown))
		}
		s.started.Store(true)
	}
	dst := &s.legs[1-l.idx]
	dc := dst.c
	var drop string
	if l.idx == 0 {
		drop = s.srv.drop
	}
	dc.wmu.Lock()
	endSent := false
	switch {
	case dst.reset || dst.sentEnd || dc.dead:
	case len(dst.pend) > 0 || dst.pendEnd:
		dst.pendTrl = append(dst.pendTrl[:0], f.Fields...)
		dst.hasTrl = true
		dst.pendEnd = true
	default:
		dc.writeHeadersLocked(dst.id, f.Fields, drop, nil, end)
		if end {
			dst.sentEnd = true
			endSent = true
		}
	}
	dc.wmu.Unlock()
	lp.mark(dc)
	if endSent {
		s.halfDone(lp, l.idx)
	}
	if endSent && l.idx == 1 && !s.legs[0].recvEnd0() {
		// The answer is complete while the caller still sends: stop both (as an HTTP/2
		// server does when its handler returns before reading the whole request).
		c.resetBoth(lp, l, http2.ErrCodeNo, http2.ErrCodeNo)
	}
}

// recvEnd0 reads recvEnd under the leg's connection lock.
func (l *leg) recvEnd0() bool {
	l.c.wmu.Lock()
	defer l.c.wmu.Unlock()
	return l.recvEnd
}

// grpcStatus finds grpc-status among fields.
func grpcStatus(fields []hpack.HeaderField) (int32, bool) {
	for _, f := range fields {
		if f.Name == "grpc-status" {
			v := f.Value
			if len(v) == 0 || len(v) > 2 {
				return int32(codes.Unknown), true
			}
			n := int32(0)
			for i := 0; i < len(v); i++ {
				if v[i] < '0' || v[i] > '9' {
					return int32(codes.Unknown), true
				}
				n = n*10 + int32(v[i]-'0')
			}
			return n, true
		}
	}
	return 0, false
}

// onReset handles RST_STREAM from the peer of leg l: the other leg is reset too.
func (c *conn) onReset(lp *loop, l *leg, code http2.ErrCode) {
	s := l.s
	if l.idx == 1 {
		switch code {
		case http2.ErrCodeRefusedStream:
			s.code.CompareAndSwap(-1, int32(codes.Unavailable))
		case http2.ErrCodeCancel:
			s.code.CompareAndSwap(-1, int32(codes.Canceled))
		default:
			s.code.CompareAndSwap(-1, int32(codes.Internal))
		}
	} else {
		s.code.CompareAndSwap(-1, int32(codes.Canceled))
	}
	c.resetBoth(lp, l, 0, code)
}

// resetBoth ends stream s on both legs: on leg l with mine (0: l's peer reset it, send
// nothing), on the other leg with theirs.
func (c *conn) resetBoth(lp *loop, l *leg, mine, theirs http2.ErrCode) {
	s := l.s
	peerReset := mine == 0
	c.resetLeg(lp, l, mine, !peerReset)
	if s.br != nil {
		s.br.abort()
		return
	}
	if o := &s.legs[1-l.idx]; o.c != nil {
		o.c.resetLeg(lp, o, theirs, true)
	}
	s.code.CompareAndSwap(-1, int32(codes.Unavailable))
	s.halves.Store(3)
	s.finish(lp)
}

// resetLeg stops leg l; send says whether to send RST_STREAM (not if the peer reset it,
// nor if both sides already ended).
func (c *conn) resetLeg(lp *loop, l *leg, code http2.ErrCode, send bool) {
	c.wmu.Lock()
	if send && !c.dead && !(l.sentEnd && l.recvEnd) && !l.reset {
		c.wbuf = appendRST(c.wbuf, l.id, code)
		lp.mark(c)
	}
	l.reset, l.sentEnd, l.recvEnd = true, true, true
	l.pend, l.pendTrl, l.hasTrl = nil, nil, false
	c.wcond.Broadcast()
	c.wmu.Unlock()
}

// streamError resets a stream whose frames the framer refused.
func (c *conn) streamError(lp *loop, se http2.StreamError) {
	if l := c.lookup(se.StreamID); l != nil {
		c.resetBoth(lp, l, se.Code, http2.ErrCodeInternal)
		return
	}
	if c.idx == 0 {
		c.mu.Lock()
		if se.StreamID > c.maxID {
			c.maxID = se.StreamID
		}
		c.mu.Unlock()
	}
	c.wmu.Lock()
	c.wbuf = appendRST(c.wbuf, se.StreamID, se.Code)
	c.wmu.Unlock()
	lp.mark(c)
}

// onGoAway: the peer takes no new streams. On a next hop, streams it did not take are
// refused back to their callers, which retry them elsewhere.
func (c *conn) onGoAway(lp *loop, last uint32) {
	c.goaway.Store(true)
	if c.idx == 0 {
		return
	}
	c.pool.forget(c)
	var refused []*leg
	c.mu.Lock()
	for id, l := range c.streams {
		if id > last {
			refused = append(refused, l)
		}
	}
	n := c.active.Load()
	c.mu.Unlock()
	for _, l := range refused {
		l.s.code.CompareAndSwap(-1, int32(codes.Unavailable))
		c.resetBoth(lp, l, 0, http2.ErrCodeRefusedStream)
	}
	if n == 0 {
		c.nc.Close()
	}
}

// teardown ends every stream of a connection that is gone.
func (c *conn) teardown() {
	lp := &c.lp
	c.wmu.Lock()
	c.dead = true
	c.wbuf = c.wbuf[:0]
	c.wcond.Broadcast()
	c.wmu.Unlock()
	c.nc.Close()
	if c.stop != nil {
		c.stop()
	}
	if c.pool != nil {
		c.pool.forget(c)
	}
	c.mu.Lock()
	legs := make([]*leg, 0, len(c.streams))
	for _, l := range c.streams {
		legs = append(legs, l)
	}
	c.mu.Unlock()
	for _, l := range legs {
		s := l.s
		if s.br != nil {
			c.resetLeg(lp, l, 0, false)
			s.br.abort()
			continue
		}
		o := &s.legs[1-l.idx]
		if l.idx == 1 && o.c != nil {
			// The next hop is gone: the caller gets UNAVAILABLE in gRPC terms.
			s.code.CompareAndSwap(-1, int32(codes.Unavailable))
			o.c.failLeg(lp, o, s.started.Load(), codes.Unavailable, "strait: connection to "+c.nc.RemoteAddr().String()+" lost")
			c.resetLeg(lp, l, 0, false)
			s.halves.Store(3)
			s.finish(lp)
			continue
		}
		s.code.CompareAndSwap(-1, int32(codes.Canceled))
		c.resetBoth(lp, l, 0, http2.ErrCodeCancel)
	}
	lp.flush()
}

// failLeg ends the caller's leg l with a gRPC status: trailers-only if no response
// headers went out yet, else trailers after whatever was sent (queued data is dropped).
// If the caller is still sending, the stream is reset with NO_ERROR after.
func (c *conn) failLeg(lp *loop, l *leg, started bool, code codes.Code, msg string) {
	fields := make([]hpack.HeaderField, 0, 4)
	if !started {
		fields = append(fields, hpack.HeaderField{Name: ":status", Value: "200"},
			hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	}
	fields = append(fields, hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(int(code))},
		hpack.HeaderField{Name: "grpc-message", Value: proxy.EncodeGRPCMessage(msg)})
	c.wmu.Lock()
	if !l.reset && !l.sentEnd && !c.dead {
		l.pend, l.pendEnd, l.pendTrl, l.hasTrl = nil, false, nil, false
		c.writeHeadersLocked(l.id, fields, "", nil, true)
		l.sentEnd = true
		if !l.recvEnd {
			c.wbuf = appendRST(c.wbuf, l.id, http2.ErrCodeNo)
			l.recvEnd = true
		}
		lp.mark(c)
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
}
