// Package ports hands tests the TCP ports they use, chosen at run time and held until they
// are used, so that two runs of the tests on one machine (two clones running `make test` at
// once, or several test binaries of one run) never take each other's ports.
//
// In-process servers take a listener: Listen, or Reserve(...)[i].Take(). The port is bound
// from the start, so nothing else can take it.
//
// Processes that bind their own ports (a registry server, deploy/local/up.sh's gateways)
// get ports held by listeners of this process until just before the process starts:
// Reserve(...)[i].Release(), or Block / Pattern and Group.Release for a base-port scheme.
// The race left is the gap between the release and the process's own bind. It is
// narrowed three ways:
//   - the ports come from a range the kernel never hands out by itself: below
//     net.ipv4.ip_local_port_range, where connect() and bind to port 0 pick theirs
//     (STRAIT_TEST_PORT_RANGE=LO-HI overrides the range);
//   - every process that uses this package claims the ports it holds in a lock file
//     (strait-test-ports.lock in /tmp, one fcntl byte-range lock per port), from the
//     allocation until the test ends or the process dies, so another run of these tests
//     never picks a port that was released to a process of this run;
//   - what is left, an unrelated program binding that very port in that gap, makes the
//     process fail to start on a port in use: callers that can retry do (test/registries).
//
// (The model is etcd's e2e framework, whose processes get ports from an allocator that
// holds them until they are handed over.)
package ports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Listen returns a listener on a free loopback port (127.0.0.1:0), for an in-process
// server that accepts a net.Listener. It is closed when the test ends (a server that
// closed it already makes that a no-op).
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ports: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Reserved is one loopback port (127.0.0.1), held by a listener of this process until it
// is handed over with Take or released with Release.
type Reserved struct {
	port int

	mu       sync.Mutex
	ln       net.Listener // nil once taken or released
	released bool         // the claim itself is gone (Close)
}

// Reserve returns n distinct loopback ports, each held until Take or Release; whatever is
// still held is closed, and every claim dropped, when the test ends.
func Reserve(t testing.TB, n int) []*Reserved {
	t.Helper()
	rs := make([]*Reserved, 0, n)
	for range n {
		r, err := ReservePort()
		if err != nil {
			t.Fatalf("ports: %v", err)
		}
		t.Cleanup(r.Close)
		rs = append(rs, r)
	}
	return rs
}

// ReservePort is Reserve for one port outside a test (a TestMain); Close it when done.
func ReservePort() (*Reserved, error) {
	var r *Reserved
	err := allocate([]int{0}, func(base int) error {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)))
		if err != nil {
			return err
		}
		r = &Reserved{port: base, ln: ln}
		return nil
	})
	return r, err
}

// Port is the reserved port.
func (r *Reserved) Port() int { return r.port }

// Addr is "127.0.0.1:port".
func (r *Reserved) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Take hands the listener over to the caller, who closes it (a server's Serve does). It
// panics if the port was taken or released already.
func (r *Reserved) Take() net.Listener {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln == nil {
		panic("ports: Take of port " + strconv.Itoa(r.port) + ", already taken or released")
	}
	ln := r.ln
	r.ln = nil
	return ln
}

// Release closes the listener so that a process about to start can bind the port itself:
// call it right before starting that process. The port stays claimed against other users
// of this package until Close (the end of the test). Releasing twice is a no-op.
func (r *Reserved) Release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
}

// Close releases the port if it is still held and drops its claim: from then on another
// test may get it. Reserve's cleanup calls it.
func (r *Reserved) Close() {
	r.Release()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.released {
		r.released = true
		unclaim([]int{r.port})
	}
}

// Group is a set of ports at fixed offsets from a base port, each held by a listener on
// every interface (so that a process that binds all of them, as Nacos does, finds them
// free) until Release.
type Group struct {
	// Base is the base port: the group's ports are Base+offset for each offset.
	Base    int
	offsets []int

	mu     sync.Mutex
	lns    []net.Listener // nil once released
	closed bool
}

// Block returns n consecutive ports (Base … Base+n-1), held until Release, for a process
// that derives its ports from a base port. They are released, if they are not yet, and
// their claims dropped, when the test ends.
func Block(t testing.TB, n int) *Group {
	t.Helper()
	if n < 1 {
		t.Fatalf("ports: Block of %d ports", n)
	}
	offsets := make([]int, n)
	for i := range offsets {
		offsets[i] = i
	}
	return Pattern(t, offsets...)
}

// Pattern is Block for ports at the given offsets from the base (which may be negative,
// and need not be consecutive): Nacos, given port P, binds P, P+1000, P+1001 and P-1000.
func Pattern(t testing.TB, offsets ...int) *Group {
	t.Helper()
	g, err := HoldPattern(offsets...)
	if err != nil {
		t.Fatalf("ports: %v", err)
	}
	t.Cleanup(g.Close)
	return g
}

// HoldPattern is Pattern outside a test (a TestMain); Close the group when done.
func HoldPattern(offsets ...int) (*Group, error) {
	if len(offsets) == 0 {
		return nil, errors.New("ports: a pattern of no ports")
	}
	offsets = slices.Clone(offsets)
	slices.Sort(offsets)
	if len(slices.Compact(slices.Clone(offsets))) != len(offsets) {
		return nil, fmt.Errorf("ports: offsets %v repeat", offsets)
	}
	var g *Group
	err := allocate(offsets, func(base int) error {
		var lns []net.Listener
		for _, d := range offsets {
			// All interfaces ("[::]:p", dual stack): this also fails if the port is bound
			// on any one address.
			ln, err := net.Listen("tcp", ":"+strconv.Itoa(base+d))
			if err != nil {
				for _, l := range lns {
					l.Close()
				}
				return err
			}
			lns = append(lns, ln)
		}
		g = &Group{Base: base, offsets: offsets, lns: lns}
		return nil
	})
	return g, err
}

