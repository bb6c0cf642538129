package relay

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// bridge serves one stream with the fallback http.Handler, in a goroutine of its own: the
// request body is fed by the connection's read loop, the response is written into the
// connection under its flow control.
type bridge struct {
	srv    *Server
	c      *conn
	l      *leg
	cancel context.CancelFunc

	bmu    sync.Mutex
	bcond  sync.Cond
	buf    []byte
	off    int
	eof    bool
	err    error
	closed bool
	// expect: the caller asked for 100-continue, sent on the first body read.
	expect bool
	// drain: the handler has answered, the rest of the request is being dropped.
	drain *time.Timer

	// The response, touched by the handler's goroutine only.
	head        bool // a HEAD request: the response has no body
	hdr         http.Header
	status      int
	wroteHeader bool
	sentHeader  bool
}

// fallback starts the fallback handler on stream l.
func (s *Server) fallback(lp *loop, c *conn, l *leg, fields []hpack.HeaderField, end bool) {
	h := make(http.Header, len(fields))
	var method, path, authority string
	for _, f := range fields {
		switch f.Name {
		case ":method":
			method = f.Value
		case ":path":
			path = f.Value
		case ":authority":
			authority = f.Value
		default:
			if !strings.HasPrefix(f.Name, ":") {
				h.Add(http.CanonicalHeaderKey(f.Name), f.Value)
			}
		}
	}
	u, err := url.ParseRequestURI(path)
	if s.o.Fallback == nil || err != nil || method == "" {
		c.wmu.Lock()
		status := "400"
		if s.o.Fallback == nil {
			status = "503"
		}
		c.writeHeadersLocked(l.id, []hpack.HeaderField{{Name: ":status", Value: status}}, "", false, nil, true)
		l.sentEnd = true
		if !end {
			c.wbuf = appendRST(c.wbuf, l.id, http2.ErrCodeNo)
			l.reset = true
		}
		c.wmu.Unlock()
		lp.mark(c)
		c.removeStream(l)
		return
	}
	cl := int64(-1)
	if end {
		cl = 0
	} else if v := h.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			cl = n
		}
	}
	ctx, cancel := context.WithCancel(c.ctx)
	b := &bridge{srv: s, c: c, l: l, cancel: cancel, eof: end, head: method == http.MethodHead}
	if !end && strings.EqualFold(h.Get("Expect"), "100-continue") {
		b.expect = true
		h.Del("Expect")
	}
	b.bcond.L = &b.bmu
	var body io.ReadCloser = http.NoBody
	if !end {
		body = (*reqBody)(b)
	}
	req := &http.Request{
		Method: method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: h, Body: body,
		ContentLength: cl, Host: authority, RemoteAddr: c.nc.RemoteAddr().String(), RequestURI: path,
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		req.TLS = &cs
	}
	l.s.br = b
	s.wg.Add(1)
	go b.run(req.WithContext(ctx))
}

func (b *bridge) run(req *http.Request) {
	defer b.srv.wg.Done()
	defer b.cancel()
	aborted := false
	func() {
		defer func() {
			if r := recover(); r != nil {
				aborted = true
				if r != http.ErrAbortHandler {
					b.srv.log.Error("relay: fallback handler panicked", "err", r)
				}
			}
		}()
		b.srv.o.Fallback.ServeHTTP((*responseWriter)(b), req)
	}()
	var lp loop
	if aborted {
		b.c.resetLeg(&lp, b.l, http2.ErrCodeInternal, true)
	} else {
		b.finish()
	}
	_ = req.Body.Close()
	lp.flush()
	b.bmu.Lock()
	b.c.wmu.Lock()
	open := !b.l.recvEnd
	b.c.wmu.Unlock()
	if open && !aborted && b.err == nil {
		// The answer is complete while the caller still sends: what it sends is taken
		// (checked as any request, and dropped) until it ends or for drainWait, then
		// the stream is reset with NO_ERROR (RFC 9113 §8.1).
		b.drain = time.AfterFunc(drainWait, b.endDrain)
		b.bmu.Unlock()
		return
	}
	b.bmu.Unlock()
	b.c.removeStream(b.l)
}

