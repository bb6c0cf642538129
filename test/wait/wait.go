// Package wait polls a condition until it holds, for tests that wait for a state they
// cannot subscribe to (a peer's view, a registry's content, a counter). It returns as soon
// as the condition holds; the timeout only bounds a hang and is no performance assertion,
// so keep it generous: a shared 2-core machine can be slow.
package wait

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// interval bounds the pause between two polls: polls start 1 ms apart and back off to it.
const interval = 50 * time.Millisecond

// For polls cond until it returns true and fails the test (t.Fatalf, so call it from the
// test's goroutine) if it has not within timeout. It returns how long it waited.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	d, err := Until(context.Background(), timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("%s: not within %v", what, timeout)
	}
	return d
}

// ForNil polls f until it returns nil, and fails the test with f's last error if it has
// not within timeout. It returns how long it waited.
func ForNil(t testing.TB, timeout time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	d, err := Until(context.Background(), timeout, f)
	if err != nil {
		t.Fatalf("%s: not within %v: %v", what, timeout, err)
	}
	return d
}

type notYet struct{}

func (notYet) Error() string { return "condition not met" }

var errNotYet error = notYet{}

// Retry runs the action f until it returns nil, pause apart (an action that costs
// something on each try, such as a call that sets up a client, is not polled at Until's
// pace), and fails the test with f's last error if it has not succeeded within timeout.
// It returns how long it took.
func Retry(t testing.TB, timeout, pause time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	d, err := poll(context.Background(), timeout, pause, pause, f)
	if err != nil {
		t.Fatalf("%s: not within %v: %v", what, timeout, err)
	}
	return d
}

// Until polls f until it returns nil, ctx ends or timeout passes; then it returns f's last
// error (wrapped with the reason it stopped). For a goroutine other than the test's, or a
// TestMain.
func Until(ctx context.Context, timeout time.Duration, f func() error) (time.Duration, error) {
	return poll(ctx, timeout, time.Millisecond, interval, f)
}

// poll calls f until it returns nil, pausing first pause, doubling up to maxPause.
func poll(ctx context.Context, timeout, pause, maxPause time.Duration, f func() error) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		err := f()
		if err == nil {
			return time.Since(start), nil
		}
		timer.Reset(pause)
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-timer.C:
		}
		pause = min(2*pause, maxPause)
	}
}
