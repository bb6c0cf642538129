package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/strait-mesh/strait/internal/dubbowire"
)

// The dubbo protocol: org.apache.dubbo.strait.EchoService.Echo(String) of test/dubbogo's
// dubbo-go provider, over the classic Dubbo protocol (hessian2), as a Dubbo consumer makes
// it: few connections, each carrying many requests at once told apart by their IDs.
const (
	dubboInterface = "org.apache.dubbo.strait.EchoService"
	dubboVersion   = "1.0.0"
	dubboGroup     = "strait"
)

// dubboClient holds conns connections with slots requests in flight on each at most. A
// call takes a free slot (a request frame of its own, built once, whose ID alone changes
// from call to call), writes it and waits for the response with that ID; the connection's
// reader checks the response and hands the verdict to the slot. Nothing is allocated per
// call on the way.
type dubboClient struct {
	conns []*dubboConn
	free  chan *dubboSlot
	wg    sync.WaitGroup // the read loops
}

// dubboConn is one consumer connection.
type dubboConn struct {
	nc    net.Conn
	slots []*dubboSlot // by the low 16 bits of a request ID
	str   string       // the argument, which Echo returns
	want  []byte       // its hessian2 encoding, as the provider writes the result

	wmu     sync.Mutex
	wbuf    []byte // frames waiting for the writer
	spare   []byte
	writing bool // a caller is writing wbuf out: others append and go on

	done chan struct{} // closed when the connection failed
	err  error         // why; set before done is closed
	once sync.Once

	slow atomic.Int64 // responses check had to decode (not the bytes expected)
}

// dubboSlot is one request in flight on a connection.
type dubboSlot struct {
	c     *dubboConn
	idx   uint64
	seq   uint64
	frame []byte        // the request, with the ID of its last call
	id    atomic.Uint64 // the ID awaited, 0 if none: the reader and a giving-up caller race for it
	res   chan error    // the verdict on the response (capacity 1)
}

// dubboMaxBody bounds a response body.
const dubboMaxBody = 32 << 20

func newDubboClient(target string, payload, conns, callers int) (*dubboClient, error) {
	str := string(bytes.Repeat([]byte{'x'}, payload))
	enc := hessian.NewEncoder()
	if err := enc.Encode(str); err != nil {
		return nil, fmt.Errorf("dubbo: encode the argument: %w", err)
	}
	want := enc.Buffer()
	req := dubbowire.Request{
		Path: dubboInterface, Version: dubboVersion, Method: "Echo", ParamTypes: "Ljava/lang/String;",
		// The call's deadline, as Dubbo consumers send it (the calls' own is 5 s).
		Attachments: map[string]string{"group": dubboGroup, "timeout": "5000"},
	}
	template, err := dubbowire.AppendRequest(nil, 0, req, []any{str}, true)
	if err != nil {
		return nil, fmt.Errorf("dubbo: build the request: %w", err)
	}
	perConn := (callers + conns - 1) / conns
	if perConn > 1<<16 {
		return nil, fmt.Errorf("dubbo: %d requests in flight per connection, at most %d", perConn, 1<<16)
	}
	d := &dubboClient{free: make(chan *dubboSlot, perConn*conns)}
	for range conns {
		nc, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			d.close()
			return nil, fmt.Errorf("dubbo: dial %s: %w", target, err)
		}
		c := &dubboConn{nc: nc, str: str, want: want, done: make(chan struct{})}
		for i := range perConn {
			c.slots = append(c.slots, &dubboSlot{c: c, idx: uint64(i), frame: bytes.Clone(template), res: make(chan error, 1)})
		}
		d.conns = append(d.conns, c)
		d.wg.Go(c.readLoop)
	}
	// Free slots in turn across the connections, so that a few calls in flight (the open
	// loop) spread over all of them.
	for i := range perConn {
		for _, c := range d.conns {
			d.free <- c.slots[i]
		}
	}
	return d, nil
}

// call is a loadtest.Call: Echo with the payload, the answer checked.
func (d *dubboClient) call(ctx context.Context) error {
	var s *dubboSlot
	select {
	case s = <-d.free:
	case <-ctx.Done():
		return ctx.Err()
	}
	err := s.call(ctx)
	d.free <- s
	return err
}

