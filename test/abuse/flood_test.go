//go:build linux

package abuse

import (
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestFloods runs each flood of the issue on one connection to alpha's first egress
// (consumer port, h2c) and to beta's first ingress (tunnel port, TLS 1.3 with an alpha
// egress SVID), while a well-behaved consumer makes 200 calls/s through alpha's first
// egress. For each: the attacker's connection is ended (GOAWAY ENHANCE_YOUR_CALM, or
// closed), no legit call fails, the legit p99 stays within 2× of the baseline (with
// p99Floor), the attacked gateway counts the flood in strait_h2_abuse_total{kind}, RSS
// stays within rssPeakSlack during the flood, and goroutines, heap and RSS come back
// within their slack after it.
func TestFloods(t *testing.T) {
	base := baseline(t, topo.Egress[0])
	for _, tg := range []target{egressTarget(), ingressTarget()} {
		for _, fl := range floods() {
			t.Run(tg.name+"/"+fl.name, func(t *testing.T) { runFlood(t, tg, fl, base) })
		}
	}
}

func runFlood(t *testing.T, tg target, fl flood, base loadResult) {
	g := gateway(t, tg.addr)
	before := settledStats()
	m0 := abuseCount(t, g, fl.kind)

	l := newLegit(t, topo.Egress[0])
	peak := sampleRSS()
	type outcome struct {
		res floodResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := attack(tg, fl, legitDuration)
		done <- outcome{r, err}
	}()
	got := l.run(legitDuration)
	o := <-done
	peakRSS := peak.end()
	l.close()
	if o.err != nil {
		t.Fatalf("attacker: %v", o.err)
	}
	res := o.res
	t.Logf("attacker on %s's %s port: %v", g.Name(), tg.name, res)

	checkLoad(t, fl.name+" flood on the "+tg.name, base, got)
	switch {
	case !res.ended():
		t.Errorf("the attacker's connection was not ended: %d frames sent in %v (stopped by %s)", res.framesSent, res.elapsed.Round(time.Millisecond), res.stoppedBy)
	case res.goAway && res.goAwayCode != http2.ErrCodeEnhanceYourCalm:
		t.Errorf("the attacker's connection got GOAWAY %v, want ENHANCE_YOUR_CALM", res.goAwayCode)
	case fl.debug != "" && res.goAway && res.goAwayDebug != fl.debug:
		t.Errorf("the attacker's GOAWAY carries debug data %q, want %q", res.goAwayDebug, fl.debug)
	case fl.debug != "" && !res.goAway:
		// A close with the attacker's frames unread resets the connection, and the reset
		// can discard the GOAWAY before the attacker reads it: not a failure.
		t.Logf("no GOAWAY seen (connection reset), so its debug data %q is not checked", fl.debug)
	}
	if m1 := abuseCount(t, g, fl.kind); m1 <= m0 {
		t.Errorf(`%s: strait_h2_abuse_total{kind=%q} is %v after the flood, %v before: not counted`, g.Name(), fl.kind, m1, m0)
	}
	t.Logf("RSS peak during the flood %.1f MiB, %.1f MiB before (bound +%d MiB)", mib(peakRSS), mib(before.rss), rssPeakSlack>>20)
	if peakRSS > before.rss+rssPeakSlack {
		t.Errorf("RSS reached %.1f MiB during the flood, %.1f MiB before (bound +%d MiB)", mib(peakRSS), mib(before.rss), rssPeakSlack>>20)
	}
	waitSettled(t, "after the "+fl.name+" flood", before)
}
