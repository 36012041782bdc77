package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	docBegin = "<!-- bench:results:begin -->"
	docEnd   = "<!-- bench:results:end -->"
	baseline = "bare"
)

// halfRateCmd prints half the closed-loop requests/s of a target in a
// scenario (its slices merged): the fixed rate of the latency measurements.
func halfRateCmd(args []string) error {
	fs := flag.NewFlagSet("halfrate", flag.ExitOnError)
	in := fs.String("in", "bench/results/raw.jsonl", "raw results")
	scenario := fs.String("scenario", "", "scenario")
	target := fs.String("target", baseline, "target")
	_ = fs.Parse(args)
	rs, err := readResults(*in)
	if err != nil {
		return err
	}
	r := find(merge(rs), *scenario, *target, "closed")
	if r == nil {
		return fmt.Errorf("no closed-loop result for %s / %s", *scenario, *target)
	}
	fmt.Println(int(r.RPS / 2))
	return nil
}

// cleanLoad is the outside load (cores) up to which a slice counts as clean.
const cleanLoad = 0.25

// merge combines the slices of each (scenario, target, mode) measurement.
// When a measurement has clean slices (outside load up to cleanLoad), only
// those are used; otherwise all of them.
func merge(all []Result) []Result {
	hasClean := map[[3]string]bool{}
	for _, r := range all {
		if r.ForeignCPU <= cleanLoad {
			hasClean[[3]string{r.Scenario, r.Target, r.Mode}] = true
		}
	}
	var rs []Result
	measured := map[[3]string]int{}
	for _, r := range all {
		k := [3]string{r.Scenario, r.Target, r.Mode}
		measured[k] += max(1, r.Attempts)
		if !hasClean[k] || r.ForeignCPU <= cleanLoad {
			rs = append(rs, r)
		}
	}
	// Slots in order of first appearance in the run.
	idx := map[[3]string]int{}
	n := 0
	for _, r := range all {
		k := [3]string{r.Scenario, r.Target, r.Mode}
		if _, ok := idx[k]; !ok {
			idx[k] = n
			n++
		}
	}
	out := make([]Result, n)
	seen := make([]bool, n)
	hs := map[int]*hist{}
	for _, r := range rs {
		k := [3]string{r.Scenario, r.Target, r.Mode}
		i := idx[k]
		if !seen[i] {
			seen[i] = true
			c := r
			c.Statuses, c.RedisCommandStats = map[string]int64{}, nil
			c.Requests, c.OK, c.Errors, c.DurationS, c.CPUSeconds, c.ClientCPU, c.UpstreamCPU = 0, 0, 0, 0, 0, 0, 0
			c.MachineCPUBusy, c.RedisCommands, c.RedisCmdsPerReq, c.TokenRequests, c.Refreshes, c.PeakRSSKiB = 0, 0, nil, 0, 0, 0
			c.AuxCPU, c.ForeignCPU, c.Attempts = 0, 0, 0
			out[i] = c
			hs[i] = &hist{}
		}
		m := &out[i]
		m.Slices++
		m.Requests += r.Requests
		m.OK += r.OK
		m.Errors += r.Errors
		for k, v := range r.Statuses {
			m.Statuses[k] += v
		}
		m.MachineCPUBusy += r.MachineCPUBusy * r.DurationS // weighted; divided below
		m.DurationS += r.DurationS
		m.CPUSeconds += r.CPUSeconds
		m.ClientCPU += r.ClientCPU
		m.UpstreamCPU += r.UpstreamCPU
		m.AuxCPU += r.AuxCPU
		m.ForeignCPU += r.ForeignCPU * r.DurationS // weighted; divided below
		m.Attempts = measured[k]
		m.PeakRSSKiB = max(m.PeakRSSKiB, r.PeakRSSKiB)
		m.TokenRequests += r.TokenRequests
		m.Refreshes += r.Refreshes
		if r.RedisCommandStats != nil {
			if m.RedisCommandStats == nil {
				m.RedisCommandStats = map[string]int64{}
			}
			for k, v := range r.RedisCommandStats {
				m.RedisCommandStats[k] += v
			}
			m.RedisCommands += r.RedisCommands
			zero := 0.0
			m.RedisCmdsPerReq = &zero
		}
		for _, b := range r.Histogram {
			h := hs[i]
			j := histIndex(b[0])
			h.counts[j] += b[1]
			h.n += b[1]
		}
		hs[i].sum += int64(r.MeanMs * 1000 * float64(r.Requests))
		hs[i].max = max(hs[i].max, int64(r.MaxMs*1000))
	}
	for i := range out {
		m, h := &out[i], hs[i]
		if m.DurationS > 0 {
			m.MachineCPUBusy /= m.DurationS
			m.ForeignCPU /= m.DurationS
			m.RPS = float64(m.Requests) / m.DurationS
		}
		m.P50Ms, m.P90Ms = h.quantile(0.50)/1000, h.quantile(0.90)/1000
		m.P99Ms, m.P999Ms = h.quantile(0.99)/1000, h.quantile(0.999)/1000
		m.MaxMs = float64(h.max) / 1000
		m.Histogram = h.buckets()
		if m.Requests > 0 {
			m.MeanMs = float64(h.sum) / float64(m.Requests) / 1000
			m.CPUMicrosPerReq = m.CPUSeconds / float64(m.Requests) * 1e6
			if m.RedisCmdsPerReq != nil {
				v := float64(m.RedisCommands) / float64(m.Requests)
				m.RedisCmdsPerReq = &v
			}
		}
	}
	return out
}