// drainWait is how long the rest of a request answered early is taken before the stream
// is reset.
const drainWait = time.Second

// endDrain ends the stream of a request answered early.
func (b *bridge) endDrain() {
	var lp loop
	b.c.resetLeg(&lp, b.l, http2.ErrCodeNo, true)
	lp.flush()
	b.c.removeStream(b.l)
}

// stopDrain ends the drain of a request answered early, if one is under way: the
// request ended (or was reset).
func (b *bridge) stopDrainLocked() {
	if b.drain != nil && b.drain.Stop() {
		b.drain = nil
		b.c.removeStream(b.l)
	}
}

// push hands request DATA from the read loop to the handler.
func (b *bridge) push(lp *loop, data []byte, end bool) {
	b.bmu.Lock()
	if b.closed || b.err != nil {
		if end {
			b.stopDrainLocked()
		}
		b.bmu.Unlock()
		b.c.credit(lp, b.l, len(data))
		return
	}
	b.buf = append(b.buf, data...)
	if end {
		b.eof = true
	}
	b.bcond.Broadcast()
	b.bmu.Unlock()
}

// abort ends the stream under the handler: its body reads and writes fail.
func (b *bridge) abort() {
	b.bmu.Lock()
	if b.err == nil {
		b.err = errReset
	}
	b.stopDrainLocked()
	b.bcond.Broadcast()
	b.bmu.Unlock()
	b.cancel()
}

// reqBody is the request body of a fallback call.
type reqBody bridge

func (r *reqBody) Read(p []byte) (int, error) {
	b := (*bridge)(r)
	b.bmu.Lock()
	if b.expect {
		// The handler reads the body: the caller may send it (RFC 9110 §10.1.1).
		b.expect = false
		b.bmu.Unlock()
		b.sendContinue()
		b.bmu.Lock()
	}
	for b.off == len(b.buf) && !b.eof && b.err == nil && !b.closed {
		b.bcond.Wait()
	}
	if b.off < len(b.buf) && !b.closed {
		n := copy(p, b.buf[b.off:])
		b.off += n
		if b.off == len(b.buf) {
			b.buf, b.off = b.buf[:0], 0
		}
		b.bmu.Unlock()
		var lp loop
		b.c.credit(&lp, b.l, n)
		lp.flush()
		return n, nil
	}
	err := b.err
	if err == nil {
		err = io.EOF
	}
	b.bmu.Unlock()
	return 0, err
}

func (r *reqBody) Close() error {
	b := (*bridge)(r)
	b.bmu.Lock()
	b.closed = true
	n := len(b.buf) - b.off
	b.buf, b.off = nil, 0
	b.bcond.Broadcast()
	b.bmu.Unlock()
	if n > 0 {
		var lp loop
		b.c.credit(&lp, b.l, n)
		lp.flush()
	}
	return nil
}

// responseWriter is the http.ResponseWriter of a fallback call.
type responseWriter bridge

func (w *responseWriter) Header() http.Header {
	if w.hdr == nil {
		w.hdr = make(http.Header)
	}
	return w.hdr
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader || code < 200 {
		return
	}
	w.wroteHeader, w.status = true, code
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.head {
		return len(p), nil // the headers go out with END_STREAM when the handler ends
	}
	if !w.sentHeader {
		if err := w.sendHeader(false); err != nil {
			return 0, err
		}
	}
	return w.writeData(p)
}

func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.head {
		return
	}
	if !w.sentHeader {
		_ = w.sendHeader(false)
	}
}

