package admin

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// value is the value of the one series of name whose labels include want, or -1 if absent;
// for a histogram, its sample count.
func value(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue series
				}
			}
			return sampleValue(m)
		}
	}
	return -1
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

func TestGatewayMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewGatewayMetrics(reg, "egress")
	role := map[string]string{"role": "egress"}

	m.Observe("grpc", "beta", "OK", 300*time.Microsecond)
	m.Observe("grpc", "beta", "OK", 2*time.Millisecond)
	m.Observe("grpc", "beta", "Unavailable", time.Second)
	m.Observe("http", "gamma", StatusClass(503), 5*time.Millisecond)
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"role": "egress", "protocol": "grpc", "peer": "beta", "code": "OK"}, 2},
		{map[string]string{"role": "egress", "protocol": "grpc", "peer": "beta", "code": "Unavailable"}, 1},
		{map[string]string{"role": "egress", "protocol": "http", "peer": "gamma", "code": "5xx"}, 1},
	} {
		if got := value(t, reg, "strait_calls_total", c.labels); got != c.want {
			t.Errorf("strait_calls_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := value(t, reg, "strait_call_duration_seconds", map[string]string{"role": "egress", "protocol": "grpc"}); got != 3 {
		t.Errorf("grpc duration count = %v, want 3", got)
	}

	m.CallStarted()
	m.CallStarted()
	m.CallEnded()
	if got := value(t, reg, "strait_inflight_calls", role); got != 1 {
		t.Errorf("inflight = %v, want 1", got)
	}
	m.TunnelOpened()
	if got := value(t, reg, "strait_tunnel_connections", role); got != 1 {
		t.Errorf("tunnels = %v, want 1", got)
	}
	m.TunnelClosed()
	if got := value(t, reg, "strait_tunnel_connections", role); got != 0 {
		t.Errorf("tunnels = %v, want 0", got)
	}

	for _, name := range []string{"ack", "nack"} {
		if got := value(t, reg, "strait_config_updates_total", map[string]string{"result": name}); got != 0 {
			t.Errorf("%s before any update = %v, want 0 (series present from the start)", name, got)
		}
	}
	m.ConfigAck()
	m.ConfigAck()
	m.ConfigNack()
	if got := value(t, reg, "strait_config_updates_total", map[string]string{"result": "ack"}); got != 2 {
		t.Errorf("acks = %v, want 2", got)
	}
	if got := value(t, reg, "strait_config_updates_total", map[string]string{"result": "nack"}); got != 1 {
		t.Errorf("nacks = %v, want 1", got)
	}

	if got := value(t, reg, "strait_config_version_info", role); got != -1 {
		t.Errorf("version info before any version = %v, want absent", got)
	}
	m.SetConfigVersion("1")
	m.SetConfigVersion("2")
	m.SetConfigVersion("2")
	if got := value(t, reg, "strait_config_version_info", map[string]string{"version": "1"}); got != -1 {
		t.Errorf("old version still reported: %v", got)
	}
	if got := value(t, reg, "strait_config_version_info", map[string]string{"role": "egress", "version": "2"}); got != 1 {
		t.Errorf("current version = %v, want 1", got)
	}
}

func TestGatewayMetricsRolesShareRegistry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	e := NewGatewayMetrics(reg, "egress")
	i := NewGatewayMetrics(reg, "ingress")
	e2 := NewGatewayMetrics(reg, "egress") // same role again: shares the series, no panic
	e.Observe("grpc", "beta", "OK", time.Millisecond)
	e2.Observe("grpc", "beta", "OK", time.Millisecond)
	i.Observe("grpc", "alpha", "OK", time.Millisecond)
	i.SetConfigVersion("a")
	e.SetConfigVersion("b")
	if got := value(t, reg, "strait_calls_total", map[string]string{"role": "egress"}); got != 2 {
		t.Errorf("egress calls = %v, want 2", got)
	}
	if got := value(t, reg, "strait_calls_total", map[string]string{"role": "ingress"}); got != 1 {
		t.Errorf("ingress calls = %v, want 1", got)
	}
	if got := value(t, reg, "strait_config_version_info", map[string]string{"role": "ingress", "version": "a"}); got != 1 {
		t.Errorf("ingress version = %v, want 1", got)
	}

	other := prometheus.NewGauge(prometheus.GaugeOpts{Name: "strait_inflight_calls", Help: "x"})
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(other)
	defer func() {
		if recover() == nil {
			t.Error("NewGatewayMetrics over a conflicting collector did not panic")
		}
	}()
	NewGatewayMetrics(reg2, "egress")
}

func TestGatewayMetricsNoAllocs(t *testing.T) {
	m := NewGatewayMetrics(prometheus.NewRegistry(), "ingress")
	m.Observe("grpc", "alpha", "OK", time.Millisecond) // first sight of the labels
	allocs := testing.AllocsPerRun(1000, func() {
		m.CallStarted()
		m.Observe("grpc", "alpha", "OK", time.Millisecond)
		m.CallEnded()
	})
	if allocs != 0 {
		t.Errorf("hot path allocates %v times per call", allocs)
	}
}

func TestGatewayMetricsConcurrent(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewGatewayMetrics(reg, "egress")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				m.Observe("grpc", "beta", []string{"OK", "Unavailable"}[i%2], time.Millisecond)
				if i%100 == 0 {
					m.SetConfigVersion(string(rune('a' + g)))
				}
			}
		})
	}
	wg.Wait()
	total := value(t, reg, "strait_calls_total", map[string]string{"code": "OK"}) +
		value(t, reg, "strait_calls_total", map[string]string{"code": "Unavailable"})
	if total != 8000 {
		t.Errorf("calls = %v, want 8000", total)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "strait_config_version_info" && len(mf.GetMetric()) != 1 {
			t.Errorf("%d config versions reported, want 1", len(mf.GetMetric()))
		}
	}
}

func TestStatusClass(t *testing.T) {
	for code, want := range map[int]string{100: "1xx", 200: "2xx", 204: "2xx", 302: "3xx", 404: "4xx", 599: "5xx", 600: "unknown", 0: "unknown", -1: "unknown"} {
		if got := StatusClass(code); got != want {
			t.Errorf("StatusClass(%d) = %q, want %q", code, got, want)
		}
	}
}

func BenchmarkObserve(b *testing.B) {
	m := NewGatewayMetrics(prometheus.NewRegistry(), "egress")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.CallStarted()
			m.Observe("grpc", "beta", "OK", 300*time.Microsecond)
			m.CallEnded()
		}
	})
}