// reportCmd merges the slices in DIR/raw.jsonl into DIR/results.jsonl and
// renders them, DIR/gobench.txt and DIR/meta.txt into DIR/results.md and
// DIR/chart.svg, and with -doc replaces the part of that
// file between the bench:results markers.
func reportCmd(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", "bench/results", "results directory")
	doc := fs.String("doc", "", "markdown file whose marked section is replaced")
	chartRel := fs.String("doc-chart", "../bench/results/chart.svg", "chart path as linked from -doc")
	_ = fs.Parse(args)

	raw, err := readResults(filepath.Join(*dir, "raw.jsonl"))
	if err != nil {
		return err
	}
	results := merge(raw)
	var merged strings.Builder
	for _, r := range results {
		line, _ := json.Marshal(r)
		merged.Write(append(line, '\n'))
	}
	if err := os.WriteFile(filepath.Join(*dir, "results.jsonl"), []byte(merged.String()), 0o644); err != nil {
		return err
	}
	meta, _ := readMeta(filepath.Join(*dir, "meta.txt"))
	gobench, _ := os.ReadFile(filepath.Join(*dir, "gobench.txt"))
	benches := parseGoBench(string(gobench))

	svg := chart(results)
	if err := os.WriteFile(filepath.Join(*dir, "chart.svg"), []byte(svg), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "results.md"), []byte(render(results, meta, benches, "chart.svg")), 0o644); err != nil {
		return err
	}
	if *doc != "" {
		b, err := os.ReadFile(*doc)
		if err != nil {
			return err
		}
		s := string(b)
		i, j := strings.Index(s, docBegin), strings.Index(s, docEnd)
		if i < 0 || j < i {
			return fmt.Errorf("%s has no %s … %s section", *doc, docBegin, docEnd)
		}
		s = s[:i+len(docBegin)] + "\n" + render(results, meta, benches, *chartRel) + s[j:]
		if err := os.WriteFile(*doc, []byte(s), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// order returns the scenarios and targets in order of first appearance.
func order(rs []Result) (scenarios, targets []string) {
	seenS, seenT := map[string]bool{}, map[string]bool{}
	for _, r := range rs {
		if !seenS[r.Scenario] {
			seenS[r.Scenario] = true
			scenarios = append(scenarios, r.Scenario)
		}
		if !seenT[r.Target] {
			seenT[r.Target] = true
			targets = append(targets, r.Target)
		}
	}
	return
}

func find(rs []Result, scenario, target, mode string) *Result {
	for i := range rs {
		if rs[i].Scenario == scenario && rs[i].Target == target && rs[i].Mode == mode {
			return &rs[i]
		}
	}
	return nil
}

// base returns the baseline result for a scenario: the bare proxy in the same
// scenario, else in the first scenario that has one.
func base(rs []Result, scenario, mode string) *Result {
	if b := find(rs, scenario, baseline, mode); b != nil {
		return b
	}
	for _, r := range rs {
		if r.Target == baseline && r.Mode == mode {
			return find(rs, r.Scenario, baseline, mode)
		}
	}
	return nil
}

func f0(v float64) string  { return strconv.FormatFloat(v, 'f', 0, 64) }
func f2(v float64) string  { return strconv.FormatFloat(v, 'f', 2, 64) }
func f3(v float64) string  { return strconv.FormatFloat(v, 'f', 3, 64) }
func pct(v float64) string { return strconv.FormatFloat(100*v, 'f', 0, 64) + " %" }

func thousands(v float64) string {
	s := f0(v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func redisCell(r *Result) string {
	if r.RedisCmdsPerReq == nil {
		return "–"
	}
	return strconv.FormatFloat(*r.RedisCmdsPerReq, 'f', 4, 64) + " (" + strconv.FormatInt(r.RedisCommands, 10) + ")"
}

func refreshCell(r *Result) string {
	if !r.EmulatorChecked {
		return "–"
	}
	return strconv.FormatInt(r.Refreshes, 10)
}

func render(rs []Result, meta []kv, benches []goBench, chartPath string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	scenarios, targets := order(rs)

	w("\n![requests/s, CPU per request and p99 latency per proxy](%s)\n\n", chartPath)
	if len(meta) > 0 {
		w("Run:")
		for i, m := range meta {
			sep := ";"
			if i == len(meta)-1 {
				sep = "."
			}
			w(" %s: %s%s", m.k, m.v, sep)
		}
		w("\n\n")
	}

	w("**Saturation** (closed loop: a fixed number of clients sending back to back; ratios to the bare ReverseProxy of the same scenario, or of the first scenario when one has none)\n\n")
	w("| scenario | proxy | req/s | × bare | p50 ms | p90 ms | p99 ms | CPU µs/req | × bare | peak RSS MiB | Redis cmds/req (total) | refreshes | errors |\n")
	w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range scenarios {
		bs := base(rs, s, "closed")
		for _, t := range targets {
			r := find(rs, s, t, "closed")
			if r == nil {
				continue
			}
			ratio, cpuRatio := "–", "–"
			if bs != nil && bs.RPS > 0 && bs.CPUMicrosPerReq > 0 {
				ratio = f2(r.RPS / bs.RPS)
				cpuRatio = f2(r.CPUMicrosPerReq / bs.CPUMicrosPerReq)
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", s, t, thousands(r.RPS), ratio,
				f3(r.P50Ms), f3(r.P90Ms), f3(r.P99Ms), f0(r.CPUMicrosPerReq), cpuRatio, f0(float64(r.PeakRSSKiB)/1024),
				redisCell(r), refreshCell(r), r.Errors)
		}
	}

	w("\n**Latency at a fixed rate** (open loop at half the bare proxy's saturation rate, the first scenario's when one has no bare proxy; latency counted from each request's scheduled time)\n\n")
	w("| scenario | proxy | rate req/s | p50 ms | p90 ms | p99 ms | added p99 ms | CPU µs/req | × bare | Redis cmds/req (total) | refreshes | errors |\n")
	w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range scenarios {
		bs := base(rs, s, "rate")
		for _, t := range targets {
			r := find(rs, s, t, "rate")
			if r == nil {
				continue
			}
			added, cpuRatio := "–", "–"
			if bs != nil {
				added = f3(r.P99Ms - bs.P99Ms)
				if bs.CPUMicrosPerReq > 0 {
					cpuRatio = f2(r.CPUMicrosPerReq / bs.CPUMicrosPerReq)
				}
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", s, t, thousands(r.Rate),
				f3(r.P50Ms), f3(r.P90Ms), f3(r.P99Ms), added, f0(r.CPUMicrosPerReq), cpuRatio, redisCell(r), refreshCell(r), r.Errors)
		}
	}

	// Redis command breakdown.
	var redisRows []string
	for _, r := range rs {
		if len(r.RedisCommandStats) == 0 {
			continue
		}
		var parts []string
		for _, k := range sortedKeys(r.RedisCommandStats) {
			parts = append(parts, fmt.Sprintf("%s %d", k, r.RedisCommandStats[k]))
		}
		scan, reqPath := splitRedis(&r)
		redisRows = append(redisRows, fmt.Sprintf("| %s | %s | %s | %s | %s | %d | %d |", r.Scenario, r.Target, r.Mode, thousands(float64(r.Requests)), strings.Join(parts, ", "), scan, reqPath))
	}
	if len(redisRows) > 0 {
		w("\n**Redis commands during each measurement** (`INFO commandstats` before and after; INFO itself excluded; PING, the keep-alive of the change-notification connection, shown but not counted per request. Background: the refresher's scans (due index: ZRANGEBYSCORE per shard; full read: SMEMBERS per shard, one EXISTS and one HMGET per tenant) and the cache re-reads after `cache_ttl` (HMGET; since stale-while-revalidate no request waits for them); the rest, refreshes, is on the request path)\n\n")
		w("| scenario | proxy | mode | requests | commands | of which background | request path |\n|---|---|---|---:|---|---:|---:|\n")
		for _, row := range redisRows {
			w("%s\n", row)
		}
	}

	w("\n**Machine load** (CPU seconds during each measurement: the proxy, the load generator, the upstream, Redis and token endpoint; all cores busy; cores used by processes outside the setup or stolen by the hypervisor; slices measured and slices used: a slice is measured again, at most once, when outside load exceeds 0.25 cores, and when a measurement has slices at or below 0.25 cores only those are used)\n\n")
	w("| scenario | proxy | mode | proxy CPU s | client CPU s | upstream CPU s | Redis+token CPU s | machine busy | outside load, cores | slices measured/used |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range scenarios {
		for _, mode := range []string{"closed", "rate"} {
			for _, t := range targets {
				if r := find(rs, s, t, mode); r != nil {
					w("| %s | %s | %s | %s | %s | %s | %s | %s %% | %s | %d/%d |\n", s, t, mode, f2(r.CPUSeconds), f2(r.ClientCPU), f2(r.UpstreamCPU),
						f2(r.AuxCPU), f0(r.MachineCPUBusy), f2(r.ForeignCPU), r.Attempts, r.Slices)
				}
			}
		}
	}

	if len(benches) > 0 {
		w("\n**Go benchmarks** (`go test -run '^$' -bench . -benchmem -benchtime 500ms ./proxy ./auth`)\n\n")
		w("| benchmark | ns/op | B/op | allocs/op | other |\n|---|---:|---:|---:|---|\n")
		for _, g := range benches {
			ns, _ := g.metric("ns/op")
			bo, _ := g.metric("B/op")
			al, _ := g.metric("allocs/op")
			var other []string
			for _, m := range g.metrics {
				switch m.k {
				case "ns/op", "B/op", "allocs/op":
					continue
				}
				other = append(other, m.v+" "+m.k)
			}
			w("| %s | %s | %s | %s | %s |\n", g.name, ns, bo, al, strings.Join(other, ", "))
		}
	}

	w("\n**Targets** (reported, not asserted)\n\n")
	for _, line := range targetLines(rs, benches) {
		w("- %s\n", line)
	}
	return b.String()
}

// splitRedis attributes a measurement's Redis commands: in the background
// the refresher's scans (ZRANGEBYSCORE over the due index; SMEMBERS, one
// EXISTS and one HMGET per tenant for a full read) and the cache's
// re-reads after cache_ttl (HMGETs outside a refresh: stale-while-
// revalidate runs them off the request path); the rest (refreshes: lock,
// re-read, mark, write, publish) is on the request path. A refresh's own
// HMGETs (about 3: before the lock, under it, after the write) are counted
// there by the number of refresh writes (EVALSHA of the CAS script, 2
// per refresh).
func splitRedis(r *Result) (background, requestPath int64) {
	st := r.RedisCommandStats
	refreshReads := min(st["hmget"], 3*st["evalsha"]/2)
	background = st["smembers"] + st["exists"] + st["zrangebyscore"] + st["hmget"] - refreshReads
	return background, r.RedisCommands - background
}

func targetLines(rs []Result, benches []goBench) []string {
	var out []string
	verdict := func(ok bool) string {
		if ok {
			return "**met**"
		}
		return "**not met**"
	}
	scenarios, targets := order(rs)
	for _, s := range scenarios {
		bs := find(rs, s, baseline, "closed")
		if bs == nil || bs.Tenants < 10000 {
			continue
		}
		for _, t := range targets {
			r := find(rs, s, t, "closed")
			if r == nil || bs == nil || !strings.HasPrefix(t, "lsproxy") {
				continue
			}
			q := r.RPS / bs.RPS
			out = append(out, fmt.Sprintf("Throughput ≥ 90 %% of the bare proxy with %s tenants — %s: %s → %s", thousands(float64(r.Tenants)), t, pct(q), verdict(q >= 0.9)))
		}
	}
	for _, s := range scenarios {
		bs := base(rs, s, "rate")
		for _, t := range targets {
			r := find(rs, s, t, "rate")
			if r == nil || bs == nil || !strings.HasPrefix(t, "lsproxy") || r.Refreshes > 0 {
				continue
			}
			d := r.P99Ms - bs.P99Ms
			out = append(out, fmt.Sprintf("Added p99 ≤ 1 ms at half the bare saturation rate — %s, %s: %+.3f ms → %s", s, t, d, verdict(d <= 1)))
		}
	}
	for _, r := range rs {
		if r.RedisCmdsPerReq == nil || r.Refreshes > 0 {
			continue
		}
		scan, reqPath := splitRedis(&r)
		if strings.Contains(r.Target, "governed") && !strings.Contains(r.Target, "ungoverned") {
			// Issue 13: a governed request costs at most one store round
			// trip, one EVALSHA (the commands inside the script are counted
			// by Redis too, but travel no network).
			trips := r.RedisCommandStats["evalsha"] + r.RedisCommandStats["eval"]
			out = append(out, fmt.Sprintf("Store round trips of the governor per governed request ≤ 1 — %s, %s, %s: %.4f (%d EVALSHA / %d requests; all commands %d, in the script or the token path) → %s",
				r.Scenario, r.Target, r.Mode, float64(trips)/float64(max(r.Requests, 1)), trips, r.Requests, r.RedisCommands, verdict(trips <= r.Requests)))
			continue
		}
		out = append(out, fmt.Sprintf("Redis commands per proxied request, valid tokens — %s, %s, %s: %.4f (%d commands / %d requests; background refresher scan %d, request path %d) → %s",
			r.Scenario, r.Target, r.Mode, *r.RedisCmdsPerReq, r.RedisCommands, r.Requests, scan, reqPath, verdict(reqPath == 0)))
	}
	for _, g := range benches {
		if v, ok := g.metric("B/tenant"); ok {
			n, _ := strconv.ParseFloat(v, 64)
			line := fmt.Sprintf("Memory per cached tenant ≤ 1 KiB — %s: %s B", g.name, f0(n))
			if x, ok := g.metric("B/tenant-excl-token"); ok {
				m, _ := strconv.ParseFloat(x, 64)
				line += fmt.Sprintf(" (%s B without the token's own bytes)", f0(m))
			}
			out = append(out, line+" → "+verdict(n <= 1024))
		}
	}
	return out
}
