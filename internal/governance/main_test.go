package governance

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any of them leaves a goroutine running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// raceEnabled is true under the race detector (race_test.go), which allocates on its own
// and slows everything down: allocation counts are checked without it only.
var raceEnabled bool

// sec and ms are nanoseconds, for the explicit clocks of the tests.
const (
	sec = int64(time.Second)
	ms  = int64(time.Millisecond)
)

// t0 is an arbitrary start time, far from 0 as a UnixNano clock is.
const t0 = int64(1_700_000_000) * sec

// noAllocs fails the test if f allocates (skipped under the race detector).
func noAllocs(t *testing.T, what string, f func()) {
	t.Helper()
	if raceEnabled {
		return
	}
	if n := testing.AllocsPerRun(1000, f); n != 0 {
		t.Errorf("%s: %v allocations per call, want 0", what, n)
	}
}
