package governance

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBucketTakes drives buckets through explicit times: each step takes once at t0+at
// and expects ok and, when refused, the wait.
func TestBucketTakes(t *testing.T) {
	type step struct {
		at   int64
		ok   bool
		wait time.Duration
	}
	cases := []struct {
		name        string
		rate, burst float64
		steps       []step
	}{
		{"burst then one per second", 1, 3, []step{
			{0, true, 0}, {0, true, 0}, {0, true, 0}, {0, false, time.Second},
			{sec / 2, false, time.Second / 2}, {sec, true, 0}, {sec, false, time.Second},
			{3 * sec, true, 0}, {3 * sec, true, 0}, {3 * sec, false, time.Second},
		}},
		{"half a token per second", 0.5, 1, []step{
			{0, true, 0}, {sec, false, time.Second}, {2*sec - 1, false, 1}, {2 * sec, true, 0},
		}},
		{"rate 0 refuses even a full bucket", 0, 10, []step{
			{0, false, time.Second}, {100 * sec, false, time.Second},
		}},
		{"ten million per second", 1e7, 1, []step{
			{0, true, 0}, {0, false, 100}, {99, false, 1}, {100, true, 0}, {250, true, 0}, {250, false, 100},
		}},
		{"a full bucket holds burst after a long idle time", 1000, 2, []step{
			{0, true, 0}, {0, true, 0}, {3600 * sec, true, 0}, {3600 * sec, true, 0},
			{3600 * sec, false, time.Millisecond},
		}},
		{"a fractional burst keeps its fraction", 1, 2.5, []step{
			{0, true, 0}, {0, true, 0}, {0, false, time.Second / 2}, {sec / 2, true, 0},
			{sec / 2, false, time.Second},
		}},
		{"a burst below one is one", 10, 0.1, []step{
			{0, true, 0}, {0, false, 100 * time.Millisecond},
		}},
		{"a rate that is no power of two", 3, 1, []step{
			{0, true, 0}, {0, false, 333333334}, {333333333, false, 1}, {333333334, true, 0},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := NewBucket(c.rate, c.burst, t0)
			for i, s := range c.steps {
				ok, wait := b.Take(t0 + s.at)
				if ok != s.ok || wait != s.wait {
					t.Fatalf("step %d at +%v: Take = %v, %v; want %v, %v", i, time.Duration(s.at), ok, wait, s.ok, s.wait)
				}
			}
		})
	}
}

// drainBucket takes every token b holds at now and returns how many it got.
func drainBucket(b *Bucket, now int64) int64 {
	var n int64
	for {
		if ok, _ := b.Take(now); !ok {
			return n
		}
		n++
	}
}

// TestBucketAdmitsExactly checks the property that matters: over a period P a bucket,
// drained at random times (never so far apart that it fills up and drops tokens), admits
// burst + rate·P tokens, within one, whatever the rate, from half a token to ten million
// tokens per second.
func TestBucketAdmitsExactly(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 11))
	for _, c := range []struct {
		rate, burst float64
		period      int64
	}{
		{0.5, 2, 1000 * sec},
		{1, 5, 600 * sec},
		{3, 2, 300 * sec},
		{7.3, 4, 300 * sec},
		{1000, 100, 10 * sec},
		{333_333, 50, 300 * ms},
		{3_000_000, 1000, 20 * ms},
		{7_000_000, 2, 20 * ms},
		{10_000_000, 10, 10 * ms},
	} {
		b := NewBucket(c.rate, c.burst, t0)
		var got int64
		for now := t0; now < t0+c.period; {
			got += drainBucket(b, now)
			now += 1 + rnd.Int64N(int64((c.burst-1)*1e9/c.rate))
		}
		got += drainBucket(b, t0+c.period)
		want := c.burst + c.rate*float64(c.period)/1e9
		if math.Abs(float64(got)-want) > 1 {
			t.Errorf("rate %v burst %v over %v: admitted %d, want %.1f ± 1", c.rate, c.burst, time.Duration(c.period), got, want)
		}
	}
}

