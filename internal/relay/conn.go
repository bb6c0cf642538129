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
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/governance"
	"github.com/strait-mesh/strait/internal/proxy"
)

const (
	// streamWindow is the receive window each stream gets from us: what a sender may
	// have in flight on one stream, and so the most one stream can have queued here.
	streamWindow = 256 << 10
	// connWindow is the connection's receive window. Streams bound the memory, so the
	// connection window only has to stay out of the way.
	connWindow = 1 << 30
	// maxReadFrame is the largest frame we accept (SETTINGS_MAX_FRAME_SIZE): the
	// protocol's initial value, as grpc-go and HAProxy advertise. A peer that sends a
	// larger frame gets FRAME_SIZE_ERROR (RFC 9113 §4.2).
	maxReadFrame = 16384
	// initialMaxStreams is assumed for a next hop until its SETTINGS arrive.
	initialMaxStreams = 100
	writeTimeout      = 10 * time.Second
	readBufferSize    = 64 << 10
	// maxWindow is the largest flow-control window HTTP/2 allows (RFC 9113 §6.9.1).
	maxWindow = 1<<31 - 1
)

var errReset = errors.New("relay: stream reset")

// codeStalled labels in metrics a stream reset because its receiver stopped reading.
const codeStalled = codes.DeadlineExceeded

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
	pend    []byte // DATA waiting for send window or queue room, in order
	pendEnd bool   // END_STREAM follows pend
	pendTrl []hpack.HeaderField
	hasTrl  bool  // pendTrl (trailers) follow pend
	blocked bool  // in c.blocked
	since   int64 // when pend last moved, for the stall check
	sentEnd bool  // we ended our side (END_STREAM or RST)
	recvEnd bool  // the peer ended its side
	reset   bool
	// peerReset: the peer reset it (frames that follow are errors, not ones in flight).
	peerReset bool

	// Touched by c's read loop only.
	bodyLeft int64 // content-length the peer still owes; -1 if it declared none
	gotTrl   bool  // the peer sent trailers
}

// stream is one relayed call: a stream on the caller's connection and one on the next
// hop's.
type stream struct {
	legs    [2]leg
	srv     *Server
	ep      *balance.Endpoint
	proto   string
	peer    string
	start   time.Time
	halves  atomic.Uint32 // bit 0: the request direction ended; bit 1: the response
	done    atomic.Bool
	started atomic.Bool  // response headers went to the caller
	code    atomic.Int32 // grpc-status for metrics; -1 while unknown
	br      *bridge      // set for streams served by the fallback handler
	// ticket holds the call's governance slots and breakers until it finishes.
	ticket governance.Ticket
	// skipTimeout: the request's grpc-timeout is replaced by one the router added.
	skipTimeout bool
	// retry and budget: whether, and within which budget, a stream whose next hop
	// cannot be reached tries another.
	retry  bool
	budget *governance.RetryBudget
	// epObs is told the outcome on the endpoint that served it (service svc).
	epObs governance.EndpointObserver
	svc   string

	// A stream whose next hop has no connection yet waits for one (a dial, off the read
	// loop); what the caller sends meanwhile is kept in wait. Guarded by amu; waiting is
	// cleared, under amu, once legs[1] is attached.
	waiting atomic.Bool
	amu     sync.Mutex
	wait    waitState
}

// waitState is what a stream waiting for a next-hop connection holds.
type waitState struct {
	fields   []hpack.HeaderField // the request's fields, then those the router adds
	nAdd     int
	early    []byte
	earlyEnd bool
	trl      []hpack.HeaderField
	hasTrl   bool
	set      *balance.Set
	pool     *Pool
	tries    int
}

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
		elapsed := time.Since(s.start)
		if s.ticket.Held() {
			s.ticket.Done(governance.Failed(codes.Code(code)), elapsed)
		}
		if s.epObs != nil && s.ep != nil {
			s.epObs.EndpointDone(s.ep, s.svc, governance.Failed(codes.Code(code)), elapsed)
		}
		s.srv.obs.CallEnded()
		s.srv.obs.Observe(s.proto, s.peer, codes.Code(code).String(), elapsed)
	}
}

// next is the stream's leg on the next hop, nil while it waits for a connection.
func (s *stream) next() *leg {
	if s.waiting.Load() {
		return nil
	}
	if l := &s.legs[1]; l.c != nil {
		return l
	}
	return nil
}

// loop is the scratch state of one goroutine that writes into connections: which ones it
// dirtied (their writers are woken together, once per pass) and credits to return.
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