// Port is the group's port at offset d (Base+d); it panics if d is not one of its offsets.
func (g *Group) Port(d int) int {
	if !slices.Contains(g.offsets, d) {
		panic(fmt.Sprintf("ports: offset %d is not in the group's %v", d, g.offsets))
	}
	return g.Base + d
}

// Ports lists the group's ports, lowest first.
func (g *Group) Ports() []int {
	ps := make([]int, len(g.offsets))
	for i, d := range g.offsets {
		ps[i] = g.Base + d
	}
	return ps
}

// Release closes the listeners so that the process about to start can bind the ports:
// call it right before starting that process. The ports stay claimed against other users
// of this package until Close. Releasing twice is a no-op.
func (g *Group) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, ln := range g.lns {
		ln.Close()
	}
	g.lns = nil
}

// Close releases the ports if they are still held and drops their claims. Block's and
// Pattern's cleanup calls it; closing twice is a no-op.
func (g *Group) Close() {
	g.Release()
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		unclaim(g.Ports())
	}
}

// attempts bounds the bases tried by one allocation. Each try costs a few binds; on a
// machine where a tenth of the range is in use a pattern of 30 ports still succeeds
// within a handful.
const attempts = 500

// allocate picks a random base in the range such that every base+offset is in it and is
// unclaimed, claims those ports, and calls hold(base) to bind them. It tries other bases
// while the claim or hold fails.
func allocate(offsets []int, hold func(base int) error) error {
	lo, hi, err := portRange()
	if err != nil {
		return err
	}
	minD, maxD := slices.Min(offsets), slices.Max(offsets)
	first, last := lo-minD, hi-maxD // bases that keep every port within [lo, hi]
	if first > last {
		return fmt.Errorf("ports: offsets %d…%d do not fit in the range %d-%d", minD, maxD, lo, hi)
	}
	var lastErr error
	for range attempts {
		base := first + rand.IntN(last-first+1)
		ps := make([]int, len(offsets))
		for i, d := range offsets {
			ps[i] = base + d
		}
		if !claim(ps) {
			continue
		}
		if lastErr = hold(base); lastErr == nil {
			return nil
		}
		unclaim(ps)
	}
	if lastErr == nil {
		lastErr = errors.New("every candidate was claimed by another test")
	}
	return fmt.Errorf("ports: no free ports at offsets %v in %d-%d after %d tries: %w", offsets, lo, hi, attempts, lastErr)
}

// floor is the lowest port handed out: below it are well-known services, and
// deploy/local/up.sh's default ports (16100-18300 with Nacos) and loadtest/bench.sh's.
const floor = 20000

// portRange is the inclusive range ports are taken from: STRAIT_TEST_PORT_RANGE if set,
// else what the kernel leaves alone (see rangeFor).
func portRange() (lo, hi int, err error) {
	if s := os.Getenv("STRAIT_TEST_PORT_RANGE"); s != "" {
		a, b, ok := strings.Cut(s, "-")
		lo, err1 := strconv.Atoi(strings.TrimSpace(a))
		hi, err2 := strconv.Atoi(strings.TrimSpace(b))
		if !ok || err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
			return 0, 0, fmt.Errorf("ports: STRAIT_TEST_PORT_RANGE=%q is not LO-HI within 1-65535", s)
		}
		return lo, hi, nil
	}
	elo, ehi := 32768, 60999 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			a, err1 := strconv.Atoi(f[0])
			b, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && a <= b {
				elo, ehi = a, b
			}
		}
	}
	lo, hi = rangeFor(elo, ehi)
	return lo, hi, nil
}

// minRange is the smallest range worth keeping clear of the ephemeral ports; with less,
// the whole range above floor is used (and the kernel may pick a released port too).
const minRange = 4000

// rangeFor returns the range to allocate from given the kernel's ephemeral range
// [elo, ehi]: the ports between floor and elo if there are enough, else those above ehi,
// else everything above floor.
func rangeFor(elo, ehi int) (lo, hi int) {
	if elo-1-floor+1 >= minRange {
		return floor, elo - 1
	}
	if start := max(ehi+1, floor); 65535-start+1 >= minRange {
		return start, 65535
	}
	return floor, 65535
}

// claimed are the ports this process has claimed; the lock file tells other processes.
var (
	claimMu sync.Mutex
	claimed = map[int]bool{}
)

// claim claims every port of ps, or none if one is claimed already (here or by another
// process).
func claim(ps []int) bool {
	claimMu.Lock()
	defer claimMu.Unlock()
	for _, p := range ps {
		if claimed[p] {
			return false
		}
	}
	for i, p := range ps {
		if !lockPort(p) {
			for _, q := range ps[:i] {
				unlockPort(q)
			}
			return false
		}
	}
	for _, p := range ps {
		claimed[p] = true
	}
	return true
}

func unclaim(ps []int) {
	claimMu.Lock()
	defer claimMu.Unlock()
	for _, p := range ps {
		if claimed[p] {
			delete(claimed, p)
			unlockPort(p)
		}
	}
}
