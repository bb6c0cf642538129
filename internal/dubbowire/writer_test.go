package dubbowire

import (
	"net"
	"testing"
	"time"
)

// TestWriterBoundsItsQueue: with a peer that does not read, Write waits once the queue
// holds its bytes (it does not grow without bound), WriteNow does not, and Close releases
// a waiting Write.
func TestWriterBoundsItsQueue(t *testing.T) {
	a, b := net.Pipe() // b never reads: every write blocks
	defer b.Close()
	w := NewWriter(a, time.Hour, 1000)
	frame := func(n int) *Buffer {
		f := NewBuffer()
		f.B = append(f.B, make([]byte, n)...)
		return f
	}
	if err := w.Write(frame(600)); err != nil { // taken by the loop, which blocks writing it
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		taken := w.queued == 0
		w.mu.Unlock()
		if taken {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop never took the first frame")
		}
		time.Sleep(time.Millisecond) // a bounded poll on the writer's own goroutine
	}
	if err := w.Write(frame(600)); err != nil { // queued: the queue was empty
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- w.Write(frame(600)) }() // over the bound: waits
	select {
	case err := <-blocked:
		t.Fatalf("Write over the bound returned at once: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := w.WriteNow(frame(10)); err != nil {
		t.Fatal(err)
	}
	a.Close() // the stalled write fails; the writer fails, and the waiting Write with it
	select {
	case err := <-blocked:
		if err == nil {
			t.Fatal("a Write on a failed writer succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting Write was not released when the writer failed")
	}
	w.Close()
}
