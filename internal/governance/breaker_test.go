package governance

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// breakerLog records a breaker's onChange calls.
type breakerLog struct {
	mu  sync.Mutex
	log []string
}

func (r *breakerLog) onChange(from, to State) {
	r.mu.Lock()
	r.log = append(r.log, from.String()+">"+to.String())
	r.mu.Unlock()
}

func (r *breakerLog) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.log, " ")
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", Open: "open", HalfOpen: "half-open", 7: "State(7)"} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", int(s), s.String(), want)
		}
	}
}

func TestBreakerDefaults(t *testing.T) {
	got := NewBreaker(BreakerConfig{ErrorRatio: 0.5}, nil).Config()
	want := BreakerConfig{Window: 10 * time.Second, MinCalls: 20, ErrorRatio: 0.5, OpenFor: 5 * time.Second, Probes: 3}
	if got != want {
		t.Fatalf("defaults: %+v, want %+v", got, want)
	}
}

// breakerStep is one step of a breaker scenario: at t0+at, Allow; if it admits the call,
// Record it with failed and elapsed. ok and probe are what Allow must answer, state the
// state after the step.
type breakerStep struct {
	at      int64
	failed  bool
	elapsed time.Duration
	ok      bool
	probe   bool
	state   State
}

// playBreaker plays steps on b; repeat[i] > 1 plays step i that many times.
func playBreaker(t *testing.T, b *Breaker, steps []breakerStep, repeat []int) {
	t.Helper()
	for i, c := range steps {
		n := 1
		if i < len(repeat) && repeat[i] > 0 {
			n = repeat[i]
		}
		for k := range n {
			ok, probe := b.Allow(t0 + c.at)
			if ok != c.ok || probe != c.probe {
				t.Fatalf("step %d (#%d) at +%v: Allow = %v, %v; want %v, %v", i, k, time.Duration(c.at), ok, probe, c.ok, c.probe)
			}
			if ok {
				b.Record(t0+c.at, c.failed, c.elapsed, probe)
			}
			if b.State() != c.state {
				t.Fatalf("step %d (#%d) at +%v: state %v, want %v", i, k, time.Duration(c.at), b.State(), c.state)
			}
		}
	}
}

func TestBreakerErrorRatio(t *testing.T) {
	var tr breakerLog
	b := NewBreaker(BreakerConfig{MinCalls: 10, ErrorRatio: 0.5}, tr.onChange)
	playBreaker(t, b, []breakerStep{
		{at: 0, failed: true, ok: true, state: Closed}, // ×9: under MinCalls
		{at: ms, ok: true, state: Open},                // 10 calls, 9 errors: the success opens it
		{at: 2 * ms, ok: false, state: Open},
		{at: 5*sec + ms - 1, ok: false, state: Open},             // OpenFor not over
		{at: 5*sec + ms, ok: true, probe: true, state: HalfOpen}, // ×2 probes succeed
		{at: 5*sec + 2*ms, ok: true, probe: true, state: Closed}, // the third closes it
	}, []int{9, 1, 1, 1, 2, 1})
	if c, e, s := b.Counts(t0 + 5*sec + 2*ms); c != 0 || e != 0 || s != 0 {
		t.Fatalf("closed with counts %d, %d, %d; want an empty window", c, e, s)
	}
	// Under the ratio: 10 calls, 4 errors stay closed.
	playBreaker(t, b, []breakerStep{
		{at: 6 * sec, failed: true, ok: true, state: Closed},
		{at: 6 * sec, ok: true, state: Closed},
	}, []int{4, 6})
	if c, e, _ := b.Counts(t0 + 6*sec); c != 10 || e != 4 {
		t.Fatalf("counts %d, %d; want 10, 4", c, e)
	}
	if tr.String() != "closed>open open>half-open half-open>closed" {
		t.Fatalf("transitions: %s", tr.String())
	}
}

func TestBreakerFailedOrSlowProbeReopens(t *testing.T) {
	for _, c := range []struct {
		name    string
		failed  bool
		elapsed time.Duration
	}{{"failed", true, 0}, {"slow", false, 2 * time.Second}} {
		t.Run(c.name, func(t *testing.T) {
			var tr breakerLog
			b := NewBreaker(BreakerConfig{MinCalls: 5, ErrorCount: 5, OpenFor: time.Second, Probes: 2, SlowCall: time.Second}, tr.onChange)
			playBreaker(t, b, []breakerStep{
				{at: 0, failed: true, ok: true, state: Closed}, // ×4
				{at: 0, failed: true, ok: true, state: Open},
				{at: sec, ok: true, probe: true, state: HalfOpen},                                   // one probe succeeds
				{at: sec, failed: c.failed, elapsed: c.elapsed, ok: true, probe: true, state: Open}, // the other reopens
				{at: 2*sec - 1, ok: false, state: Open},                                             // for OpenFor again
				{at: 2 * sec, ok: true, probe: true, state: HalfOpen},
			}, []int{4, 1, 1, 1, 1, 1})
			want := "closed>open open>half-open half-open>open open>half-open"
			if tr.String() != want {
				t.Fatalf("transitions: %s, want %s", tr.String(), want)
			}
		})
	}
}

