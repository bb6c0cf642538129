package config

import (
	"fmt"
	"math"
	"path"
	"regexp"
	"slices"
	"time"
)

// Governance protects domains from each other: how many calls a gateway admits per second
// (rate limits), how many it lets run at once (concurrency), when it stops calling a
// failing service (breakers), how long calls may take (deadlines), how much it retries,
// and when it stops sending to a failing provider (outlier detection). Each policy applies
// at one gateway kind: at the ingress it protects this domain's providers from its peers;
// at the egress it protects a peer from this domain's consumers.
type Governance struct {
	RateLimits  []RateLimit   `yaml:"rateLimits"`
	Concurrency []Concurrency `yaml:"concurrency"`
	Breakers    []Breaker     `yaml:"breakers"`
	Deadlines   []Deadline    `yaml:"deadlines"`
	Retries     Retries       `yaml:"retries"`
	// OutlierDetection ejects an ingress' failing provider endpoints for a while.
	OutlierDetection OutlierDetection `yaml:"outlierDetection"`
}

// Gateway kinds a policy applies at.
const (
	AtIngress = "ingress"
	AtEgress  = "egress"
)

// Match selects the calls a policy applies to. An empty field matches any call.
type Match struct {
	// Peer is the other domain of the call: at the ingress the calling (source) domain,
	// at the egress the domain called.
	Peer string `yaml:"peer"`
	// Service is a service name, or a pattern (path.Match syntax) as in exports.
	Service string `yaml:"service"`
	// Method is a method name.
	Method string `yaml:"method"`
	// Caller is the calling application, as the call declares it (Triple's
	// tri-consumer-appname, Dubbo's remote.application), or a path.Match pattern of it.
	Caller string `yaml:"caller"`
}

// Keys a rate limit may count separately by (RateLimit.By).
const (
	KeyPeer    = "peer"
	KeyService = "service"
	KeyMethod  = "method"
	KeyCaller  = "caller"
)

// Keys lists the keys a rate limit may count by, in the order they are combined.
var Keys = []string{KeyPeer, KeyService, KeyMethod, KeyCaller}

// Scopes of a rate limit.
const (
	// ScopeCluster shares the rate among the live instances of the gateway cluster.
	ScopeCluster = "cluster"
	// ScopeLocal gives every instance the whole rate.
	ScopeLocal = "local"
)

// RateLimit admits at most Rate calls per second (a token bucket holding Burst) among the
// calls it matches; the excess is refused with RESOURCE_EXHAUSTED (HTTP: 429 with
// Retry-After). With By, each distinct value of those keys has a bucket of its own.
type RateLimit struct {
	// Name names the limit in refusals and metrics.
	Name string `yaml:"name"`
	// Gateway is where it applies: ingress (the default) or egress.
	Gateway string   `yaml:"gateway"`
	Match   Match    `yaml:"match"`
	By      []string `yaml:"by"`
	// Rate is calls per second (fractions allowed).
	Rate float64 `yaml:"rate"`
	// Burst is how many calls may pass at once after a quiet spell; default a tenth of a
	// second's worth (at least 1).
	Burst float64 `yaml:"burst"`
	// Scope is cluster (the default: Rate is shared among the cluster's live instances)
	// or local (each instance admits Rate).
	Scope string `yaml:"scope"`
}

// Concurrency lets at most Max matched calls run at once per (peer, service): at the
// egress per peer domain called and service, at the ingress per calling domain and
// service. A call beyond it waits up to Queue for a slot, then is refused with
// RESOURCE_EXHAUSTED (HTTP: 503).
type Concurrency struct {
	Name    string `yaml:"name"`
	Gateway string `yaml:"gateway"`
	Match   Match  `yaml:"match"`
	Max     int    `yaml:"max"`
	// Queue is how long a call may wait for a slot; 0 refuses at once.
	Queue Duration `yaml:"queue"`
}

