package governance

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/strait-mesh/strait/internal/config"
)

// tenPolicies are ten policies of every kind, most of which match the benchmark's call.
func tenPolicies() config.Governance {
	return config.Governance{
		RateLimits: []config.RateLimit{
			{Name: "all", Rate: 1e7, Burst: 1e7},
			{Name: "per-peer", Rate: 1e7, Burst: 1e7, By: []string{config.KeyPeer}},
			{Name: "per-method", Match: config.Match{Service: "com.beta.*"}, Rate: 1e7, Burst: 1e7, By: []string{config.KeyPeer, config.KeyMethod}},
			{Name: "gamma", Match: config.Match{Peer: "gamma"}, Rate: 1},
		},
		Concurrency: []config.Concurrency{
			{Name: "pay", Match: config.Match{Service: "com.beta.Pay"}, Max: 1 << 20},
			{Name: "any", Max: 1 << 20},
			{Name: "other", Match: config.Match{Service: "com.beta.Other"}, Max: 1},
		},
		Breakers: []config.Breaker{
			{Name: "pay", Match: config.Match{Service: "com.beta.Pay"}, ErrorRatio: 0.5},
			{Name: "slow", SlowRatio: 0.9, SlowCall: config.Duration(time.Second)},
			{Name: "batch", Match: config.Match{Caller: "batch-*"}, ErrorCount: 5},
		},
	}
}

// BenchmarkAdmit: the per-call decision with ten policies (seven of which apply to the
// call), admitting and finishing one call: under 1 µs and no allocation.
func BenchmarkAdmit(b *testing.B) {
	p := Compile(tenPolicies(), nil, nil)
	c := Call{Peer: "alpha", Service: "com.beta.Pay", Method: "Charge", Caller: "web"}
	b.ReportAllocs()
	for b.Loop() {
		var t Ticket
		if r := p.Admit(&c, &t); r.Refused() {
			b.Fatalf("refused: %+v", r)
		}
		t.Done(false, time.Millisecond)
	}
}

// BenchmarkAdmitParallel: the same from every core at once.
func BenchmarkAdmitParallel(b *testing.B) {
	p := Compile(tenPolicies(), nil, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c := Call{Peer: "alpha", Service: "com.beta.Pay", Method: "Charge", Caller: "web"}
		for pb.Next() {
			var t Ticket
			if r := p.Admit(&c, &t); r.Refused() {
				b.Fatalf("refused: %+v", r)
			}
			t.Done(false, time.Millisecond)
		}
	})
}

// TestAdmitAllocatesNothing: once a call's keys have been seen, deciding and finishing
// it allocates nothing.
func TestAdmitAllocatesNothing(t *testing.T) {
	p := Compile(tenPolicies(), nil, nil)
	c := Call{Peer: "alpha", Service: "com.beta.Pay", Method: "Charge", Caller: "web"}
	n := testing.AllocsPerRun(1000, func() {
		var tk Ticket
		if r := p.Admit(&c, &tk); r.Refused() {
			t.Fatalf("refused: %+v", r)
		}
		tk.Done(false, time.Millisecond)
	})
	if n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}

type recorder struct {
	mu      sync.Mutex
	refused []string
	changes []string
}

func (r *recorder) Refused(kind, policy, peer, service string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refused = append(r.refused, kind+"/"+policy+"/"+peer+"/"+service)
}

func (r *recorder) BreakerChanged(policy, peer, service string, from, to State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, policy+":"+from.String()+"→"+to.String())
}

// TestRateLimitByKey: a limit counted by peer gives each peer its own bucket; calls it
// does not match pass; a refusal names the limit and says when to come back.
func TestRateLimitByKey(t *testing.T) {
	rec := &recorder{}
	p := Compile(config.Governance{RateLimits: []config.RateLimit{
		{Name: "per-peer", Match: config.Match{Service: "a.*"}, By: []string{config.KeyPeer}, Rate: 1, Burst: 2},
	}}, nil, rec)
	admit := func(peer, svc string) Refusal {
		var tk Ticket
		r := p.Admit(&Call{Peer: peer, Service: svc, Method: "M"}, &tk)
		tk.Done(false, 0)
		return r
	}
	for _, peer := range []string{"alpha", "gamma"} {
		for i := range 2 {
			if r := admit(peer, "a.B"); r.Refused() {
				t.Fatalf("%s call %d refused: %+v", peer, i, r)
			}
		}
	}
	r := admit("alpha", "a.B")
	if r.Code != codes.ResourceExhausted || r.Kind != KindRateLimit || r.Policy != "per-peer" || r.RetryAfter <= 0 || r.RetryAfter > time.Second {
		t.Fatalf("third call of alpha: %+v", r)
	}
	if msg := r.Message(&Call{Peer: "alpha", Service: "a.B", Method: "M"}); !strings.Contains(msg, `rate limit "per-peer"`) {
		t.Fatalf("message %q", msg)
	}
	if r := admit("alpha", "b.C"); r.Refused() {
		t.Fatalf("a service the limit does not match: %+v", r)
	}
	if len(rec.refused) != 1 || rec.refused[0] != "ratelimit/per-peer/alpha/a.B" {
		t.Fatalf("observed refusals %v", rec.refused)
	}
}

