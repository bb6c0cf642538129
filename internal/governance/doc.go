// Package governance holds the primitives of traffic governance that a gateway evaluates
// once per call on its hot path: a token bucket (Bucket) for rate limits, a concurrency
// gate (Gate), a circuit breaker with Sentinel-style degradation rules (Breaker), a retry
// budget after Finagle and Linkerd (RetryBudget), and outlier ejection by consecutive
// errors after Envoy (Ejector).
//
// Every decision is lock-free on its common path and allocates nothing: a Take, an
// Allow/Record pair or a Deposit/Withdraw costs tens of nanoseconds. Rare events (a
// configuration change, a breaker changing state, a window bucket rolling over, an
// endpoint's ejection, a Gate's waiters) may take a small per-object mutex.
//
// Time is never read inside the package: every method that depends on it takes now, in
// nanoseconds on any clock that only moves forward (time.Now().UnixNano() or a monotonic
// nanotime), so that tests drive time deterministically. Several goroutines may pass
// slightly different nows (each read its own clock a little earlier or later): the
// primitives tolerate that and never go back in time on their own state. now must not be
// negative.
//
// The package starts no goroutine; only Gate.Acquire blocks, and only its caller. All
// types are safe for concurrent use unless their documentation says otherwise. Which call
// is governed by which primitive (matching, keys, configuration) is the policy layer's
// business, not this package's.
package governance