// Breaker stops calling what fails: per (peer, service) at the egress, per provider
// endpoint at the ingress. It opens when, over Window and after MinCalls calls, the error
// ratio reaches ErrorRatio, the ratio of calls slower than SlowCall reaches SlowRatio, or
// the errors reach ErrorCount. Open, calls fail at once with UNAVAILABLE naming it; after
// OpenFor it lets Probes calls through and closes when they all succeed.
type Breaker struct {
	Name       string   `yaml:"name"`
	Gateway    string   `yaml:"gateway"`
	Match      Match    `yaml:"match"`
	Window     Duration `yaml:"window"`
	MinCalls   int      `yaml:"minCalls"`
	ErrorRatio float64  `yaml:"errorRatio"`
	SlowRatio  float64  `yaml:"slowRatio"`
	SlowCall   Duration `yaml:"slowCall"`
	ErrorCount int      `yaml:"errorCount"`
	OpenFor    Duration `yaml:"openFor"`
	Probes     int      `yaml:"probes"`
}

// Breaker defaults.
const (
	DefaultBreakerWindow   = 10 * time.Second
	DefaultBreakerMinCalls = 20
	DefaultBreakerOpenFor  = 5 * time.Second
	DefaultBreakerProbes   = 3
)

// WithDefaults returns b with its unset fields set to their defaults.
func (b Breaker) WithDefaults() Breaker {
	if b.Gateway == "" {
		b.Gateway = AtEgress
	}
	if b.Window == 0 {
		b.Window = Duration(DefaultBreakerWindow)
	}
	if b.MinCalls == 0 {
		b.MinCalls = DefaultBreakerMinCalls
	}
	if b.OpenFor == 0 {
		b.OpenFor = Duration(DefaultBreakerOpenFor)
	}
	if b.Probes == 0 {
		b.Probes = DefaultBreakerProbes
	}
	return b
}

// Deadline bounds the calls of the services it matches: a call that carries no deadline
// gets Default, and one that carries a longer one is cut to Max. The remaining deadline
// travels to the next hop (grpc-timeout, Triple's timeout).
type Deadline struct {
	Gateway string `yaml:"gateway"`
	// Match may name a peer and a service (not a method or caller: deadlines are per route).
	Match   Match    `yaml:"match"`
	Default Duration `yaml:"default"`
	Max     Duration `yaml:"max"`
}

// Retries bounds the retries of calls that never reached a provider (refused
// connections, refused streams, a next hop lost before the call was sent): at most
// BudgetRatio of the calls plus MinPerSecond a second, per next-hop cluster.
type Retries struct {
	// Disabled turns retries off.
	Disabled     bool    `yaml:"disabled"`
	BudgetRatio  float64 `yaml:"budgetRatio"`
	MinPerSecond int     `yaml:"minPerSecond"`
}

// Retry budget defaults, Linkerd's.
const (
	DefaultRetryBudgetRatio  = 0.2
	DefaultRetryMinPerSecond = 10
)

// WithDefaults returns r with its unset fields set to their defaults.
func (r Retries) WithDefaults() Retries {
	if r.BudgetRatio == 0 {
		r.BudgetRatio = DefaultRetryBudgetRatio
	}
	if r.MinPerSecond == 0 {
		r.MinPerSecond = DefaultRetryMinPerSecond
	}
	return r
}

// OutlierDetection ejects a provider endpoint after ConsecutiveErrors failed calls in a
// row, for BaseEjection times the number of its ejections (at most MaxEjection), never
// more than MaxEjectionPercent of a service's endpoints.
type OutlierDetection struct {
	ConsecutiveErrors  int      `yaml:"consecutiveErrors"`
	BaseEjection       Duration `yaml:"baseEjection"`
	MaxEjection        Duration `yaml:"maxEjection"`
	MaxEjectionPercent int      `yaml:"maxEjectionPercent"`
}

// Outlier detection defaults, Envoy's.
const (
	DefaultConsecutiveErrors  = 5
	DefaultBaseEjection       = 30 * time.Second
	DefaultMaxEjection        = 300 * time.Second
	DefaultMaxEjectionPercent = 50
)

