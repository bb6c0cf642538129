package governance

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/balance"
	"github.com/strait-mesh/strait/internal/config"
)

// Call is what a policy matches a call on. At the egress Peer is the domain called; at
// the ingress, the calling domain.
type Call struct {
	Peer, Service, Method, Caller string
}

// Kinds of policy, as refusals and metrics name them.
const (
	KindRateLimit   = "ratelimit"
	KindConcurrency = "concurrency"
	KindBreaker     = "breaker"
)

// Refusal is why a call was not admitted; the zero value admits.
type Refusal struct {
	// Code is RESOURCE_EXHAUSTED (a rate or concurrency limit) or UNAVAILABLE (an open
	// breaker); OK when the call was admitted.
	Code codes.Code
	// Kind and Policy name the policy that refused.
	Kind, Policy string
	// RetryAfter is when a rate limit will admit a call again (HTTP's Retry-After).
	RetryAfter time.Duration
	// Wait is set, with Code OK, when the call would have to queue for a concurrency slot:
	// only a caller that may block (AdmitWait) can admit it.
	Wait bool
}

// Refused reports whether the call was refused or must wait.
func (r Refusal) Refused() bool { return r.Code != codes.OK || r.Wait }

// Message is the refusal as the caller reads it.
func (r Refusal) Message(c *Call) string {
	switch r.Kind {
	case KindRateLimit:
		return fmt.Sprintf("strait: rate limit %q exceeded (%s → %s/%s)", r.Policy, c.Peer, c.Service, c.Method)
	case KindConcurrency:
		return fmt.Sprintf("strait: concurrency limit %q reached for %s/%s (%s)", r.Policy, c.Peer, c.Service, c.Method)
	case KindBreaker:
		return fmt.Sprintf("strait: breaker %q is open for %s/%s", r.Policy, c.Peer, c.Service)
	}
	return "strait: refused"
}

// maxHeld bounds the concurrency slots and breakers one call holds: the most concurrency
// limits, and breakers, one gateway kind may have (config.MaxPoliciesPerKind).
const maxHeld = config.MaxPoliciesPerKind

// Ticket is an admitted call's hold on its policies: its concurrency slots and the
// breakers that will count its outcome. Done releases it; a Ticket is a value, kept
// where the call is (the relay's stream state), so admitting allocates nothing.
type Ticket struct {
	gates    [maxHeld]*Gate
	breakers [maxHeld]*Breaker
	probes   uint8 // bit i: breakers[i] admitted it as a probe
	ng, nb   uint8
	at       int64 // when it was admitted (unix nanoseconds), if it holds breakers
}

// Held reports whether the ticket holds anything that Done must release.
func (t *Ticket) Held() bool { return t.ng > 0 || t.nb > 0 }

// Done releases the call's slots and counts its outcome in its breakers: failed, and
// how long it took. It must be called once per admitted call (a zero Ticket is fine).
func (t *Ticket) Done(failed bool, elapsed time.Duration) {
	for i := uint8(0); i < t.ng; i++ {
		t.gates[i].Release()
		t.gates[i] = nil
	}
	if t.nb > 0 {
		now := t.at + int64(elapsed)
		for i := uint8(0); i < t.nb; i++ {
			t.breakers[i].Record(now, failed, elapsed, t.probes&(1<<i) != 0)
			t.breakers[i] = nil
		}
	}
	t.ng, t.nb, t.probes = 0, 0, 0
}

func (t *Ticket) release() {
	for i := uint8(0); i < t.ng; i++ {
		t.gates[i].Release()
		t.gates[i] = nil
	}
	t.ng = 0
}

// EndpointObserver is told the outcome of each call on the endpoint that served it (the
// ingress' outlier detection and per-endpoint breakers). It is called on the data path
// and must not block.
type EndpointObserver interface {
	EndpointDone(ep *balance.Endpoint, service string, failed bool, elapsed time.Duration)
}

