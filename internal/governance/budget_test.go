package governance

import (
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// retryEveryCall plays calls per second from start for d, every call wanting one retry,
// and returns the retries admitted.
func retryEveryCall(r *RetryBudget, start int64, d time.Duration, perSecond int64) int64 {
	var n int64
	step := sec / perSecond
	for now := start; now < start+int64(d); now += step {
		r.Deposit(now)
		if r.Withdraw(now) {
			n++
		}
	}
	return n
}

// TestRetryBudgetRatio: at 1000 calls/s with every call wanting a retry, a budget of 20%
// plus 10/s over 10s admits 0.2·calls + 10/s·10s retries, within 5%, in the first TTL and
// in any later one.
func TestRetryBudgetRatio(t *testing.T) {
	r := NewRetryBudget(0.2, 10, 10*time.Second)
	want := 0.2*10_000 + 10*10
	first := retryEveryCall(r, t0, 10*time.Second, 1000)
	if math.Abs(float64(first)-want) > want*0.05 {
		t.Fatalf("first 10s: %d retries, want %v ± 5%%", first, want)
	}
	retryEveryCall(r, t0+10*sec, 35*time.Second, 1000)
	steady := retryEveryCall(r, t0+45*sec, 10*time.Second, 1000)
	if math.Abs(float64(steady)-want) > want*0.05 {
		t.Fatalf("in the steady state: %d retries in 10s, want %v ± 5%%", steady, want)
	}
	t.Logf("retries of 10,000 calls in 10s: %d at first, %d in the steady state (want %v)", first, steady, want)
	// A ratio above 1: two retries per call.
	r = NewRetryBudget(2, 0, 0)
	r.Deposit(t0)
	if !r.Withdraw(t0) || !r.Withdraw(t0) || r.Withdraw(t0) {
		t.Fatal("ratio 2: want two retries for one call")
	}
}

// TestRetryBudgetMinimum: with no call, exactly minPerSecond retries per second, a TTL's
// worth at a time.
func TestRetryBudgetMinimum(t *testing.T) {
	r := NewRetryBudget(0.2, 10, 10*time.Second)
	var perTTL [3]int
	for i := range int64(30_000) { // a retry wanted every millisecond for 30s
		if r.Withdraw(t0 + i*ms) {
			perTTL[i/10_000]++
		}
	}
	if perTTL != [3]int{100, 100, 100} {
		t.Fatalf("retries in each 10s: %v, want 100 each", perTTL)
	}
	r = NewRetryBudget(0, 0, 10*time.Second)
	for i := range int64(100) {
		r.Deposit(t0 + i*ms)
		if r.Withdraw(t0 + i*ms) {
			t.Fatal("a budget of 0 and 0/s admitted a retry")
		}
	}
}

// TestRetryBudgetExpiry: deposits count for one TTL (kept in 10 slots), then expire.
func TestRetryBudgetExpiry(t *testing.T) {
	r := NewRetryBudget(1, 0, 10*time.Second)
	for range 10 {
		r.Deposit(t0)
	}
	if got := r.balanceAt(t0 + 10*sec - 1); got != 10 {
		t.Fatalf("just before the TTL: %v retries left, want 10", got)
	}
	if got := r.balanceAt(t0 + 10*sec); got != 0 {
		t.Fatalf("after the TTL: %v retries left, want 0", got)
	}
	// Withdrawals expire too, and a jump of many TTLs empties every slot.
	r.Deposit(t0 + 20*sec)
	r.Deposit(t0 + 25*sec)
	if !r.Withdraw(t0+25*sec) || !r.Withdraw(t0+25*sec) || r.Withdraw(t0+25*sec) {
		t.Fatal("two deposits: want two retries")
	}
	if got := r.balanceAt(t0 + 30*sec); got != -1 {
		t.Fatalf("when the first deposit expires: %v, want -1 (the withdrawals outlive it)", got)
	}
	if got := r.balanceAt(t0 + 35*sec); got != 0 {
		t.Fatalf("when the rest expires: %v, want 0", got)
	}
	r.Deposit(t0 + 36*sec)
	if got := r.balanceAt(t0 + 1000*sec); got != 0 {
		t.Fatalf("after 1000s: %v, want 0", got)
	}
	// A clock a little behind counts in the newest slot.
	r.Deposit(t0 + 999*sec)
	if got := r.balanceAt(t0 + 1000*sec); got != 1 {
		t.Fatalf("a deposit 1s behind: %v, want 1", got)
	}
}

func TestRetryBudgetSet(t *testing.T) {
	r := NewRetryBudget(0.2, 0, 10*time.Second)
	if r.Withdraw(t0) {
		t.Fatal("no reserve, no deposit: admitted")
	}
	r.Set(0.5, 5) // a reserve of 50
	if r.Ratio() != 0.5 || r.MinPerSecond() != 5 {
		t.Fatalf("Ratio, MinPerSecond = %v, %v", r.Ratio(), r.MinPerSecond())
	}
	for i := range 50 {
		if !r.Withdraw(t0) {
			t.Fatalf("retry %d of the new reserve refused", i+1)
		}
	}
	r.Deposit(t0)
	r.Deposit(t0) // two calls at 0.5: one retry
	if !r.Withdraw(t0) || r.Withdraw(t0) {
		t.Fatal("after 2 calls at ratio 0.5: want exactly one retry")
	}
	// Removing the reserve leaves the budget in debt until the withdrawals expire.
	r.Set(0.5, 0)
	if got := r.balanceAt(t0 + sec); got != -50 {
		t.Fatalf("without the reserve: %v, want -50", got)
	}
	if got := r.balanceAt(t0 + 10*sec); got != 0 {
		t.Fatalf("after the TTL: %v, want 0", got)
	}
	r.Set(-1, -1)
	if r.Ratio() != 0 || r.MinPerSecond() != 0 {
		t.Fatalf("negative settings: %v, %v", r.Ratio(), r.MinPerSecond())
	}
	r.Set(math.NaN(), 0)
	if r.Ratio() != 0 {
		t.Fatalf("NaN ratio: %v", r.Ratio())
	}
}

// TestRetryBudgetConcurrent: withdrawals racing on one balance never take more than it
// holds; deposits and withdrawals racing across slot boundaries keep the balance equal to
// the reserve plus the live slots.
func TestRetryBudgetConcurrent(t *testing.T) {
	r := NewRetryBudget(1, 0, 10*time.Second)
	for range 1000 {
		r.Deposit(t0)
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				if r.Withdraw(t0) {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if admitted.Load() != 1000 {
		t.Fatalf("%d retries admitted from a balance of 1000", admitted.Load())
	}

	r = NewRetryBudget(0.5, 3, time.Second)
	var clock atomic.Int64
	clock.Store(t0)
	for range 8 {
		wg.Go(func() {
			for range 5000 {
				now := clock.Add(50_000) // 50µs: 2s in all, 20 slots rolling over
				r.Deposit(now)
				r.Withdraw(now)
				r.Withdraw(now)
			}
		})
	}
	wg.Wait()
	var live int64
	for i := range r.slots {
		live += r.slots[i].Load()
	}
	if b := r.balance.Load(); b != r.conf.Load().reserve+live {
		t.Fatalf("balance %d, reserve %d + slots %d", b, r.conf.Load().reserve, live)
	}
}

func TestRetryBudgetAllocs(t *testing.T) {
	r := NewRetryBudget(0.2, 10, 10*time.Second)
	now := t0
	noAllocs(t, "Deposit+Withdraw", func() {
		now += 100 * ms
		r.Deposit(now)
		r.Withdraw(now)
	})
}
