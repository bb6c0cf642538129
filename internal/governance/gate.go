package governance

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// waitersPerSlot bounds a Gate's queue: at most max(Max, 1)·waitersPerSlot waiters.
const waitersPerSlot = 4

// Gate admits at most Max calls at once. TryAcquire and Release are atomic counters when
// nobody waits (no lock, no allocation); Acquire may wait in a first-come-first-served
// queue, under a mutex, with one small allocation per waiter. All methods are safe for
// concurrent use.
type Gate struct {
	inflight atomic.Int64
	max      atomic.Int64
	waiting  atomic.Int64 // waiters queued or about to be (read without mu)

	mu         sync.Mutex // guards head, tail, queued
	head, tail *gateWaiter
	queued     int
}

// gateWaiter is one goroutine waiting in Acquire. Its fields are guarded by the gate's mu.
type gateWaiter struct {
	prev, next *gateWaiter
	ready      chan struct{} // buffered: receives the slot handed over
	inQueue    bool
}

// NewGate returns a gate admitting max calls at once; a max below 0 is 0 (a gate that
// admits nothing until SetMax raises it).
func NewGate(max int) *Gate {
	g := &Gate{}
	g.max.Store(int64(clampMax(max)))
	return g
}

func clampMax(n int) int { return max(n, 0) }

// SetMax changes the limit, live. Lowering it does not cut the calls in flight: the gate
// admits none until fewer than the new max are in flight. Raising it hands the new slots
// to waiters first.
func (g *Gate) SetMax(max int) {
	g.max.Store(int64(clampMax(max)))
	if g.waiting.Load() > 0 {
		g.mu.Lock()
		g.dispatchLocked()
		g.mu.Unlock()
	}
}

// Max returns the limit.
func (g *Gate) Max() int { return int(g.max.Load()) }

// InFlight returns the calls admitted and not yet released.
func (g *Gate) InFlight() int { return int(g.inflight.Load()) }

// TryAcquire takes a slot if one is free and nobody is waiting for one (waiters are
// served first); it never blocks and allocates nothing. A true answer must be paired with
// one Release.
func (g *Gate) TryAcquire() bool {
	if g.waiting.Load() > 0 {
		return false
	}
	return g.take()
}

// take increments inflight if it is below max.
func (g *Gate) take() bool {
	for {
		n := g.inflight.Load()
		if n >= g.max.Load() {
			return false
		}
		if g.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Acquire takes a slot, waiting for one up to wait and until ctx ends; it returns whether
// it got one (a true answer must be paired with one Release). Waiters are served first
// come, first served. At most max(Max, 1)·4 goroutines wait at once: beyond that, and when
// wait is not positive, Acquire returns false at once if no slot is free. A waiter that
// gives up at the moment a slot is handed to it passes the slot on: no slot is ever lost.
func (g *Gate) Acquire(ctx context.Context, wait time.Duration) bool {
	if g.TryAcquire() {
		return true
	}
	if wait <= 0 || ctx.Err() != nil {
		return false
	}
	g.mu.Lock()
	// Counted before the last try: a Release that ran its fast path before this point
	// freed a slot the try below sees; one after it sees waiting > 0 and dispatches
	// under mu, which this goroutine holds until it is queued. With waiters queued
	// already, a free slot is theirs (whoever freed it is dispatching): queue behind them.
	g.waiting.Add(1)
	if g.head == nil && g.take() {
		g.waiting.Add(-1)
		g.mu.Unlock()
		return true
	}
	if g.queued >= max(g.Max(), 1)*waitersPerSlot {
		g.waiting.Add(-1)
		g.mu.Unlock()
		return false
	}
	w := &gateWaiter{ready: make(chan struct{}, 1)}
	g.pushLocked(w)
	g.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-w.ready:
		return true
	case <-timer.C:
	case <-ctx.Done():
	}
	g.mu.Lock()
	if w.inQueue {
		g.removeLocked(w)
		g.mu.Unlock()
		return false
	}
	g.mu.Unlock()
	// Handed a slot while giving up: pass it on.
	g.Release()
	return false
}

// Release ends a call admitted by TryAcquire or Acquire. Its slot goes to the oldest
// waiter, if any (the slot changes hands: InFlight stays the same), otherwise it is
// freed. Without waiters it is one atomic add, lock-free.
func (g *Gate) Release() {
	if g.waiting.Load() == 0 {
		n := g.inflight.Add(-1)
		if n < 0 {
			panic("governance: Gate.Release without an acquired slot")
		}
		if g.waiting.Load() == 0 {
			return
		}
		// A waiter arrived meanwhile: make sure it sees the freed slot.
		g.mu.Lock()
		g.dispatchLocked()
		g.mu.Unlock()
		return
	}
	g.mu.Lock()
	if g.head != nil && g.inflight.Load() <= g.max.Load() {
		g.handLocked()     // this slot becomes the waiter's: inflight stays
		g.dispatchLocked() // and any slot freed meanwhile goes to the next ones
	} else {
		if g.inflight.Add(-1) < 0 {
			g.mu.Unlock()
			panic("governance: Gate.Release without an acquired slot")
		}
		g.dispatchLocked()
	}
	g.mu.Unlock()
}

// dispatchLocked hands free slots to waiters, oldest first.
func (g *Gate) dispatchLocked() {
	for g.head != nil && g.take() {
		g.handLocked()
	}
}

// handLocked gives a slot already counted in inflight to the oldest waiter.
func (g *Gate) handLocked() {
	w := g.head
	g.removeLocked(w)
	w.ready <- struct{}{} // buffered, never blocks
}

func (g *Gate) pushLocked(w *gateWaiter) {
	w.inQueue = true
	w.prev = g.tail
	if g.tail != nil {
		g.tail.next = w
	} else {
		g.head = w
	}
	g.tail = w
	g.queued++
}

// removeLocked takes w out of the queue and out of the waiting count.
func (g *Gate) removeLocked(w *gateWaiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		g.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		g.tail = w.prev
	}
	w.prev, w.next, w.inQueue = nil, nil, false
	g.queued--
	g.waiting.Add(-1)
}
