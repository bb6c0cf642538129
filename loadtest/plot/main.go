// Command plot draws loadtest/results/latest.json (written by `make bench`) as an SVG: one
// row per protocol and payload, with the latency percentiles (p50, p90, p99, p99.9) of each
// target in the open-loop run at 1,000 calls/s on the left (log scale) and each target's
// maximum throughput on the right.
//
//	go run ./loadtest/plot -in loadtest/results/latest.json -out loadtest/results/latest.svg
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// row is the part of a latest.json object the plot uses.
type row struct {
	Target       string  `json:"target"`
	Protocol     string  `json:"protocol"`
	Mode         string  `json:"mode"`
	PayloadBytes int     `json:"payload_bytes"`
	OfferedRPS   float64 `json:"offered_rps"`
	AchievedRPS  float64 `json:"achieved_rps"`
	P50          float64 `json:"p50_ms"`
	P90          float64 `json:"p90_ms"`
	P99          float64 `json:"p99_ms"`
	P999         float64 `json:"p999_ms"`
	Errors       int64   `json:"errors"`
	Profiled     bool    `json:"profiled"`
}

var (
	targetOrder  = []string{"direct", "strait", "nginx", "haproxy"}
	targetColour = map[string]string{"direct": "#7f7f7f", "strait": "#1f77b4", "nginx": "#2ca02c", "haproxy": "#d62728"}
	pctNames     = []string{"p50", "p90", "p99", "p99.9"}
	pctOpacity   = []float64{0.35, 0.55, 0.78, 1}
)