// flush writes or wakes the writers of the connections this pass wrote into.
func (lp *loop) flush() {
	for i, c := range lp.dirty {
		c.writeNow()
		lp.dirty[i] = nil
	}
	lp.dirty = lp.dirty[:0]
}

// conn is one HTTP/2 connection: to a caller (server side, idx 0) or to a next hop
// (client side, idx 1). One goroutine reads it and forwards inline; one writer
// goroutine (writeLoop) writes it, or writeNow without waiting while the writer is idle;
// anyone appends frames to wbuf under wmu.
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
	g    guard
	done chan struct{}

	stall   time.Duration
	onAbuse func(kind string)
	budget  *Budget
	// maxPend bounds what a caller's connection holds in its streams' queues (server
	// side; 0 on a next hop's, where only new streams avoid a full connection).
	maxPend int64

	// Read loop only.
	sawSettings bool
	connRecv    int64 // what the peer may still send on the connection

	wake  chan struct{}
	wdone chan struct{}

	// raw writes a plain TCP connection without waiting (writeNow); nil for TLS.
	raw syscall.RawConn

	wmu          sync.Mutex
	wcond        sync.Cond
	wbuf         []byte
	spare        []byte // the other write buffer, while nobody writes
	busy         bool   // the writer, or writeNow, is writing the socket
	writing      int    // bytes being written now
	ctrl         int    // control frames queued since the writer last took wbuf
	final        bool   // with dead: write what wbuf holds (a GOAWAY), then close
	hbuf         bytes.Buffer
	henc         *hpack.Encoder
	sendConnWin  int64
	connOwed     int64
	peerInitWin  int32
	peerMaxFrame int
	blocked      []*leg
	sentData     int  // DATA frames written, for the WINDOW_UPDATE allowance
	sentAny      bool // HEADERS or DATA went out since the last PING
	nextID       uint32
	dead         bool
	wdl          int64 // the write deadline, unix nanoseconds; writer only

	mu      sync.Mutex
	streams map[uint32]*leg
	maxID   uint32
	// closed remembers how a caller's recent streams closed, by (id/2) % len: RFC 9113
	// §5.1 answers a frame on a closed stream by how it closed.
	closed [512]uint8
	// idleSince is when the last stream ended (server side), for the idle sweep.
	idleSince atomic.Int64

	active         atomic.Int32
	peerMaxStreams atomic.Uint32
	// pendBytes: bytes queued in the pend of this connection's legs (written under wmu).
	pendBytes atomic.Int64
	goaway    atomic.Bool
	// goawayAt: when a graceful GOAWAY was sent (unix nanoseconds); goawayAcked: the
	// caller answered the PING that followed it.
	goawayAt    atomic.Int64
	goawayAcked atomic.Bool
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
		wake:         make(chan struct{}, 1),
		wdone:        make(chan struct{}),
		sendConnWin:  65535,
		peerInitWin:  65535,
		peerMaxFrame: 16384,
		connRecv:     connWindow,
		streams:      make(map[uint32]*leg),
		nextID:       1,
		budget:       processBudget,
	}
	c.wcond.L = &c.wmu
	if tc, ok := nc.(*net.TCPConn); ok {
		c.raw, _ = tc.SyscallConn()
	}
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(io.Discard, br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(maxReadFrame)
	c.hb.init(maxHeaderBytes)
	c.g.init()
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
	how := uint8(closedEnded)
	if c.idx == 0 {
		c.wmu.Lock()
		switch {
		case l.peerReset:
			how = closedByPeer
		case l.reset:
			how = closedByUs
		}
		c.wmu.Unlock()
	}
	c.mu.Lock()
	if c.streams[l.id] != l {
		c.mu.Unlock()
		return
	}
	delete(c.streams, l.id)
	if c.idx == 0 {
		c.closed[l.id/2%uint32(len(c.closed))] = how
	}
	n := c.active.Add(-1)
	if n == 0 && c.idx == 0 {
		c.idleSince.Store(time.Now().UnixNano())
	}
	c.mu.Unlock()
	if n == 0 && c.goaway.Load() && c.idx == 1 {
		c.nc.Close() // a drained connection to a next hop
	}
}

// How a stream of a caller closed (conn.closed).
const (
	closedUnknown uint8 = iota // never opened, or too long ago
	closedOpen
	closedEnded  // both sides ended it
	closedByUs   // we reset it: frames in flight are dropped
	closedByPeer // the caller reset it
)

