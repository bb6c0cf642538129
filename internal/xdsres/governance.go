package xdsres

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/routing"
)

// decodeGovernance reads the policies of a listener's HTTP filters (see the controlplane's
// translation): rate limits, concurrency limits and breakers, each checked as the domain
// file's validation checks it. An unknown strait.* filter is an error; the gateway's own
// filter (strait.<role>) is skipped.
func decodeGovernance(c *GatewayConfig, lis string, filters []*hcmv3.HttpFilter) error {
	g := &c.Governance
	for _, f := range filters {
		name := f.GetName()
		kind, policy, _ := strings.Cut(name, "/")
		fail := func(format string, args ...any) error {
			return fmt.Errorf("xds: listener %q: filter %q: %s", lis, name, fmt.Sprintf(format, args...))
		}
		switch kind {
		case "strait." + c.Role:
			continue
		case FilterRateLimit:
			var l localratelimitv3.LocalRateLimit
			if err := f.GetTypedConfig().UnmarshalTo(&l); err != nil {
				return fail("%v", err)
			}
			r, err := rateLimitOf(&l)
			if err != nil {
				return fail("%v", err)
			}
			if r.Name != policy {
				return fail("stat_prefix %q", r.Name)
			}
			r.Gateway = c.Role
			g.RateLimits = append(g.RateLimits, r)
		case FilterConcurrency, FilterBreaker:
			var s structpb.Struct
			if err := f.GetTypedConfig().UnmarshalTo(&s); err != nil {
				return fail("%v", err)
			}
			v := s.GetFields()
			if v["name"].GetStringValue() != policy {
				return fail("name %q", v["name"].GetStringValue())
			}
			m, err := matchOf(v["match"].GetStructValue())
			if err != nil {
				return fail("%v", err)
			}
			if kind == FilterConcurrency {
				cc := config.Concurrency{Name: policy, Gateway: c.Role, Match: m, Max: intOf(v["max"])}
				if cc.Queue, err = durOf(v["queue"]); err != nil {
					return fail("queue: %v", err)
				}
				if cc.Max <= 0 {
					return fail("max %d", cc.Max)
				}
				g.Concurrency = append(g.Concurrency, cc)
				continue
			}
			b := config.Breaker{
				Name: policy, Gateway: c.Role, Match: m, MinCalls: intOf(v["minCalls"]),
				ErrorRatio: v["errorRatio"].GetNumberValue(), SlowRatio: v["slowRatio"].GetNumberValue(),
				ErrorCount: intOf(v["errorCount"]), Probes: intOf(v["probes"]),
			}
			for key, dst := range map[string]*config.Duration{"window": &b.Window, "slowCall": &b.SlowCall, "openFor": &b.OpenFor} {
				if *dst, err = durOf(v[key]); err != nil {
					return fail("%s: %v", key, err)
				}
			}
			if bad := func(r float64) bool { return r < 0 || r > 1 || math.IsNaN(r) }; bad(b.ErrorRatio) || bad(b.SlowRatio) ||
				b.ErrorRatio == 0 && b.SlowRatio == 0 && b.ErrorCount <= 0 || b.MinCalls < 0 || b.Probes < 0 {
				return fail("thresholds (errorRatio %v, slowRatio %v, errorCount %d, minCalls %d, probes %d)", b.ErrorRatio, b.SlowRatio, b.ErrorCount, b.MinCalls, b.Probes)
			}
			g.Breakers = append(g.Breakers, b.WithDefaults())
		default:
			return fail("unknown filter")
		}
	}
	return nil
}