// WithDefaults returns o with its unset fields set to their defaults.
func (o OutlierDetection) WithDefaults() OutlierDetection {
	if o.ConsecutiveErrors == 0 {
		o.ConsecutiveErrors = DefaultConsecutiveErrors
	}
	if o.BaseEjection == 0 {
		o.BaseEjection = Duration(DefaultBaseEjection)
	}
	if o.MaxEjection == 0 {
		o.MaxEjection = Duration(DefaultMaxEjection)
	}
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	return o
}

// Quota bounds what one peer may import into this domain (its catalog: what it exports
// here). Beyond a bound the excess is refused, shown in /debug/config and metrics, and
// never written to the registry; what fits keeps working.
type Quota struct {
	// Services is the most services (name, version, group, protocol) imported.
	Services int `yaml:"services" json:"services"`
	// Instances is the most ingress instances listed for the peer.
	Instances int `yaml:"instances" json:"instances"`
	// MetadataBytes bounds the metadata of all its services together.
	MetadataBytes int64 `yaml:"metadataBytes" json:"metadataBytes"`
	// UpdatesPerSecond is how many catalog updates a second are applied; more are
	// coalesced (the latest wins).
	UpdatesPerSecond float64 `yaml:"updatesPerSecond" json:"updatesPerSecond"`
}

// Quota defaults: safe for a ZooKeeper ensemble with its default 1 MiB node limit and a
// few thousand writes a second.
const (
	DefaultQuotaServices         = 10000
	DefaultQuotaInstances        = 1000
	DefaultQuotaMetadataBytes    = 32 << 20
	DefaultQuotaUpdatesPerSecond = 10
)

// WithDefaults returns q with its unset fields set to their defaults.
func (q Quota) WithDefaults() Quota {
	if q.Services == 0 {
		q.Services = DefaultQuotaServices
	}
	if q.Instances == 0 {
		q.Instances = DefaultQuotaInstances
	}
	if q.MetadataBytes == 0 {
		q.MetadataBytes = DefaultQuotaMetadataBytes
	}
	if q.UpdatesPerSecond == 0 {
		q.UpdatesPerSecond = DefaultQuotaUpdatesPerSecond
	}
	return q
}

// WithDefaults returns r with its unset fields set to their defaults.
func (r RateLimit) WithDefaults() RateLimit {
	if r.Gateway == "" {
		r.Gateway = AtIngress
	}
	if r.Scope == "" {
		r.Scope = ScopeCluster
	}
	if r.Burst == 0 {
		r.Burst = math.Max(1, math.Ceil(r.Rate/10))
	}
	return r
}

// WithDefaults returns c with its unset fields set to their defaults.
func (c Concurrency) WithDefaults() Concurrency {
	if c.Gateway == "" {
		c.Gateway = AtIngress
	}
	return c
}

// WithDefaults returns d with its unset fields set to their defaults.
func (d Deadline) WithDefaults() Deadline {
	if d.Gateway == "" {
		d.Gateway = AtEgress
	}
	return d
}

// Matches reports whether the call (peer, service, method, caller) is one m selects.
func (m Match) Matches(peer, service, method, caller string) bool {
	return (m.Peer == "" || m.Peer == peer) &&
		matchName(m.Service, service) &&
		(m.Method == "" || m.Method == method) &&
		matchName(m.Caller, caller)
}

func matchName(pattern, name string) bool {
	if pattern == "" || pattern == name {
		return true
	}
	if !IsPattern(pattern) {
		return false
	}
	ok, err := path.Match(pattern, name)
	return ok && err == nil
}

// MaxPoliciesPerKind is the most concurrency limits, and the most breakers, one gateway
// kind may have: a call holds a slot of each that matches it.
const MaxPoliciesPerKind = 8

var policyNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62})$`)

// validate checks g, at path "governance", against the configured peers.
func (g *Governance) validate(add func(string, string, ...any), peers map[string]bool) {
	names := map[string]string{}
	checkName := func(p, name string) {
		switch {
		case name == "":
			add(p+".name", "required: it names the policy in refusals and metrics")
		case !policyNameRE.MatchString(name):
			add(p+".name", "%q is not a policy name (lower-case letters, digits, '.', '_', '-'; at most 63)", name)
		default:
			if other, dup := names[name]; dup {
				add(p+".name", "%q is already the name of %s", name, other)
			}
			names[name] = p
		}
	}
	checkGateway := func(p, gw string) {
		if gw != "" && gw != AtIngress && gw != AtEgress {
			add(p+".gateway", "%q is not ingress or egress", gw)
		}
	}
	checkMatch := func(p string, m Match) {
		if m.Peer != "" && !peers[m.Peer] {
			add(p+".match.peer", "%q is not a configured peer", m.Peer)
		}
		if m.Service != "" {
			if IsPattern(m.Service) {
				if _, err := path.Match(m.Service, ""); err != nil || !patternRE.MatchString(m.Service) {
					add(p+".match.service", "%q is not a service pattern", m.Service)
				}
			} else if !serviceRE.MatchString(m.Service) {
				add(p+".match.service", "%q is not a service name", m.Service)
			}
		}
		if m.Method != "" && !methodRE.MatchString(m.Method) {
			add(p+".match.method", "%q is not a method name", m.Method)
		}
		if m.Caller != "" {
			if _, err := path.Match(m.Caller, ""); err != nil {
				add(p+".match.caller", "%q is not a caller name or pattern: %v", m.Caller, err)
			}
		}
	}
	checkDur := func(p string, d Duration) {
		if d < 0 {
			add(p, "must not be negative")
		}
	}
	checkRatio := func(p string, v float64) {
		if v < 0 || v > 1 || math.IsNaN(v) {
			add(p, "%v is not a ratio between 0 and 1", v)
		}
	}

	for i, r := range g.RateLimits {
		p := fmt.Sprintf("governance.rateLimits[%d]", i)
		checkName(p, r.Name)
		checkGateway(p, r.Gateway)
		checkMatch(p, r.Match)
		switch {
		case math.IsNaN(r.Rate) || math.IsInf(r.Rate, 0) || r.Rate <= 0:
			add(p+".rate", "required: calls per second, more than 0")
		case r.Rate > 1e7:
			add(p+".rate", "%v calls per second is more than a gateway can count (at most 10,000,000)", r.Rate)
		}
		if r.Burst < 0 || math.IsNaN(r.Burst) || math.IsInf(r.Burst, 0) || r.Burst > 1e7 {
			add(p+".burst", "%v is not a number of calls (0 to 10,000,000)", r.Burst)
		}
		switch r.Scope {
		case "", ScopeCluster, ScopeLocal:
		default:
			add(p+".scope", "%q is not cluster or local", r.Scope)
		}
		seen := map[string]bool{}
		for j, k := range r.By {
			switch {
			case !slices.Contains(Keys, k):
				add(fmt.Sprintf("%s.by[%d]", p, j), "%q is not one of peer, service, method, caller", k)
			case seen[k]:
				add(fmt.Sprintf("%s.by[%d]", p, j), "%q is listed twice", k)
			}
			seen[k] = true
		}
	}
	for i, c := range g.Concurrency {
		p := fmt.Sprintf("governance.concurrency[%d]", i)
		checkName(p, c.Name)
		checkGateway(p, c.Gateway)
		checkMatch(p, c.Match)
		if c.Max <= 0 {
			add(p+".max", "required: the most calls in flight, at least 1")
		}
		checkDur(p+".queue", c.Queue)
		if c.Queue.D() > time.Minute {
			add(p+".queue", "%v is longer than a call should wait for a slot (at most 1m)", c.Queue.D())
		}
	}
	for i, b := range g.Breakers {
		p := fmt.Sprintf("governance.breakers[%d]", i)
		checkName(p, b.Name)
		checkGateway(p, b.Gateway)
		checkMatch(p, b.Match)
		checkRatio(p+".errorRatio", b.ErrorRatio)
		checkRatio(p+".slowRatio", b.SlowRatio)
		if b.ErrorRatio == 0 && b.SlowRatio == 0 && b.ErrorCount == 0 {
			add(p, "set errorRatio, slowRatio or errorCount: when it opens")
		}
		if b.SlowRatio > 0 && b.SlowCall <= 0 {
			add(p+".slowCall", "required with slowRatio: how slow a slow call is")
		}
		if b.ErrorCount < 0 {
			add(p+".errorCount", "must not be negative")
		}
		if b.MinCalls < 0 {
			add(p+".minCalls", "must not be negative")
		}
		if b.Probes < 0 {
			add(p+".probes", "must not be negative")
		}
		checkDur(p+".window", b.Window)
		checkDur(p+".slowCall", b.SlowCall)
		checkDur(p+".openFor", b.OpenFor)
		if b.Window != 0 && b.Window.D() < 100*time.Millisecond {
			add(p+".window", "%v is shorter than 100ms", b.Window.D())
		}
	}
	for _, at := range []string{AtIngress, AtEgress} {
		nc, nb := 0, 0
		for _, c := range g.Concurrency {
			if c.WithDefaults().Gateway == at {
				nc++
			}
		}
		for _, b := range g.Breakers {
			if b.WithDefaults().Gateway == at {
				nb++
			}
		}
		if nc > MaxPoliciesPerKind {
			add("governance.concurrency", "%d concurrency limits at the %s; at most %d", nc, at, MaxPoliciesPerKind)
		}
		if nb > MaxPoliciesPerKind {
			add("governance.breakers", "%d breakers at the %s; at most %d", nb, at, MaxPoliciesPerKind)
		}
	}
	for i, d := range g.Deadlines {
		p := fmt.Sprintf("governance.deadlines[%d]", i)
		checkGateway(p, d.Gateway)
		checkMatch(p, d.Match)
		if d.Match.Method != "" || d.Match.Caller != "" {
			add(p+".match", "a deadline applies to routes: match a peer and a service, not a method or caller")
		}
		if d.Match.Peer != "" && d.WithDefaults().Gateway == AtIngress {
			add(p+".match.peer", "an ingress route serves every calling domain: an ingress deadline matches a service only")
		}
		checkDur(p+".default", d.Default)
		checkDur(p+".max", d.Max)
		if d.Default == 0 && d.Max == 0 {
			add(p, "set default, max or both")
		}
		if d.Max > 0 && d.Default > d.Max {
			add(p+".default", "%v is longer than max %v", d.Default.D(), d.Max.D())
		}
	}
	checkRatio("governance.retries.budgetRatio", g.Retries.BudgetRatio)
	if g.Retries.MinPerSecond < 0 {
		add("governance.retries.minPerSecond", "must not be negative")
	}
	o := g.OutlierDetection
	if o.ConsecutiveErrors < 0 {
		add("governance.outlierDetection.consecutiveErrors", "must not be negative")
	}
	checkDur("governance.outlierDetection.baseEjection", o.BaseEjection)
	checkDur("governance.outlierDetection.maxEjection", o.MaxEjection)
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		add("governance.outlierDetection.maxEjectionPercent", "%d is not a percentage", o.MaxEjectionPercent)
	}
}

// validate checks q at path p.
func (q Quota) validate(add func(string, string, ...any), p string) {
	if q.Services < 0 {
		add(p+".services", "must not be negative")
	}
	if q.Instances < 0 {
		add(p+".instances", "must not be negative")
	}
	if q.MetadataBytes < 0 {
		add(p+".metadataBytes", "must not be negative")
	}
	if q.UpdatesPerSecond < 0 || math.IsNaN(q.UpdatesPerSecond) || math.IsInf(q.UpdatesPerSecond, 0) {
		add(p+".updatesPerSecond", "must be a number, not negative")
	}
}
