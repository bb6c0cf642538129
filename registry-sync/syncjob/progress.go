package syncjob

import (
	"fmt"
	"io"
	"sync"
)

// progress shows the initial full sync: "synced N/M services", rewritten in place on a
// terminal, else a plain line at every tenth and at the end. A nil *progress shows
// nothing. Safe for concurrent use (the directions of a continuous job run in parallel).
type progress struct {
	w    io.Writer
	term bool

	mu       sync.Mutex
	total    []int  // services per direction
	known    []bool // the direction's total is known
	done     int
	lastTens int
	finished bool
}

func (p *progress) add(dir, n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known[dir] {
		return
	}
	p.total[dir], p.known[dir] = n, true
	p.show(false)
}

func (p *progress) step(dir int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.done++
	p.show(false)
}

func (p *progress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	p.show(true)
	p.finished = true
}

func (p *progress) show(last bool) {
	m := 0
	for _, t := range p.total {
		m += t
	}
	if p.term {
		fmt.Fprintf(p.w, "\rsynced %d/%d services", p.done, m)
		if last {
			fmt.Fprintln(p.w)
		}
		return
	}
	tens := 0
	if m > 0 {
		tens = p.done * 10 / m
	}
	if last || (tens > p.lastTens && p.done < m) {
		p.lastTens = tens
		fmt.Fprintf(p.w, "synced %d/%d services\n", p.done, m)
	}
}
