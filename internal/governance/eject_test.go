package governance

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// failRun records n failures on s at now and returns how many of them ejected it.
func failRun(s *EjectState, now int64, n int) int {
	ejections := 0
	for range n {
		if s.Record(now, true) {
			ejections++
		}
	}
	return ejections
}

func TestEjectDefaults(t *testing.T) {
	got := NewEjector(EjectConfig{}).Config()
	want := EjectConfig{ConsecutiveErrors: 5, BaseEjection: 30 * time.Second, MaxEjection: 300 * time.Second, MaxEjectionPercent: 50}
	if got != want {
		t.Fatalf("defaults: %+v, want %+v", got, want)
	}
}

func TestEjectConsecutiveErrors(t *testing.T) {
	e := NewEjector(EjectConfig{})
	e.SetSize(10)
	s := e.Endpoint("10.0.0.1:20880")
	if e.Endpoint("10.0.0.1:20880") != s || s.Addr() != "10.0.0.1:20880" {
		t.Fatal("Endpoint is not stable")
	}
	// Four failures, a success, four failures: no run of five.
	if failRun(s, t0, 4) != 0 || s.Record(t0, false) || failRun(s, t0, 4) != 0 || s.Ejected(t0) {
		t.Fatal("ejected without five failures in a row")
	}
	if !s.Record(t0+ms, true) || !s.Ejected(t0+ms) {
		t.Fatal("the fifth failure in a row did not eject")
	}
	// Failures of calls sent before the ejection are not counted.
	if failRun(s, t0+2*ms, 20) != 0 {
		t.Fatal("ejected again while ejected")
	}
	// The first ejection lasts BaseEjection.
	if !s.Ejected(t0+ms+30*sec-1) || s.Ejected(t0+ms+30*sec) {
		t.Fatal("the first ejection does not last 30s")
	}
	// Back: the failures during the ejection were not counted; five more eject it again,
	// for twice as long.
	end := t0 + ms + 30*sec
	if failRun(s, end, 4) != 0 || !s.Record(end, true) {
		t.Fatal("five failures after the ejection did not eject")
	}
	if !s.Ejected(end+60*sec-1) || s.Ejected(end+60*sec) {
		t.Fatal("the second ejection does not last 60s")
	}
}

// TestEjectMultiplier: the n-th ejection lasts n·BaseEjection up to MaxEjection, and the
// multiplier steps down for each BaseEjection served after an ejection.
func TestEjectMultiplier(t *testing.T) {
	e := NewEjector(EjectConfig{ConsecutiveErrors: 1, BaseEjection: 10 * time.Second, MaxEjection: 35 * time.Second})
	e.SetSize(4)
	s := e.Endpoint("a")
	now := t0
	for i, want := range []int64{10, 20, 30, 35, 35, 35} {
		if !s.Record(now, true) {
			t.Fatalf("ejection %d: not ejected", i+1)
		}
		if !s.Ejected(now+want*sec-1) || s.Ejected(now+want*sec) {
			t.Fatalf("ejection %d does not last %ds", i+1, want)
		}
		now += want * sec
	}
	if m := s.multiplier(); m != 4 {
		t.Fatalf("multiplier %d, want it capped at 4", m)
	}
	// Serving well: one step down per BaseEjection after the ejection ended.
	s.Record(now, false)
	if m := s.multiplier(); m != 4 {
		t.Fatalf("right after the ejection: multiplier %d, want 4", m)
	}
	s.Record(now+10*sec-1, false)
	if m := s.multiplier(); m != 4 {
		t.Fatalf("before one BaseEjection served: multiplier %d, want 4", m)
	}
	s.Record(now+10*sec, false)
	if m := s.multiplier(); m != 3 {
		t.Fatalf("after one BaseEjection served: multiplier %d, want 3", m)
	}
	s.Record(now+25*sec, false) // 2.5 BaseEjections: one more step
	if m := s.multiplier(); m != 2 {
		t.Fatalf("after 2.5 BaseEjections served: multiplier %d, want 2", m)
	}
	// The next ejection is the third, not the seventh.
	now += 25 * sec
	if !s.Record(now, true) || !s.Ejected(now+30*sec-1) || s.Ejected(now+30*sec) {
		t.Fatal("after stepping down to 2: the next ejection does not last 30s")
	}
	// Long service steps all the way down.
	s.Record(now+30*sec+time.Hour.Nanoseconds(), false)
	if m := s.multiplier(); m != 0 {
		t.Fatalf("after an hour served: multiplier %d, want 0", m)
	}
}