// opened records that a caller opened stream id, the ids it skipped as never opened;
// c.mu is held.
func (c *conn) openedLocked(id uint32) {
	n := uint32(len(c.closed))
	for skip := max(c.maxID+2, id-min(id, 2*n)); skip < id; skip += 2 {
		c.closed[skip/2%n] = closedUnknown
	}
	c.closed[id/2%n] = closedOpen
	c.maxID = id
}

// closedHow tells how the caller's stream id (not open, not idle) closed.
func (c *conn) closedHow(id uint32) uint8 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := uint32(len(c.closed))
	if c.maxID-id >= 2*n {
		return closedUnknown
	}
	return c.closed[id/2%n]
}

// closedAs records how stream id, which never had a leg, closed.
func (c *conn) closedAs(id uint32, how uint8) {
	c.mu.Lock()
	if c.maxID-id < 2*uint32(len(c.closed)) {
		c.closed[id/2%uint32(len(c.closed))] = how
	}
	c.mu.Unlock()
}

// goAway stops new streams on a caller's connection and, the first time, tells the caller
// with GOAWAY which streams it took, followed by a PING: its answer tells that the caller
// has seen the GOAWAY (goAwaySeen). It returns how many streams are still open.
func (c *conn) goAway() int32 {
	c.mu.Lock()
	first := !c.goaway.Swap(true)
	last, n := c.maxID, c.active.Load()
	c.mu.Unlock()
	if first {
		c.goawayAt.Store(time.Now().UnixNano())
		c.wmu.Lock()
		if !c.dead {
			c.wbuf = appendGoAway(c.wbuf, last, http2.ErrCodeNo, "")
			c.wbuf = appendPing(c.wbuf, goAwayPing)
		}
		c.wmu.Unlock()
		c.kick()
	}
	return n
}

// goAwayPing is the data of the PING that follows a graceful GOAWAY.
var goAwayPing = [8]byte{'s', 't', 'r', 'a', 'i', 't', 'g', 'a'}

// goAwaySeen reports whether the caller answered the PING that followed our GOAWAY, or a
// second has passed since it was sent.
func (c *conn) goAwaySeen(now int64) bool {
	at := c.goawayAt.Load()
	// at == 0: the caller sent GOAWAY first (and so opens no stream), ours was not sent.
	return at == 0 || c.goawayAcked.Load() || now-at >= int64(time.Second)
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
	if c.pendBytes.Load() > maxConnPend {
		c.active.Add(-1)
		return false
	}
	return true
}

// release gives back a slot reserve took, for a stream that did not use it.
func (c *conn) release() {
	if c.active.Add(-1) == 0 && c.goaway.Load() {
		c.nc.Close()
	}
}

// maxConnPend is the default bound of what a caller's connection holds in its streams'
// queues (Options.MaxConnQueued); a next hop's connection with more queued for it takes
// no new stream (the pool opens another).
const maxConnPend = 16 << 20

// serve reads frames until the connection ends, forwarding each inline. It starts the
// connection's writer and returns once both have ended.
func (c *conn) serve() {
	defer close(c.done)
	go c.writeLoop()
	c.kick()
	lp := &c.lp
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.streamError(lp, se.StreamID, se.Code)
				c.maybeFlush(lp)
				continue
			}
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &ce):
				c.fail(lp, http2.ErrCode(ce), "protocol", "")
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.fail(lp, http2.ErrCodeFrameSize, "protocol", "")
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.log.Debug("relay connection ended", "remote", c.nc.RemoteAddr().String(), "err", err)
			}
			break
		}
		if err := c.handle(lp, f); err != nil {
			var ae abuseError
			if errors.As(err, &ae) {
				c.fail(lp, http2.ErrCodeEnhanceYourCalm, ae.kind, ae.debug)
			} else {
				var ce http2.ConnectionError
				errors.As(err, &ce)
				c.fail(lp, http2.ErrCode(ce), "protocol", "")
			}
			c.log.Debug("relay connection ended", "remote", c.nc.RemoteAddr().String(), "err", err)
			break
		}
		c.maybeFlush(lp)
	}
	c.teardown()
	<-c.wdone
}

// abuseError ends a connection with ENHANCE_YOUR_CALM.
type abuseError struct{ kind, debug string }

func (e abuseError) Error() string { return "relay: " + e.kind + " flood" }