// Observer is told about refusals and breaker transitions (metrics, logs). Its methods
// are called on the data path and must not block.
type Observer interface {
	Refused(kind, policy, peer, service string)
	BreakerChanged(policy, peer, service string, from, to State)
}

type nopObserver struct{}

func (nopObserver) Refused(string, string, string, string)              {}
func (nopObserver) BreakerChanged(string, string, string, State, State) {}

// Policies are one gateway's policies in force. Admitting a call takes no lock shared by
// all calls: the state of each policy is per key, in sharded maps.
type Policies struct {
	limits   []*rateLimit
	gates    []*concurrency
	breakers []*breakerPolicy
	obs      Observer
	// entries caches, per (peer, service), which policies apply as far as those two
	// decide and the state each one keeps for them: a call looks up one entry, then
	// checks only what depends on its method and caller. Copy on write: new entries are
	// rare (a peer calls a service for the first time since the last Apply).
	entries atomic.Pointer[map[[2]string]*entry]
	entryMu sync.Mutex
	// retries is the retry budget settings; budgets holds one budget per next-hop
	// cluster (a peer at the egress, a service at the ingress), copy on write.
	retries config.Retries
	budgets atomic.Pointer[map[string]*RetryBudget]
	budgetM sync.Mutex
	// perEndpoint: breakers are kept per provider endpoint (the ingress): Admit does not
	// apply them; EndpointDone counts the outcomes and says when to keep an endpoint out.
	perEndpoint bool
	// share divides the rate of cluster-wide limits: the live instances of the
	// gateway's cluster.
	share atomic.Int64
}

// Empty reports whether p has no policy that Admit applies (a nil p has none).
func (p *Policies) Empty() bool {
	if p == nil {
		return true
	}
	n := len(p.limits) + len(p.gates)
	if !p.perEndpoint {
		n += len(p.breakers)
	}
	return n == 0
}

// BreakPerEndpoint makes p keep its breakers per provider endpoint (the ingress) rather
// than per (peer, service). Call it before p is used.
func (p *Policies) BreakPerEndpoint() { p.perEndpoint = true }

// EndpointBreakers reports whether p keeps breakers per endpoint and has some.
func (p *Policies) EndpointBreakers() bool { return p != nil && p.perEndpoint && len(p.breakers) > 0 }

// OpenForAll returns the name of a per-endpoint breaker of service that is open for every
// endpoint of s ("" for none): the ingress then fails the call at once.
func (p *Policies) OpenForAll(service string, s *balance.Set) string {
	if !p.EndpointBreakers() || s.Len() == 0 {
		return ""
	}
	for _, b := range p.breakers {
		if !b.match.head("", service) {
			continue
		}
		all := true
		s.Each(func(ep *balance.Endpoint) {
			if all {
				br, ok := b.keys.get(key{ep.Addr, service})
				all = ok && br.State() == Open
			}
		})
		if all {
			return b.cfg.Name
		}
	}
	return ""
}

// EndpointDone counts a call's outcome in the per-endpoint breakers of service (see
// BreakPerEndpoint) and returns how long to keep the endpoint out of picks: an open
// breaker's remaining time, 0 for none. The first calls to finish after a breaker's
// OpenFor are its probes: their success closes it, a failure opens it again.
func (p *Policies) EndpointDone(service, addr string, now int64, failed bool, elapsed time.Duration) (down time.Duration) {
	if !p.EndpointBreakers() {
		return 0
	}
	for _, b := range p.breakers {
		if !b.match.head("", service) {
			continue
		}
		br := b.breaker(addr, service)
		ok, probe := br.Allow(now)
		if ok {
			br.Record(now, failed, elapsed, probe)
		}
		if br.State() == Open {
			down = max(down, b.cfg.OpenFor.D())
		}
	}
	return down
}

