package governance

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// EjectConfig is the rule of an Ejector, after Envoy's outlier detection by consecutive
// errors. Zero fields take the defaults given.
type EjectConfig struct {
	// ConsecutiveErrors ejects an endpoint after this many failed calls in a row
	// (default 5).
	ConsecutiveErrors int
	// BaseEjection is how long the first ejection of an endpoint lasts (default 30s); the
	// n-th lasts n·BaseEjection, up to MaxEjection. The multiplier n steps back down by
	// one for every BaseEjection an endpoint serves (with successful calls) after its
	// last ejection ended.
	BaseEjection time.Duration
	// MaxEjection caps the length of one ejection (default 300s).
	MaxEjection time.Duration
	// MaxEjectionPercent is the most endpoints of the set ejected at once, as a
	// percentage of its size (default 50). It is at least one endpoint and never all of
	// them: with one endpoint, none is ever ejected.
	MaxEjectionPercent int
}

func (c EjectConfig) withDefaults() EjectConfig {
	if c.ConsecutiveErrors <= 0 {
		c.ConsecutiveErrors = 5
	}
	if c.BaseEjection <= 0 {
		c.BaseEjection = 30 * time.Second
	}
	if c.MaxEjection <= 0 {
		c.MaxEjection = 300 * time.Second
	}
	c.MaxEjection = max(c.MaxEjection, c.BaseEjection)
	if c.MaxEjectionPercent <= 0 {
		c.MaxEjectionPercent = 50
	}
	c.MaxEjectionPercent = min(c.MaxEjectionPercent, 100)
	return c
}

// Ejector tracks the endpoints of one set (the providers of one service, the ingress
// instances of one peer) and ejects those that fail ConsecutiveErrors calls in a row.
// Looking an endpoint up is lock-free (a copy-on-write map); an EjectState's Record and
// Ejected are atomic and allocate nothing. A mutex is taken only to add or forget
// endpoints and when an endpoint reaches the threshold or its multiplier steps down. All
// methods are safe for concurrent use.
type Ejector struct {
	cfg EjectConfig
	// maxMult bounds an endpoint's multiplier: one more ejection could not be longer.
	maxMult int32

	eps  atomic.Pointer[map[string]*EjectState] // replaced whole under mu
	size atomic.Int64                           // set by SetSize; 0: len(*eps)
	mu   sync.Mutex                             // guards the map's copies and every ejection
}

// EjectState is the outlier state of one endpoint of an Ejector.
type EjectState struct {
	e    *Ejector
	addr string

	errs  atomic.Int64 // consecutive failed calls
	until atomic.Int64 // ejected while now < until (ns)
	// mult is the number of the next ejection minus one (Envoy's ejection multiplier);
	// decayAt is when it may next step down. Both change under e.mu only.
	mult    atomic.Int32
	decayAt atomic.Int64
}

// NewEjector returns an ejector with rule c (see EjectConfig for the defaults) and no
// endpoint.
func NewEjector(c EjectConfig) *Ejector {
	c = c.withDefaults()
	e := &Ejector{cfg: c}
	e.maxMult = int32(min(c.MaxEjection/c.BaseEjection+1, math.MaxInt32))
	m := map[string]*EjectState{}
	e.eps.Store(&m)
	return e
}

// Config returns the ejector's rule, defaults applied.
func (e *Ejector) Config() EjectConfig { return e.cfg }

