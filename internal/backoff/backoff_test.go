package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBoundsDoubleUpToTheCap(t *testing.T) {
	ms := time.Millisecond
	low, high := New(100*ms, time.Second), New(100*ms, time.Second)
	low.draw = func(int64) int64 { return 0 }        // the lowest delay
	high.draw = func(n int64) int64 { return n - 1 } // the highest
	ceilings := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, time.Second}
	for i, c := range ceilings {
		if got := low.Next(); got != c/2 {
			t.Errorf("delay %d, lowest draw: %v, want %v", i+1, got, c/2)
		}
		if got := high.Next(); got != c {
			t.Errorf("delay %d, highest draw: %v, want %v", i+1, got, c)
		}
	}
	low.Reset()
	if got := low.Next(); got != 50*ms {
		t.Errorf("after Reset: %v, want 50ms", got)
	}
}

func TestJitterSpreads(t *testing.T) {
	b := New(time.Second, time.Second).WithSource(rand.NewPCG(1, 2))
	seen := map[time.Duration]bool{}
	var lo, hi time.Duration = time.Hour, 0
	for range 1000 {
		d := b.Next()
		if d < 500*time.Millisecond || d > time.Second {
			t.Fatalf("delay %v outside [500ms, 1s]", d)
		}
		seen[d] = true
		lo, hi = min(lo, d), max(hi, d)
	}
	// Two clients that start together are apart; the draws cover the range.
	if len(seen) < 990 || lo > 510*time.Millisecond || hi < 990*time.Millisecond {
		t.Fatalf("%d distinct delays in [%v, %v]", len(seen), lo, hi)
	}
}

func TestGlobalSourceAndNoOverflow(t *testing.T) {
	b := New(time.Hour, math.MaxInt64)
	for i := range 200 {
		d := b.Next()
		if d <= 0 || d < b.ceil/2 || d > b.ceil {
			t.Fatalf("delay %d: %v (ceiling %v)", i, d, b.ceil)
		}
	}
	if b.ceil != math.MaxInt64 {
		t.Fatalf("ceiling %v, want the cap", b.ceil)
	}
	if c := New(time.Second, time.Millisecond); c.max != time.Second {
		t.Fatalf("a cap below the base: %v", c.max)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("New(0, …) did not panic")
		}
	}()
	New(0, time.Second)
}

func TestSleepAndWaitEndWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	if !Sleep(ctx, time.Microsecond) {
		t.Fatal("Sleep of a live context reported false")
	}
	done := make(chan bool)
	go func() { done <- New(time.Hour, time.Hour).Wait(ctx) }()
	cancel()
	if <-done {
		t.Fatal("Wait reported true after the context ended")
	}
	if Sleep(ctx, 0) {
		t.Fatal("Sleep of an ended context reported true")
	}
}
