// Package balance picks one endpoint of several: power of two choices over the number of
// calls each has in flight, lock-free.
package balance

import (
	"math/rand/v2"
	"sync/atomic"
)

// Endpoint is one address with its count of calls in flight.
type Endpoint struct {
	Addr     string
	inflight atomic.Int64
}

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
		a := s.eps[rand.IntN(n)]
		b := s.eps[rand.IntN(n)]
		for tries := 0; (b == a || b == avoid) && tries < 4; tries++ {
			b = s.eps[rand.IntN(n)]
		}
		if a == avoid || (b != avoid && b.inflight.Load() < a.inflight.Load()) {
			a = b
		}
		e = a
	}
	e.inflight.Add(1)
	return e
}
