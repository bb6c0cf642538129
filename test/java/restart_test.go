package java

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch"
	"github.com/strait-mesh/strait/test/wait"
)

// restartLoad is the plan of the rolling restart's consumers: 500 calls, one every 200 ms,
// so that the load lasts 100 s, longer than restarting every gateway and waiting for each
// to carry calls again (40 to 60 s: each gateway serves on for its 6 s drain delay, and a
// Java consumer comes back to a restarted egress up to 10 s after that, see
// TestRollingRestart).
const restartLoad = "load:500:200ms"

// restartPaceEnv names the environment variable that chooses how TestRollingRestart paces
// its restarts: "calls" (the default) or "ready".
const restartPaceEnv = "STRAIT_JAVA_RESTART_PACE"

// TestRollingRestart: every gateway of the ZooKeeper topology (beta's ingress instances,
// then alpha's egress instances) is restarted, one at a time, drained and not killed
// (Topology.RestartGateway), while two Java consumers, one over Triple and one over dubbo,
// each make 500 calls at a steady rate (interface level): no call fails. The restarts must
// end while both loads still run. How long each restart took, when each protocol's calls
// reached the new gateway, how many calls each egress answered and which calls failed,
// when, are logged.
//
// A rolling restart moves on once the restarted gateway is back in service. By default
// (pace "calls") that is when it carries calls of both protocols again: the consumers found
// the egress again, or the egress instances the ingress. For a restarted egress that takes
// about 10 s: the drain closes the consumers' connections at once, Java's registry client
// passes registry changes on at most every 5 s once it has seen ten (RegistryNotifier,
// delay-notification), and a consumer's directory checks a closed invoker again every
// second. With STRAIT_JAVA_RESTART_PACE=ready the next restart starts as soon as the
// gateway is configured and, for an egress, listed again in alpha's registry, as an
// orchestrator that watches readiness would go on: consumers then still know only the
// egress that is draining next, and calls fail (No provider available, and over dubbo
// requests the draining egress never read) until they reconnect, a second or more.
func TestRollingRestart(t *testing.T) {
	pace := os.Getenv(restartPaceEnv)
	switch pace {
	case "":
		pace = "calls"
	case "calls", "ready":
	default:
		t.Fatalf("%s=%q: want calls or ready", restartPaceEnv, pace)
	}
	var reqs []providerReq
	for _, protocol := range protocols {
		reqs = append(reqs, providerReq{"zookeeper", providerSpec{protocol: protocol, mode: "interface", version: "1.0.0", group: "g1"}})
	}
	ps := providers(t, reqs...)
	e := getEnv(t, "zookeeper")
	var cs []*consumer
	for _, p := range ps {
		e.waitImported(t, p)
		cs = append(cs, startConsumer(t, "restart-"+p.spec.protocol, consumerSpec{
			protocol: p.spec.protocol, registry: e.alphaRegistry(), discovery: "interface",
			version: "1.0.0", group: "g1", plan: restartLoad,
		}))
	}
	for _, c := range cs {
		c.waitCheck(t, "discover", 90*time.Second) // the load starts right after
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	done := 0 // gateways restarted and back in service
	for i := range e.topo.Gateways {
		name := e.topo.Gateways[i].Name()
		t0 := time.Now()
		g, err := e.topo.RestartGateway(ctx, i, false, logger())
		if err != nil {
			t.Fatalf("restarting %s: %v", name, err)
		}
		restarted := time.Since(t0)
		if pace == "ready" {
			if g.Egress() != nil {
				for _, p := range ps {
					e.waitImported(t, p)
				}
			}
			t.Logf("%s: restarted (drained, started, configured) in %v at %s, back in service (pace ready) %v after the start of its restart",
				name, restarted.Round(time.Millisecond), t0.Format("15:04:05.000"), time.Since(t0).Round(time.Millisecond))
			done++
			continue
		}
		// Back in service: it carries calls of both protocols (its counters start at 0).
		first := map[string]time.Duration{}
		_, err = wait.Until(ctx, 30*time.Second, func() error {
			n, err := callsByProtocol(g)
			if err != nil {
				return err
			}
			for _, p := range []string{"triple", "dubbo"} {
				if _, ok := first[p]; !ok && n[p] > 0 {
					first[p] = time.Since(t0)
				}
			}
			if len(first) < 2 {
				return fmt.Errorf("calls so far by protocol: %v", n)
			}
			return nil
		})
		if err != nil {
			// The loads' own reports (below) tell more: stop restarting, keep the test going.
			t.Errorf("%s (restarted in %v at %s) carries no Triple and dubbo calls 30s after its restart: %v; the rolling restart stops there",
				name, restarted.Round(time.Millisecond), t0.Format("15:04:05.000"), err)
			break
		}
		t.Logf("%s: restarted (drained, started, configured) in %v at %s; its first Triple calls %v, its first dubbo calls %v after the start of its restart",
			name, restarted.Round(time.Millisecond), t0.Format("15:04:05.000"), first["triple"].Round(time.Millisecond), first["dubbo"].Round(time.Millisecond))
		done++
	}
	t.Logf("rolling restart (pace %s): %d of %d gateways restarted and back in service in %v", pace, done, len(e.topo.Gateways), time.Since(began).Round(time.Millisecond))
	for _, c := range cs {
		if c.ended() && !t.Failed() {
			t.Fatalf("consumer %s ended its load before the rolling restart did: make %s longer", c.name, restartLoad)
		}
	}
	for _, c := range cs {
		requireChecks(t, c.name, c.wait(t), "discover", "load")
	}
}

// callsByProtocol sums the calls gateway g counted (strait_calls_total, every peer and
// code) by protocol label.
func callsByProtocol(g *launch.Gateway) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.AdminAddr()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s /metrics: %w", g.Name(), err)
	}
	defer resp.Body.Close()
	n := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "strait_calls_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(line, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(labels, ",") {
			if p, ok := strings.CutPrefix(l, `protocol="`); ok {
				n[strings.TrimSuffix(p, `"`)] += v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s /metrics: %w", g.Name(), err)
	}
	return n, nil
}
