package ports

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if p := os.Getenv("STRAIT_PORTS_HELPER_CLAIM"); p != "" {
		helperClaim(p)
		return
	}
	goleak.VerifyTestMain(m)
}

// helperClaim runs in a child process: it tries to claim port p and prints whether it could.
func helperClaim(p string) {
	port, err := strconv.Atoi(p)
	if err != nil {
		os.Exit(2)
	}
	if claim([]int{port}) {
		os.Stdout.WriteString("claimed\n")
	} else {
		os.Stdout.WriteString("refused\n")
	}
	os.Exit(0)
}

// bindable reports whether addr can be listened on now.
func bindable(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func loopback(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }

func TestListen(t *testing.T) {
	var addr string
	t.Run("in a test", func(t *testing.T) {
		ln := Listen(t)
		addr = ln.Addr().String()
		if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
			t.Fatalf("address %s", addr)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		c.Close()
	})
	// The test's cleanup closed it.
	if !bindable(addr) {
		t.Fatalf("%s still bound after its test ended", addr)
	}
}

func TestReserveTakeAndRelease(t *testing.T) {
	var ports []int
	t.Run("in a test", func(t *testing.T) {
		rs := Reserve(t, 3)
		for _, r := range rs {
			ports = append(ports, r.Port())
			if r.Addr() != loopback(r.Port()) {
				t.Errorf("Addr %s, port %d", r.Addr(), r.Port())
			}
			// Held: nobody else can bind it, on loopback or on every interface.
			if bindable(r.Addr()) || bindable(":"+strconv.Itoa(r.Port())) {
				t.Errorf("reserved port %d is bindable", r.Port())
			}
		}
		if s := slices.Compact(slices.Sorted(slices.Values(ports))); len(s) != 3 {
			t.Fatalf("ports %v repeat", ports)
		}
		lo, hi, err := portRange()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			if p < lo || p > hi {
				t.Errorf("port %d outside %d-%d", p, lo, hi)
			}
		}

		// Take hands over the very listener: a connection reaches it.
		ln := rs[0].Take()
		if ln.Addr().String() != rs[0].Addr() {
			t.Fatalf("taken listener on %s, reserved %s", ln.Addr(), rs[0].Addr())
		}
		accepted := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Close()
			}
			accepted <- err
		}()
		c, err := net.Dial("tcp", rs[0].Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := <-accepted; err != nil {
			t.Fatal(err)
		}
		ln.Close()

		// Release frees the port for a process to bind; releasing again is harmless.
		rs[1].Release()
		rs[1].Release()
		if !bindable(rs[1].Addr()) {
			t.Fatalf("released port %d is not bindable", rs[1].Port())
		}
		// A released port stays claimed: this process does not hand it out again.
		if claim([]int{rs[1].Port()}) {
			t.Fatalf("released port %d claimed again", rs[1].Port())
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Error("Take after Release did not panic")
				}
			}()
			rs[1].Take()
		}()
	})
	// The end of the test released what was held and dropped every claim.
	for _, p := range ports {
		if !bindable(loopback(p)) {
			t.Errorf("port %d still bound after its test ended", p)
		}
		if !claim([]int{p}) {
			t.Errorf("port %d still claimed after its test ended", p)
		}
		unclaim([]int{p})
	}
}

func TestBlock(t *testing.T) {
	g := Block(t, 5)
	ps := g.Ports()
	for i, p := range ps {
		if p != g.Base+i || g.Port(i) != p {
			t.Fatalf("ports %v from base %d", ps, g.Base)
		}
		// Held on every interface.
		if bindable(loopback(p)) || bindable(":"+strconv.Itoa(p)) {
			t.Errorf("port %d of the block is bindable", p)
		}
	}
	g.Release()
	for _, p := range ps {
		if !bindable(loopback(p)) || !bindable(":"+strconv.Itoa(p)) {
			t.Errorf("released port %d is not bindable", p)
		}
	}
	g.Release()
	g.Close()
	g.Close()
}

