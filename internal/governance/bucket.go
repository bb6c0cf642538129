package governance

import (
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The bucket counts in fixed point, on integers only, so that no rounding error adds up
// however many tokens pass:
//   - a token is tokenUnit units (1/1024 of a token is the finest amount the bucket holds);
//   - a rate is held as q = rate·2^rateShift (a resolution of 2^-20 token per second);
//   - the units earned d nanoseconds after the configuration's base time are
//     floor(d·q / unitsDen), computed on 128 bits: each count is exact, not a sum of
//     per-call increments.
const (
	tokenUnit = 1 << 10
	rateShift = 20
	unitsDen  = 1e9 * (1 << rateShift) / tokenUnit // ns·q / unitsDen = units

	// rebaseUnits: once this many units have been earned since the base time (after
	// years at the highest rates), the next Take moves the base time to now. It is far
	// below the 2^63 that would overflow.
	rebaseUnits = 1 << 61
	// retired marks the spent count of a configuration that Set has replaced.
	retired = math.MinInt64
	// zeroRateWait is the wait a bucket of rate 0 answers.
	zeroRateWait = time.Second
	// maxWait bounds the wait Take answers.
	maxWait = time.Duration(math.MaxInt64)
)

// The bounds of a Bucket's settings.
const (
	// MaxRate is the highest rate a Bucket takes, in tokens per second (one token every
	// 10ns); a higher one is MaxRate.
	MaxRate = 1e8
	// MaxBurst is the largest burst a Bucket takes, in tokens; a larger one is MaxBurst.
	MaxBurst = 1 << 40
)

// Bucket is a token bucket: Rate tokens per second, holding at most Burst. It starts
// full. Take is lock-free (one CAS on one word) and allocates nothing; it is exact under
// any concurrency: over any period a bucket admits at most what it held at the start
// plus Rate times the period, and no token is lost to a race. All methods are safe for
// concurrent use. The zero value is not usable; use NewBucket.
type Bucket struct {
	conf atomic.Pointer[bucketConf]
	mu   sync.Mutex // serializes replacing conf (Set, rebasing)
}

// bucketConf is one configuration of a bucket and the state that goes with it. Everything
// but spent is immutable. The tokens held at time t are min(burst, earned(t) - spent), in
// units.
type bucketConf struct {
	rate, burst float64 // as Rate and Burst report them
	q           uint64  // rate·2^rateShift; 0: the bucket refuses everything
	capUnits    int64   // burst in units
	base        int64   // the time (ns) from which earned counts
	// spent is the units taken since base, moved up when the bucket is full so that it
	// never holds more than burst. retired once Set has moved the bucket on.
	spent atomic.Int64
}

// NewBucket returns a full bucket of rate tokens per second holding at most burst tokens,
// at time now (ns). A rate of 0 (or below 2^-21/s, or NaN) refuses every Take; a rate
// above MaxRate is MaxRate. A burst below 1 is 1 (a bucket must hold one token to admit
// a call); above MaxBurst it is MaxBurst.
func NewBucket(rate, burst float64, now int64) *Bucket {
	b := &Bucket{}
	c := newBucketConf(rate, burst, now)
	c.spent.Store(-c.capUnits)
	b.conf.Store(c)
	return b
}

func newBucketConf(rate, burst float64, now int64) *bucketConf {
	if !(rate > 0) { // also NaN
		rate = 0
	}
	rate = min(rate, MaxRate)
	if !(burst >= 1) {
		burst = 1
	}
	burst = min(burst, MaxBurst)
	c := &bucketConf{
		rate:     rate,
		burst:    burst,
		q:        uint64(math.Round(rate * (1 << rateShift))),
		capUnits: int64(math.Round(burst * tokenUnit)),
		base:     now,
	}
	if c.q == 0 {
		c.rate = 0
	}
	return c
}

// earned returns the units earned from c.base to now; ok is false when the count has grown
// so large that the bucket must be rebased.
func (c *bucketConf) earned(now int64) (units int64, ok bool) {
	d := now - c.base
	if d <= 0 || c.q == 0 {
		return 0, true
	}
	hi, lo := bits.Mul64(uint64(d), c.q)
	if hi >= unitsDen {
		return 0, false
	}
	u, _ := bits.Div64(hi, lo, unitsDen)
	if u >= rebaseUnits {
		return 0, false
	}
	return int64(u), true
}

// until returns how long after now c will have earned units (> earned(now), c.q > 0).
func (c *bucketConf) until(units, now int64) time.Duration {
	hi, lo := bits.Mul64(uint64(units), unitsDen)
	if hi >= c.q {
		return maxWait
	}
	t, rem := bits.Div64(hi, lo, c.q)
	if rem != 0 {
		t++
	}
	if t > math.MaxInt64/2 {
		return maxWait
	}
	return time.Duration(max(int64(t)-(now-c.base), 1))
}

// Take takes one token at time now (ns). When the bucket holds less than one it returns
// false and how long until it will hold one (for Retry-After); a bucket of rate 0 answers
// false and one second. Take never blocks, takes no lock and allocates nothing (it yields
// the processor only while a Set is replacing the configuration).
func (b *Bucket) Take(now int64) (ok bool, wait time.Duration) {
	for {
		c := b.conf.Load()
		spent := c.spent.Load()
		if spent == retired {
			// Set is between retiring c and publishing its successor: a few instructions.
			runtime.Gosched()
			continue
		}
		if c.q == 0 {
			return false, zeroRateWait
		}
		earned, ok := c.earned(now)
		if !ok {
			b.rebase(c, now)
			continue
		}
		from := max(spent, earned-c.capUnits) // a full bucket holds burst, no more
		if earned-from < tokenUnit {
			return false, c.until(from+tokenUnit, now)
		}
		if c.spent.CompareAndSwap(spent, from+tokenUnit) {
			return true, 0
		}
	}
}

// Set changes the rate and the burst at time now, live: the tokens held (whole and
// fractional) are kept, capped at the new burst, and from now on they accrue at the new
// rate. Set takes the same ranges as NewBucket. Calls to Take that run at the same time
// see either the old or the new configuration, and no token is lost or made twice.
func (b *Bucket) Set(rate, burst float64, now int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.replaceLocked(b.conf.Load(), newBucketConf(rate, burst, now), now)
}

// rebase restarts c's counts from now, unless another goroutine has replaced c already.
func (b *Bucket) rebase(c *bucketConf, now int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conf.Load() == c {
		b.replaceLocked(c, newBucketConf(c.rate, c.burst, now), now)
	}
}

// replaceLocked moves the tokens old holds at now into next (based at now) and publishes
// next. b.mu is held.
func (b *Bucket) replaceLocked(old, next *bucketConf, now int64) {
	spent := old.spent.Swap(retired) // from here Take waits for next
	held := old.capUnits             // a count that overflowed has been idle for years
	if earned, ok := old.earned(now); ok {
		held = min(old.capUnits, earned-spent) // may be negative when now is behind
	}
	next.spent.Store(-min(held, next.capUnits)) // next.earned(now) == 0
	b.conf.Store(next)
}

// tokens returns the tokens b holds at now (for tests and debugging).
func (b *Bucket) tokens(now int64) float64 {
	for {
		c := b.conf.Load()
		spent := c.spent.Load()
		if spent == retired {
			runtime.Gosched()
			continue
		}
		earned, ok := c.earned(now)
		if !ok {
			return c.burst
		}
		return float64(min(c.capUnits, earned-spent)) / tokenUnit
	}
}

// Rate returns the rate in tokens per second, as set and bounded (see NewBucket).
func (b *Bucket) Rate() float64 { return b.conf.Load().rate }

// Burst returns the most tokens the bucket holds, as set and bounded (see NewBucket).
func (b *Bucket) Burst() float64 { return b.conf.Load().burst }
