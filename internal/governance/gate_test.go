package governance

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strait-mesh/strait/test/wait"
)

// waitQueued waits until n goroutines are queued on g.
func waitQueued(t *testing.T, g *Gate, n int) {
	t.Helper()
	wait.For(t, 10*time.Second, "waiters queued", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.queued == n
	})
}

func TestGateTryAcquire(t *testing.T) {
	g := NewGate(3)
	for i := range 3 {
		if !g.TryAcquire() {
			t.Fatalf("TryAcquire %d refused", i+1)
		}
	}
	if g.TryAcquire() {
		t.Fatal("a fourth call admitted at max 3")
	}
	if g.InFlight() != 3 || g.Max() != 3 {
		t.Fatalf("InFlight, Max = %d, %d", g.InFlight(), g.Max())
	}
	g.Release()
	if !g.TryAcquire() {
		t.Fatal("refused after a Release")
	}

	// Lowering the limit cuts no call: none is admitted until fewer than 1 are in flight.
	g.SetMax(1)
	for want := 2; want >= 1; want-- {
		g.Release()
		if g.InFlight() != want || g.TryAcquire() {
			t.Fatalf("at max 1 with %d in flight: InFlight %d, admitted", want, g.InFlight())
		}
	}
	g.Release()
	if !g.TryAcquire() || g.TryAcquire() {
		t.Fatal("at max 1 with none in flight: want one admitted, then none")
	}
	g.Release()

	if NewGate(0).TryAcquire() || NewGate(-3).TryAcquire() {
		t.Fatal("a gate of max 0 admitted a call")
	}
	if NewGate(-3).Max() != 0 {
		t.Fatal("a negative max is not 0")
	}
}

func TestGateReleaseWithoutAcquirePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	NewGate(1).Release()
}

// TestGateWaitersInOrder queues three waiters one after the other and checks that they
// are served in that order, each slot handed over by a Release.
func TestGateWaitersInOrder(t *testing.T) {
	g := NewGate(1)
	if !g.TryAcquire() {
		t.Fatal("refused")
	}
	served := make(chan int, 3)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for i := range 3 {
		wg.Go(func() {
			if g.Acquire(t.Context(), time.Minute) {
				served <- i
			} else {
				served <- -1
			}
		})
		waitQueued(t, g, i+1)
	}
	if g.TryAcquire() {
		t.Fatal("TryAcquire went ahead of the waiters")
	}
	for want := range 3 {
		g.Release() // hands the slot to the oldest waiter
		if got := <-served; got != want {
			t.Fatalf("served waiter %d, want %d", got, want)
		}
		if g.InFlight() != 1 {
			t.Fatalf("after the hand-over: InFlight %d, want 1", g.InFlight())
		}
	}
	g.Release()
	if g.InFlight() != 0 || g.waiting.Load() != 0 {
		t.Fatalf("at the end: InFlight %d, waiting %d", g.InFlight(), g.waiting.Load())
	}
}

func TestGateQueueBound(t *testing.T) {
	for _, m := range []int{0, 1, 2} {
		g := NewGate(m)
		for range m {
			g.TryAcquire()
		}
		ctx, cancel := context.WithCancel(t.Context())
		bound := waitersPerSlot * max(m, 1)
		var wg sync.WaitGroup
		var got atomic.Int64
		for range bound {
			wg.Go(func() {
				if !g.Acquire(ctx, time.Minute) {
					got.Add(1)
				}
			})
		}
		waitQueued(t, g, bound)
		// The queue is full: one more is refused at once, however long it may wait.
		if g.Acquire(t.Context(), time.Hour) {
			t.Fatalf("max %d: admitted beyond the queue", m)
		}
		cancel() // the queued ones give up
		wg.Wait()
		if got.Load() != int64(bound) || g.waiting.Load() != 0 || g.InFlight() != m {
			t.Fatalf("max %d: %d gave up of %d, waiting %d, InFlight %d", m, got.Load(), bound, g.waiting.Load(), g.InFlight())
		}
	}
}

