package balance

import (
	"testing"
	"time"
)

func TestPickPrefersLessLoadedAndSkipsDown(t *testing.T) {
	s := NewSet([]string{"a", "b", "c"})
	// Load a and b: c should win most picks.
	for range 10 {
		s.eps[0].inflight.Add(1)
		s.eps[1].inflight.Add(1)
	}
	c := 0
	for range 1000 {
		e := s.Pick(nil)
		if e.Addr == "c" {
			c++
		}
		e.Done()
	}
	if c < 500 {
		t.Fatalf("least loaded picked %d/1000 times", c)
	}
	s.eps[2].MarkDown(time.Hour)
	for range 1000 {
		e := s.Pick(nil)
		if e.Addr == "c" {
			t.Fatal("picked an endpoint marked down")
		}
		e.Done()
	}
	// All down: still picks something rather than nothing.
	s.eps[0].MarkDown(time.Hour)
	s.eps[1].MarkDown(time.Hour)
	if e := s.Pick(nil); e == nil {
		t.Fatal("no endpoint when all are down")
	}
	if NewSet(nil).Pick(nil) != nil {
		t.Fatal("picked from an empty set")
	}
}

func TestPickAvoids(t *testing.T) {
	s := NewSet([]string{"a", "b"})
	for range 200 {
		e := s.Pick(s.eps[0])
		if e.Addr != "b" {
			t.Fatal("picked the endpoint to avoid")
		}
		e.Done()
	}
}
