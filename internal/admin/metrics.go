package admin

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CallDurationBuckets are the buckets of strait_call_duration_seconds, in seconds: 50µs to 10s,
// 1-2.5-5 per decade (a gateway hop adds about 0.3 ms; upstream calls take up to seconds).
var CallDurationBuckets = []float64{
	50e-6, 100e-6, 250e-6, 500e-6,
	.001, .0025, .005, .01, .025, .05, .1, .25, .5,
	1, 2.5, 5, 10,
}

// GatewayMetrics are the metrics egress and ingress gateways record, all labelled with the
// gateway's role:
//
//	strait_calls_total{role,protocol,peer,code}         counter
//	strait_call_duration_seconds{role,protocol}         histogram
//	strait_inflight_calls{role}                         gauge
//	strait_tunnel_connections{role}                     gauge
//	strait_config_version_info{role,version}            gauge, 1 for the current xDS version
//	strait_config_updates_total{role,result="ack|nack"} counter
//	strait_ratelimited_total{role,policy,peer}          counter, calls a rate limit refused
//	strait_concurrency_refused_total{role,policy,peer}  counter, calls a concurrency limit refused
//	strait_breaker_refused_total{role,policy,peer}      counter, calls an open breaker refused
//	strait_breaker_state{role,policy,peer,service}      gauge: 0 closed, 1 open, 2 half-open
//	strait_breaker_transitions_total{role,policy,to}    counter
//
// Its methods may be called concurrently. Observe, CallStarted/CallEnded and
// TunnelOpened/TunnelClosed do not allocate once a label combination has been seen.
type GatewayMetrics struct {
	calls    *prometheus.CounterVec // curried with role
	duration prometheus.ObserverVec // curried with role
	inflight prometheus.Gauge
	tunnels  prometheus.Gauge
	acks     prometheus.Counter
	nacks    prometheus.Counter
	abuse    *prometheus.CounterVec // curried with role

	role        string
	versionInfo *prometheus.GaugeVec // not curried: SetConfigVersion deletes (role, old)
	versionMu   sync.Mutex
	version     *string // nil until SetConfigVersion

	counters  sync.Map // callKey → prometheus.Counter
	observers sync.Map // protocol string → prometheus.Observer

	refused     map[string]*prometheus.CounterVec // by policy kind, curried with role
	refusedBy   sync.Map                          // refusedKey → prometheus.Counter
	breakers    *prometheus.GaugeVec              // curried with role
	transitions *prometheus.CounterVec            // curried with role
}

type refusedKey struct{ kind, policy, peer string }

type callKey struct{ protocol, peer, code string }

// NewGatewayMetrics creates the gateway metrics of role ("egress", "ingress") and registers
// them with reg (nil: unregistered). Gateways of different roles may share a registry; two
// of the same role on one registry share their series. It panics if reg holds a different
// collector under one of these names, a programming error.
func NewGatewayMetrics(reg prometheus.Registerer, role string) *GatewayMetrics {
	roleLabel := prometheus.Labels{"role": role}
	calls := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_calls_total",
		Help: "Calls handled by the gateway, by protocol, peer domain and result code (gRPC code name or HTTP status class).",
	}, []string{"role", "protocol", "peer", "code"}))
	duration := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "strait_call_duration_seconds",
		Help:    "Duration of calls through the gateway, from request headers to the end of the response.",
		Buckets: CallDurationBuckets,
	}, []string{"role", "protocol"}))
	inflight := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strait_inflight_calls",
		Help: "Calls in flight through the gateway.",
	}, []string{"role"}))
	tunnels := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strait_tunnel_connections",
		Help: "Open tunnel connections between this gateway and peer gateways.",
	}, []string{"role"}))
	versionInfo := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strait_config_version_info",
		Help: "1 for the xDS config version the gateway currently runs.",
	}, []string{"role", "version"}))
	updates := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_config_updates_total",
		Help: "xDS config updates received, by result: ack (applied) or nack (rejected).",
	}, []string{"role", "result"}))

	abuse := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_h2_abuse_total",
		Help: "HTTP/2 connections ended and streams refused for abuse or overload, by kind: rapid_reset, ping, settings, window_update, continuation, control_queue, protocol, overload, stalled.",
	}, []string{"role", "kind"}))

	refused := map[string]*prometheus.CounterVec{}
	for kind, name := range map[string]string{"ratelimit": "strait_ratelimited_total", "concurrency": "strait_concurrency_refused_total", "breaker": "strait_breaker_refused_total"} {
		refused[kind] = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: name,
			Help: "Calls refused by a governance policy of kind " + kind + ", by policy and peer domain (at the ingress the calling domain).",
		}, []string{"role", "policy", "peer"})).MustCurryWith(roleLabel)
	}
	breakers := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "strait_breaker_state",
		Help: "State of each breaker: 0 closed, 1 open, 2 half-open.",
	}, []string{"role", "policy", "peer", "service"}))
	transitions := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_breaker_transitions_total",
		Help: "Breaker state changes, by policy and the state entered.",
	}, []string{"role", "policy", "to"}))

	return &GatewayMetrics{
		refused:     refused,
		breakers:    breakers.MustCurryWith(roleLabel),
		transitions: transitions.MustCurryWith(roleLabel),
		abuse:       abuse.MustCurryWith(roleLabel),
		calls:       calls.MustCurryWith(roleLabel),
		duration:    duration.MustCurryWith(roleLabel),
		inflight:    inflight.WithLabelValues(role),
		tunnels:     tunnels.WithLabelValues(role),
		acks:        updates.WithLabelValues(role, "ack"),
		nacks:       updates.WithLabelValues(role, "nack"),
		role:        role,
		versionInfo: versionInfo,
	}
}

