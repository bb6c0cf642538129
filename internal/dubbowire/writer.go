package dubbowire

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"
)

// Buffer holds one frame. Buffers are pooled: a gateway reads a frame into one, hands it
// from goroutine to goroutine, and frees it once written.
type Buffer struct{ B []byte }

const (
	bufferSize    = 4 << 10
	maxPooledSize = 64 << 10
)

var buffers = sync.Pool{New: func() any { return &Buffer{B: make([]byte, 0, bufferSize)} }}

// NewBuffer returns an empty buffer from the pool.
func NewBuffer() *Buffer {
	b := buffers.Get().(*Buffer)
	b.B = b.B[:0]
	return b
}

// Free returns b to the pool (a large one is left to the garbage collector). b must not be
// used after.
func (b *Buffer) Free() {
	if b == nil || cap(b.B) > maxPooledSize {
		return
	}
	buffers.Put(b)
}

// ReadBuffer reads one frame into a buffer from the pool (see ReadFrame).
func ReadBuffer(r *bufio.Reader, maxBody int) (*Buffer, Header, error) {
	b := NewBuffer()
	frame, h, err := ReadFrame(r, maxBody, b.B)
	if err != nil {
		b.Free()
		return nil, h, err
	}
	b.B = frame
	return b, h, nil
}

// ErrWriterClosed is returned by Writer.Write once the writer is closed or has failed.
var ErrWriterClosed = errors.New("dubbowire: connection closed")

// Writer writes frames to a connection from one goroutine of its own, as many as are
// queued in one system call: a Dubbo connection carries many calls at once, and one
// write per frame would cost a system call (and a TLS record) each. A write that makes
// no progress for the stall timeout fails the writer and closes the connection. The
// queue is bounded in bytes: Write waits while it is full, so that a peer that does not
// read holds up only the calls that answer it (and, through them, its own requests).
type Writer struct {
	nc    net.Conn
	stall time.Duration
	max   int // bytes queued beyond which Write waits

	mu     sync.Mutex
	room   *sync.Cond // signalled when the queue is taken, or the writer ends
	q      []*Buffer
	queued int
	err    error
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

// DefaultMaxQueued bounds what a Writer queues (NewWriter's maxQueued if 0).
const DefaultMaxQueued = 8 << 20

// NewWriter starts a writer on nc that queues at most maxQueued bytes (one frame of any
// size when the queue is empty); Close stops it.
func NewWriter(nc net.Conn, stall time.Duration, maxQueued int) *Writer {
	if stall <= 0 {
		stall = 30 * time.Second
	}
	if maxQueued <= 0 {
		maxQueued = DefaultMaxQueued
	}
	w := &Writer{nc: nc, stall: stall, max: maxQueued, wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.room = sync.NewCond(&w.mu)
	go w.loop()
	return w
}

// Write queues b, waiting while the queue is full; the writer frees b once written (or
// dropped). It fails only if the writer is closed or has failed.
func (w *Writer) Write(b *Buffer) error { return w.write(b, true) }

// WriteNow queues b even if the queue is full (a small frame a read loop must not wait
// for: a heartbeat's answer).
func (w *Writer) WriteNow(b *Buffer) error { return w.write(b, false) }

func (w *Writer) write(b *Buffer, wait bool) error {
	w.mu.Lock()
	for wait && !w.closed && w.err == nil && w.queued > 0 && w.queued+len(b.B) > w.max {
		w.room.Wait()
	}
	if w.closed || w.err != nil {
		err := w.err
		w.mu.Unlock()
		b.Free()
		if err == nil {
			err = ErrWriterClosed
		}
		return err
	}
	w.q = append(w.q, b)
	w.queued += len(b.B)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// WriteBytes queues a copy of frame.
func (w *Writer) WriteBytes(frame []byte) error {
	b := NewBuffer()
	b.B = append(b.B, frame...)
	return w.Write(b)
}

// Close writes what is queued (within the stall timeout) and stops the writer; it does
// not close the connection.
func (w *Writer) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.wake)
	}
	w.room.Broadcast()
	w.mu.Unlock()
	<-w.done
}

// Err is why the writer failed, if it did.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *Writer) loop() {
	defer close(w.done)
	bw := bufio.NewWriterSize(w.nc, 32<<10)
	var batch []*Buffer
	for {
		_, open := <-w.wake
		w.mu.Lock()
		batch, w.q = w.q, batch[:0]
		w.queued = 0
		failed := w.err != nil
		w.room.Broadcast()
		w.mu.Unlock()
		if len(batch) > 0 && !failed {
			_ = w.nc.SetWriteDeadline(time.Now().Add(w.stall))
			var err error
			for _, b := range batch {
				if err == nil {
					_, err = bw.Write(b.B)
				}
				b.Free()
			}
			if err == nil {
				err = bw.Flush()
			}
			if err != nil {
				w.mu.Lock()
				w.err = err
				w.room.Broadcast()
				w.mu.Unlock()
				w.nc.Close()
			}
		} else {
			for _, b := range batch {
				b.Free()
			}
		}
		clear(batch)
		if !open {
			w.mu.Lock()
			rest := w.q
			w.q = nil
			w.mu.Unlock()
			if len(rest) > 0 && !failed {
				_ = w.nc.SetWriteDeadline(time.Now().Add(w.stall))
				for _, b := range rest {
					_, _ = bw.Write(b.B)
					b.Free()
				}
				_ = bw.Flush()
			}
			return
		}
	}
}