func TestBreakerSlowRatio(t *testing.T) {
	b := NewBreaker(BreakerConfig{MinCalls: 4, SlowRatio: 0.5, SlowCall: 100 * time.Millisecond}, nil)
	playBreaker(t, b, []breakerStep{
		{at: 0, elapsed: 100 * time.Millisecond, ok: true, state: Closed}, // not slow: not longer than SlowCall
		{at: 0, elapsed: 101 * time.Millisecond, ok: true, state: Closed}, // ×1
		{at: 0, failed: true, ok: true, state: Closed},                    // errors do not count here
		{at: 0, elapsed: time.Second, ok: true, state: Open},              // 4 calls, 2 slow
	}, nil)
	if c, e, s := b.Counts(t0); c != 4 || e != 1 || s != 2 {
		t.Fatalf("counts %d, %d, %d; want 4, 1, 2", c, e, s)
	}
	// SlowRatio without SlowCall is off.
	b = NewBreaker(BreakerConfig{MinCalls: 1, SlowRatio: 0.1}, nil)
	playBreaker(t, b, []breakerStep{{at: 0, elapsed: time.Hour, ok: true, state: Closed}}, []int{10})
}

func TestBreakerErrorCount(t *testing.T) {
	b := NewBreaker(BreakerConfig{MinCalls: 1, ErrorCount: 3}, nil)
	playBreaker(t, b, []breakerStep{
		{at: 0, ok: true, state: Closed}, // ×100 successes
		{at: 0, failed: true, ok: true, state: Closed},
		{at: 0, failed: true, ok: true, state: Closed},
		{at: 0, failed: true, ok: true, state: Open}, // 3 errors in 103 calls
	}, []int{100})
	// No condition enabled: never opens.
	b = NewBreaker(BreakerConfig{MinCalls: 1}, nil)
	playBreaker(t, b, []breakerStep{{at: 0, failed: true, ok: true, state: Closed}}, []int{100})
}

// TestBreakerWindowSlides: calls leave the window 10 buckets after theirs.
func TestBreakerWindowSlides(t *testing.T) {
	b := NewBreaker(BreakerConfig{MinCalls: 20, ErrorRatio: 0.5}, nil)
	playBreaker(t, b, []breakerStep{{at: 0, failed: true, ok: true, state: Closed}}, []int{15})
	if c, e, _ := b.Counts(t0 + 9*sec); c != 15 || e != 15 {
		t.Fatalf("9s later: %d calls, %d errors; want 15, 15", c, e)
	}
	if c, _, _ := b.Counts(t0 + 10*sec); c != 0 {
		t.Fatalf("10s later: %d calls; want 0 (out of the window)", c)
	}
	// 10.5s later the 15 errors are gone: 10 successes and 9 errors stay closed...
	playBreaker(t, b, []breakerStep{
		{at: 10*sec + sec/2, ok: true, state: Closed},
		{at: 10*sec + sec/2, failed: true, ok: true, state: Closed},
	}, []int{10, 9})
	// ... as 15 errors would not have: the 20th call, an error, opens it (10 of 20).
	playBreaker(t, b, []breakerStep{{at: 11 * sec, failed: true, ok: true, state: Open}}, nil)
	// Buckets are reused for later periods: counts follow.
	b = NewBreaker(BreakerConfig{Window: time.Second}, nil)
	for i := range int64(25) {
		b.Record(t0+i*100*ms, i%5 == 0, 0, false)
		want := min(i+1, 10)
		if c, _, _ := b.Counts(t0 + i*100*ms); c != want {
			t.Fatalf("after %d calls 100ms apart: %d in the window, want %d", i+1, c, want)
		}
	}
}

// TestBreakerLostProbes: probes that never come back do not leave the breaker half-open
// for ever.
func TestBreakerLostProbes(t *testing.T) {
	var tr breakerLog
	b := NewBreaker(BreakerConfig{MinCalls: 1, ErrorCount: 1, OpenFor: time.Second, Probes: 2}, tr.onChange)
	b.Record(t0, true, 0, false)
	for range 2 { // two probes, never recorded
		if ok, probe := b.Allow(t0 + sec); !ok || !probe || b.State() != HalfOpen {
			t.Fatalf("after OpenFor: Allow = %v, %v in %v", ok, probe, b.State())
		}
	}
	for _, at := range []int64{sec, 2*sec - 1} {
		if ok, _ := b.Allow(t0 + at); ok || b.State() != HalfOpen {
			t.Fatalf("at +%v: admitted or %v", time.Duration(at), b.State())
		}
	}
	if ok, _ := b.Allow(t0 + 2*sec); ok || b.State() != Open {
		t.Fatalf("OpenFor after the probes: admitted or %v, want open", b.State())
	}
	if ok, probe := b.Allow(t0 + 3*sec); !ok || !probe {
		t.Fatal("no probe after OpenFor again")
	}
	// A probe of the lost period, recorded now, counts for the new one: harmless.
	if want := "closed>open open>half-open half-open>open open>half-open"; tr.String() != want {
		t.Fatalf("transitions: %s", tr.String())
	}
}

