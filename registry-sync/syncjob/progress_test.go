package syncjob

import (
	"bytes"
	"strings"
	"testing"
)

func TestProgress(t *testing.T) {
	var term, plain bytes.Buffer
	for _, p := range []*progress{
		{w: &term, term: true, total: make([]int, 2), known: make([]bool, 2)},
		{w: &plain, total: make([]int, 2), known: make([]bool, 2)},
	} {
		p.add(0, 15)
		p.add(1, 5)
		p.add(0, 99) // a direction's total is set once
		for i := range 20 {
			p.step(i % 2)
		}
		p.finish()
		p.step(0) // after the initial sync: silent
		p.finish()
	}
	if got := term.String(); !strings.HasPrefix(got, "\rsynced 0/15 services\rsynced 0/20 services\rsynced 1/20 services") ||
		!strings.HasSuffix(got, "\rsynced 20/20 services\rsynced 20/20 services\n") || strings.Count(got, "\n") != 1 {
		t.Errorf("terminal: %q", got)
	}
	lines := strings.Split(strings.TrimSpace(plain.String()), "\n")
	if len(lines) != 10 || lines[0] != "synced 2/20 services" || lines[9] != "synced 20/20 services" {
		t.Errorf("plain: %q", plain.String())
	}
	var nilp *progress
	nilp.add(0, 1)
	nilp.step(0)
	nilp.finish()
}
