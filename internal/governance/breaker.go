package governance

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// breakerBuckets is how many buckets a Breaker's window is kept in.
const breakerBuckets = 10

// maxProbes bounds BreakerConfig.Probes (the probe counts are packed in 24 bits).
const maxProbes = 1 << 16

// BreakerConfig is the rule of a Breaker, after Sentinel's degrade rules: it opens when
// the calls of its sliding window are bad enough (any of the enabled conditions), stays
// open for OpenFor, then lets Probes calls through half-open to decide whether to close.
// Zero fields take the defaults given.
type BreakerConfig struct {
	// Window is the sliding window the conditions are evaluated over (default 10s), kept
	// as 10 buckets of Window/10: a call leaves the window between 0.9 and 1 Window after
	// it was recorded.
	Window time.Duration
	// MinCalls is how many calls the window must hold before the breaker may open
	// (default 20).
	MinCalls int
	// ErrorRatio opens the breaker when errors/calls >= ErrorRatio (0: this condition is
	// off).
	ErrorRatio float64
	// SlowRatio opens the breaker when slow/calls >= SlowRatio (0: this condition is
	// off; it also needs SlowCall).
	SlowRatio float64
	// SlowCall: a call that took longer than this is slow.
	SlowCall time.Duration
	// ErrorCount opens the breaker when the window holds at least this many errors (0:
	// this condition is off).
	ErrorCount int
	// OpenFor is how long the breaker stays open before it lets probes through
	// (default 5s).
	OpenFor time.Duration
	// Probes is how many calls a half-open breaker lets through; all of them must
	// succeed (without being slow) to close it (default 3).
	Probes int
}

func (c BreakerConfig) withDefaults() BreakerConfig {
	if c.Window <= 0 {
		c.Window = 10 * time.Second
	}
	c.Window = max(c.Window, breakerBuckets) // buckets of at least 1ns
	if c.MinCalls <= 0 {
		c.MinCalls = 20
	}
	if c.OpenFor <= 0 {
		c.OpenFor = 5 * time.Second
	}
	if c.Probes <= 0 {
		c.Probes = 3
	}
	c.Probes = min(c.Probes, maxProbes)
	return c
}

// State is the state of a Breaker.
type State int32

// The states of a Breaker.
const (
	// Closed: calls pass, their outcomes are counted.
	Closed State = iota
	// Open: calls are refused until OpenFor has passed.
	Open
	// HalfOpen: Probes calls pass to decide between Closed and Open; others are refused.
	HalfOpen
)

// String returns "closed", "open" or "half-open".
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// The breaker's word packs its state with the probe counts of the current half-open
// period, so that a probe is admitted or counted by one CAS that fails if the state moved.
const (
	wordStateMask = 0xff
	wordIssued    = 1 << 8  // probes let through, bits 8-31
	wordPassed    = 1 << 32 // probes that succeeded, bits 32-55
	wordCountMask = 1<<24 - 1
)

// Breaker is a circuit breaker. Allow and Record are lock-free and allocate nothing while
// it is closed (atomic counters in the buckets of a ring); a small per-breaker mutex is
// taken only when a bucket rolls over to a new period and for state transitions. All
// methods are safe for concurrent use.
type Breaker struct {
	cfg      BreakerConfig
	width    int64 // of a bucket, ns
	onChange func(from, to State)

	word     atomic.Int64 // state | issued | passed, see wordStateMask
	openedAt atomic.Int64 // when it last opened (ns)
	halfAt   atomic.Int64 // when it last turned half-open (ns)

	mu      sync.Mutex // serializes transitions and bucket rollovers
	buckets [breakerBuckets]breakerBucket
}

// breakerBucket counts the calls of one period of Window/10. A bucket whose epoch (period
// number, now/width) has left the window is stale; the first call of its new period
// resets it.
type breakerBucket struct {
	epoch              atomic.Int64
	calls, errors, slo atomic.Int64
}

// staleEpoch is the epoch of a bucket that holds no period.
const staleEpoch = math.MinInt64 / 2

// NewBreaker returns a closed breaker with rule c (see BreakerConfig for the defaults).
// onChange, if not nil, is called on every transition with the states before and after,
// synchronously by the goroutine whose Allow or Record caused it, with no lock of the
// breaker held (it may call the breaker's methods). It must not block: it runs on a call's
// path. Each call reports one transition exactly; two transitions that happen close
// together on different goroutines may be reported in either order, so read State for the
// current state.
func NewBreaker(c BreakerConfig, onChange func(from, to State)) *Breaker {
	c = c.withDefaults()
	b := &Breaker{cfg: c, width: int64(c.Window) / breakerBuckets, onChange: onChange}
	b.word.Store(int64(Closed))
	for i := range b.buckets {
		b.buckets[i].epoch.Store(staleEpoch)
	}
	return b
}

// Config returns the breaker's rule, defaults applied.
func (b *Breaker) Config() BreakerConfig { return b.cfg }

// State returns the current state. An open breaker whose OpenFor has passed reports Open
// until the next Allow turns it half-open.
func (b *Breaker) State() State { return State(b.word.Load() & wordStateMask) }