// Compile builds the policies of one gateway kind from its decoded configuration. The
// state of a policy of prev with the same name and kind (its buckets, counts, breakers)
// carries over, with the new settings, so that a live change neither forgets nor resets
// what was counted.
func Compile(g config.Governance, prev *Policies, obs Observer) *Policies {
	if obs == nil {
		obs = nopObserver{}
	}
	p := &Policies{obs: obs, retries: g.Retries}
	p.entries.Store(&map[[2]string]*entry{})
	budgets := map[string]*RetryBudget{}
	if prev != nil && !g.Retries.Disabled {
		r := g.Retries.WithDefaults()
		for k, b := range *prev.budgets.Load() {
			b.Set(r.BudgetRatio, r.MinPerSecond)
			budgets[k] = b
		}
	}
	p.budgets.Store(&budgets)
	p.share.Store(1)
	if prev != nil {
		p.share.Store(prev.share.Load())
	}
	now := time.Now().UnixNano()
	for _, r := range g.RateLimits {
		r = r.WithDefaults()
		var old *rateLimit
		if prev != nil {
			for _, o := range prev.limits {
				if o.cfg.Name == r.Name {
					old = o
				}
			}
		}
		p.limits = append(p.limits, newRateLimit(r, old, p.share.Load(), now))
	}
	for _, c := range g.Concurrency {
		c = c.WithDefaults()
		var old *concurrency
		if prev != nil {
			for _, o := range prev.gates {
				if o.cfg.Name == c.Name {
					old = o
				}
			}
		}
		p.gates = append(p.gates, newConcurrency(c, old))
	}
	for _, b := range g.Breakers {
		b = b.WithDefaults()
		var old *breakerPolicy
		if prev != nil {
			for _, o := range prev.breakers {
				if o.cfg.Name == b.Name && o.cfg == b {
					old = o
				}
			}
		}
		if old != nil {
			// Same settings: keep its breakers (and their state) as they are.
			p.breakers = append(p.breakers, &breakerPolicy{cfg: b, match: compileMatch(b.Match), keys: old.keys, p: p})
			continue
		}
		p.breakers = append(p.breakers, &breakerPolicy{cfg: b, match: compileMatch(b.Match), keys: newShards[*Breaker](), p: p})
	}
	// A call holds at most maxHeld slots and breakers (the domain file allows no more
	// policies of a kind at one gateway kind).
	p.gates = p.gates[:min(len(p.gates), maxHeld)]
	p.breakers = p.breakers[:min(len(p.breakers), maxHeld)]
	return p
}

// Retries reports whether calls that never reached a next hop may be retried.
func (p *Policies) Retries() bool { return p == nil || !p.retries.Disabled }