// TestPattern: offsets may be negative and sparse (Nacos' P-1000, P, P+1000, P+1001).
func TestPattern(t *testing.T) {
	g := Pattern(t, 1000, -1000, 0, 1001)
	if want := []int{g.Base - 1000, g.Base, g.Base + 1000, g.Base + 1001}; !slices.Equal(g.Ports(), want) {
		t.Fatalf("ports %v, want %v", g.Ports(), want)
	}
	for _, p := range g.Ports() {
		if bindable(":" + strconv.Itoa(p)) {
			t.Errorf("port %d is bindable", p)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Port of an offset not in the pattern did not panic")
			}
		}()
		g.Port(1)
	}()
	if _, err := HoldPattern(0, 0); err == nil {
		t.Error("a pattern with a repeated offset was accepted")
	}
	if _, err := HoldPattern(); err == nil {
		t.Error("an empty pattern was accepted")
	}
	if _, err := HoldPattern(0, 70000); err == nil {
		t.Error("a pattern wider than the range was accepted")
	}
}

// TestConcurrent: allocations from many goroutines at once never share a port. Every
// reservation is kept until all goroutines are done: a port released by one may rightly be
// handed out again.
func TestConcurrent(t *testing.T) {
	var (
		mu     sync.Mutex
		seen   = map[int]bool{}
		closer []func()
		wg     sync.WaitGroup
	)
	defer func() {
		for _, c := range closer {
			c()
		}
	}()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got []int
			var held []func()
			defer func() {
				mu.Lock()
				closer = append(closer, held...)
				mu.Unlock()
			}()
			for range 5 {
				r, err := ReservePort()
				if err != nil {
					t.Error(err)
					return
				}
				held = append(held, r.Close)
				got = append(got, r.Port())
			}
			g, err := HoldPattern(0, 1, 2)
			if err != nil {
				t.Error(err)
				return
			}
			held = append(held, g.Close)
			got = append(got, g.Ports()...)
			mu.Lock()
			defer mu.Unlock()
			for _, p := range got {
				if seen[p] {
					t.Errorf("port %d handed out twice", p)
				}
				seen[p] = true
			}
		}()
	}
	wg.Wait()
}

// TestClaimAcrossProcesses: a port this process claimed, even once released to a child
// process, is refused to another process using the package; once dropped, it is not.
func TestClaimAcrossProcesses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the lock file is checked on Linux")
	}
	r := Reserve(t, 1)[0]
	r.Release()
	other := func() string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "STRAIT_PORTS_HELPER_CLAIM="+strconv.Itoa(r.Port()))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helper: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := other(); got != "refused" {
		t.Fatalf("another process with port %d claimed here: %s", r.Port(), got)
	}
	r.Close()
	if got := other(); got != "claimed" {
		t.Fatalf("another process after the claim was dropped: %s", got)
	}
}

func TestRangeFor(t *testing.T) {
	for _, c := range []struct{ elo, ehi, lo, hi int }{
		{32768, 60999, 20000, 32767}, // Linux's default: below the ephemeral ports
		{49152, 65535, 20000, 49151}, // IANA's
		{21000, 60999, 61000, 65535}, // little room below: above
		{1024, 65535, 20000, 65535},  // no room anywhere: everything above floor
	} {
		if lo, hi := rangeFor(c.elo, c.ehi); lo != c.lo || hi != c.hi {
			t.Errorf("rangeFor(%d, %d) = %d-%d, want %d-%d", c.elo, c.ehi, lo, hi, c.lo, c.hi)
		}
	}
}

func TestRangeFromEnvironment(t *testing.T) {
	t.Setenv("STRAIT_TEST_PORT_RANGE", "29000-29099")
	g := Block(t, 5)
	if g.Base < 29000 || g.Base+4 > 29099 {
		t.Fatalf("a block of 5 in 29000-29099 at %d", g.Base)
	}
	for _, bad := range []string{"40000", "9-8", "0-10", "1-70000", "a-b"} {
		t.Setenv("STRAIT_TEST_PORT_RANGE", bad)
		if _, _, err := portRange(); err == nil {
			t.Errorf("STRAIT_TEST_PORT_RANGE=%s accepted", bad)
		}
	}
}