// TestClusterShare: a cluster-wide limit is divided among the instances; a local one is
// not.
func TestClusterShare(t *testing.T) {
	p := Compile(config.Governance{RateLimits: []config.RateLimit{
		{Name: "shared", Match: config.Match{Service: "s"}, Rate: 100, Burst: 100},
		{Name: "local", Match: config.Match{Service: "l"}, Rate: 100, Burst: 100, Scope: config.ScopeLocal},
	}}, nil, nil)
	p.SetShare(4)
	for _, l := range p.limits {
		want := 25.0
		if l.cfg.Name == "local" {
			want = 100
		}
		if l.one.Rate() != want || l.one.Burst() != want {
			t.Errorf("%s: rate %v burst %v, want %v", l.cfg.Name, l.one.Rate(), l.one.Burst(), want)
		}
	}
	// A recompiled limit keeps the share (and its bucket).
	q := Compile(config.Governance{RateLimits: []config.RateLimit{{Name: "shared", Match: config.Match{Service: "s"}, Rate: 200, Burst: 100}}}, p, nil)
	if q.limits[0].one != p.limits[0].one || q.limits[0].one.Rate() != 50 {
		t.Errorf("recompiled: same bucket %v, rate %v, want 50", q.limits[0].one == p.limits[0].one, q.limits[0].one.Rate())
	}
}

// TestConcurrencyQueues: a full gate refuses at once without a queue; with one, Admit
// asks the caller to wait and AdmitWait takes the slot a finishing call frees.
func TestConcurrencyQueues(t *testing.T) {
	p := Compile(config.Governance{Concurrency: []config.Concurrency{
		{Name: "now", Match: config.Match{Service: "now"}, Max: 1},
		{Name: "queued", Match: config.Match{Service: "queued"}, Max: 1, Queue: config.Duration(5 * time.Second)},
	}}, nil, nil)
	var held Ticket
	if r := p.Admit(&Call{Peer: "a", Service: "now"}, &held); r.Refused() {
		t.Fatal(r)
	}
	var tk Ticket
	if r := p.Admit(&Call{Peer: "a", Service: "now"}, &tk); r.Code != codes.ResourceExhausted || r.Policy != "now" {
		t.Fatalf("full gate without queue: %+v", r)
	}
	// Per (peer, service): another peer has its own slot.
	if r := p.Admit(&Call{Peer: "b", Service: "now"}, &tk); r.Refused() {
		t.Fatalf("another peer: %+v", r)
	}
	tk.Done(false, 0)
	held.Done(false, 0)

	var q1 Ticket
	if r := p.Admit(&Call{Peer: "a", Service: "queued"}, &q1); r.Refused() {
		t.Fatal(r)
	}
	var q2 Ticket
	if r := p.Admit(&Call{Peer: "a", Service: "queued"}, &q2); !r.Wait || r.Code != codes.OK {
		t.Fatalf("full gate with a queue, without waiting: %+v", r)
	}
	done := make(chan Refusal)
	go func() {
		var w Ticket
		r := p.AdmitWait(context.Background(), &Call{Peer: "a", Service: "queued"}, &w)
		w.Done(false, 0)
		done <- r
	}()
	q1.Done(false, 0)
	if r := <-done; r.Refused() {
		t.Fatalf("queued call: %+v", r)
	}
}

// TestBreakerPolicy: a breaker per (peer, service) opens on errors, refuses with
// UNAVAILABLE naming it, and reports its transitions; another peer's is untouched.
func TestBreakerPolicy(t *testing.T) {
	rec := &recorder{}
	p := Compile(config.Governance{Breakers: []config.Breaker{
		{Name: "pay", Match: config.Match{Service: "pay"}, ErrorRatio: 0.5, MinCalls: 4, OpenFor: config.Duration(time.Hour)},
	}}, nil, rec)
	for range 4 {
		var tk Ticket
		if r := p.Admit(&Call{Peer: "a", Service: "pay"}, &tk); r.Refused() {
			t.Fatal(r)
		}
		tk.Done(true, time.Millisecond)
	}
	var tk Ticket
	r := p.Admit(&Call{Peer: "a", Service: "pay"}, &tk)
	if r.Code != codes.Unavailable || r.Kind != KindBreaker || r.Policy != "pay" {
		t.Fatalf("after 4 failures: %+v", r)
	}
	if r := p.Admit(&Call{Peer: "b", Service: "pay"}, &tk); r.Refused() {
		t.Fatalf("another peer: %+v", r)
	}
	tk.Done(false, 0)
	if len(rec.changes) != 1 || rec.changes[0] != "pay:closed→open" {
		t.Fatalf("transitions %v", rec.changes)
	}
	states := p.Breakers()
	if len(states) != 2 {
		t.Fatalf("breakers %+v", states)
	}
}
