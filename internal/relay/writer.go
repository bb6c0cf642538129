package relay

import (
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// Each connection has one writer goroutine that owns its socket (grpc-go's loopyWriter is
// the model). Read loops, other connections' read loops and fallback handlers append
// frames to the connection's wbuf under wmu and wake the writer; none of them ever waits
// on a socket. The one exception is writeNow: while the writer is idle, whoever flushes a
// plain TCP connection makes one non-blocking write of what is queued, and leaves the rest
// to the writer. A caller that stops reading stalls its own writer, and flow control
// (credit is returned to a sender only as its data moves into the receiver's write queue,
// which has a byte limit) holds the streams bound for it.

const (
	// maxConnQueue bounds the DATA bytes queued in one connection's write buffer; beyond
	// it, DATA waits in its stream's queue (at most one stream window per stream). Below
	// about 4 MiB, 64 KiB messages at full speed spend their time moving through stream
	// queues (make bench: 1.17x HAProxy with 512 KiB, 1.30x with 4 MiB).
	maxConnQueue = 4 << 20
	// maxQueuedControl bounds the control frames (PING and SETTINGS acknowledgements,
	// RST_STREAM, WINDOW_UPDATE) queued and not yet written: a peer that makes us
	// answer without reading the answers is cut (x/net's maxQueuedControlFrames).
	maxQueuedControl = 10000
	// finalWriteTimeout bounds the last write of a connection we end (its GOAWAY).
	finalWriteTimeout = time.Second
)

// kick wakes c's writer; it never blocks.
func (c *conn) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// queueRoomLocked is how many DATA bytes may still join c's write buffer.
func (c *conn) queueRoomLocked() int64 {
	return int64(maxConnQueue - len(c.wbuf) - c.writing)
}

// controlLocked counts a control frame appended to wbuf; too many queued ends the
// connection.
func (c *conn) controlLocked() {
	c.ctrl++
	if c.ctrl > maxQueuedControl && !c.dead {
		c.abused("control_queue")
		c.dead = true
		c.wbuf = c.wbuf[:0]
		c.nc.Close()
	}
}

// writeLoop is the writer goroutine: it takes what was queued, writes it outside the
// lock, and then moves queued stream data into the room the write made.
func (c *conn) writeLoop() {
	defer close(c.wdone)
	var (
		lp     loop
		stallC <-chan time.Time
		stallT *time.Timer
	)
	defer func() {
		if stallT != nil {
			stallT.Stop()
		}
	}()
	for {
		c.wmu.Lock()
		for (len(c.wbuf) == 0 && !c.dead) || c.busy {
			if !c.busy && !c.dead && len(c.blocked) > 0 && c.queueRoomLocked() > 0 {
				// writeNow made room: queued stream data moves in.
				if c.drainLocked(&lp); len(c.wbuf) > 0 {
					break
				}
			}
			if len(c.blocked) > 0 && stallC == nil && c.stall > 0 {
				if stallT == nil {
					stallT = time.NewTimer(c.stall / 2)
				} else {
					stallT.Reset(c.stall / 2)
				}
				stallC = stallT.C
			}
			c.wmu.Unlock()
			select {
			case <-c.wake:
			case <-stallC:
				stallC = nil
				c.checkStalls(&lp)
			}
			c.wmu.Lock()
		}
		if c.dead && (!c.final || len(c.wbuf) == 0) {
			c.wbuf = c.wbuf[:0]
			c.wmu.Unlock()
			c.nc.Close()
			return
		}
		out := c.wbuf
		c.wbuf, c.spare = c.spare[:0], nil
		c.writing, c.busy = len(out), true
		c.ctrl = 0
		final := c.dead
		c.wmu.Unlock()

		// The write deadline moves only when less than half of it is left: resetting a
		// runtime timer on every write costs more than the write often does.
		now := time.Now().UnixNano()
		if final {
			_ = c.nc.SetWriteDeadline(time.Unix(0, now+int64(finalWriteTimeout)))
		} else if c.wdl-now < int64(writeTimeout/2) {
			c.wdl = now + int64(writeTimeout)
			_ = c.nc.SetWriteDeadline(time.Unix(0, c.wdl))
		}
		_, err := c.nc.Write(out)

		c.wmu.Lock()
		c.writing, c.busy = 0, false
		c.spare = keepBuffer(out)
		if err != nil {
			c.dead = true
			c.final = false
		}
		if !c.dead && len(c.blocked) > 0 {
			c.drainLocked(&lp)
		}
		stall := c.stall
		armStall := len(c.blocked) > 0 && stall > 0 && stallC == nil
		c.wcond.Broadcast()
		c.wmu.Unlock()
		if armStall {
			if stallT == nil {
				stallT = time.NewTimer(stall / 2)
			} else {
				stallT.Reset(stall / 2)
			}
			stallC = stallT.C
		}
		if err != nil {
			c.nc.Close() // the read loop ends and cleans up
		}
		c.returnCredits(&lp)
		lp.flush()
		if stallC != nil {
			// A busy connection checks its stalled streams too.
			select {
			case <-stallC:
				stallC = nil
				c.checkStalls(&lp)
			default:
			}
		}
	}
}

// closeGracefully closes the connection once what is queued (a GOAWAY) is written.
func (c *conn) closeGracefully() {
	c.wmu.Lock()
	if !c.dead {
		c.dead, c.final = true, true
	}
	c.wmu.Unlock()
	c.kick()
}

// writeNow writes what c has queued at once, if its writer is idle, as far as the socket
// takes it without waiting (a plain TCP connection only: a TLS one cannot write without
// blocking); the rest, if any, is left to the writer. It saves the writer's wakeup on the
// path every call takes, and waits for nobody.
func (c *conn) writeNow() {
	c.wmu.Lock()
	if c.raw == nil || c.busy || c.dead || len(c.wbuf) == 0 {
		c.wmu.Unlock()
		c.kick()
		return
	}
	out := c.wbuf
	c.wbuf, c.spare = c.spare[:0], nil
	c.writing, c.busy = len(out), true
	c.ctrl = 0
	c.wmu.Unlock()

	n := writeNonBlocking(c.raw, out)

	c.wmu.Lock()
	c.writing, c.busy = 0, false
	if n < len(out) {
		// The rest goes first, before what was queued meanwhile.
		rest := out[:copy(out, out[n:])]
		c.spare, c.wbuf = c.wbuf[:0], append(rest, c.wbuf...)
	} else {
		c.spare = keepBuffer(out)
	}
	more := len(c.wbuf) > 0 || len(c.blocked) > 0 || c.dead
	c.wcond.Broadcast()
	c.wmu.Unlock()
	if more {
		c.kick()
	}
}

// keepBuffer returns b emptied for reuse, or nil if it grew large for a burst that is
// over: an idle connection does not hold megabytes.
func keepBuffer(b []byte) []byte {
	if cap(b) > 256<<10 && len(b) < cap(b)/4 {
		return nil
	}
	return b[:0]
}

// writeNonBlocking writes b to the socket as far as it goes without waiting, and returns
// how much went. An error (EAGAIN, or one the writer will meet again) stops it.
func writeNonBlocking(rc syscall.RawConn, b []byte) int {
	n := 0
	_ = rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			if err != nil || m <= 0 {
				break
			}
		}
		return true // done: never wait for the socket
	})
	return n
}