// Endpoint returns the state of the endpoint at addr, created (not ejected) on first use.
// The same *EjectState is returned for addr until Forget drops it; keep it with the
// endpoint rather than look it up per call, though a lookup is lock-free and allocates
// nothing.
func (e *Ejector) Endpoint(addr string) *EjectState {
	if s, ok := (*e.eps.Load())[addr]; ok {
		return s
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := *e.eps.Load()
	if s, ok := old[addr]; ok {
		return s
	}
	m := make(map[string]*EjectState, len(old)+1)
	for a, s := range old {
		m[a] = s
	}
	s := &EjectState{e: e, addr: addr}
	s.until.Store(math.MinInt64)
	m[addr] = s
	e.eps.Store(&m)
	return s
}

// Forget drops the endpoints for which keep returns false (those no longer in the set).
// Their states stop counting toward the set's ejections; Endpoint makes a fresh one if
// the address comes back. keep is called with the ejector's lock held: it must not call
// the ejector.
func (e *Ejector) Forget(keep func(addr string) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := *e.eps.Load()
	m := make(map[string]*EjectState, len(old))
	for a, s := range old {
		if keep(a) {
			m[a] = s
		}
	}
	e.eps.Store(&m)
}

// SetSize tells the ejector how many endpoints the set has now, for MaxEjectionPercent.
// Until it is called (or after SetSize(0)), the size is the number of endpoints it
// tracks.
func (e *Ejector) SetSize(n int) { e.size.Store(int64(max(n, 0))) }

// Addr returns the endpoint's address.
func (s *EjectState) Addr() string { return s.addr }

// Until is when the endpoint's ejection ends (unix ns; in the past when it is not ejected).
func (s *EjectState) Until() int64 { return s.until.Load() }

// Ejected reports whether the endpoint is ejected at now (ns).
func (s *EjectState) Ejected(now int64) bool { return now < s.until.Load() }

// Record counts one call's outcome on the endpoint at now (ns) and returns true when this
// call ejected it: the ConsecutiveErrors-th failure in a row, if the set's
// MaxEjectionPercent allows one more ejection. Failures of calls that end while the
// endpoint is ejected (sent before) are not counted. When the limit refuses an ejection,
// the count starts over: the endpoint is tried again after as many failures. A success
// ends the run of failures, and may step the multiplier down.
func (s *EjectState) Record(now int64, failed bool) (ejected bool) {
	if !failed {
		if s.errs.Load() != 0 {
			s.errs.Store(0)
		}
		if s.mult.Load() != 0 && now >= s.decayAt.Load() {
			s.e.decay(s, now)
		}
		return false
	}
	if now < s.until.Load() {
		return false
	}
	if s.errs.Add(1) < int64(s.e.cfg.ConsecutiveErrors) {
		return false
	}
	return s.e.eject(s, now)
}

// eject ejects s at now if it still qualifies and the set allows it.
func (e *Ejector) eject(s *EjectState, now int64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.errs.Load() < int64(e.cfg.ConsecutiveErrors) || now < s.until.Load() {
		return false // another goroutine ejected it (or a success came) meanwhile
	}
	s.errs.Store(0)
	m := *e.eps.Load()
	if m[s.addr] != s {
		return false // forgotten: no longer in the set
	}
	n := int(e.size.Load())
	if n == 0 {
		n = len(m)
	}
	limit := min(max(n*e.cfg.MaxEjectionPercent/100, 1), n-1)
	ejected := 0
	for _, o := range m {
		if now < o.until.Load() {
			ejected++
		}
	}
	if ejected >= limit {
		return false
	}
	mult := min(s.mult.Load()+1, e.maxMult)
	s.mult.Store(mult)
	d := min(time.Duration(mult)*e.cfg.BaseEjection, e.cfg.MaxEjection)
	s.until.Store(now + int64(d))
	s.decayAt.Store(now + int64(d) + int64(e.cfg.BaseEjection))
	return true
}

// decay steps s's multiplier down once per BaseEjection served since decayAt.
func (e *Ejector) decay(s *EjectState, now int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	at := s.decayAt.Load()
	mult := s.mult.Load()
	if mult == 0 || now < at {
		return
	}
	base := int64(e.cfg.BaseEjection)
	steps := (now-at)/base + 1
	if steps >= int64(mult) {
		s.mult.Store(0)
		return
	}
	s.mult.Store(mult - int32(steps))
	s.decayAt.Store(at + steps*base)
}

// multiplier returns s's ejection multiplier (for tests and debugging).
func (s *EjectState) multiplier() int { return int(s.mult.Load()) }