// rateLimitOf reads a rate limit from Envoy's local rate limit config.
func rateLimitOf(l *localratelimitv3.LocalRateLimit) (config.RateLimit, error) {
	r := config.RateLimit{Name: l.GetStatPrefix(), Scope: config.ScopeLocal}
	if l.GetLocalClusterRateLimit() != nil {
		r.Scope = config.ScopeCluster
	}
	tb := l.GetTokenBucket()
	every := tb.GetFillInterval().AsDuration()
	perFill := tb.GetTokensPerFill().GetValue()
	if tb.GetTokensPerFill() == nil {
		perFill = 1
	}
	if every <= 0 || perFill == 0 || tb.GetMaxTokens() == 0 {
		return r, fmt.Errorf("token bucket %v", tb)
	}
	r.Rate = float64(perFill) / every.Seconds()
	r.Burst = float64(tb.GetMaxTokens())
	if r.Rate > 1e7 {
		return r, fmt.Errorf("rate %v a second", r.Rate)
	}
	if ds := l.GetDescriptors(); len(ds) > 1 {
		return r, fmt.Errorf("%d descriptors, want at most one", len(ds))
	}
	for _, d := range l.GetDescriptors() {
		for _, e := range d.GetEntries() {
			k := e.GetKey()
			if !slices.Contains(config.Keys, k) {
				return r, fmt.Errorf("descriptor key %q", k)
			}
			if e.GetValue() == "" {
				r.By = append(r.By, k)
				continue
			}
			setMatch(&r.Match, k, e.GetValue())
		}
	}
	return r, nil
}

func setMatch(m *config.Match, key, v string) {
	switch key {
	case config.KeyPeer:
		m.Peer = v
	case config.KeyService:
		m.Service = v
	case config.KeyMethod:
		m.Method = v
	case config.KeyCaller:
		m.Caller = v
	}
}

func matchOf(s *structpb.Struct) (config.Match, error) {
	var m config.Match
	for k, v := range s.GetFields() {
		if !slices.Contains(config.Keys, k) {
			return m, fmt.Errorf("match key %q", k)
		}
		setMatch(&m, k, v.GetStringValue())
	}
	return m, nil
}

func intOf(v *structpb.Value) int {
	n := v.GetNumberValue()
	if n != math.Trunc(n) || n > math.MaxInt32 || n < math.MinInt32 {
		return -1
	}
	return int(n)
}

func durOf(v *structpb.Value) (config.Duration, error) {
	s := v.GetStringValue()
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q", s)
	}
	return config.Duration(d), nil
}

// deadlineOf reads a route's deadline: its timeout (the default) and
// max_stream_duration.grpc_timeout_header_max (the maximum).
func deadlineOf(r *routev3.Route) (routing.Deadline, error) {
	a := r.GetRoute()
	d := routing.Deadline{Default: a.GetTimeout().AsDuration(), Max: a.GetMaxStreamDuration().GetGrpcTimeoutHeaderMax().AsDuration()}
	if d.Default < 0 || d.Max < 0 {
		return d, fmt.Errorf("xds: route %q: negative deadline", r.GetName())
	}
	return d, nil
}

// retriesOf reads the retry budget of a cluster's circuit breakers; a route without a
// retry policy has retries off.
func retriesOf(cl *clusterv3.Cluster) (config.Retries, error) {
	for _, t := range cl.GetCircuitBreakers().GetThresholds() {
		b := t.GetRetryBudget()
		if b == nil {
			continue
		}
		r := config.Retries{BudgetRatio: b.GetBudgetPercent().GetValue() / 100, MinPerSecond: int(b.GetMinRetryConcurrency().GetValue())}
		if r.BudgetRatio < 0 || r.BudgetRatio > 1 || math.IsNaN(r.BudgetRatio) {
			return r, fmt.Errorf("xds: cluster %q: retry budget %v%%", cl.GetName(), b.GetBudgetPercent().GetValue())
		}
		return r.WithDefaults(), nil
	}
	return config.Retries{}.WithDefaults(), nil
}

// outliersOf reads a cluster's outlier detection (defaults where unset).
func outliersOf(cl *clusterv3.Cluster) (config.OutlierDetection, error) {
	o := cl.GetOutlierDetection()
	od := config.OutlierDetection{
		ConsecutiveErrors:  int(o.GetConsecutive_5Xx().GetValue()),
		BaseEjection:       config.Duration(o.GetBaseEjectionTime().AsDuration()),
		MaxEjection:        config.Duration(o.GetMaxEjectionTime().AsDuration()),
		MaxEjectionPercent: int(o.GetMaxEjectionPercent().GetValue()),
	}
	if od.BaseEjection < 0 || od.MaxEjection < 0 || od.MaxEjectionPercent > 100 {
		return od, fmt.Errorf("xds: cluster %q: outlier detection %v", cl.GetName(), o)
	}
	return od.WithDefaults(), nil
}