func (w *responseWriter) sendHeader(end bool) error {
	w.sentHeader = true
	fields := make([]hpack.HeaderField, 0, len(w.hdr)+1)
	fields = append(fields, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(w.status)})
	for k, vv := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		name := strings.ToLower(k)
		for _, v := range vv {
			fields = append(fields, hpack.HeaderField{Name: name, Value: v})
		}
	}
	return w.writeHeaders(fields, end)
}

func (w *responseWriter) writeHeaders(fields []hpack.HeaderField, end bool) error {
	c, l := w.c, w.l
	c.wmu.Lock()
	if c.dead || l.reset || l.sentEnd {
		c.wmu.Unlock()
		return errReset
	}
	c.writeHeadersLocked(l.id, fields, "", false, nil, end)
	if end {
		l.sentEnd = true
	}
	c.wmu.Unlock()
	c.kick()
	return nil
}

// sendContinue sends the interim response 100 (Continue).
func (b *bridge) sendContinue() {
	c, l := b.c, b.l
	c.wmu.Lock()
	if !c.dead && !l.reset && !l.sentEnd {
		c.writeHeadersLocked(l.id, []hpack.HeaderField{{Name: ":status", Value: "100"}}, "", false, nil, false)
	}
	c.wmu.Unlock()
	c.kick()
}

func (w *responseWriter) writeData(p []byte) (int, error) {
	c, l := w.c, w.l
	total := 0
	var (
		since time.Time   // when the wait for window began
		wake  *time.Timer // wakes the wait at the stall time
	)
	defer func() {
		if wake != nil {
			wake.Stop()
		}
	}()
	c.wmu.Lock()
	for len(p) > 0 {
		for !c.dead && !l.reset && (l.sendWin <= 0 || c.sendConnWin <= 0 || c.queueRoomLocked() <= 0) {
			if len(c.wbuf) > 0 {
				c.kick() // what is written so far goes out while we wait
			}
			if since.IsZero() {
				since = time.Now()
				wake = time.AfterFunc(c.stall, func() {
					c.wmu.Lock()
					c.wcond.Broadcast()
					c.wmu.Unlock()
				})
			} else if time.Since(since) >= c.stall {
				// The caller has taken none of the answer for the stall time.
				c.wmu.Unlock()
				c.abused("stalled")
				var lp loop
				c.resetLeg(&lp, l, http2.ErrCodeCancel, true)
				lp.flush()
				return total, errReset
			}
			c.wcond.Wait()
		}
		if c.dead || l.reset || l.sentEnd {
			c.wmu.Unlock()
			return total, errReset
		}
		if !since.IsZero() {
			since = time.Time{}
			wake.Stop()
		}
		n := min(int64(len(p)), int64(l.sendWin), c.sendConnWin, c.queueRoomLocked())
		c.appendDataLocked(l.id, p[:n], false)
		l.sendWin -= int32(n)
		c.sendConnWin -= n
		p = p[n:]
		total += int(n)
		if len(c.wbuf) >= 64<<10 {
			c.kick()
		}
	}
	c.wmu.Unlock()
	c.kick()
	return total, nil
}

// finish ends the response: headers if none went out, then trailers or an empty
// END_STREAM.
func (b *bridge) finish() {
	w := (*responseWriter)(b)
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	var trailers []hpack.HeaderField
	for k, vv := range w.hdr {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vv {
				trailers = append(trailers, hpack.HeaderField{Name: strings.ToLower(name), Value: v})
			}
		}
	}
	if !w.sentHeader {
		if len(trailers) == 0 {
			_ = w.sendHeader(true)
			return
		}
		if w.sendHeader(false) != nil {
			return
		}
	}
	if len(trailers) > 0 {
		_ = w.writeHeaders(trailers, true)
		return
	}
	c, l := b.c, b.l
	c.wmu.Lock()
	if !c.dead && !l.reset && !l.sentEnd {
		c.appendDataLocked(l.id, nil, true)
		l.sentEnd = true
	}
	c.wmu.Unlock()
	c.kick()
}

var _ http.Flusher = (*responseWriter)(nil)
