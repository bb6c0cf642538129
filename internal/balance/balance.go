// Package balance picks one endpoint of several: power of two choices over the number of
// calls each has in flight, lock-free.
package balance

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Endpoint is one address with its count of calls in flight.
type Endpoint struct {
	Addr     string
	inflight atomic.Int64
	// downUntil (unix nanoseconds) keeps an endpoint that could not be reached out of
	// picks for a while (passive outlier detection).
	downUntil atomic.Int64
}

// MarkDown keeps e out of picks for d, unless every endpoint is down.
func (e *Endpoint) MarkDown(d time.Duration) { e.downUntil.Store(time.Now().Add(d).UnixNano()) }

func (e *Endpoint) down(now int64) bool { return e.downUntil.Load() > now }

// Done ends a call picked with Pick.
func (e *Endpoint) Done() { e.inflight.Add(-1) }

// Inflight is the number of calls in flight.
func (e *Endpoint) Inflight() int64 { return e.inflight.Load() }

// Set is an immutable set of endpoints.
type Set struct {
	eps []*Endpoint
}

// NewSet returns a set of addrs.
func NewSet(addrs []string) *Set {
	s := &Set{eps: make([]*Endpoint, len(addrs))}
	for i, a := range addrs {
		s.eps[i] = &Endpoint{Addr: a}
	}
	return s
}

// AllDown reports whether every endpoint is kept out of picks at now (unix ns); false
// for an empty set.
func (s *Set) AllDown(now int64) bool {
	for _, e := range s.eps {
		if !e.down(now) {
			return false
		}
	}
	return len(s.eps) > 0
}

// Each calls f with each endpoint.
func (s *Set) Each(f func(*Endpoint)) {
	for _, e := range s.eps {
		f(e)
	}
}

// Len is the number of endpoints.
func (s *Set) Len() int { return len(s.eps) }

// Pick chooses the less loaded of two random endpoints, never avoid if another exists,
// and counts a call in flight on it; the caller must call Done. It returns nil if the set
// is empty.
func (s *Set) Pick(avoid *Endpoint) *Endpoint {
	n := len(s.eps)
	var e *Endpoint
	switch {
	case n == 0:
		return nil
	case n == 1:
		e = s.eps[0]
	default:
		now := time.Now().UnixNano()
		bad := func(x *Endpoint) bool { return x == avoid || x.down(now) }
		// first usable endpoint at or after i, or -1
		usable := func(i int, not *Endpoint) int {
			for k := 0; k < n; k++ {
				x := s.eps[(i+k)%n]
				if !bad(x) && x != not {
					return (i + k) % n
				}
			}
			return -1
		}
		ai := usable(rand.IntN(n), nil)
		if ai < 0 {
			// Everything is down or avoided: any endpoint but the avoided one, if possible.
			ai = rand.IntN(n)
			if s.eps[ai] == avoid {
				ai = (ai + 1) % n
			}
			e = s.eps[ai]
			break
		}
		e = s.eps[ai]
		if bi := usable(rand.IntN(n), e); bi >= 0 && s.eps[bi].inflight.Load() < e.inflight.Load() {
			e = s.eps[bi]
		}
	}
	e.inflight.Add(1)
	return e
}
