// Package backoff spaces out retries: delays that double from a base up to a cap, with
// jitter, so that the many clients that lost one server do not all come back in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff hands out the delays before successive retries. The n-th delay since New or
// Reset is drawn uniformly from [c/2, c], where c = min(max, base·2^(n-1)) ("equal
// jitter": never less than half the ceiling, never in step with another client). A
// Backoff is not safe for concurrent use.
type Backoff struct {
	base, max time.Duration
	ceil      time.Duration       // the ceiling of the last delay; 0: none handed out yet
	draw      func(n int64) int64 // a number in [0, n); nil: the global source
}

// New returns a Backoff whose delays grow from base to limit. It panics if base is not
// positive; a limit below base is base.
func New(base, limit time.Duration) *Backoff {
	if base <= 0 {
		panic("backoff: non-positive base")
	}
	return &Backoff{base: base, max: max(base, limit)}
}

// WithSource makes b draw its jitter from src (tests: a fixed seed), and returns b.
func (b *Backoff) WithSource(src rand.Source) *Backoff {
	b.draw = rand.New(src).Int64N
	return b
}

// Next returns the delay before the next retry.
func (b *Backoff) Next() time.Duration {
	switch {
	case b.ceil == 0:
		b.ceil = b.base
	case b.ceil > b.max/2:
		b.ceil = b.max
	default:
		b.ceil *= 2
	}
	half := b.ceil / 2
	return half + b.int64n(int64(b.ceil-half)+1)
}

func (b *Backoff) int64n(n int64) time.Duration {
	if b.draw != nil {
		return time.Duration(b.draw(n))
	}
	return time.Duration(rand.Int64N(n))
}

// Reset starts b over from base: call it after a success (or an attempt that lasted).
func (b *Backoff) Reset() { b.ceil = 0 }

// Wait sleeps for Next() and reports true, or false as soon as ctx ends.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// Sleep sleeps for d and reports true, or false as soon as ctx ends (at once if it has).
func Sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