// TestBreakerProbesUnderConcurrency: however many goroutines ask at once, a half-open
// period lets exactly Probes calls through, and exactly one goroutine makes each
// transition.
func TestBreakerProbesUnderConcurrency(t *testing.T) {
	var tr breakerLog
	b := NewBreaker(BreakerConfig{MinCalls: 1, ErrorCount: 1, Probes: 5}, tr.onChange)
	b.Record(t0, true, 0, false)
	var probes atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if ok, probe := b.Allow(t0 + 5*sec); ok {
					if !probe {
						t.Error("admitted half-open without probe")
					}
					probes.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if probes.Load() != 5 {
		t.Fatalf("%d probes, want 5", probes.Load())
	}
	for range 5 {
		wg.Go(func() { b.Record(t0+5*sec, false, 0, true) })
	}
	wg.Wait()
	if b.State() != Closed || tr.String() != "closed>open open>half-open half-open>closed" {
		t.Fatalf("state %v, breakerLog %s", b.State(), tr.String())
	}
}

// TestBreakerConcurrent records from many goroutines while time passes and the breaker
// opens and closes; run with -race. Every transition reported is one a breaker can make,
// and opens and closes alternate (each exactly once per cycle).
func TestBreakerConcurrent(t *testing.T) {
	var tr breakerLog
	var states sync.Map // the breakerLog counted by kind
	count := func(from, to State) {
		tr.onChange(from, to)
		v, _ := states.LoadOrStore(from.String()+">"+to.String(), new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	b := NewBreaker(BreakerConfig{Window: 100 * time.Millisecond, MinCalls: 10, ErrorRatio: 0.1, OpenFor: 10 * time.Millisecond, Probes: 2}, count)
	var clock atomic.Int64
	clock.Store(t0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 3000 {
				i += g
				now := clock.Add(10_000) // 10µs per call: 240ms of calls in all
				ok, probe := b.Allow(now)
				if !ok {
					continue
				}
				// Every call fails for 20ms out of 60ms (2000 calls of 6000).
				failed := (now/(20*ms))%3 == 0
				b.Record(now, failed, time.Duration(i%7)*time.Millisecond, probe)
				b.Counts(now)
			}
		})
	}
	wg.Wait()
	valid := map[string]bool{"closed>open": true, "open>half-open": true, "half-open>open": true, "half-open>closed": true}
	n := map[string]int64{}
	states.Range(func(k, v any) bool {
		if !valid[k.(string)] {
			t.Errorf("transition %s", k)
		}
		n[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	if n["closed>open"] == 0 || n["half-open>closed"] == 0 {
		t.Fatalf("never opened and closed again: %v", n)
	}
	// Leaving Closed and coming back alternate; so do entering and leaving HalfOpen.
	if d := n["closed>open"] - n["half-open>closed"]; d != 0 && d != 1 {
		t.Errorf("opened %d times, closed %d times", n["closed>open"], n["half-open>closed"])
	}
	if d := n["open>half-open"] - n["half-open>open"] - n["half-open>closed"]; d != 0 && d != 1 {
		t.Errorf("half-open %d times, left %d times", n["open>half-open"], n["half-open>open"]+n["half-open>closed"])
	}
	t.Log(fmt.Sprint(n))
}

// TestBreakerOnChangeMayCallBack: onChange runs with no breaker lock held.
func TestBreakerOnChangeMayCallBack(t *testing.T) {
	var b *Breaker
	var seen []State
	b = NewBreaker(BreakerConfig{MinCalls: 1, ErrorCount: 1, Window: time.Second}, func(from, to State) {
		seen = append(seen, b.State())
		b.Counts(t0)
		b.Record(t0+50*sec, false, 0, false) // rolls a bucket over: takes the lock
	})
	b.Record(t0, true, 0, false)
	if len(seen) != 1 || seen[0] != Open {
		t.Fatalf("onChange saw %v", seen)
	}
}

func TestBreakerAllocs(t *testing.T) {
	b := NewBreaker(BreakerConfig{MinCalls: 10, ErrorRatio: 0.5, SlowRatio: 0.5, SlowCall: time.Second}, nil)
	now := t0
	noAllocs(t, "Allow+Record", func() {
		now += 100 * ms // rolls a bucket over each call
		ok, probe := b.Allow(now)
		b.Record(now, false, time.Millisecond, probe && ok)
	})
	b = NewBreaker(BreakerConfig{MinCalls: 1, ErrorCount: 1, OpenFor: time.Second}, nil)
	now = t0
	noAllocs(t, "open, half-open, closed", func() {
		now += sec
		b.Record(now, true, 0, false) // opens
		now += sec
		for {
			ok, probe := b.Allow(now)
			if !ok || !probe {
				break // closed again
			}
			b.Record(now, false, 0, probe)
		}
	})
}
