package governance

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// The benchmarks pass explicit times, as the gateway will (one clock read per call,
// shared by every primitive).

// BenchmarkBucketTake takes from one bucket at 1M/s, a call every 500ns: half the calls
// are admitted, half refused.
func BenchmarkBucketTake(b *testing.B) {
	bk := NewBucket(1e6, 100, t0)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now += 500
		bk.Take(now)
	}
}

// BenchmarkBucketTakeParallel takes from one bucket on GOMAXPROCS goroutines, each with
// its own clock: the CAS on one word is what they contend for.
func BenchmarkBucketTakeParallel(b *testing.B) {
	bk := NewBucket(1e7, 1000, t0)
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		now := t0 + seq.Add(1)
		for pb.Next() {
			now += 50
			bk.Take(now)
		}
	})
}

// BenchmarkGateTryAcquireRelease: one admission and its release, nobody waiting.
func BenchmarkGateTryAcquireRelease(b *testing.B) {
	g := NewGate(100)
	b.ReportAllocs()
	for b.Loop() {
		if g.TryAcquire() {
			g.Release()
		}
	}
}

// BenchmarkGateAcquireFree: Acquire when a slot is free (the policy layer's usual path).
func BenchmarkGateAcquireFree(b *testing.B) {
	g := NewGate(100)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if g.Acquire(ctx, time.Second) {
			g.Release()
		}
	}
}

// BenchmarkBreakerAllowRecord: a closed breaker with every condition on, one Allow and one
// Record per call, a call every 10µs (a bucket rolls over every 100,000 calls).
func BenchmarkBreakerAllowRecord(b *testing.B) {
	br := NewBreaker(BreakerConfig{ErrorRatio: 0.5, SlowRatio: 0.5, SlowCall: time.Second, ErrorCount: 1 << 30}, nil)
	now := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		now += 10_000
		i++
		ok, probe := br.Allow(now)
		if ok {
			br.Record(now, i%10 == 0, time.Millisecond, probe)
		}
	}
}

// BenchmarkBreakerAllowRecordParallel: the same on GOMAXPROCS goroutines.
func BenchmarkBreakerAllowRecordParallel(b *testing.B) {
	br := NewBreaker(BreakerConfig{ErrorRatio: 0.5}, nil)
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		now := t0 + seq.Add(1)
		i := 0
		for pb.Next() {
			now += 10_000
			i++
			ok, probe := br.Allow(now)
			if ok {
				br.Record(now, i%10 == 0, time.Millisecond, probe)
			}
		}
	})
}

// BenchmarkRetryBudget: one Deposit and one Withdraw per call, a call every 10µs.
func BenchmarkRetryBudget(b *testing.B) {
	r := NewRetryBudget(0.2, 10, 10*time.Second)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now += 10_000
		r.Deposit(now)
		r.Withdraw(now)
	}
}

// BenchmarkEjectRecord: Ejected and Record on one endpoint of a set of 10, one call in 7
// failing (never five in a row: no ejection).
func BenchmarkEjectRecord(b *testing.B) {
	e := NewEjector(EjectConfig{})
	e.SetSize(10)
	s := e.Endpoint("10.0.0.7:20880")
	now := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		now += 10_000
		i++
		if !s.Ejected(now) {
			s.Record(now, i%7 == 0)
		}
	}
}

// BenchmarkEjectEndpointLookup: looking an endpoint up by address in a set of 100.
func BenchmarkEjectEndpointLookup(b *testing.B) {
	e := NewEjector(EjectConfig{})
	for i := range 100 {
		e.Endpoint("10.0.0." + itoa3(i) + ":20880")
	}
	addr := "10.0.0.42:20880"
	b.ReportAllocs()
	for b.Loop() {
		e.Endpoint(addr)
	}
}

func itoa3(i int) string {
	return string([]byte{byte('0' + i/100), byte('0' + i/10%10), byte('0' + i%10)})
}