// TestBucketConcurrent takes from one bucket on 8 goroutines sharing a simulated clock
// that each advances: tokens are neither made twice nor lost, so the admitted count is
// burst + rate·P exactly once the bucket is drained at the end. (The bucket is drained
// first: a full bucket drops what it earns until something takes from it.)
func TestBucketConcurrent(t *testing.T) {
	const (
		rate, burst = 100_000, 100
		period      = sec
		goroutines  = 8
	)
	b := NewBucket(rate, burst, t0)
	var clock, admitted atomic.Int64
	clock.Store(t0)
	admitted.Store(drainBucket(b, t0))
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for {
				now := clock.Add(2 * 1000) // 2µs: five calls for each token
				if now > t0+period {
					return
				}
				if ok, _ := b.Take(now); ok {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	max := int64(burst + rate*period/sec)
	if got := admitted.Load(); got > max {
		t.Fatalf("admitted %d during the period, more than %d", got, max)
	}
	if got := admitted.Load() + drainBucket(b, t0+period); got != max {
		t.Fatalf("admitted %d, want %d exactly", got, max)
	}
}

// TestBucketSetWhileTaking changes the configuration (same rate and burst) again and
// again while goroutines take: a Set keeps the tokens held, so the count stays exact
// (each Set may drop less than 1/1024 of a token of accrual).
func TestBucketSetWhileTaking(t *testing.T) {
	const rate, burst, period = 10_000, 10, sec
	b := NewBucket(rate, burst, t0)
	var clock, admitted atomic.Int64
	clock.Store(t0)
	admitted.Store(drainBucket(b, t0))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				now := clock.Add(20 * 1000)
				if now > t0+period {
					return
				}
				if ok, _ := b.Take(now); ok {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < 200; i++ {
			now := clock.Load()
			if now > t0+period {
				return
			}
			b.Set(rate, burst, now)
		}
	})
	wg.Wait()
	want := int64(burst + rate*period/sec)
	if got := admitted.Load() + drainBucket(b, t0+period); got < want-1 || got > want {
		t.Fatalf("admitted %d, want %d (one less at worst)", got, want)
	}
}

func TestBucketSet(t *testing.T) {
	b := NewBucket(10, 10, t0)
	for range 4 {
		b.Take(t0)
	}
	// 6 tokens held; a burst of 4 caps them.
	b.Set(10, 4, t0)
	if got := b.tokens(t0); got != 4 {
		t.Fatalf("after Set(burst 4): %v tokens, want 4", got)
	}
	if b.Rate() != 10 || b.Burst() != 4 {
		t.Fatalf("Rate, Burst = %v, %v", b.Rate(), b.Burst())
	}
	// A larger burst keeps what is held; the new rate fills it.
	b.Set(100, 50, t0)
	if got := b.tokens(t0); got != 4 {
		t.Fatalf("after Set(burst 50): %v tokens, want 4", got)
	}
	if got := b.tokens(t0 + 100*ms); got != 14 {
		t.Fatalf("100ms later at 100/s: %v tokens, want 14", got)
	}
	if got := drainBucket(b, t0+100*ms); got != 14 {
		t.Fatalf("drained %d, want 14", got)
	}
	// Rate 0 refuses what is held, and keeps it for a later rate.
	b.Set(0, 50, t0+100*ms)
	b.Set(0, 50, t0+10*sec)
	if ok, wait := b.Take(t0 + 10*sec); ok || wait != time.Second {
		t.Fatalf("rate 0: Take = %v, %v", ok, wait)
	}
	b.Set(1, 50, t0+20*sec)
	if got := b.tokens(t0 + 20*sec); got != 0 {
		t.Fatalf("after rate 0 with an empty bucket: %v tokens, want 0", got)
	}
	if ok, wait := b.Take(t0 + 20*sec); ok || wait != time.Second {
		t.Fatalf("empty at 1/s: Take = %v, %v", ok, wait)
	}
	// A half-spent token is kept across Set.
	b.Set(2, 50, t0+20*sec+sec/4)
	if ok, wait := b.Take(t0 + 20*sec + sec/4); ok || wait != 375*time.Millisecond {
		t.Fatalf("a quarter token then 2/s: Take = %v, %v; want false, 375ms", ok, wait)
	}
}

func TestBucketBounds(t *testing.T) {
	for _, c := range []struct {
		rate, burst, wantRate, wantBurst float64
	}{
		{-1, -1, 0, 1},
		{math.NaN(), math.NaN(), 0, 1},
		{1e-9, 0.5, 0, 1}, // below 2^-20/s: 0
		{1e12, 1e300, MaxRate, MaxBurst},
		{math.Inf(1), math.Inf(1), MaxRate, MaxBurst},
	} {
		b := NewBucket(c.rate, c.burst, t0)
		if b.Rate() != c.wantRate || b.Burst() != c.wantBurst {
			t.Errorf("NewBucket(%v, %v): Rate, Burst = %v, %v; want %v, %v", c.rate, c.burst, b.Rate(), b.Burst(), c.wantRate, c.wantBurst)
		}
	}
	// The highest rate and burst still count exactly.
	b := NewBucket(1e12, 1e300, t0)
	if got := b.tokens(t0); got != MaxBurst {
		t.Fatalf("full at MaxBurst: %v", got)
	}
}

// TestBucketClockEdges: a clock from 0, a clock that goes back a little (another
// goroutine's read), and years at the highest rate, which rebase the bucket.
func TestBucketClockEdges(t *testing.T) {
	b := NewBucket(1, 1, 0)
	if ok, _ := b.Take(0); !ok {
		t.Fatal("a monotonic clock at 0: refused")
	}
	if ok, wait := b.Take(-5); ok || wait != time.Second+5 {
		t.Fatalf("5ns back: Take = %v, %v", ok, wait)
	}
	if ok, _ := b.Take(sec); !ok {
		t.Fatal("one second later: refused")
	}

	b = NewBucket(MaxRate, 2, t0)
	drainBucket(b, t0)
	far := t0 + 10*365*24*3600*sec // ten years: 3·10^16 tokens, past the rebase point
	if got := drainBucket(b, far); got != 2 {
		t.Fatalf("after ten years: drained %d, want 2", got)
	}
	if ok, wait := b.Take(far); ok || wait != 10 {
		t.Fatalf("after the rebase: Take = %v, %v; want false, 10ns", ok, wait)
	}
	if got := drainBucket(b, far+1000); got != 2 {
		t.Fatalf("1µs after the rebase: drained %d, want 2", got)
	}
	if got := drainBucket(b, math.MaxInt64-sec); got != 2 {
		t.Fatalf("at the end of int64 time: drained %d, want 2", got)
	}
}

func TestBucketAllocs(t *testing.T) {
	b := NewBucket(1e6, 10, t0)
	now := t0
	noAllocs(t, "Take", func() {
		now += 500
		b.Take(now)
	})
}