// TestEjectMaxPercent: never more than MaxEjectionPercent of the set, at least one, never
// all of them.
func TestEjectMaxPercent(t *testing.T) {
	for _, c := range []struct {
		size, percent, want int
	}{
		{1, 50, 0}, {2, 50, 1}, {3, 50, 1}, {4, 50, 2}, {10, 50, 5},
		{5, 10, 1}, {3, 100, 2}, {10, 100, 9}, {20, 10, 2},
	} {
		t.Run(fmt.Sprintf("%d endpoints at %d%%", c.size, c.percent), func(t *testing.T) {
			e := NewEjector(EjectConfig{ConsecutiveErrors: 1, MaxEjectionPercent: c.percent})
			for i := range c.size {
				e.Endpoint(fmt.Sprint("ep", i)) // the set's size: the endpoints known
			}
			got := 0
			for i := range c.size {
				if e.Endpoint(fmt.Sprint("ep", i)).Record(t0, true) {
					got++
				}
			}
			if got != c.want {
				t.Fatalf("%d ejected, want %d", got, c.want)
			}
			// Once an ejection ends, another endpoint may take its place.
			if c.want > 0 && c.want < c.size {
				if !e.Endpoint(fmt.Sprint("ep", c.size-1)).Record(t0+30*sec, true) {
					t.Fatal("after the ejections ended: refused")
				}
			}
		})
	}
	// SetSize counts the endpoints not looked up yet.
	e := NewEjector(EjectConfig{ConsecutiveErrors: 1})
	if e.Endpoint("a").Record(t0, true) {
		t.Fatal("the only endpoint known ejected")
	}
	e.SetSize(2)
	if !e.Endpoint("a").Record(t0, true) {
		t.Fatal("one of two endpoints not ejected")
	}
	// A refused ejection starts the count over.
	e = NewEjector(EjectConfig{ConsecutiveErrors: 3})
	s := e.Endpoint("only")
	if failRun(s, t0, 3) != 0 || s.errs.Load() != 0 {
		t.Fatalf("refused ejection: %d consecutive errors left", s.errs.Load())
	}
}

func TestEjectForget(t *testing.T) {
	e := NewEjector(EjectConfig{ConsecutiveErrors: 1})
	a, b := e.Endpoint("a"), e.Endpoint("b")
	e.Endpoint("c")
	if !a.Record(t0, true) || b.Record(t0, true) {
		t.Fatal("3 endpoints at 50%: want exactly one ejected")
	}
	e.Forget(func(addr string) bool { return addr != "a" })
	// a no longer counts: b may go (1 of the 2 left)...
	if !b.Record(t0, true) {
		t.Fatal("after forgetting the ejected endpoint: b not ejected")
	}
	// ...and a forgotten state ejects nothing.
	if a.Record(t0+time.Hour.Nanoseconds(), true) {
		t.Fatal("a forgotten endpoint ejected")
	}
	if e.Endpoint("a") == a || e.Endpoint("a").Ejected(t0) {
		t.Fatal("a forgotten address came back with its old state")
	}
}

// TestEjectConcurrent: many goroutines failing calls on the endpoints of one set eject
// each at most once at a time, and never more than the limit.
func TestEjectConcurrent(t *testing.T) {
	e := NewEjector(EjectConfig{ConsecutiveErrors: 3})
	e.SetSize(4)
	addrs := []string{"a", "b", "c", "d"}
	var ejections [4]atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := (g + i) % 4
				s := e.Endpoint(addrs[k])
				if s.Record(t0, i%50 != 0) {
					ejections[k].Add(1)
				}
				s.Ejected(t0)
			}
		})
	}
	wg.Wait()
	total := int64(0)
	for k := range ejections {
		if n := ejections[k].Load(); n > 1 {
			t.Errorf("%s ejected %d times at one instant", addrs[k], n)
		}
		total += ejections[k].Load()
	}
	if total != 2 {
		t.Fatalf("%d ejected, want 2 (50%% of 4)", total)
	}
}

func TestEjectAllocs(t *testing.T) {
	e := NewEjector(EjectConfig{})
	e.SetSize(3)
	for _, a := range []string{"a", "b", "c"} {
		e.Endpoint(a)
	}
	addr := "b"
	now := t0
	noAllocs(t, "Endpoint+Record+Ejected", func() {
		now += ms
		s := e.Endpoint(addr)
		if !s.Ejected(now) {
			s.Record(now, now%(7*ms) == 0)
		}
	})
}
