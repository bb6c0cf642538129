package wait

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fatalTB records Fatalf instead of ending the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestForReturnsWhenTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	go func() {
		for n.Load() < 3 {
			n.Add(1)
		}
	}()
	For(t, time.Minute, "three", func() bool { return n.Load() >= 3 })
	calls := 0
	For(t, time.Minute, "at once", func() bool { calls++; return true })
	if calls != 1 {
		t.Fatalf("a condition true at once was polled %d times", calls)
	}
}

func TestForFailsWithWhatItWaitedFor(t *testing.T) {
	f := &fatalTB{TB: t}
	For(f, 20*time.Millisecond, "the moon", func() bool { return false })
	if !strings.Contains(f.msg, "the moon: not within 20ms") {
		t.Fatalf("message %q", f.msg)
	}
	f.msg = ""
	ForNil(f, 20*time.Millisecond, "the sun", func() error { return errors.New("cloudy") })
	if !strings.Contains(f.msg, "the sun") || !strings.Contains(f.msg, "cloudy") {
		t.Fatalf("message %q", f.msg)
	}
}

func TestUntilStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Until(ctx, time.Minute, func() error { return errors.New("never") })
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "never") {
		t.Fatalf("err %v", err)
	}
}

func TestRetryPaces(t *testing.T) {
	tries := 0
	d := Retry(t, time.Minute, 20*time.Millisecond, "third try", func() error {
		tries++
		if tries < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if tries != 3 || d < 40*time.Millisecond {
		t.Fatalf("%d tries in %v, want 3 at least 20ms apart", tries, d)
	}
}