// Budget returns the retry budget of the next-hop cluster named key (nil when retries
// are off; a nil p has one budget with the defaults per call, which is no bound).
func (p *Policies) Budget(key string) *RetryBudget {
	if p == nil || p.retries.Disabled {
		return nil
	}
	if b, ok := (*p.budgets.Load())[key]; ok {
		return b
	}
	p.budgetM.Lock()
	defer p.budgetM.Unlock()
	old := *p.budgets.Load()
	if b, ok := old[key]; ok {
		return b
	}
	r := p.retries.WithDefaults()
	b := NewRetryBudget(r.BudgetRatio, r.MinPerSecond, budgetTTL)
	next := make(map[string]*RetryBudget, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[strings.Clone(key)] = b
	p.budgets.Store(&next)
	return b
}

// Budgets returns the counts of every retry budget, by next-hop cluster.
func (p *Policies) Budgets() map[string]BudgetStats {
	if p == nil {
		return nil
	}
	out := map[string]BudgetStats{}
	for k, b := range *p.budgets.Load() {
		out[k] = b.Stats()
	}
	return out
}

// budgetTTL is the window of retry budgets (Linkerd's ttl).
const budgetTTL = 10 * time.Second

// SetShare sets how many live instances share the rate of cluster-wide limits (at least 1).
func (p *Policies) SetShare(n int) {
	if p == nil {
		return
	}
	if n < 1 {
		n = 1
	}
	if p.share.Swap(int64(n)) == int64(n) {
		return
	}
	now := time.Now().UnixNano()
	for _, l := range p.limits {
		l.rescale(int64(n), now)
	}
}

// Admit decides a call without waiting: a call that would have to queue for a
// concurrency slot is returned with Wait set, for a caller that may block (AdmitWait).
// An admitted call's ticket must be finished with Done.
func (p *Policies) Admit(c *Call, t *Ticket) Refusal {
	return p.admit(nil, c, t)
}

// AdmitWait decides a call, waiting for a concurrency slot as long as the policy lets
// it (and ctx lasts).
func (p *Policies) AdmitWait(ctx context.Context, c *Call, t *Ticket) Refusal {
	if ctx == nil {
		ctx = context.Background()
	}
	return p.admit(ctx, c, t)
}

func (p *Policies) admit(ctx context.Context, c *Call, t *Ticket) Refusal {
	if p == nil {
		return Refusal{}
	}
	e := p.entry(c.Peer, c.Service)
	// Concurrency first: a call that must queue is handed on before it spends a token.
	for i, g := range p.gates {
		if e.gates[i] == nil || !g.match.rest(c) {
			continue
		}
		gate := e.gates[i]
		if gate.TryAcquire() {
			t.gates[t.ng] = gate
			t.ng++
			continue
		}
		q := g.cfg.Queue.D()
		if q > 0 && ctx == nil {
			t.release()
			return Refusal{Wait: true, Kind: KindConcurrency, Policy: g.cfg.Name}
		}
		if q > 0 && gate.Acquire(ctx, q) {
			t.gates[t.ng] = gate
			t.ng++
			continue
		}
		t.release()
		p.obs.Refused(KindConcurrency, g.cfg.Name, c.Peer, c.Service)
		return Refusal{Code: codes.ResourceExhausted, Kind: KindConcurrency, Policy: g.cfg.Name}
	}
	var now int64
	for i, l := range p.limits {
		if e.limits&(1<<i) == 0 || !l.match.rest(c) {
			continue
		}
		if now == 0 {
			now = time.Now().UnixNano()
		}
		b := e.buckets[i]
		if b == nil {
			b = l.bucket(c, now)
		}
		if ok, wait := b.Take(now); !ok {
			t.release()
			p.obs.Refused(KindRateLimit, l.cfg.Name, c.Peer, c.Service)
			return Refusal{Code: codes.ResourceExhausted, Kind: KindRateLimit, Policy: l.cfg.Name, RetryAfter: wait}
		}
	}
	for i, b := range p.breakers {
		br := e.breakers[i]
		if br == nil || !b.match.rest(c) {
			continue
		}
		if now == 0 {
			now = time.Now().UnixNano()
		}
		ok, probe := br.Allow(now)
		if !ok {
			t.release()
			for j := uint8(0); j < t.nb; j++ {
				// Breakers admitted it before this one refused: it was never made.
				t.breakers[j] = nil
			}
			t.nb, t.probes = 0, 0
			p.obs.Refused(KindBreaker, b.cfg.Name, c.Peer, c.Service)
			return Refusal{Code: codes.Unavailable, Kind: KindBreaker, Policy: b.cfg.Name}
		}
		if probe {
			t.probes |= 1 << t.nb
		}
		t.breakers[t.nb] = br
		t.nb++
		t.at = now
	}
	return Refusal{}
}

// entry is what applies to the calls of one (peer, service), as far as those two decide.
type entry struct {
	// limits has bit i set when rate limit i matches the peer and service.
	limits uint64
	// buckets[i] is rate limit i's bucket for these calls when it does not depend on the
	// method or caller (nil: look it up per call).
	buckets []*Bucket
	// gates[i] and breakers[i] are concurrency limit i's gate and breaker i for these
	// calls, nil when the policy does not match them.
	gates    [maxHeld]*Gate
	breakers [maxHeld]*Breaker
}

// entry returns the entry of (peer, service), building it on first use.
func (p *Policies) entry(peer, service string) *entry {
	k := [2]string{peer, service}
	if e, ok := (*p.entries.Load())[k]; ok {
		return e
	}
	p.entryMu.Lock()
	defer p.entryMu.Unlock()
	old := *p.entries.Load()
	if e, ok := old[k]; ok {
		return e
	}
	k = [2]string{strings.Clone(peer), strings.Clone(service)}
	e := &entry{buckets: make([]*Bucket, len(p.limits))}
	now := time.Now().UnixNano()
	for i, l := range p.limits {
		if i >= 64 || !l.match.head(k[0], k[1]) {
			continue
		}
		e.limits |= 1 << i
		if !l.by[2] && !l.by[3] {
			e.buckets[i] = l.bucket(&Call{Peer: k[0], Service: k[1]}, now)
		}
	}
	for i, g := range p.gates {
		if g.match.head(k[0], k[1]) {
			e.gates[i] = g.gate(k[0], k[1])
		}
	}
	for i, b := range p.breakers {
		if !p.perEndpoint && b.match.head(k[0], k[1]) {
			e.breakers[i] = b.breaker(k[0], k[1])
		}
	}
	next := make(map[[2]string]*entry, len(old)+1)
	for ok, oe := range old {
		next[ok] = oe
	}
	next[k] = e
	p.entries.Store(&next)
	return e
}

// matcher is a Match compiled: the peer and service part decided once per entry, the
// method and caller per call.
type matcher struct {
	m config.Match
	// callerPrefix is set when the caller pattern is "<prefix>*" (the common case),
	// which is checked without path.Match.
	callerPrefix string
	callerGlob   bool
}

func compileMatch(m config.Match) matcher {
	c := matcher{m: m}
	if m.Caller != "" && config.IsPattern(m.Caller) {
		if pre, ok := strings.CutSuffix(m.Caller, "*"); ok && !config.IsPattern(pre) {
			c.callerPrefix = pre
		} else {
			c.callerGlob = true
		}
	}
	return c
}

// head reports whether the peer and service part matches.
func (c *matcher) head(peer, service string) bool {
	return config.Match{Peer: c.m.Peer, Service: c.m.Service}.Matches(peer, service, "", "")
}

// rest reports whether the method and caller part matches.

func (c *matcher) rest(call *Call) bool {
	if c.m.Method != "" && c.m.Method != call.Method {
		return false
	}
	switch {
	case c.m.Caller == "":
		return true
	case c.callerPrefix != "":
		return strings.HasPrefix(call.Caller, c.callerPrefix)
	case c.callerGlob:
		ok, err := path.Match(c.m.Caller, call.Caller)
		return ok && err == nil
	}
	return c.m.Caller == call.Caller
}

// BreakerState is one breaker's state, for /debug: its policy, what it breaks (a peer and
// a service; at the ingress a provider endpoint's address and its service), its state
// and the counts of its window.
type BreakerState struct {
	Policy  string `json:"policy"`
	Peer    string `json:"peer"`
	Service string `json:"service"`
	State   string `json:"state"`
	Calls   int64  `json:"calls"`
	Errors  int64  `json:"errors"`
	Slow    int64  `json:"slow"`
}

// Breakers lists the state of every breaker.
func (p *Policies) Breakers() []BreakerState {
	if p == nil {
		return nil
	}
	now := time.Now().UnixNano()
	var out []BreakerState
	for _, b := range p.breakers {
		b.keys.each(func(k key, br *Breaker) {
			calls, errs, slow := br.Counts(now)
			out = append(out, BreakerState{Policy: b.cfg.Name, Peer: k[0], Service: k[1], State: br.State().String(), Calls: calls, Errors: errs, Slow: slow})
		})
	}
	return out
}

// key is the values a policy counts one call under.
type key [4]string

// rateLimit is a rate limit and its buckets: one, or one per key when it counts by keys.
type rateLimit struct {
	cfg   config.RateLimit
	match matcher
	by    [4]bool // counts by peer, service, method, caller
	one   *Bucket
	// keys holds the buckets of the values seen (at most config.MaxRateLimitKeys, then
	// the rest share overflow).
	keys     *shards[*Bucket]
	overflow *Bucket
	nkeys    atomic.Int64
	share    atomic.Int64
}

// maxKeys bounds the buckets of one rate limit (Envoy's max_dynamic_descriptors).
const maxKeys = 10000

func newRateLimit(r config.RateLimit, old *rateLimit, share int64, now int64) *rateLimit {
	l := &rateLimit{cfg: r, match: compileMatch(r.Match)}
	for i, k := range config.Keys {
		for _, by := range r.By {
			l.by[i] = l.by[i] || by == k
		}
	}
	rate, burst := l.scaled(share)
	l.share.Store(share)
	if old != nil && old.cfg.By == nil && r.By == nil && old.one != nil {
		l.one = old.one
		l.one.Set(rate, burst, now)
	} else if len(r.By) == 0 {
		l.one = NewBucket(rate, burst, now)
	}
	if len(r.By) > 0 {
		if old != nil && sameKeys(old.cfg.By, r.By) && old.keys != nil {
			l.keys, l.overflow = old.keys, old.overflow
			l.nkeys.Store(old.nkeys.Load())
			l.keys.each(func(_ key, b *Bucket) { b.Set(rate, burst, now) })
			l.overflow.Set(rate, burst, now)
		} else {
			l.keys = newShards[*Bucket]()
			l.overflow = NewBucket(rate, burst, now)
		}
	}
	return l
}

func sameKeys(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

// scaled is the rate and burst of one instance when share instances share the limit.
func (l *rateLimit) scaled(share int64) (rate, burst float64) {
	if l.cfg.Scope != config.ScopeCluster || share <= 1 {
		return l.cfg.Rate, l.cfg.Burst
	}
	return l.cfg.Rate / float64(share), math.Max(1, l.cfg.Burst/float64(share))
}

func (l *rateLimit) rescale(share, now int64) {
	if l.cfg.Scope != config.ScopeCluster {
		return
	}
	l.share.Store(share)
	rate, burst := l.scaled(share)
	if l.one != nil {
		l.one.Set(rate, burst, now)
	}
	if l.keys != nil {
		l.keys.each(func(_ key, b *Bucket) { b.Set(rate, burst, now) })
		l.overflow.Set(rate, burst, now)
	}
}

func (l *rateLimit) bucket(c *Call, now int64) *Bucket {
	if l.one != nil {
		return l.one
	}
	var k key
	if l.by[0] {
		k[0] = c.Peer
	}
	if l.by[1] {
		k[1] = c.Service
	}
	if l.by[2] {
		k[2] = c.Method
	}
	if l.by[3] {
		k[3] = c.Caller
	}
	if b, ok := l.keys.get(k); ok {
		return b
	}
	if l.nkeys.Load() >= maxKeys {
		return l.overflow
	}
	rate, burst := l.scaled(l.share.Load())
	b, added := l.keys.getOrAdd(k, func() *Bucket { return NewBucket(rate, burst, now) })
	if added {
		l.nkeys.Add(1)
	}
	return b
}

// concurrency is a concurrency limit and its gates, one per (peer, service).
type concurrency struct {
	cfg   config.Concurrency
	match matcher
	keys  *shards[*Gate]
}

func newConcurrency(c config.Concurrency, old *concurrency) *concurrency {
	if old != nil {
		// Calls in flight hold slots of the old gates: keep them, with the new maximum.
		old.keys.each(func(_ key, g *Gate) { g.SetMax(c.Max) })
		return &concurrency{cfg: c, match: compileMatch(c.Match), keys: old.keys}
	}
	return &concurrency{cfg: c, match: compileMatch(c.Match), keys: newShards[*Gate]()}
}

func (c *concurrency) gate(peer, service string) *Gate {
	k := key{peer, service}
	if g, ok := c.keys.get(k); ok {
		return g
	}
	g, _ := c.keys.getOrAdd(k, func() *Gate { return NewGate(c.cfg.Max) })
	return g
}

// breakerPolicy is a breaker policy and its breakers, one per (peer, service).
type breakerPolicy struct {
	cfg   config.Breaker
	match matcher
	keys  *shards[*Breaker]
	p     *Policies
}

func (b *breakerPolicy) breaker(peer, service string) *Breaker {
	k := key{peer, service}
	if br, ok := b.keys.get(k); ok {
		return br
	}
	br, _ := b.keys.getOrAdd(k, func() *Breaker {
		name, peer, service := b.cfg.Name, strings.Clone(peer), strings.Clone(service)
		obs := b.p.obs
		return NewBreaker(BreakerConfig{
			Window: b.cfg.Window.D(), MinCalls: b.cfg.MinCalls, ErrorRatio: b.cfg.ErrorRatio,
			SlowRatio: b.cfg.SlowRatio, SlowCall: b.cfg.SlowCall.D(), ErrorCount: b.cfg.ErrorCount,
			OpenFor: b.cfg.OpenFor.D(), Probes: b.cfg.Probes,
		}, func(from, to State) { obs.BreakerChanged(name, peer, service, from, to) })
	})
	return br
}

// shards is a map of key → V split in 64 shards, each under its own lock: a lookup takes
// one shard's read lock, never a lock every call shares.
type shards[V any] struct {
	seed maphash.Seed
	s    [64]shard[V]
}

type shard[V any] struct {
	mu sync.RWMutex
	m  map[key]V
	_  [40]byte // keep shards on separate cache lines
}

func newShards[V any]() *shards[V] {
	s := &shards[V]{seed: maphash.MakeSeed()}
	for i := range s.s {
		s.s[i].m = map[key]V{}
	}
	return s
}

func (s *shards[V]) shard(k key) *shard[V] {
	var h maphash.Hash
	h.SetSeed(s.seed)
	for _, p := range k {
		h.WriteString(p)
		h.WriteByte(0)
	}
	return &s.s[h.Sum64()&63]
}

func (s *shards[V]) get(k key) (V, bool) {
	sh := s.shard(k)
	sh.mu.RLock()
	v, ok := sh.m[k]
	sh.mu.RUnlock()
	return v, ok
}

// getOrAdd returns k's value, adding mk() if there is none; the key's strings are cloned
// (a call's strings may point into a buffer that is reused).
func (s *shards[V]) getOrAdd(k key, mk func() V) (V, bool) {
	sh := s.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if v, ok := sh.m[k]; ok {
		return v, false
	}
	for i := range k {
		k[i] = strings.Clone(k[i])
	}
	v := mk()
	sh.m[k] = v
	return v, true
}

func (s *shards[V]) each(f func(key, V)) {
	for i := range s.s {
		sh := &s.s[i]
		sh.mu.RLock()
		for k, v := range sh.m {
			f(k, v)
		}
		sh.mu.RUnlock()
	}
}

// Failed reports whether a call that ended with code failed in the sense breakers count:
// the server's own errors (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS),
// not the caller's (INVALID_ARGUMENT, NOT_FOUND, …) nor a refusal by a limit
// (RESOURCE_EXHAUSTED).
func Failed(code codes.Code) bool {
	switch code {
	case codes.Unknown, codes.DeadlineExceeded, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}