func TestGateAcquireGivesUp(t *testing.T) {
	g := NewGate(1)
	g.TryAcquire()
	if g.Acquire(t.Context(), 0) {
		t.Fatal("admitted with no wait at all")
	}
	if g.Acquire(t.Context(), 5*time.Millisecond) {
		t.Fatal("admitted by a timeout")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if g.Acquire(ctx, time.Hour) {
		t.Fatal("admitted with an ended context")
	}
	if g.waiting.Load() != 0 || g.head != nil {
		t.Fatalf("waiters left behind: %d", g.waiting.Load())
	}
	g.Release()
	// A free slot is taken at once, even with an ended context.
	if !g.Acquire(ctx, 0) {
		t.Fatal("a free slot refused")
	}
}

// TestGateSetMaxServesWaiters: raising the limit hands the new slots to waiters.
func TestGateSetMaxServesWaiters(t *testing.T) {
	g := NewGate(0)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	var admitted atomic.Int64
	for range 3 {
		wg.Go(func() {
			if g.Acquire(t.Context(), time.Minute) {
				admitted.Add(1)
			}
		})
	}
	waitQueued(t, g, 3)
	g.SetMax(2)
	wait.For(t, 10*time.Second, "two waiters admitted", func() bool { return admitted.Load() == 2 })
	if g.InFlight() != 2 || g.waiting.Load() != 1 {
		t.Fatalf("InFlight %d, waiting %d", g.InFlight(), g.waiting.Load())
	}
	g.Release()
	wg.Wait()
	if admitted.Load() != 3 {
		t.Fatalf("admitted %d, want 3", admitted.Load())
	}
	g.Release()
	g.Release()
	if g.InFlight() != 0 {
		t.Fatalf("InFlight %d at the end", g.InFlight())
	}
}

// TestGateHandOverToAGoneWaiter: a waiter that gives up after being handed a slot passes
// it on instead of keeping it.
func TestGateHandOverToAGoneWaiter(t *testing.T) {
	g := NewGate(1)
	g.TryAcquire()
	w := &gateWaiter{ready: make(chan struct{}, 1)}
	g.mu.Lock()
	g.waiting.Add(1)
	g.pushLocked(w)
	g.mu.Unlock()
	g.Release() // hands the slot to w
	if w.inQueue || len(w.ready) != 1 || g.InFlight() != 1 {
		t.Fatalf("not handed over: queued %v, InFlight %d", w.inQueue, g.InFlight())
	}
	// What Acquire does when its timer fires after that: pass the slot on.
	g.mu.Lock()
	handed := !w.inQueue
	g.mu.Unlock()
	if handed {
		g.Release()
	}
	if g.InFlight() != 0 || !g.TryAcquire() {
		t.Fatal("the slot was lost")
	}
}

// TestGateConcurrent hammers a gate with TryAcquire and with Acquire calls whose waits
// end at random moments, some while a slot is handed to them: the limit is never
// exceeded, and at the end no slot is lost and nobody waits.
func TestGateConcurrent(t *testing.T) {
	const max, goroutines, rounds = 3, 8, 2000
	g := NewGate(max)
	var holders, peak, admitted atomic.Int64
	hold := func(rnd *rand.Rand) {
		n := holders.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		for range rnd.IntN(4) {
			runtime.Gosched() // let others find the gate full
		}
		holders.Add(-1)
		g.Release()
		admitted.Add(1)
	}
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(i), 1))
			for range rounds {
				switch rnd.IntN(3) {
				case 0:
					if g.TryAcquire() {
						hold(rnd)
					}
				case 1:
					if g.Acquire(t.Context(), time.Duration(rnd.IntN(20_000))) {
						hold(rnd)
					}
				default:
					ctx, cancel := context.WithCancel(t.Context())
					if rnd.IntN(2) == 0 {
						cancel()
					}
					if g.Acquire(ctx, time.Millisecond) {
						hold(rnd)
					}
					cancel()
				}
			}
		})
	}
	wg.Wait()
	if peak.Load() > max {
		t.Fatalf("%d calls at once, max %d", peak.Load(), max)
	}
	if g.InFlight() != 0 || g.waiting.Load() != 0 || g.head != nil {
		t.Fatalf("at the end: InFlight %d, waiting %d", g.InFlight(), g.waiting.Load())
	}
	for range max {
		if !g.TryAcquire() {
			t.Fatal("a slot was lost")
		}
	}
	if admitted.Load() == 0 {
		t.Fatal("nothing admitted")
	}
}

func TestGateAllocs(t *testing.T) {
	g := NewGate(10)
	noAllocs(t, "TryAcquire+Release", func() {
		if g.TryAcquire() {
			g.Release()
		}
	})
	noAllocs(t, "Acquire of a free slot", func() {
		if g.Acquire(context.Background(), time.Second) {
			g.Release()
		}
	})
}