// fail ends the connection with GOAWAY code: the writer writes what is queued, the GOAWAY
// last, then closes the socket; nothing else is written to it.
func (c *conn) fail(lp *loop, code http2.ErrCode, kind, debug string) {
	if code != http2.ErrCodeNo {
		c.abused(kind)
	}
	c.wmu.Lock()
	if !c.dead {
		c.wbuf = appendGoAway(c.wbuf, c.lastID(), code, debug)
		c.dead, c.final = true, true
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
	// A write under way (to a peer that does not read) has a second left, not ten.
	_ = c.nc.SetWriteDeadline(time.Now().Add(finalWriteTimeout))
	c.kick()
	lp.flush()
}

// maybeFlush wakes the writers once no whole frame is waiting to be read.
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

var (
	errProtocol = http2.ConnectionError(http2.ErrCodeProtocol)
	errFlow     = http2.ConnectionError(http2.ErrCodeFlowControl)
	errClosedSt = http2.ConnectionError(http2.ErrCodeStreamClosed)
)

// idle reports whether stream id was never opened (RFC 9113 §5.1): on a caller's
// connection, an id above every one it used; on a next hop's, one we never used.
func (c *conn) idle(id uint32) bool {
	if c.idx == 0 {
		if id%2 == 0 {
			return true // we never push
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return id > c.maxID
	}
	if id%2 == 0 {
		return true
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return id >= c.nextID
}

// handle processes one frame; an error ends the connection.
func (c *conn) handle(lp *loop, f http2.Frame) error {
	if !c.sawSettings {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return errProtocol // the preface's SETTINGS must come first (§3.4)
		}
		c.sawSettings = true
	}
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(lp, f)
	case *http2.HeadersFrame:
		// A self-dependency is a stream error (§5.3.1); the block is still decoded to
		// keep the HPACK state.
		c.hb.reject = f.HasPriority() && f.Priority.StreamDep == f.StreamID
		done, err := c.hb.start(f.StreamID, f.StreamEnded(), f.HeaderBlockFragment(), f.HeadersEnded())
		if err != nil {
			return err
		}
		if done {
			return c.onHeaders(lp, &c.hb)
		}
	case *http2.ContinuationFrame:
		done, err := c.hb.more(f.HeaderBlockFragment(), f.HeadersEnded())
		if err != nil {
			return err
		}
		if done {
			return c.onHeaders(lp, &c.hb)
		}
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.streamError(lp, f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(lp, f.StreamID, f.Increment)
	case *http2.SettingsFrame:
		return c.onSettings(lp, f)
	case *http2.PingFrame:
		if f.IsAck() {
			if f.Data == goAwayPing {
				c.goawayAcked.Store(true)
			}
			return nil
		}
		return c.onPing(lp, f.Data)
	case *http2.RSTStreamFrame:
		if c.idle(f.StreamID) {
			return errProtocol // §6.4
		}
		if l := c.lookup(f.StreamID); l != nil {
			return c.onReset(lp, l, f.ErrCode)
		}
	case *http2.GoAwayFrame:
		c.onGoAway(lp, f.LastStreamID)
	case *http2.PushPromiseFrame:
		return errProtocol // push is off both ways (§8.4)
	}
	return nil
}

func (c *conn) onPing(lp *loop, data [8]byte) error {
	now := time.Now().UnixNano()
	c.wmu.Lock()
	if c.sentAny {
		c.sentAny = false
		c.g.strikes = 0
	} else if now-c.g.lastPing < int64(pingInterval) {
		c.g.strikes++
	}
	c.g.lastPing = now
	if c.g.strikes > maxPingStrikes {
		c.wmu.Unlock()
		return abuseError{"ping", "too_many_pings"}
	}
	if !c.dead {
		c.wbuf = appendPingAck(c.wbuf, data)
		c.controlLocked()
	}
	c.wmu.Unlock()
	lp.mark(c)
	return nil
}

func (c *conn) onData(lp *loop, f *http2.DataFrame) error {
	id := f.StreamID
	n := int32(f.Header().Length)
	if c.idle(id) {
		return errProtocol // §5.1: DATA on an idle stream
	}
	if n == 0 && !f.StreamEnded() {
		if c.g.empty++; c.g.empty > maxEmptyFrames {
			return abuseError{"protocol", "empty frames"}
		}
	} else {
		c.g.empty = 0
	}
	l := c.lookup(id)
	data := f.Data()
	end := f.StreamEnded()
	c.wmu.Lock()
	c.connRecv -= int64(n)
	if c.connRecv < 0 {
		c.wmu.Unlock()
		return errFlow
	}
	c.connOwed += int64(n)
	if c.connOwed >= connWindow/2 && !c.dead {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(c.connOwed))
		c.connRecv += c.connOwed
		c.connOwed = 0
		lp.mark(c)
	}
	if l == nil || l.recvEnd {
		// §5.1: DATA on a half-closed (remote) stream, or after the peer's RST_STREAM,
		// is a stream error; after our RST_STREAM it may have been in flight.
		closed := l != nil && (!l.reset || l.peerReset)
		c.wmu.Unlock()
		if c.idx != 0 {
			return nil
		}
		if l == nil {
			switch c.closedHow(id) {
			case closedEnded:
				return errClosedSt // after END_STREAM both ways: a connection error
			case closedByUs:
				return nil
			}
			closed = true
		}
		if closed {
			c.rst(lp, l, id, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	l.recvWin -= n
	if l.recvWin < 0 {
		c.wmu.Unlock()
		c.resetBoth(lp, l, http2.ErrCodeFlowControl, http2.ErrCodeCancel)
		return nil
	}
	if end {
		l.recvEnd = true
	}
	c.wmu.Unlock()
	if l.bodyLeft >= 0 {
		l.bodyLeft -= int64(len(data))
		if l.bodyLeft < 0 || (end && l.bodyLeft != 0) {
			// §8.1.1: the DATA differ from content-length.
			c.resetBoth(lp, l, http2.ErrCodeProtocol, http2.ErrCodeCancel)
			return nil
		}
	}
	if pad := int(n) - len(data); pad > 0 {
		c.credit(lp, l, pad)
	}
	c.forwardData(lp, l, data, end)
	return nil
}

// forwardData sends data that arrived on leg l to the stream's other leg: at once as far
// as the windows allow, the rest queued until they open.
func (c *conn) forwardData(lp *loop, l *leg, data []byte, end bool) {
	s := l.s
	if s.br != nil {
		s.br.push(lp, data, end)
		return
	}
	var dst *leg
	if l.idx == 0 {
		if dst = s.next(); dst == nil && s.waiting.Load() {
			if s.keepEarly(data, end) {
				return
			}
			dst = s.next() // attached meanwhile
		}
	} else {
		dst = &s.legs[0]
	}
	if dst == nil || dst.c == nil {
		c.credit(lp, l, len(data))
		return
	}
	dc := dst.c
	dc.wmu.Lock()
	sent, endSent := dc.sendDataLocked(dst, data, end)
	over := dc.maxPend > 0 && len(dst.pend) > 0 && dc.pendBytes.Load() > dc.maxPend
	dc.wmu.Unlock()
	lp.mark(dc)
	if over {
		// A caller has more than its connection's bound waiting for it, in streams it
		// opened all at once: the stream that goes over is reset, so that one connection
		// does not hold streams × windows (nor fill the gateway's budget for everyone).
		dc.abused("overload")
		s.code.CompareAndSwap(-1, int32(codes.ResourceExhausted))
		dc.resetBoth(lp, dst, http2.ErrCodeCancel, http2.ErrCodeCancel)
		return
	}
	if sent > 0 {
		c.credit(lp, l, sent)
	}
	if endSent {
		s.halfDone(lp, l.idx)
	}
}

// keepEarly keeps request data of a stream that waits for its next hop; false if it no
// longer waits.
func (s *stream) keepEarly(data []byte, end bool) bool {
	s.amu.Lock()
	defer s.amu.Unlock()
	if !s.waiting.Load() {
		return false
	}
	w := &s.wait
	w.early = append(w.early, data...)
	s.legs[0].c.budget.add(len(data))
	if end {
		w.earlyEnd = true
	}
	return true
}

// sendDataLocked writes data on leg l as far as the windows and the write queue allow
// and queues the rest. It returns how many bytes left (or were dropped, on a closed leg)
// and whether END_STREAM went out.
func (c *conn) sendDataLocked(l *leg, data []byte, end bool) (sent int, endSent bool) {
	if l.reset || l.sentEnd || c.dead {
		return len(data), false
	}
	if len(l.pend) == 0 && !l.pendEnd && !l.hasTrl {
		n := min(int64(len(data)), int64(l.sendWin), c.sendConnWin, c.queueRoomLocked())
		if n < 0 {
			n = 0
		}
		if n > 0 || (end && len(data) == 0) {
			fin := end && int(n) == len(data)
			c.appendDataLocked(l.id, data[:n], fin)
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
	c.pendAddLocked(len(data))
	if end {
		l.pendEnd = true
	}
	if !l.blocked {
		l.blocked = true
		l.since = time.Now().UnixNano()
		c.blocked = append(c.blocked, l)
	}
	return sent, false
}

// appendDataLocked appends DATA frames and counts them.
func (c *conn) appendDataLocked(id uint32, data []byte, end bool) {
	c.wbuf = appendData(c.wbuf, id, data, end, c.peerMaxFrame)
	c.sentData += 1 + len(data)/c.peerMaxFrame
	c.sentAny = true
}

func (c *conn) pendAddLocked(n int) {
	c.pendBytes.Add(int64(n))
	c.budget.add(n)
}

// dropPendLocked empties l's queue.
func (c *conn) dropPendLocked(l *leg) {
	if len(l.pend) > 0 {
		c.pendAddLocked(-len(l.pend))
	}
	l.pend, l.pendEnd, l.pendTrl, l.hasTrl = nil, false, nil, false
}

// drainLocked sends what the blocked legs queued, as far as the windows and the write
// queue now allow. The credits to return to the senders are collected in lp.credits.
func (c *conn) drainLocked(lp *loop) {
	kept := c.blocked[:0]
	for _, l := range c.blocked {
		if l.reset || l.sentEnd || c.dead {
			l.blocked = false
			c.dropPendLocked(l)
			continue
		}
		n := min(int64(len(l.pend)), int64(l.sendWin), c.sendConnWin, c.queueRoomLocked())
		if n < 0 {
			n = 0
		}
		rest := len(l.pend) - int(n)
		fin := rest == 0 && l.pendEnd && !l.hasTrl
		if n > 0 || fin {
			c.appendDataLocked(l.id, l.pend[:n], fin)
			l.sendWin -= int32(n)
			c.sendConnWin -= n
			if n > 0 {
				lp.credits = append(lp.credits, credit{&l.s.legs[1-l.idx], int(n)})
				l.since = time.Now().UnixNano()
			}
			l.pend = l.pend[:copy(l.pend, l.pend[n:])]
			c.pendAddLocked(-int(n))
		}
		if rest > 0 {
			kept = append(kept, l)
			continue
		}
		l.blocked = false
		l.pend = nil
		if l.hasTrl {
			c.writeHeadersLocked(l.id, l.pendTrl, "", false, nil, true)
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
		if cr.l.c != nil {
			cr.l.c.credit(lp, cr.l, cr.n)
		}
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

func (c *conn) onWindowUpdate(lp *loop, id, incr uint32) error {
	if id != 0 && c.idle(id) {
		return errProtocol // §5.1: WINDOW_UPDATE on an idle stream
	}
	now := time.Now().UnixNano()
	var l *leg
	if id != 0 {
		l = c.lookup(id)
	}
	c.wmu.Lock()
	// The allowance: two updates for every DATA frame sent since the last one.
	c.g.windows.tokens = min(windowBurst, c.g.windows.tokens+2*float64(c.sentData))
	c.sentData = 0
	if !c.g.windows.take(now, windowRate, windowBurst) {
		c.wmu.Unlock()
		return abuseError{"window_update", ""}
	}
	if id == 0 {
		if c.sendConnWin+int64(incr) > maxWindow {
			c.wmu.Unlock()
			return errFlow // §6.9.1
		}
		c.sendConnWin += int64(incr)
	} else if l != nil && !l.reset {
		if int64(l.sendWin)+int64(incr) > maxWindow {
			c.wmu.Unlock()
			c.resetBoth(lp, l, http2.ErrCodeFlowControl, http2.ErrCodeCancel)
			return nil
		}
		l.sendWin += int32(incr)
	}
	if len(c.blocked) > 0 {
		c.drainLocked(lp)
		lp.mark(c)
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
	c.returnCredits(lp)
	return nil
}

func (c *conn) onSettings(lp *loop, f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if !c.g.settings.take(time.Now().UnixNano(), settingsRate, settingsBurst) {
		return abuseError{"settings", ""}
	}
	if f.NumSettings() > 100 {
		return errProtocol
	}
	if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
		return err // §6.5.2
	}
	c.wmu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - int64(c.peerInitWin)
			c.mu.Lock()
			for _, l := range c.streams {
				if int64(l.sendWin)+delta > maxWindow {
					c.mu.Unlock()
					return errFlow // §6.9.2
				}
			}
			for _, l := range c.streams {
				l.sendWin += int32(delta)
			}
			c.mu.Unlock()
			c.peerInitWin = int32(s.Val)
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(s.Val)
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams.Store(s.Val)
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err == nil && !c.dead {
		c.wbuf = appendSettingsAck(c.wbuf)
		c.controlLocked()
		if len(c.blocked) > 0 {
			c.drainLocked(lp)
		}
		lp.mark(c)
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
	c.returnCredits(lp)
	return err
}

// writeHeadersLocked HPACK-encodes fields for this connection, without connection-specific
// fields, fields whose name starts with drop and (skipTimeout) grpc-timeout, then add.
func (c *conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, drop string, skipTimeout bool, add []hpack.HeaderField, end bool) {
	c.hbuf.Reset()
	for _, f := range fields {
		if connectionSpecific(f.Name) || (drop != "" && len(f.Name) >= len(drop) && f.Name[:len(drop)] == drop) ||
			(skipTimeout && f.Name == "grpc-timeout") {
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
	c.sentAny = true
}

func connectionSpecific(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

func (c *conn) onHeaders(lp *loop, h *headerBlock) error {
	id := h.StreamID
	end := h.StreamEnded()
	l := c.lookup(id)
	if l == nil {
		if c.idx == 1 {
			if c.idle(id) {
				return errProtocol
			}
			return nil // a stream we reset
		}
		if id%2 == 0 {
			return errProtocol // §5.1.1: a client's streams are odd
		}
		if id <= c.lastID() {
			// §5.1: HEADERS on a closed stream; §5.1.1: a new stream's id must grow.
			switch c.closedHow(id) {
			case closedEnded:
				return errClosedSt
			case closedByPeer:
				c.streamError(lp, id, http2.ErrCodeStreamClosed)
				return nil
			case closedByUs:
				return nil
			}
			return errProtocol
		}
		c.srv.newStream(lp, c, h)
		return nil
	}
	if l.recvEnd || h.reject {
		code := http2.ErrCodeStreamClosed
		if h.reject {
			code = http2.ErrCodeProtocol
		}
		if !l.reset {
			c.resetBoth(lp, l, code, http2.ErrCodeCancel)
		} else if l.peerReset {
			c.rst(lp, l, id, code)
		}
		return nil
	}
	if h.Truncated {
		c.resetBoth(lp, l, http2.ErrCodeProtocol, http2.ErrCodeInternal)
		return nil
	}
	if c.idx == 0 {
		// Request trailers (§8.1): they end the stream and carry no pseudo-header.
		if l.gotTrl {
			return errProtocol
		}
		l.gotTrl = true
		if !end || checkTrailers(h.Fields) != nil || l.bodyLeft > 0 {
			c.resetBoth(lp, l, http2.ErrCodeProtocol, http2.ErrCodeCancel)
			return nil
		}
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
		return nil
	}
	var dst *leg
	if l.idx == 0 {
		if dst = s.next(); dst == nil && s.waiting.Load() {
			if s.keepTrailers(h.Fields) {
				return nil
			}
			dst = s.next() // attached meanwhile
		}
	} else {
		dst = &s.legs[0]
		// From the next hop: the response headers, then perhaps trailers.
		if code, ok := grpcStatus(h.Fields); ok {
			s.code.Store(code)
		} else if !s.started.Load() && end {
			s.code.Store(int32(codes.Unknown))
		}
		s.started.Store(true)
	}
	if dst == nil || dst.c == nil {
		return nil
	}
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
		dst.pendTrl = append(dst.pendTrl[:0], h.Fields...)
		dst.hasTrl = true
		dst.pendEnd = true
	default:
		dc.writeHeadersLocked(dst.id, h.Fields, drop, false, nil, end)
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
	return nil
}

// keepTrailers keeps the request trailers of a stream that waits for its next hop; false
// if it no longer waits.
func (s *stream) keepTrailers(fields []hpack.HeaderField) bool {
	s.amu.Lock()
	defer s.amu.Unlock()
	if !s.waiting.Load() {
		return false
	}
	s.wait.trl = append([]hpack.HeaderField(nil), fields...)
	s.wait.hasTrl = true
	s.wait.earlyEnd = true
	return true
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

// onReset handles RST_STREAM from the peer of leg l: the other leg is reset too. A caller
// that resets streams it opened faster than resetRate (after a burst) is cut: each one
// costs a next-hop stream (CVE-2023-44487).
func (c *conn) onReset(lp *loop, l *leg, code http2.ErrCode) error {
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
		if !s.done.Load() && !c.g.resets.take(time.Now().UnixNano(), resetRate, resetBurst) {
			return abuseError{"rapid_reset", ""}
		}
		s.code.CompareAndSwap(-1, int32(codes.Canceled))
	}
	c.resetBoth(lp, l, 0, code)
	return nil
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
	if o := s.other(l); o != nil {
		o.c.resetLeg(lp, o, theirs, true)
	}
	s.code.CompareAndSwap(-1, int32(codes.Unavailable))
	s.halves.Store(3)
	s.finish(lp)
}

// other is the stream's leg that is not l, nil if it has none (a stream still waiting
// for its next hop stops waiting).
func (s *stream) other(l *leg) *leg {
	if l.idx == 1 {
		return &s.legs[0]
	}
	if s.waiting.Load() {
		s.amu.Lock()
		waiting := s.waiting.Load()
		if waiting {
			s.dropWaitLocked()
		}
		s.amu.Unlock()
		if waiting {
			return nil
		}
	}
	if o := &s.legs[1]; o.c != nil {
		return o
	}
	return nil
}

// dropWaitLocked gives up waiting for a next hop.
func (s *stream) dropWaitLocked() {
	if s.waiting.Load() {
		s.legs[0].c.budget.add(-len(s.wait.early))
		s.wait = waitState{}
	}
	s.waiting.Store(false)
}

// resetLeg stops leg l; send says whether to send RST_STREAM (not if the peer reset it,
// nor if both sides already ended).
func (c *conn) resetLeg(lp *loop, l *leg, code http2.ErrCode, send bool) {
	c.wmu.Lock()
	if send && !c.dead && !(l.sentEnd && l.recvEnd) && !l.reset {
		c.wbuf = appendRST(c.wbuf, l.id, code)
		c.controlLocked()
		lp.mark(c)
	}
	l.reset, l.sentEnd, l.recvEnd = true, true, true
	l.peerReset = l.peerReset || !send
	c.dropPendLocked(l)
	c.wcond.Broadcast()
	c.wmu.Unlock()
}

// rst sends RST_STREAM on stream id, whose leg l (nil if gone) is already reset.
func (c *conn) rst(lp *loop, l *leg, id uint32, code http2.ErrCode) {
	if l == nil {
		c.streamError(lp, id, code)
		return
	}
	c.wmu.Lock()
	if !c.dead {
		c.wbuf = appendRST(c.wbuf, id, code)
		c.controlLocked()
		lp.mark(c)
	}
	c.wmu.Unlock()
}

// streamError resets stream id with code (RFC 9113 §5.4.2): its other leg too, if it has
// one.
func (c *conn) streamError(lp *loop, id uint32, code http2.ErrCode) {
	if l := c.lookup(id); l != nil {
		c.resetBoth(lp, l, code, http2.ErrCodeCancel)
		return
	}
	if c.idx == 0 {
		c.mu.Lock()
		if id > c.maxID && id%2 == 1 {
			c.openedLocked(id) // a stream refused as it opened
			c.closed[id/2%uint32(len(c.closed))] = closedByUs
		}
		c.mu.Unlock()
	}
	c.wmu.Lock()
	if !c.dead {
		c.wbuf = appendRST(c.wbuf, id, code)
		c.controlLocked()
	}
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

// teardown ends every stream of a connection that is gone. Its writer writes a final
// GOAWAY if fail queued one, then closes the socket.
func (c *conn) teardown() {
	lp := &c.lp
	c.wmu.Lock()
	if !c.final {
		c.wbuf = c.wbuf[:0]
	}
	c.dead = true
	for _, l := range c.blocked {
		l.blocked = false
		c.dropPendLocked(l)
	}
	c.blocked = nil
	c.wcond.Broadcast()
	final := c.final
	c.wmu.Unlock()
	c.kick()
	if !final {
		c.nc.Close()
	}
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
		if l.idx == 1 {
			// The next hop is gone: the caller gets UNAVAILABLE in gRPC terms.
			o := &s.legs[0]
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
		c.dropPendLocked(l)
		c.writeHeadersLocked(l.id, fields, "", false, nil, true)
		l.sentEnd = true
		if !l.recvEnd {
			c.wbuf = appendRST(c.wbuf, l.id, http2.ErrCodeNo)
			l.recvEnd, l.reset = true, true
		}
		lp.mark(c)
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
}
