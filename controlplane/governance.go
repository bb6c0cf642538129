package controlplane

import (
	"math"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/xdsres"
)

// The domain's governance, translated (xdsres decodes it back):
//   - a rate limit is an HTTP filter of its gateway's listener, an Envoy LocalRateLimit:
//     its token bucket; local_cluster_rate_limit when the rate is shared among the
//     cluster; one descriptor whose entries are the match (key and value) and the keys it
//     counts by (key, empty value: a bucket per value, Envoy's dynamic descriptors);
//   - a concurrency limit or a breaker is an HTTP filter of Strait's own (strait.concurrency,
//     strait.breaker) whose typed config is a Struct of its fields;
//   - a deadline is its routes' timeout (the default) and max_stream_duration's
//     grpc_timeout_header_max (the maximum);
//   - every route retries what never reached a provider once on another host
//     (connect-failure, refused-stream, reset-before-request; previous_hosts), within the
//     retry budget of its cluster's circuit breakers (budget_percent; Strait reads
//     min_retry_concurrency as Linkerd's minimum retries per second);
//   - outlier detection is each ingress service cluster's Envoy OutlierDetection.

// governanceFilters are the HTTP filters of role's listener that carry its policies, in
// the domain file's order, before the gateway's own filter.
func governanceFilters(role string, g config.Governance) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	for _, r := range g.RateLimits {
		r = r.WithDefaults()
		if r.Gateway != role {
			continue
		}
		out = append(out, &hcmv3.HttpFilter{
			Name:       xdsres.FilterRateLimit + "/" + r.Name,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(localRateLimit(r))},
		})
	}
	for _, c := range g.Concurrency {
		c = c.WithDefaults()
		if c.Gateway != role {
			continue
		}
		out = append(out, structFilter(xdsres.FilterConcurrency+"/"+c.Name, map[string]any{
			"name": c.Name, "match": matchFields(c.Match), "max": float64(c.Max), "queue": c.Queue.D().String(),
		}))
	}
	for _, b := range g.Breakers {
		b = b.WithDefaults()
		if b.Gateway != role {
			continue
		}
		out = append(out, structFilter(xdsres.FilterBreaker+"/"+b.Name, map[string]any{
			"name": b.Name, "match": matchFields(b.Match),
			"window": b.Window.D().String(), "minCalls": float64(b.MinCalls),
			"errorRatio": b.ErrorRatio, "slowRatio": b.SlowRatio, "slowCall": b.SlowCall.D().String(),
			"errorCount": float64(b.ErrorCount), "openFor": b.OpenFor.D().String(), "probes": float64(b.Probes),
		}))
	}
	return out
}

// localRateLimit is r as Envoy's local rate limit filter config.
func localRateLimit(r config.RateLimit) *localratelimitv3.LocalRateLimit {
	bucket := tokenBucket(r.Rate, r.Burst)
	var entries []*ratelimitv3.RateLimitDescriptor_Entry
	for _, k := range config.Keys {
		if v := matchValue(r.Match, k); v != "" {
			entries = append(entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: k, Value: v})
		}
	}
	for _, k := range config.Keys {
		for _, by := range r.By {
			if by == k {
				entries = append(entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: k})
			}
		}
	}
	l := &localratelimitv3.LocalRateLimit{
		StatPrefix:                     r.Name,
		TokenBucket:                    bucket,
		EnableRetryAfterHeader:         true,
		RateLimitedAsResourceExhausted: true,
		FilterEnabled:                  fullPercent(),
		FilterEnforced:                 fullPercent(),
	}
	if len(entries) > 0 {
		l.Descriptors = []*ratelimitv3.LocalRateLimitDescriptor{{Entries: entries, TokenBucket: bucket}}
	}
	if len(r.By) > 0 {
		l.MaxDynamicDescriptors = wrapperspb.UInt32(xdsres.MaxRateLimitKeys)
	}
	if r.Scope == config.ScopeCluster {
		l.LocalClusterRateLimit = &ratelimitv3.LocalClusterRateLimit{}
	}
	return l
}

// tokenBucket is a bucket of rate tokens a second holding burst, as Envoy writes it: a
// fill of tokens_per_fill every fill_interval, at most max_tokens held. A rate that is a
// whole multiple of 20 fills every 50 ms (Envoy's shortest interval); any other is
// refilled one token at a time. Strait reads the rate back as tokens_per_fill /
// fill_interval.
func tokenBucket(rate, burst float64) *typev3.TokenBucket {
	perFill, every := 1.0, time.Duration(float64(time.Second)/rate)
	if f := rate / 20; f >= 1 && f == math.Trunc(f) {
		perFill, every = f, 50*time.Millisecond
	}
	return &typev3.TokenBucket{
		MaxTokens:     uint32(math.Max(1, math.Ceil(burst))),
		TokensPerFill: wrapperspb.UInt32(uint32(perFill)),
		FillInterval:  durationpb.New(every),
	}
}

func fullPercent() *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
}

func matchValue(m config.Match, key string) string {
	switch key {
	case config.KeyPeer:
		return m.Peer
	case config.KeyService:
		return m.Service
	case config.KeyMethod:
		return m.Method
	case config.KeyCaller:
		return m.Caller
	}
	return ""
}

func matchFields(m config.Match) map[string]any {
	out := map[string]any{}
	for _, k := range config.Keys {
		if v := matchValue(m, k); v != "" {
			out[k] = v
		}
	}
	return out
}

func structFilter(name string, fields map[string]any) *hcmv3.HttpFilter {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		// Only strings, numbers and maps of strings go in; NewStruct cannot fail on them.
		panic("controlplane: filter " + name + ": " + err.Error())
	}
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(s)}}
}

// govern sets a route's deadline (the first deadline of role matching its peer and
// service) and retry policy.
func govern(rt *routev3.Route, role, peer, service string, g config.Governance) {
	a := rt.GetRoute()
	if a == nil {
		return
	}
	for _, d := range g.Deadlines {
		d = d.WithDefaults()
		if d.Gateway != role || !d.Match.Matches(peer, service, "", "") {
			continue
		}
		if d.Default > 0 {
			a.Timeout = durationpb.New(d.Default.D())
		}
		if d.Max > 0 {
			a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: durationpb.New(d.Max.D())}
		}
		break
	}
	if !g.Retries.Disabled {
		a.RetryPolicy = &routev3.RetryPolicy{
			RetryOn:    xdsres.RetryOn,
			NumRetries: wrapperspb.UInt32(1),
			RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
				Name: "envoy.retry_host_predicates.previous_hosts",
			}},
		}
	}
}

// circuitBreakers carries the retry budget of a cluster.
func circuitBreakers(r config.Retries) *clusterv3.CircuitBreakers {
	if r.Disabled {
		return nil
	}
	r = r.WithDefaults()
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: r.BudgetRatio * 100},
			MinRetryConcurrency: wrapperspb.UInt32(uint32(r.MinPerSecond)),
			BudgetInterval:      durationpb.New(xdsres.RetryBudgetTTL),
		},
	}}}
}

// outlierDetection is the ingress service clusters' outlier detection.
func outlierDetection(o config.OutlierDetection) *clusterv3.OutlierDetection {
	o = o.WithDefaults()
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(uint32(o.ConsecutiveErrors)),
		BaseEjectionTime:   durationpb.New(o.BaseEjection.D()),
		MaxEjectionTime:    durationpb.New(o.MaxEjection.D()),
		MaxEjectionPercent: wrapperspb.UInt32(uint32(o.MaxEjectionPercent)),
	}
}