// Observe records one finished call: its protocol ("grpc", "triple", "http"...), peer
// domain, result code (a gRPC code name such as "OK" or "Unavailable", or an HTTP status
// class from StatusClass) and duration. Keep the label values bounded: no addresses, paths
// or free text.
func (m *GatewayMetrics) Observe(protocol, peer, code string, d time.Duration) {
	m.counter(protocol, peer, code).Inc()
	m.observer(protocol).Observe(d.Seconds())
}

func (m *GatewayMetrics) counter(protocol, peer, code string) prometheus.Counter {
	k := callKey{protocol, peer, code}
	if c, ok := m.counters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c, _ := m.counters.LoadOrStore(k, m.calls.WithLabelValues(protocol, peer, code))
	return c.(prometheus.Counter)
}

func (m *GatewayMetrics) observer(protocol string) prometheus.Observer {
	if o, ok := m.observers.Load(protocol); ok {
		return o.(prometheus.Observer)
	}
	o, _ := m.observers.LoadOrStore(protocol, m.duration.WithLabelValues(protocol))
	return o.(prometheus.Observer)
}

// CallStarted counts a call in flight; CallEnded must follow.
func (m *GatewayMetrics) CallStarted() { m.inflight.Inc() }

// CallEnded ends a call counted by CallStarted.
func (m *GatewayMetrics) CallEnded() { m.inflight.Dec() }

// Abuse counts a connection ended or a stream refused for abuse of kind (a small fixed
// set, see relay.Options.Abuse).
func (m *GatewayMetrics) Abuse(kind string) { m.abuse.WithLabelValues(kind).Inc() }

// Refused counts a call a governance policy refused: kind is ratelimit, concurrency or
// breaker (governance.Kind*). It implements governance.Observer.
func (m *GatewayMetrics) Refused(kind, policy, peer, _ string) {
	k := refusedKey{kind, policy, peer}
	if c, ok := m.refusedBy.Load(k); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	vec := m.refused[kind]
	if vec == nil {
		return
	}
	c, _ := m.refusedBy.LoadOrStore(k, vec.WithLabelValues(policy, peer))
	c.(prometheus.Counter).Inc()
}

// BreakerChanged records a breaker's transition to state to (0 closed, 1 open, 2
// half-open, as governance.State numbers them; name is its String).
func (m *GatewayMetrics) BreakerChanged(policy, peer, service string, to int, name string) {
	m.breakers.WithLabelValues(policy, peer, service).Set(float64(to))
	m.transitions.WithLabelValues(policy, name).Inc()
}

// TunnelOpened counts an open tunnel connection; TunnelClosed must follow.
func (m *GatewayMetrics) TunnelOpened() { m.tunnels.Inc() }

// TunnelClosed ends a connection counted by TunnelOpened.
func (m *GatewayMetrics) TunnelClosed() { m.tunnels.Dec() }

// ConfigAck counts an xDS update applied.
func (m *GatewayMetrics) ConfigAck() { m.acks.Inc() }

// ConfigNack counts an xDS update rejected.
func (m *GatewayMetrics) ConfigNack() { m.nacks.Inc() }

// SetConfigVersion makes v the version strait_config_version_info reports, removing the
// previous one.
func (m *GatewayMetrics) SetConfigVersion(v string) {
	m.versionMu.Lock()
	defer m.versionMu.Unlock()
	if m.version != nil {
		if *m.version == v {
			return
		}
		m.versionInfo.DeleteLabelValues(m.role, *m.version)
	}
	m.versionInfo.WithLabelValues(m.role, v).Set(1)
	m.version = &v
}

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// StatusClass is the class of an HTTP status code ("2xx", "5xx"...), the code label of
// HTTP calls; "unknown" outside 100..599.
func StatusClass(status int) string {
	if status < 100 || status > 599 {
		return "unknown"
	}
	return statusClasses[status/100-1]
}

// register registers c with reg, or returns the equal collector reg already holds.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(fmt.Sprintf("admin: registering gateway metrics: %v", err))
}