// Allow reports whether a call may pass at now (ns). Closed: true. Open: false until
// OpenFor has passed since it opened, then it turns half-open. Half-open: true, with
// probe true, for at most Probes calls in the half-open period, false for the others.
// Every call Allow admits must be reported to Record with the probe answer. If the probes
// of a half-open period have not all been recorded OpenFor after it began (a probe lost
// by its caller), the breaker opens again rather than stay half-open for ever.
func (b *Breaker) Allow(now int64) (ok, probe bool) {
	for {
		w := b.word.Load()
		switch State(w & wordStateMask) {
		case Closed:
			return true, false
		case Open:
			if now-b.openedAt.Load() < int64(b.cfg.OpenFor) {
				return false, false
			}
			b.transition(Open, HalfOpen, now) // this goroutine's or another's: look again
		default: // HalfOpen
			if (w>>8)&wordCountMask >= int64(b.cfg.Probes) {
				if now-b.halfAt.Load() >= int64(b.cfg.OpenFor) {
					b.transition(HalfOpen, Open, now)
				}
				return false, false
			}
			if b.word.CompareAndSwap(w, w+wordIssued) {
				return true, true
			}
			// Another probe or a transition came first: look again.
		}
	}
}

// Record reports one finished call that Allow admitted, at now (ns): whether it failed,
// how long it took and Allow's probe answer. A call of a closed breaker is counted in the
// window, and the breaker opens if the window now meets a condition of its rule. In
// half-open, a failed or slow probe opens the breaker again (for OpenFor again); when
// Probes probes have succeeded it closes with an empty window. Record never allocates;
// it is lock-free except at those transitions and when a bucket rolls over to a new
// period (a short mutex).
func (b *Breaker) Record(now int64, failed bool, elapsed time.Duration, probe bool) {
	slow := b.cfg.SlowCall > 0 && elapsed > b.cfg.SlowCall
	if probe {
		b.recordProbe(now, failed || slow)
		return
	}
	cur := now / b.width
	bk := b.bucket(cur)
	bk.calls.Add(1)
	if failed {
		bk.errors.Add(1)
	}
	if slow {
		bk.slo.Add(1)
	}
	if b.State() != Closed {
		return // a call admitted before the breaker left Closed: counted, nothing to decide
	}
	if calls, errs, slows := b.counts(cur); b.tripped(calls, errs, slows) {
		b.transition(Closed, Open, now)
	}
}

func (b *Breaker) recordProbe(now int64, bad bool) {
	if bad {
		b.transition(HalfOpen, Open, now)
		return
	}
	for {
		w := b.word.Load()
		if State(w&wordStateMask) != HalfOpen {
			return // a probe of a period that is over
		}
		if b.word.CompareAndSwap(w, w+wordPassed) {
			if (w>>32)&wordCountMask+1 >= int64(b.cfg.Probes) {
				b.transition(HalfOpen, Closed, now)
			}
			return
		}
	}
}

// tripped reports whether a window of these counts opens the breaker.
func (b *Breaker) tripped(calls, errs, slows int64) bool {
	c := &b.cfg
	if calls < int64(c.MinCalls) || calls <= 0 {
		return false
	}
	return (c.ErrorRatio > 0 && float64(errs) >= c.ErrorRatio*float64(calls)) ||
		(c.SlowRatio > 0 && c.SlowCall > 0 && float64(slows) >= c.SlowRatio*float64(calls)) ||
		(c.ErrorCount > 0 && errs >= int64(c.ErrorCount))
}

// Counts returns the calls, errors and slow calls of the window at now (ns), for /debug.
// It reads the counters without a lock: under concurrent Records the three numbers may be
// a few calls apart.
func (b *Breaker) Counts(now int64) (calls, errors, slow int64) {
	return b.counts(now / b.width)
}

// counts sums the buckets of the window that ends with period cur.
func (b *Breaker) counts(cur int64) (calls, errors, slow int64) {
	for i := range b.buckets {
		bk := &b.buckets[i]
		if cur-bk.epoch.Load() >= breakerBuckets {
			continue // stale
		}
		calls += bk.calls.Load()
		errors += bk.errors.Load()
		slow += bk.slo.Load()
	}
	return calls, errors, slow
}

// bucket returns the bucket of period cur, rolling it over if it holds an older one.
func (b *Breaker) bucket(cur int64) *breakerBucket {
	bk := &b.buckets[uint64(cur)%breakerBuckets] // no negative index, whatever the clock
	if bk.epoch.Load() == cur {
		return bk
	}
	b.mu.Lock()
	// A bucket newer than cur (this goroutine's clock a bucket behind another's) is used
	// as it is: the call lands a period late, it is not lost.
	if bk.epoch.Load() < cur {
		bk.calls.Store(0)
		bk.errors.Store(0)
		bk.slo.Store(0)
		bk.epoch.Store(cur)
	}
	b.mu.Unlock()
	return bk
}

// transition moves the breaker from `from` to `to` at now if it is still in `from`, and
// then reports it to onChange, outside the lock. It returns whether it moved it.
func (b *Breaker) transition(from, to State, now int64) bool {
	b.mu.Lock()
	if b.State() != from {
		b.mu.Unlock()
		return false
	}
	switch to {
	case Open:
		b.openedAt.Store(now)
	case HalfOpen:
		b.halfAt.Store(now)
	case Closed:
		for i := range b.buckets {
			bk := &b.buckets[i]
			bk.epoch.Store(staleEpoch)
			bk.calls.Store(0)
			bk.errors.Store(0)
			bk.slo.Store(0)
		}
	}
	// Only the probe counts change outside mu, by CAS: one that lands before this store
	// counted a probe of the period that ends, one after it fails. The new period starts
	// with no probe.
	b.word.Store(int64(to))
	b.mu.Unlock()
	if b.onChange != nil {
		b.onChange(from, to)
	}
	return true
}
