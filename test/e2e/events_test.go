package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strait-mesh/strait/launch"
	"github.com/strait-mesh/strait/test/ports"
	"github.com/strait-mesh/strait/test/wait"
)

// Events the tests wait for instead of letting time pass.

// moreOK waits until n more calls than now have succeeded: the load runs, through
// whatever just changed.
func moreOK(t *testing.T, ok *atomic.Int64, n int64, what string) {
	t.Helper()
	mark := ok.Load()
	wait.For(t, 30*time.Second, what, func() bool { return ok.Load() >= mark+n })
}

// hangUp is a listener that accepts connections and closes them at once: a controlplane
// that is not there, with an event (a connection accepted) that shows a gateway tried it.
type hangUp struct {
	ln       net.Listener
	accepted atomic.Int64
	done     chan struct{}
}

func newHangUp(t *testing.T) *hangUp {
	h := &hangUp{ln: ports.Listen(t), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			c, err := h.ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			h.accepted.Add(1)
		}
	}()
	t.Cleanup(func() {
		h.ln.Close()
		<-h.done
	})
	return h
}

func (h *hangUp) Addr() string { return h.ln.Addr().String() }

// tcpRelay forwards the connections it accepts to a target and counts those that ended (on
// either side): the event that shows a connection attempt was refused or given up.
type tcpRelay struct {
	ln     net.Listener
	target string
	ended  atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
}

func newTCPRelay(t *testing.T, target string) *tcpRelay {
	r := &tcpRelay{ln: ports.Listen(t), target: target, conns: map[net.Conn]bool{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.forward(c)
			}()
		}
	}()
	t.Cleanup(func() {
		r.ln.Close()
		r.mu.Lock()
		for c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *tcpRelay) Addr() string { return r.ln.Addr().String() }

func (r *tcpRelay) track(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		r.conns[c] = true
	}
}

func (r *tcpRelay) forward(in net.Conn) {
	out, err := net.Dial("tcp", r.target)
	if err != nil {
		in.Close()
		r.ended.Add(1)
		return
	}
	r.track(in, out)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done // one side ended: end both
	in.Close()
	out.Close()
	<-done
	r.mu.Lock()
	delete(r.conns, in)
	delete(r.conns, out)
	r.mu.Unlock()
	r.ended.Add(1)
}

// calls sums strait_calls_total on g's /metrics: the calls it has handled.
func calls(t *testing.T, g *launch.Gateway) float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", g.Name(), err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "strait_calls_total{") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}
