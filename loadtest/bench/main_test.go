package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestQuickPlanHasDubbo: QUICK=1 measures Dubbo 1 KiB in both modes.
func TestQuickPlanHasDubbo(t *testing.T) {
	modes := map[string]bool{}
	for _, st := range plan(true) {
		if st.protocol == "dubbo" && st.payload == 1024 {
			modes[st.mode] = true
		}
	}
	if !modes["open"] || !modes["max"] {
		t.Fatalf("quick plan: dubbo 1 KiB modes %v, want open and max", modes)
	}
}

// TestSummaryByProtocol: the per-protocol block reports each chain's added latency over
// direct, its max and each hop's CPU per call, and leaves out what was not measured.
func TestSummaryByProtocol(t *testing.T) {
	rows := []Row{
		{Target: "direct", Protocol: "dubbo", Mode: "open", PayloadBytes: 1024, P50: 0.5, P99: 1.0, AchievedRPS: 1000},
		{Target: "direct", Protocol: "dubbo", Mode: "max", PayloadBytes: 1024, AchievedRPS: 20000},
		{Target: "strait", Protocol: "dubbo", Mode: "open", PayloadBytes: 1024, P50: 0.7, P99: 1.5, AchievedRPS: 1000},
		{Target: "strait", Protocol: "dubbo", Mode: "max", PayloadBytes: 1024, AchievedRPS: 10000, Calls: 30000,
			CPUSeconds: map[string]float64{"alpha-egress-1": 0.6, "beta-ingress-1": 0.3}},
		{Target: "strait", Protocol: "dubbo", Mode: "max", PayloadBytes: 1024, AchievedRPS: 1, Calls: 10, Profiled: true,
			CPUSeconds: map[string]float64{"alpha-egress-1": 9, "beta-ingress-1": 9}},
		{Target: "haproxy", Protocol: "dubbo", Mode: "max", PayloadBytes: 1024, AchievedRPS: 15000, Calls: 45000, Errors: 5,
			CPUSeconds: map[string]float64{"haproxy-hop1": 0.45, "haproxy-hop2": 0.45}},
	}
	var b bytes.Buffer
	summary(&b, rows)
	out := b.String()
	for _, want := range []string{
		"    dubbo 1024 B\n",
		"      direct   p50 0.500 ms  p99 1.000 ms  max 20000\n",
		"      strait   +0.200 ms / +0.500 ms  max 10000  alpha-egress-1 20.0, beta-ingress-1 10.0\n",
		"      haproxy  - / -  max 15000  haproxy-hop1 10.0, haproxy-hop2 10.0  (errors: open 0, max 5)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "      nginx") {
		t.Errorf("summary has an nginx line for dubbo, which nginx did not measure:\n%s", out)
	}
}
