package config

import (
	"errors"
	"strings"
	"testing"
)

// TestGovernanceErrorsHavePaths: every kind of bad policy is reported at its path, all of
// them at once.
func TestGovernanceErrorsHavePaths(t *testing.T) {
	doc := `
domain: beta
trustDomain: beta.local
peers:
  - {domain: alpha, trustDomain: alpha.local, trustBundle: a.pem, quota: {services: -1, updatesPerSecond: -2}}
governance:
  rateLimits:
    - {name: Bad Name, gateway: sidecar, match: {peer: gamma, service: "a b", method: "x/y"}, by: [peer, zone, peer], rate: 0, scope: region}
    - {name: dup, rate: 1e9, burst: -1}
    - {name: dup, rate: 10, match: {caller: "[a-"}}
  concurrency:
    - {name: c, max: 0, queue: 2m}
  breakers:
    - {name: b, slowRatio: 1.5}
    - {name: b2, errorRatio: 0.5, window: 10ms, probes: -1}
  deadlines:
    - {match: {method: Get}}
    - {gateway: ingress, match: {peer: alpha}, default: 5s, max: 1s}
  retries: {budgetRatio: 2, minPerSecond: -1}
  outlierDetection: {maxEjectionPercent: 101}
`
	_, err := Parse([]byte(doc))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []string{
		`peers[0].quota.services: must not be negative`,
		`peers[0].quota.updatesPerSecond: must be a number, not negative`,
		`governance.rateLimits[0].name: "Bad Name" is not a policy name`,
		`governance.rateLimits[0].gateway: "sidecar" is not ingress or egress`,
		`governance.rateLimits[0].match.peer: "gamma" is not a configured peer`,
		`governance.rateLimits[0].match.service: "a b" is not a service name`,
		`governance.rateLimits[0].match.method: "x/y" is not a method name`,
		`governance.rateLimits[0].rate: required`,
		`governance.rateLimits[0].scope: "region" is not cluster or local`,
		`governance.rateLimits[0].by[1]: "zone" is not one of peer, service, method, caller`,
		`governance.rateLimits[0].by[2]: "peer" is listed twice`,
		`governance.rateLimits[1].rate: 1e+09 calls per second is more than a gateway can count`,
		`governance.rateLimits[1].burst: -1 is not a number of calls`,
		`governance.rateLimits[2].name: "dup" is already the name of governance.rateLimits[1]`,
		`governance.rateLimits[2].match.caller: "[a-" is not a caller name or pattern`,
		`governance.concurrency[0].max: required`,
		`governance.concurrency[0].queue: 2m0s is longer than a call should wait`,
		`governance.breakers[0].slowRatio: 1.5 is not a ratio between 0 and 1`,
		`governance.breakers[0].slowCall: required with slowRatio`,
		`governance.breakers[1].probes: must not be negative`,
		`governance.breakers[1].window: 10ms is shorter than 100ms`,
		`governance.deadlines[0].match: a deadline applies to routes`,
		`governance.deadlines[0]: set default, max or both`,
		`governance.deadlines[1].match.peer: an ingress route serves every calling domain`,
		`governance.deadlines[1].default: 5s is longer than max 1s`,
		`governance.retries.budgetRatio: 2 is not a ratio between 0 and 1`,
		`governance.retries.minPerSecond: must not be negative`,
		`governance.outlierDetection.maxEjectionPercent: 101 is not a percentage`,
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if len(es) != len(want) {
		t.Errorf("%d errors, want %d:\n%s", len(es), len(want), got)
	}
}

// TestGovernanceDefaults: what an unset field means.
func TestGovernanceDefaults(t *testing.T) {
	r := RateLimit{Rate: 2000}.WithDefaults()
	if r.Gateway != AtIngress || r.Scope != ScopeCluster || r.Burst != 200 {
		t.Errorf("rate limit defaults: %+v", r)
	}
	if r := (RateLimit{Rate: 0.5}).WithDefaults(); r.Burst != 1 {
		t.Errorf("burst of 0.5/s: %v, want 1", r.Burst)
	}
	b := Breaker{ErrorRatio: 0.5}.WithDefaults()
	if b.Gateway != AtEgress || b.Window.D() != DefaultBreakerWindow || b.MinCalls != 20 || b.OpenFor.D() != DefaultBreakerOpenFor || b.Probes != 3 {
		t.Errorf("breaker defaults: %+v", b)
	}
	if r := (Retries{}).WithDefaults(); r.BudgetRatio != 0.2 || r.MinPerSecond != 10 {
		t.Errorf("retry defaults: %+v", r)
	}
	if q := (Quota{}).WithDefaults(); q.Services != DefaultQuotaServices || q.UpdatesPerSecond != DefaultQuotaUpdatesPerSecond {
		t.Errorf("quota defaults: %+v", q)
	}
}

// TestMatch: empty fields match anything; services and callers take patterns.
func TestMatch(t *testing.T) {
	for _, c := range []struct {
		m    Match
		call [4]string
		want bool
	}{
		{Match{}, [4]string{"alpha", "a.B", "Get", ""}, true},
		{Match{Peer: "gamma"}, [4]string{"alpha", "a.B", "Get", ""}, false},
		{Match{Service: "a.*"}, [4]string{"alpha", "a.B", "Get", ""}, true},
		{Match{Service: "a.*", Method: "Put"}, [4]string{"alpha", "a.B", "Get", ""}, false},
		{Match{Caller: "batch-*"}, [4]string{"alpha", "a.B", "Get", "batch-7"}, true},
		{Match{Caller: "batch-*"}, [4]string{"alpha", "a.B", "Get", ""}, false},
	} {
		if got := c.m.Matches(c.call[0], c.call[1], c.call[2], c.call[3]); got != c.want {
			t.Errorf("%+v matches %v: %v, want %v", c.m, c.call, got, c.want)
		}
	}
}
