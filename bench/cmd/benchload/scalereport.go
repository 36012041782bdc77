package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// scaleReportCmd renders the scale bench's results directory (raw.jsonl
// from run, import.jsonl, coldstart.jsonl, storm.jsonl, meta.txt) as
// Markdown into DIR/scale.md and stdout.
func scaleReportCmd(args []string) error {
	fs := flag.NewFlagSet("scalereport", flag.ExitOnError)
	dir := fs.String("dir", "bench/results/scale", "results directory")
	_ = fs.Parse(args)
	var b strings.Builder
	if meta, err := readMeta(filepath.Join(*dir, "meta.txt")); err == nil {
		for _, m := range meta {
			fmt.Fprintf(&b, "- %s: %s\n", m.k, m.v)
		}
		b.WriteString("\n")
	}
	var imports []ImportResult
	var ramps []RampResult
	var drains []DrainResult
	if err := readLines(filepath.Join(*dir, "import.jsonl"), &imports); err != nil {
		return err
	}
	if err := readLines(filepath.Join(*dir, "coldstart.jsonl"), &ramps); err != nil {
		return err
	}
	if err := readLines(filepath.Join(*dir, "storm.jsonl"), &drains); err != nil {
		return err
	}
	var rs []Result
	if all, err := readResults(filepath.Join(*dir, "raw.jsonl")); err == nil {
		rs = merge(all)
	} else if !os.IsNotExist(err) && !strings.HasPrefix(err.Error(), "no results") {
		return err
	}
	sizes := map[int]bool{}
	for _, r := range rs {
		sizes[r.Tenants] = true
	}
	var ns []int
	for n := range sizes {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	if len(ns) > 0 {
		b.WriteString("| tenants | import | bare req/s | lsproxy req/s | ratio | CPU/req vs bare | p99 at half bare rate, bare / lsproxy | lsproxy RSS peak / end | store cmds per request (closed; rate) | cold start: ready / first 200 / full speed | store reads/s in the ramp (peak) | outside load, cores |\n")
		b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	}
	for _, n := range ns {
		var bc, lc, br, lr *Result
		for i := range rs {
			r := &rs[i]
			if r.Tenants != n {
				continue
			}
			switch {
			case r.Target == baseline && r.Mode == "closed":
				bc = r
			case r.Target == baseline:
				br = r
			case r.Mode == "closed":
				lc = r
			default:
				lr = r
			}
		}
		imp := "–"
		for _, im := range imports {
			if im.Tenants == n && im.Label == fmt.Sprint(n) {
				imp = fmt.Sprintf("%s/s (%.0f s)", thousands(im.PerSecond), im.Seconds)
			}
		}
		cell := func(f func() string, rs ...*Result) string {
			for _, r := range rs {
				if r == nil {
					return "–"
				}
			}
			return f()
		}
		ratio := cell(func() string { return f2(lc.RPS / bc.RPS) }, bc, lc)
		cpu := cell(func() string { return f2(lc.CPUMicrosPerReq / bc.CPUMicrosPerReq) }, bc, lc)
		p99 := cell(func() string { return fmt.Sprintf("%s / %s ms", f2(br.P99Ms), f2(lr.P99Ms)) }, br, lr)
		rss := cell(func() string {
			end := lc.RSSKiB
			if lr != nil {
				end = lr.RSSKiB
			}
			return fmt.Sprintf("%.0f / %.0f MiB", float64(max(lc.PeakRSSKiB, peakOf(lr)))/1024, float64(end)/1024)
		}, lc)
		cmds := cell(func() string {
			return fmt.Sprintf("%.4f; %s", perReq(lc), cell(func() string { return fmt.Sprintf("%.4f", perReq(lr)) }, lr))
		}, lc)
		cold, reads := "–", "–"
		for _, rm := range ramps {
			if rm.Tenants == n {
				fs := "not within the ramp"
				if rm.FullSpeedMs >= 0 {
					fs = fmt.Sprintf("%.1f s", rm.FullSpeedMs/1000)
				}
				cold = fmt.Sprintf("%.0f ms / %.0f ms / %s", rm.ReadyMs, rm.FirstOKMs, fs)
				reads = fmt.Sprintf("%s (%s cmds/s)", thousands(rm.PeakReadsPS), thousands(rm.PeakStoreCmdsPS))
			}
		}
		foreign := cell(func() string { return fmt.Sprintf("%s / %s", f2(bc.ForeignCPU), f2(lc.ForeignCPU)) }, bc, lc)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			thousands(float64(n)), imp, cell(func() string { return thousands(bc.RPS) }, bc), cell(func() string { return thousands(lc.RPS) }, lc),
			ratio, cpu, p99, rss, cmds, cold, reads, foreign)
	}
	if len(ramps) > 0 {
		b.WriteString("\nCold start, per second after the start (req/s; store commands/s / of which HMGET reads; RSS MiB; replica cores / outside-load cores):\n\n")
		for _, rm := range ramps {
			fmt.Fprintf(&b, "- %s tenants (full speed = %.0f %% of %s req/s):", thousands(float64(rm.Tenants)), 100*rm.Frac, thousands(rm.FullRPS))
			for _, w := range rm.Windows {
				fmt.Fprintf(&b, " %.0fs %s; %s/%s; %.0f; %s/%s |", w.T, thousands(w.RPS), thousands(w.StoreCmdsPS), thousands(w.StoreReadsPS), float64(w.RSSKiB)/1024, f2(w.ProxyCores), f2(w.ForeignCores))
			}
			b.WriteString("\n")
		}
	}
	if len(drains) > 0 {
		b.WriteString("\n| storm | drained in | first refresh | refreshes/s | refreshes / token requests | rejected / reuse | store cmds per refresh |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, d := range drains {
			drained := "not within the timeout"
			if d.DrainS >= 0 {
				drained = fmt.Sprintf("%.1f s", d.DrainS)
			}
			fmt.Fprintf(&b, "| %s | %s | %.1f s | %s | %s / %s | %d / %d | %.1f |\n", d.Label, drained, d.FirstRefreshS, thousands(d.PerSecond),
				thousands(float64(d.Refreshes)), thousands(float64(d.TokenRequests)), d.RefreshRejected, d.ReuseDetected, d.CmdsPerRefresh)
		}
	}
	if len(imports) > 0 {
		b.WriteString("\n| import | tenants | seconds | tenants/s | requests × lines | in flight |\n|---|---:|---:|---:|---:|---:|\n")
		for _, im := range imports {
			fmt.Fprintf(&b, "| %s | %s | %.1f | %s | %d × %d | %d |\n", im.Label, thousands(float64(im.Tenants)), im.Seconds, thousands(im.PerSecond), im.Requests, im.Batch, im.Concurrency)
		}
	}
	out := b.String()
	fmt.Print(out)
	return os.WriteFile(filepath.Join(*dir, "scale.md"), []byte(out), 0o644)
}

func peakOf(r *Result) int64 {
	if r == nil {
		return 0
	}
	return r.PeakRSSKiB
}

func perReq(r *Result) float64 {
	if r == nil || r.RedisCmdsPerReq == nil {
		return 0
	}
	return *r.RedisCmdsPerReq
}

// readLines appends every JSON line of path to *dst; a missing file is no
// lines.
func readLines[T any](path string, dst *[]T) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		*dst = append(*dst, v)
	}
	return sc.Err()
}