func (d *dubboClient) close() {
	for _, c := range d.conns {
		c.fail(errors.New("dubbo: closed"))
	}
	d.wg.Wait()
}

func (s *dubboSlot) call(ctx context.Context) error {
	c := s.c
	s.seq++
	id := s.seq<<16 | s.idx
	dubbowire.SetID(s.frame, id)
	s.id.Store(id)
	c.send(s.frame)
	select {
	case err := <-s.res:
		return err
	case <-ctx.Done():
		if s.id.CompareAndSwap(id, 0) {
			return ctx.Err()
		}
	case <-c.done:
		if s.id.CompareAndSwap(id, 0) {
			return c.err
		}
	}
	// The reader took the ID first: its verdict is on the way.
	return <-s.res
}

// send queues a frame and, unless another caller is writing already, writes what is queued
// until nothing is: calls that arrive together go out in one write. A write error ends
// the connection (every call waiting on it fails).
func (c *dubboConn) send(frame []byte) {
	c.wmu.Lock()
	c.wbuf = append(c.wbuf, frame...)
	if c.writing {
		c.wmu.Unlock()
		return
	}
	c.writing = true
	for len(c.wbuf) > 0 {
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.wmu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := c.nc.Write(buf)
		c.wmu.Lock()
		c.spare = buf[:0]
		if err != nil {
			c.wbuf = c.wbuf[:0]
			c.writing = false
			c.wmu.Unlock()
			c.fail(fmt.Errorf("dubbo: write: %w", err))
			return
		}
	}
	c.writing = false
	c.wmu.Unlock()
}

// fail ends the connection with err (the first error wins): waiting calls fail with it.
func (c *dubboConn) fail(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
		c.nc.Close()
	})
}

// readLoop reads the responses, checks each and hands the verdict to its slot, and
// answers the peer's heartbeats, until the connection fails or is closed.
func (c *dubboConn) readLoop() {
	br := bufio.NewReaderSize(c.nc, 64<<10)
	var buf []byte
	for {
		frame, h, err := dubbowire.ReadFrame(br, dubboMaxBody, buf)
		if err != nil {
			c.fail(fmt.Errorf("dubbo: read: %w", err))
			return
		}
		buf = frame[:0]
		if h.IsRequest() {
			if h.Event() && h.TwoWay() {
				c.send(dubbowire.AppendHeartbeatResponse(nil, h.ID()))
			}
			continue
		}
		if h.Event() {
			continue // an answer to a heartbeat (we send none)
		}
		idx := h.ID() & 0xffff
		if idx >= uint64(len(c.slots)) {
			continue
		}
		s := c.slots[idx]
		if !s.id.CompareAndSwap(h.ID(), 0) {
			continue // its caller gave up
		}
		s.res <- c.check(frame, h)
	}
}

// check says whether a response is Echo's success with the argument as its value: a fast
// comparison with the bytes the provider writes (result flag RESPONSE_VALUE, with or
// without attachments, then the string), else a full decode.
func (c *dubboConn) check(frame []byte, h dubbowire.Header) error {
	if h.Status() == dubbowire.StatusOK && h.Serialization() == dubbowire.SerializationHessian2 && len(frame) == dubbowire.HeaderLen+h.BodyLen() {
		body := frame[dubbowire.HeaderLen:]
		if n := 1 + len(c.want); len(body) >= n && bytes.Equal(body[1:n], c.want) {
			switch body[0] {
			case 0x90 + byte(dubbowire.ResultValue):
				if len(body) == n {
					return nil
				}
			case 0x90 + byte(dubbowire.ResultValueWithAttachments):
				if len(body) > n && (body[n] == 'H' || body[n] == 'M' || body[n] == 'N') {
					return nil
				}
			}
		}
	}
	c.slow.Add(1)
	resp, err := dubbowire.ParseResponse(frame)
	if err != nil {
		return fmt.Errorf("dubbo: %w", err)
	}
	if err := resp.Err(); err != nil {
		return err
	}
	v, ok := resp.Value.(string)
	switch {
	case !ok:
		return fmt.Errorf("dubbo: wrong answer: a %T, not a string", resp.Value)
	case v != c.str:
		return fmt.Errorf("dubbo: wrong answer: a string of %d bytes (%.20q…), want %d", len(v), v, len(c.str))
	}
	return nil
}