func main() {
	in := flag.String("in", "loadtest/results/latest.json", "results (JSON list)")
	out := flag.String("out", "loadtest/results/latest.svg", "SVG to write")
	title := flag.String("title", "", "title (default: derived from the results)")
	flag.Parse()
	b, err := os.ReadFile(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
	var rows []row
	if err := json.Unmarshal(b, &rows); err != nil {
		fmt.Fprintf(os.Stderr, "plot: %s: %v\n", *in, err)
		os.Exit(1)
	}
	svg, err := render(rows, *title)
	if err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, []byte(svg), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

type group struct {
	protocol string
	payload  int
}

// Layout, in SVG user units (px).
const (
	width      = 1100
	top        = 96
	rowHeight  = 230
	plotTop    = 34 // within a row: room for the row's title
	plotHeight = 150
	leftX      = 70
	leftW      = 560
	rightX     = 760
	rightW     = 300
)

func render(rows []row, title string) (string, error) {
	var groups []group
	seen := map[group]bool{}
	targets := map[string]bool{}
	for _, r := range rows {
		if r.Profiled || (r.Mode != "open" && r.Mode != "max") {
			continue
		}
		g := group{r.Protocol, r.PayloadBytes}
		if !seen[g] {
			seen[g] = true
			groups = append(groups, g)
		}
		targets[r.Target] = true
	}
	if len(groups) == 0 {
		return "", fmt.Errorf("no measurements to plot")
	}
	var order []string
	for _, t := range targetOrder {
		if targets[t] {
			order = append(order, t)
			delete(targets, t)
		}
	}
	for t := range targets { // targets this plot has no colour for
		order = append(order, t)
		targetColour[t] = "#9467bd"
	}
	find := func(t string, g group, mode string) (row, bool) {
		for _, r := range rows {
			if r.Target == t && r.Protocol == g.protocol && r.PayloadBytes == g.payload && r.Mode == mode && !r.Profiled {
				return r, true
			}
		}
		return row{}, false
	}

	height := top + len(groups)*rowHeight + 20
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&s, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	if title == "" {
		title = "Strait vs two chained nginx / HAProxy (TLS 1.3 mTLS between the hops)"
	}
	fmt.Fprintf(&s, `<text x="%d" y="24" font-size="17" font-weight="bold">%s</text>`+"\n", leftX-50, esc(title))
	fmt.Fprintf(&s, `<text x="%d" y="44" fill="#333">Left: latency at 1,000 calls/s offered (open loop, from each call's scheduled time), log scale. Right: maximum calls/s (closed loop, 80 callers).</text>`+"\n", leftX-50)
	// Legend: targets, then percentile shades.
	x := leftX - 50
	for _, t := range order {
		fmt.Fprintf(&s, `<rect x="%d" y="58" width="14" height="14" fill="%s"/><text x="%d" y="70">%s</text>`+"\n", x, targetColour[t], x+18, esc(t))
		x += 30 + 8*len(t)
	}
	x += 30
	for i, p := range pctNames {
		fmt.Fprintf(&s, `<rect x="%d" y="58" width="14" height="14" fill="#1f77b4" fill-opacity="%.2f"/><text x="%d" y="70">%s</text>`+"\n", x, pctOpacity[i], x+18, p)
		x += 30 + 8*len(p)
	}
	fmt.Fprintf(&s, `<text x="%d" y="70" fill="#555">(bars of one target, light to dark)</text>`+"\n", x)

	for gi, g := range groups {
		y0 := top + gi*rowHeight
		label := fmt.Sprintf("%s, %s each way", g.protocol, size(g.payload))
		fmt.Fprintf(&s, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", leftX-50, y0+18, esc(label))
		py := y0 + plotTop
		// Latency panel.
		var lat []row
		lo, hi := math.Inf(1), 0.0
		for _, t := range order {
			if r, ok := find(t, g, "open"); ok {
				lat = append(lat, r)
				for _, v := range []float64{r.P50, r.P90, r.P99, r.P999} {
					if v > 0 {
						lo, hi = math.Min(lo, v), math.Max(hi, v)
					}
				}
			}
		}
		if len(lat) == 0 || hi == 0 {
			fmt.Fprintf(&s, `<text x="%d" y="%d" fill="#555">no open-loop measurement</text>`+"\n", leftX, py+plotHeight/2)
		} else {
			dmin := math.Pow(10, math.Floor(math.Log10(lo)))
			dmax := math.Pow(10, math.Ceil(math.Log10(hi)))
			if dmax/dmin < 100 {
				dmax = dmin * 100
			}
			ly := func(v float64) float64 {
				if v <= dmin {
					return float64(py + plotHeight)
				}
				return float64(py+plotHeight) - math.Log10(v/dmin)/math.Log10(dmax/dmin)*plotHeight
			}
			axes(&s, leftX, py, leftW, "ms")
			for d := dmin; d <= dmax*1.001; d *= 10 {
				yy := ly(d)
				fmt.Fprintf(&s, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end" fill="#333">%s</text>`+"\n", leftX, yy, leftX+leftW, yy, leftX-6, yy+4, num(d))
			}
			slot := float64(leftW) / float64(len(order))
			bw := slot * 0.8 / 4
			for ti, t := range order {
				r, ok := find(t, g, "open")
				gx := float64(leftX) + float64(ti)*slot + slot*0.1
				fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", gx+slot*0.4, py+plotHeight+16, esc(t))
				if !ok {
					continue
				}
				for i, v := range []float64{r.P50, r.P90, r.P99, r.P999} {
					bx := gx + float64(i)*bw
					yy := ly(v)
					fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="%.2f"><title>%s %s %s: %.3f ms</title></rect>`+"\n",
						bx, yy, bw-1, float64(py+plotHeight)-yy, targetColour[t], pctOpacity[i], esc(t), esc(label), pctNames[i], v)
					if i == 0 || i == 2 {
						fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`+"\n", bx+bw/2, yy-3, num(v))
					}
				}
				note := ""
				if r.Errors > 0 {
					note = fmt.Sprintf("%d errors", r.Errors)
				}
				if r.OfferedRPS > 0 && r.AchievedRPS < 0.95*r.OfferedRPS {
					note = strings.TrimPrefix(note+fmt.Sprintf(", %.0f/s achieved", r.AchievedRPS), ", ")
				}
				if note != "" {
					fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle" font-size="10" fill="#b00">%s</text>`+"\n", gx+slot*0.4, py+plotHeight+29, esc(note))
				}
			}
		}
		// Throughput panel.
		var peak float64
		for _, t := range order {
			if r, ok := find(t, g, "max"); ok {
				peak = math.Max(peak, r.AchievedRPS)
			}
		}
		if peak == 0 {
			fmt.Fprintf(&s, `<text x="%d" y="%d" fill="#555">no max-throughput measurement</text>`+"\n", rightX, py+plotHeight/2)
			continue
		}
		step := niceStep(peak / 4)
		dmax := math.Ceil(peak*1.15/step) * step // headroom for the value above the tallest bar
		axes(&s, rightX, py, rightW, "calls/s")
		for v := 0.0; v <= dmax*1.001; v += step {
			yy := float64(py+plotHeight) - v/dmax*plotHeight
			fmt.Fprintf(&s, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end" fill="#333">%s</text>`+"\n", rightX, yy, rightX+rightW, yy, rightX-6, yy+4, num(v))
		}
		slot := float64(rightW) / float64(len(order))
		for ti, t := range order {
			gx := float64(rightX) + float64(ti)*slot
			fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", gx+slot/2, py+plotHeight+16, esc(t))
			r, ok := find(t, g, "max")
			if !ok {
				continue
			}
			h := r.AchievedRPS / dmax * plotHeight
			fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.0f calls/s</title></rect>`+"\n",
				gx+slot*0.15, float64(py+plotHeight)-h, slot*0.7, h, targetColour[t], esc(t), esc(label), r.AchievedRPS)
			fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text>`+"\n", gx+slot/2, float64(py+plotHeight)-h-4, num(r.AchievedRPS))
			if r.Errors > 0 {
				fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle" font-size="10" fill="#b00">%d errors</text>`+"\n", gx+slot/2, py+plotHeight+29, r.Errors)
			}
		}
	}
	s.WriteString("</svg>\n")
	return s.String(), nil
}

func axes(s *strings.Builder, x, y, w int, unit string) {
	fmt.Fprintf(s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n",
		x, y, x, y+plotHeight, x, y+plotHeight, x+w, y+plotHeight)
	fmt.Fprintf(s, `<text x="%d" y="%d" fill="#333" font-size="11">%s</text>`+"\n", x+6, y-4, unit)
}

// niceStep rounds v up to 1, 2 or 5 × a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// num prints a value compactly: 0.25, 3.1, 48, 12k.
func num(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.1fk", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	case v >= 0.1:
		return fmt.Sprintf("%.2f", v)
	case v > 0:
		return fmt.Sprintf("%.3f", v)
	}
	return "0"
}

func size(b int) string {
	if b >= 1024 && b%1024 == 0 {
		return fmt.Sprintf("%d KiB", b/1024)
	}
	return fmt.Sprintf("%d B", b)
}

func esc(s string) string { return html.EscapeString(s) }
