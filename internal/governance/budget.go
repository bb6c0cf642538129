package governance

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// budgetSlots is how many slots a RetryBudget's TTL is kept in.
	budgetSlots = 10
	// retryUnit is one retry in a RetryBudget's fixed point: a call deposits
	// ratio·retryUnit, a retry withdraws retryUnit (a ratio resolution of 1e-6).
	retryUnit = 1_000_000
	// maxRetryRatio and maxMinRetries bound RetryBudget's settings.
	maxRetryRatio = 1000
	maxMinRetries = 1 << 20
)

// RetryBudget allows retries of at most Ratio of the calls plus MinPerSecond retries per
// second, over a sliding TTL, after Finagle's RetryBudget and Linkerd's retry budgets: every
// call deposits Ratio of a retry, every retry withdraws one, and both expire TTL after
// they were made; on top of the deposits there is a constant reserve of
// MinPerSecond·TTL retries, so that a service with few calls may still retry some. With
// no call at all, it admits MinPerSecond·TTL retries per TTL; with many, about Ratio of
// them. The TTL is kept in 10 slots of TTL/10: a deposit or withdrawal expires between
// 0.9 and 1 TTL after it was made.
//
// Deposit and Withdraw are lock-free (a few atomic operations; a mutex only when a new
// slot begins) and allocate nothing. Withdraw is exact under concurrency: it never takes
// more than the balance. All methods are safe for concurrent use.
type RetryBudget struct {
	conf  atomic.Pointer[budgetConf]
	width int64 // of a slot, ns
	// balance is the reserve plus every live slot, in units; a withdrawal needs
	// retryUnit of it.
	balance atomic.Int64
	// last is the newest slot epoch (now/width) seen; slots[e%budgetSlots] holds the
	// deposits minus the withdrawals of epoch e, for e in (last-budgetSlots, last].
	last  atomic.Int64
	mu    sync.Mutex // serializes Set and moving last on
	slots [budgetSlots]atomic.Int64
	// calls, retries and refused count Deposit, granted Withdraw and refused Withdraw
	// calls since the budget was made (metrics, tests).
	calls, retries, refused atomic.Uint64
}

// BudgetStats are a retry budget's counts since it was made.
type BudgetStats struct {
	Calls, Retries, Refused uint64
}

// Stats returns the calls deposited, the retries granted and those refused.
func (r *RetryBudget) Stats() BudgetStats {
	return BudgetStats{Calls: r.calls.Load(), Retries: r.retries.Load(), Refused: r.refused.Load()}
}

type budgetConf struct {
	ratio   float64
	min     int
	deposit int64 // units per call
	reserve int64 // units
}

// NewRetryBudget returns a budget allowing ratio retries per call (0.2: one retry per five
// calls) plus minPerSecond retries per second, counted over ttl (10s when ttl is not
// positive). A negative ratio or minPerSecond is 0; a ratio above 1000 is 1000.
func NewRetryBudget(ratio float64, minPerSecond int, ttl time.Duration) *RetryBudget {
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	r := &RetryBudget{width: max(int64(ttl)/budgetSlots, 1)}
	c := r.newConf(ratio, minPerSecond)
	r.conf.Store(c)
	r.balance.Store(c.reserve)
	r.last.Store(math.MinInt64 / 2) // the first Deposit or Withdraw starts the first slot
	return r
}

func (r *RetryBudget) newConf(ratio float64, minPerSecond int) *budgetConf {
	if !(ratio > 0) { // also NaN
		ratio = 0
	}
	ratio = min(ratio, maxRetryRatio)
	minPerSecond = min(max(minPerSecond, 0), maxMinRetries)
	ttl := float64(r.width*budgetSlots) / 1e9 // seconds
	return &budgetConf{
		ratio:   ratio,
		min:     minPerSecond,
		deposit: int64(math.Round(ratio * retryUnit)),
		reserve: int64(math.Round(float64(minPerSecond) * ttl * retryUnit)),
	}
}

// Set changes the ratio and the minimum per second, live (same ranges as NewRetryBudget).
// The deposits and withdrawals made stay, at their value; the reserve changes at once.
func (r *RetryBudget) Set(ratio float64, minPerSecond int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.newConf(ratio, minPerSecond)
	old := r.conf.Swap(c)
	r.balance.Add(c.reserve - old.reserve)
}

// Ratio returns the retries allowed per call.
func (r *RetryBudget) Ratio() float64 { return r.conf.Load().ratio }

// MinPerSecond returns the retries allowed per second whatever the calls.
func (r *RetryBudget) MinPerSecond() int { return r.conf.Load().min }

// Deposit counts one call at now (ns): call it once per call, not per retry.
func (r *RetryBudget) Deposit(now int64) {
	r.calls.Add(1)
	s := r.slot(now)
	if d := r.conf.Load().deposit; d != 0 {
		s.Add(d)
		r.balance.Add(d)
	}
}

// Withdraw takes one retry from the budget at now (ns); false when the budget has none
// left (then do not retry).
func (r *RetryBudget) Withdraw(now int64) bool {
	s := r.slot(now)
	for {
		b := r.balance.Load()
		if b < retryUnit {
			r.refused.Add(1)
			return false
		}
		if r.balance.CompareAndSwap(b, b-retryUnit) {
			break
		}
	}
	// Between the CAS and this add a slot may expire: the balance and the slots differ
	// for an instant, never for good (the expiry subtracts what it swaps out).
	s.Add(-retryUnit)
	r.retries.Add(1)
	return true
}

// balanceAt returns the retries left at now (for tests and debugging).
func (r *RetryBudget) balanceAt(now int64) float64 {
	r.slot(now)
	return float64(r.balance.Load()) / retryUnit
}

// slot returns the slot deposits and withdrawals at now go to, expiring the slots that
// have left the TTL first. A now behind the newest slot (another goroutine's clock a
// little ahead) uses the newest slot.
func (r *RetryBudget) slot(now int64) *atomic.Int64 {
	e := now / r.width
	l := r.last.Load()
	if e > l {
		r.advance(e)
		l = r.last.Load()
	}
	return &r.slots[uint64(l)%budgetSlots]
}

// advance moves the newest slot on to epoch e, expiring the epochs that leave the TTL.
func (r *RetryBudget) advance(e int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.last.Load()
	if e <= l {
		return
	}
	// Epochs l+1..e reuse the slots of l+1-budgetSlots..e-budgetSlots: empty them. After
	// budgetSlots of them every slot has been emptied.
	for x := l + 1; x <= e && x <= l+budgetSlots; x++ {
		s := &r.slots[uint64(x)%budgetSlots]
		r.balance.Add(-s.Swap(0))
	}
	r.last.Store(e)
}
