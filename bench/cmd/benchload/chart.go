package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The SVG chart of the report.

// chart draws three panels as SVG: closed-loop requests/s and CPU per
// request, and p99 latency at the fixed rate.
func chart(rs []Result) string {
	scenarios, targets := order(rs)
	palette := []string{"#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e"}
	color := map[string]string{}
	for i, t := range targets {
		color[t] = palette[i%len(palette)]
	}
	const W, H, panelH, top, left, gap, right = 1200, 440, 290, 50, 56, 40, 20
	const panelW = (W - 3*left - 2*gap - right) / 3
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", W, H, W, H)
	w(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")

	panel := func(x0 int, title, mode string, value func(*Result) float64, label func(float64) string) {
		maxV := 0.0
		for _, r := range rs {
			if r.Mode == mode {
				maxV = math.Max(maxV, value(&r))
			}
		}
		if maxV == 0 {
			maxV = 1
		}
		maxV = niceCeil(maxV)
		w(`<text x="%d" y="%d" font-size="12" font-weight="bold">%s</text>`+"\n", x0-left+8, top-28, esc(title))
		for i := 0; i <= 4; i++ {
			y := top + panelH - panelH*i/4
			v := maxV * float64(i) / 4
			w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>`+"\n", x0, y, x0+panelW, y)
			w(`<text x="%d" y="%d" text-anchor="end" fill="#555">%s</text>`+"\n", x0-4, y+4, esc(label(v)))
		}
		w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", x0, top+panelH, x0+panelW, top+panelH)
		groupW := panelW / max(1, len(scenarios))
		barW := (groupW - 12) / max(1, len(targets))
		for gi, s := range scenarios {
			gx := x0 + gi*groupW + 6
			for ti, t := range targets {
				r := find(rs, s, t, mode)
				if r == nil {
					continue
				}
				v := value(r)
				h := int(float64(panelH) * v / maxV)
				x := gx + ti*barW
				w(`<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
					x, top+panelH-h, barW-2, h, color[t], esc(s+", "+t+": "+label(v)))
				w(`<text x="%d" y="%d" text-anchor="middle" font-size="8" fill="#222">%s</text>`+"\n", x+(barW-2)/2, top+panelH-h-3, esc(label(v)))
			}
			for li, line := range strings.SplitN(shortScenario(s), ", ", 2) {
				w(`<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", gx+(groupW-12)/2, top+panelH+15+13*li, esc(line))
			}
		}
	}
	x := left
	panel(x, "Requests/s at saturation (higher is better)", "closed", func(r *Result) float64 { return r.RPS },
		func(v float64) string { return strconv.FormatFloat(v/1000, 'f', 1, 64) + "k" })
	x += panelW + gap + left
	panel(x, "Proxy CPU µs/request at saturation (lower is better)", "closed", func(r *Result) float64 { return r.CPUMicrosPerReq },
		func(v float64) string { return f0(v) })
	x += panelW + gap + left
	panel(x, "p99 ms at half the bare rate (lower is better)", "rate", func(r *Result) float64 { return r.P99Ms },
		func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) })
	lx := left
	for _, t := range targets {
		w(`<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", lx, H-26, color[t])
		w(`<text x="%d" y="%d">%s</text>`+"\n", lx+16, H-16, esc(t))
		lx += 40 + 7*len(t)
	}
	w("</svg>\n")
	return b.String()
}

func shortScenario(s string) string {
	if i := strings.Index(s, " ("); i > 0 {
		return s[:i]
	}
	return s
}

func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func esc(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	return r.Replace(s)
}
