// Package loadtest measures Strait against a baseline: an open-loop generator (a fixed
// arrival rate, each call's latency measured from its scheduled send time, so a stall
// cannot hide behind fewer calls — no coordinated omission) and a closed-loop
// maximum-throughput mode, both recording into HdrHistograms.
package loadtest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Call makes one call; an error counts as a failed call.
type Call func(ctx context.Context) error

// Result is what one run measured. Latencies are in milliseconds.
type Result struct {
	Offered  float64 `json:"offered_rps"`
	Achieved float64 `json:"achieved_rps"`
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	P999     float64 `json:"p999_ms"`
	Calls    int64   `json:"calls"`
	Errors   int64   `json:"errors"`
	Seconds  float64 `json:"seconds"`
	// Unfinished counts the max-mode calls, among Errors, that failed after the run had
	// ended (usually: timed out), so that a target that stalls shows.
	Unfinished int64 `json:"unfinished,omitempty"`
	// FirstError is one of the errors, if any.
	FirstError string `json:"first_error,omitempty"`
}

type recorder struct {
	mu    sync.Mutex
	h     *hdrhistogram.Histogram
	errs  atomic.Int64
	calls atomic.Int64
	unfin atomic.Int64
	first atomic.Pointer[string]
}

func newRecorder() *recorder {
	// 1 µs to 60 s, 3 significant digits.
	return &recorder{h: hdrhistogram.New(1, 60_000_000, 3)}
}

func (r *recorder) record(d time.Duration, err error) {
	r.calls.Add(1)
	if err != nil {
		r.errs.Add(1)
		s := err.Error()
		r.first.CompareAndSwap(nil, &s)
		return
	}
	r.mu.Lock()
	_ = r.h.RecordValue(d.Microseconds())
	r.mu.Unlock()
}

func (r *recorder) result(offered float64, elapsed time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	ms := func(q float64) float64 { return float64(r.h.ValueAtQuantile(q)) / 1000 }
	res := Result{
		Offered: offered, Calls: r.calls.Load(), Errors: r.errs.Load(), Seconds: elapsed.Seconds(),
		P50: ms(50), P90: ms(90), P99: ms(99), P999: ms(99.9),
	}
	res.Unfinished = r.unfin.Load()
	res.Achieved = float64(res.Calls-res.Errors) / elapsed.Seconds()
	if f := r.first.Load(); f != nil {
		res.FirstError = *f
	}
	return res
}

// OpenLoop offers calls at Rate per second for Duration from Workers goroutines. A call
// whose worker is busy waits in a queue, and its latency includes the wait.
type OpenLoop struct {
	Rate     int
	Duration time.Duration
	Workers  int
	// Timeout bounds each call (default 5 s).
	Timeout time.Duration
	// Drain bounds how long the run may go on after Duration while calls are still
	// queued (default Duration, at least 2 s): a call still queued then is not sent and
	// counts as an error, so a target that cannot keep up ends the run in bounded time.
	Drain time.Duration
}

// errNotSent is recorded for a call that was still queued when the drain time ran out.
var errNotSent = errors.New("not sent: the target fell too far behind the offered rate")

// Run runs the load and returns what it measured. It stops early when ctx ends.
func (o OpenLoop) Run(ctx context.Context, call Call) Result {
	if o.Workers <= 0 {
		o.Workers = 64
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Drain <= 0 {
		o.Drain = max(o.Duration, 2*time.Second)
	}
	total := int(float64(o.Rate) * o.Duration.Seconds())
	sched := make(chan time.Time, total)
	rec := newRecorder()
	start := time.Now()
	stopAt := start.Add(o.Duration + o.Drain)
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for at := range sched {
				if time.Now().After(stopAt) {
					rec.record(0, errNotSent)
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, o.Timeout)
				err := call(cctx)
				cancel()
				rec.record(time.Since(at), err)
			}
		}()
	}
	interval := time.Second / time.Duration(o.Rate)
	for i := 0; i < total && ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		sched <- at
	}
	close(sched)
	wg.Wait()
	return rec.result(float64(o.Rate), time.Since(start))
}

// Max runs Concurrency goroutines calling back to back for Duration: the most the target
// serves.
type Max struct {
	Concurrency int
	Duration    time.Duration
	Timeout     time.Duration
}

// Run runs the load and returns what it measured.
func (m Max) Run(ctx context.Context, call Call) Result {
	if m.Timeout <= 0 {
		m.Timeout = 5 * time.Second
	}
	rec := newRecorder()
	ctx, cancel := context.WithTimeout(ctx, m.Duration)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for range m.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				cctx, ccancel := context.WithTimeout(context.Background(), m.Timeout)
				err := call(cctx)
				ccancel()
				if ctx.Err() != nil && err != nil {
					rec.unfin.Add(1) // failed (usually: timed out) after the run ended
				}
				rec.record(time.Since(t0), err)
			}
		}()
	}
	wg.Wait()
	return rec.result(0, time.Since(start))
}