// checkStalls resets the streams whose queued data has not moved for the stall time:
// their receiver stopped reading.
func (c *conn) checkStalls(lp *loop) {
	var stalled []*leg
	c.wmu.Lock()
	limit := time.Now().UnixNano() - int64(c.stall)
	for _, l := range c.blocked {
		if l.since < limit && !l.reset {
			stalled = append(stalled, l)
		}
	}
	c.wmu.Unlock()
	for _, l := range stalled {
		c.abused("stalled")
		l.s.code.CompareAndSwap(-1, int32(codeStalled))
		c.resetBoth(lp, l, http2.ErrCodeCancel, http2.ErrCodeCancel)
	}
	lp.flush()
}

// Budget bounds the bytes queued in streams' queues (data that arrived for a receiver
// that has not taken it yet) across the servers and pools that share it, a gateway's:
// beyond its limit, their new streams are shed with RESOURCE_EXHAUSTED / 503. The
// connections' write queues are bounded apart (maxConnQueue each).
type Budget struct {
	used  atomic.Int64
	limit int64
}

// DefaultQueueBudget is the limit of a nil Budget's default, shared by the process.
const DefaultQueueBudget = 256 << 20

var processBudget = &Budget{limit: DefaultQueueBudget}

// NewBudget returns a budget of limit bytes (DefaultQueueBudget if limit <= 0).
func NewBudget(limit int64) *Budget {
	if limit <= 0 {
		limit = DefaultQueueBudget
	}
	return &Budget{limit: limit}
}

func (b *Budget) add(n int)  { b.used.Add(int64(n)) }
func (b *Budget) over() bool { return b.used.Load() > b.limit }

// Used is how many bytes are queued now.
func (b *Budget) Used() int64 { return b.used.Load() }
