package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The scale bench's subcommands (bench/scale.sh): bulkimport loads many
// tenants through POST /admin/import, ramp measures a replica's cold
// start, drain times a refresh storm at the emulator.

// appendJSON writes v as one line to path (when set) and to stdout.
func appendJSON(path string, v any) error {
	line, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(append(line, '\n'))
	return err
}

// ImportResult is bulkimport's JSON line.
type ImportResult struct {
	Label         string  `json:"label,omitempty"`
	Tenants       int     `json:"tenants"`
	Seconds       float64 `json:"seconds"`     // the POST /admin/import requests only
	PerSecond     float64 `json:"per_s"`       // tenants per second through the admin API
	GrantsSeconds float64 `json:"grants_s"`    // time spent fetching emulator grants (-grants)
	TokenLen      int     `json:"token_len"`   // synthetic access token length (without -grants)
	Batch         int     `json:"batch"`       // lines per request
	Requests      int     `json:"requests"`    // POSTs sent
	Concurrency   int     `json:"concurrency"` // POSTs in flight
	Created       int     `json:"created"`     // lines answered created or updated
	LineErrors    int     `json:"line_errors"` // lines answered error
	FirstError    string  `json:"first_error,omitempty"`
}

// bulkImportCmd imports -tenants tenants with POST /admin/import, -batch
// NDJSON lines per request, -concurrency requests at once. Tokens are
// synthetic, -token-len bytes (a K-Series JWT is about 1,200), or with
// -grants live grants of the emulator (fetched before the import is timed).
func bulkImportCmd(args []string) error {
	fs := flag.NewFlagSet("bulkimport", flag.ExitOnError)
	admin := fs.String("admin", "", "lsproxy control base URL")
	adminToken := fs.String("admin-token", "", "LSPROXY_ADMIN_TOKEN")
	n := fs.Int("tenants", 10000, "number of tenants")
	prefix := fs.String("prefix", "t", "tenant id prefix")
	batch := fs.Int("batch", 5000, "lines per request (the server's limit is 5000)")
	conc := fs.Int("concurrency", 2, "requests in flight")
	tokenLen := fs.Int("token-len", 1200, "synthetic access token length")
	expiresIn := fs.Int("expires-in", 86400, "access token lifetime (seconds) given on import")
	refreshIn := fs.Int("refresh-expires-in", 0, "refresh token lifetime (seconds) given on import; 0: none (within refresh_idle_margin makes every tenant due for the refresher)")
	grants := fs.String("grants", "", "emulator control base URL: import live grants from POST /grant")
	label := fs.String("label", "", "label for the result")
	out := fs.String("out", "", "append the JSON result line to this file")
	_ = fs.Parse(args)
	if *admin == "" || *adminToken == "" {
		return errors.New("-admin and -admin-token are required")
	}
	if *batch < 1 || *conc < 1 || *n < 1 {
		return errors.New("-tenants, -batch and -concurrency must be positive")
	}
	client := &http.Client{Timeout: 5 * time.Minute}
	pad := strings.Repeat("0123456789abcdef", *tokenLen/16+1)
	res := ImportResult{Label: *label, Tenants: *n, TokenLen: *tokenLen, Batch: *batch, Concurrency: *conc}

	var gs []grant
	if *grants != "" {
		res.TokenLen = 0
		t0 := time.Now()
		var err error
		if gs, err = fetchGrants(client, *grants, *prefix, *n, 16); err != nil {
			return err
		}
		res.GrantsSeconds = time.Since(t0).Seconds()
	}

	bodies := make(chan []byte, *conc)
	go func() {
		defer close(bodies)
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		for i := 0; i < *n; {
			b.Reset()
			for j := 0; j < *batch && i < *n; j, i = j+1, i+1 {
				id := tenantID(*prefix, i)
				line := map[string]any{"id": id, "expires_in": *expiresIn}
				if gs != nil {
					line["access_token"], line["refresh_token"] = gs[i].AccessToken, gs[i].RefreshToken
				} else {
					at := "at-" + id + "-"
					line["access_token"], line["refresh_token"] = at+pad[:max(0, *tokenLen-len(at))], "rt-"+id
				}
				if *refreshIn > 0 {
					line["refresh_expires_in"] = *refreshIn
				}
				_ = enc.Encode(line)
			}
			bodies <- bytes.Clone(b.Bytes())
		}
	}()

	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	url := strings.TrimRight(*admin, "/") + "/admin/import"
	start := time.Now()
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for body := range bodies {
				ir, err := postImport(client, url, *adminToken, body)
				mu.Lock()
				res.Requests++
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if ir != nil {
					res.Created += ir.Counts["created"] + ir.Counts["updated"] + ir.Counts["unchanged"]
					for _, r := range ir.Results {
						if r.Status == "error" {
							res.LineErrors++
							if res.FirstError == "" {
								res.FirstError = fmt.Sprintf("line %d (%s): %s", r.Line, r.ID, r.Error)
							}
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.PerSecond = float64(res.Created) / res.Seconds
	fmt.Fprintf(os.Stderr, "benchload bulkimport: %d tenants in %.1f s (%.0f/s, %d requests of %d lines, %d in flight), %d line errors\n",
		res.Created, res.Seconds, res.PerSecond, res.Requests, *batch, *conc, res.LineErrors)
	if err := appendJSON(*out, res); err != nil {
		return err
	}
	if firstErr != nil {
		return firstErr
	}
	if res.LineErrors > 0 || res.Created != *n {
		return fmt.Errorf("%d of %d tenants imported; first error: %s", res.Created, *n, res.FirstError)
	}
	return nil
}

type importAnswer struct {
	Counts  map[string]int `json:"counts"`
	Results []struct {
		Line   int    `json:"line"`
		ID     string `json:"id"`
		Status string `json:"status"`
		Error  string `json:"error"`
	} `json:"results"`
}

func postImport(c *http.Client, url, token string, body []byte) (*importAnswer, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("POST /admin/import: status %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	var ir importAnswer
	if err := json.NewDecoder(resp.Body).Decode(&ir); err != nil {
		return nil, fmt.Errorf("POST /admin/import: %w", err)
	}
	return &ir, nil
}

// fetchGrants issues one emulator grant per tenant, conc at a time.
func fetchGrants(c *http.Client, base, prefix string, n, conc int) ([]grant, error) {
	gs := make([]grant, n)
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				g, err := fetchGrant(c, base, tenantID(prefix, i))
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				gs[i] = g
			}
		}()
	}
	wg.Wait()
	return gs, firstErr
}

// Window is one sampling interval of a ramp.
type Window struct {
	T            float64 `json:"t_s"` // end of the window, seconds since the replica was started
	RPS          float64 `json:"rps"`
	Errors       int64   `json:"errors,omitempty"`
	StoreCmdsPS  float64 `json:"store_cmds_per_s"`  // every Redis command but INFO and PING
	StoreReadsPS float64 `json:"store_reads_per_s"` // HMGET: record reads (request path, refresher)
	RSSKiB       int64   `json:"rss_kib"`
	ProxyCores   float64 `json:"proxy_cores"`   // the replica's CPU
	ForeignCores float64 `json:"foreign_cores"` // processes outside the setup (and steal)
}

// RampResult is ramp's JSON line.
type RampResult struct {
	Label           string   `json:"label,omitempty"`
	Tenants         int      `json:"tenants"`
	ReadyMs         float64  `json:"ready_ms"`      // started → /readyz 200
	FirstOKMs       float64  `json:"first_ok_ms"`   // started → first proxied 200
	FullSpeedMs     float64  `json:"full_speed_ms"` // started → end of the first window at ≥ frac × full rps; -1: never
	FullRPS         float64  `json:"full_rps"`      // the warm replica's closed-loop rps
	Frac            float64  `json:"frac"`
	SteadyRPS       float64  `json:"steady_rps"` // mean of the last 5 windows
	PeakStoreCmdsPS float64  `json:"peak_store_cmds_per_s"`
	PeakReadsPS     float64  `json:"peak_store_reads_per_s"`
	StoreCmds       int64    `json:"store_cmds"`  // during the ramp
	StoreReads      int64    `json:"store_reads"` // HMGET during the ramp
	Requests        int64    `json:"requests"`
	Errors          int64    `json:"errors"`
	PeakRSSKiB      int64    `json:"peak_rss_kib"`
	Windows         []Window `json:"windows"`
}

// rampCmd measures a cold start: it polls -ready-url from the moment the
// replica was started (-started-ns) until it answers 200, then puts the
// closed-loop load on -url at once and samples requests, Redis commands
// and RSS every -window, for -duration.
func rampCmd(args []string) error {
	fs := flag.NewFlagSet("ramp", flag.ExitOnError)
	var o runOpts
	fs.StringVar(&o.url, "url", "", "proxy base URL")
	fs.StringVar(&o.path, "path", "/f/data/businesses", "request path")
	fs.StringVar(&o.header, "tenant-header", "X-Tenant", "tenant header")
	fs.StringVar(&o.prefix, "prefix", "t", "tenant id prefix")
	fs.IntVar(&o.tenants, "tenants", 10, "tenants")
	fs.IntVar(&o.concurrency, "concurrency", 32, "closed-loop clients")
	fs.Float64Var(&o.zipf, "zipf", 1.1, "Zipf exponent of the tenant mix (0: round robin)")
	ready := fs.String("ready-url", "", "readiness URL (/readyz)")
	startedNs := fs.Int64("started-ns", 0, "Unix time in ns when the replica was started (0: now)")
	duration := fs.Duration("duration", 30*time.Second, "how long to load it")
	window := fs.Duration("window", time.Second, "sampling window")
	fullRPS := fs.Float64("full-rps", 0, "a warm replica's closed-loop rps (full speed)")
	frac := fs.Float64("frac", 0.9, "full speed is this fraction of -full-rps")
	timeout := fs.Duration("timeout", time.Minute, "give up waiting for readiness after this long")
	redisAddr := fs.String("redis", "", "host:port of the store")
	pid := fs.Int("pid", 0, "the replica's pid (RSS, CPU)")
	auxPids := fs.String("aux-pids", "", "comma-separated pids of the rest of the setup (upstream, Redis, token endpoint): outside load is what they, the replica and this client do not use")
	label := fs.String("label", "", "label for the result")
	out := fs.String("out", "", "append the JSON result line to this file")
	_ = fs.Parse(args)
	if o.url == "" || *ready == "" {
		return errors.New("-url and -ready-url are required")
	}
	if o.zipf != 0 && o.zipf <= 1 {
		return errors.New("-zipf must be above 1 (or 0)")
	}
	started := time.Now()
	if *startedNs > 0 {
		started = time.Unix(0, *startedNs)
	}
	since := func() float64 { return float64(time.Since(started).Microseconds()) / 1000 }
	res := RampResult{Label: *label, Tenants: o.tenants, FullRPS: *fullRPS, Frac: *frac, FullSpeedMs: -1}

	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(*timeout)
	for {
		resp, err := c.Get(*ready)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %v (last error: %v)", *ready, *timeout, err)
		}
		time.Sleep(5 * time.Millisecond) // polling a process that gives no other signal
	}
	res.ReadyMs = since()

	l := newLoader(o)
	var ok, bad atomic.Int64
	var firstOK atomic.Int64 // µs since started
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := l.picker()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if l.do(false, next()) {
					if ok.Add(1) == 1 {
						firstOK.Store(time.Since(started).Microseconds())
					}
				} else {
					bad.Add(1)
				}
			}
		}()
	}
	pids := []int{}
	if *pid > 0 {
		pids = append(pids, *pid)
	}
	aux, err := parsePids(*auxPids)
	if err != nil {
		return err
	}
	setup := append(append([]int{os.Getpid()}, pids...), aux...)
	busy := func() (machine, proxy, ours float64) {
		b, _ := machineTicks()
		p, _ := cpuSeconds(pids)
		o, _ := cpuSeconds(setup)
		return float64(b) / clockTicks, p, o
	}
	mach0, proxy0, ours0 := busy()
	cmds := func() (all, reads int64) {
		if *redisAddr == "" {
			return 0, 0
		}
		st, err := commandStats(*redisAddr)
		if err != nil {
			return 0, 0
		}
		for k, v := range st {
			if k != "info" && k != "ping" {
				all += v
			}
		}
		return all, st["hmget"]
	}
	all0, reads0 := cmds()
	prevAll, prevReads, prevOK, prevBad := all0, reads0, int64(0), int64(0)
	prevT := time.Now()
	end := prevT.Add(*duration)
	tick := time.NewTicker(*window)
	for now := range tick.C {
		a, r := cmds()
		mach1, proxy1, ours1 := busy()
		nOK, nBad := ok.Load(), bad.Load()
		dt := now.Sub(prevT).Seconds()
		w := Window{T: since() / 1000, RPS: float64(nOK-prevOK) / dt, Errors: nBad - prevBad,
			StoreCmdsPS: float64(a-prevAll) / dt, StoreReadsPS: float64(r-prevReads) / dt, RSSKiB: procStatusKiB(pids, "VmRSS:"),
			ProxyCores: (proxy1 - proxy0) / dt, ForeignCores: max(0, (mach1-mach0)-(ours1-ours0)) / dt}
		mach0, proxy0, ours0 = mach1, proxy1, ours1
		res.Windows = append(res.Windows, w)
		if res.FullSpeedMs < 0 && *fullRPS > 0 && w.RPS >= *frac**fullRPS {
			res.FullSpeedMs = w.T * 1000
		}
		res.PeakStoreCmdsPS = max(res.PeakStoreCmdsPS, w.StoreCmdsPS)
		res.PeakReadsPS = max(res.PeakReadsPS, w.StoreReadsPS)
		prevAll, prevReads, prevOK, prevBad, prevT = a, r, nOK, nBad, now
		if !now.Before(end) {
			break
		}
	}
	tick.Stop()
	close(stop)
	wg.Wait()
	res.Requests, res.Errors = ok.Load(), bad.Load()
	res.FirstOKMs = float64(firstOK.Load()) / 1000
	res.StoreCmds, res.StoreReads = prevAll-all0, prevReads-reads0
	res.PeakRSSKiB = peakRSS(pids)
	k := min(5, len(res.Windows))
	for _, w := range res.Windows[len(res.Windows)-k:] {
		res.SteadyRPS += w.RPS / float64(k)
	}
	fmt.Fprintf(os.Stderr, "benchload ramp: ready %.0f ms, first 200 %.0f ms, full speed (%.0f%% of %.0f rps) %.0f ms, steady %.0f rps, peak store %.0f cmds/s (%.0f reads/s), %d errors\n",
		res.ReadyMs, res.FirstOKMs, 100**frac, *fullRPS, res.FullSpeedMs, res.SteadyRPS, res.PeakStoreCmdsPS, res.PeakReadsPS, res.Errors)
	return appendJSON(*out, res)
}

// DrainResult is drain's JSON line.
type DrainResult struct {
	Label           string    `json:"label,omitempty"`
	Want            int64     `json:"want"`
	Refreshes       int64     `json:"refreshes"`
	TokenRequests   int64     `json:"token_requests"`
	RefreshRejected int64     `json:"refresh_rejected"`
	ReuseDetected   int64     `json:"reuse_detected"`
	FirstRefreshS   float64   `json:"first_refresh_s"` // started → first refresh seen
	DrainS          float64   `json:"drain_s"`         // started → want refreshes; -1: not within -timeout
	PerSecond       float64   `json:"refreshes_per_s"` // refreshes / (drain − first refresh)
	StoreCmds       int64     `json:"store_cmds"`      // Redis commands from start to drained (listing, reads, claims, refreshes)
	CmdsPerRefresh  float64   `json:"store_cmds_per_refresh"`
	Series          []float64 `json:"refreshes_by_5s"` // cumulative refreshes every 5 s
}

// drainCmd waits until the emulator has answered -want refresh grants
// (counted from its start: a fresh emulator) and reports how long that took
// from -started-ns, the moment the replicas were started.
func drainCmd(args []string) error {
	fs := flag.NewFlagSet("drain", flag.ExitOnError)
	emu := fs.String("emulator-control", "", "emulator control base URL")
	want := fs.Int64("want", 0, "refreshes that drain the storm")
	startedNs := fs.Int64("started-ns", 0, "Unix time in ns when the replicas were started (0: now)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	redisAddr := fs.String("redis", "", "host:port of the store: count commands")
	label := fs.String("label", "", "label for the result")
	out := fs.String("out", "", "append the JSON result line to this file")
	_ = fs.Parse(args)
	if *emu == "" || *want <= 0 {
		return errors.New("-emulator-control and -want are required")
	}
	started := time.Now()
	if *startedNs > 0 {
		started = time.Unix(0, *startedNs)
	}
	var cmds0 int64
	total := func() int64 {
		if *redisAddr == "" {
			return 0
		}
		st, err := commandStats(*redisAddr)
		if err != nil {
			return 0
		}
		var n int64
		for k, v := range st {
			if k != "info" && k != "ping" {
				n += v
			}
		}
		return n
	}
	cmds0 = total()
	res := DrainResult{Label: *label, Want: *want, DrainS: -1}
	nextMark := 5.0
	for {
		s, err := fetchEmuStats(*emu)
		if err != nil {
			return err
		}
		t := time.Since(started).Seconds()
		if s.RefreshGrants > 0 && res.FirstRefreshS == 0 {
			res.FirstRefreshS = t
		}
		for t >= nextMark {
			res.Series = append(res.Series, float64(s.RefreshGrants))
			nextMark += 5
		}
		res.Refreshes, res.TokenRequests, res.RefreshRejected, res.ReuseDetected = s.RefreshGrants, s.TokenRequests, s.RefreshRejected, s.ReuseDetected
		if s.RefreshGrants >= *want {
			res.DrainS = t
			break
		}
		if time.Since(started) > *timeout {
			break
		}
		time.Sleep(100 * time.Millisecond) // polling the emulator's counters
	}
	res.StoreCmds = total() - cmds0
	if res.Refreshes > 0 {
		res.CmdsPerRefresh = float64(res.StoreCmds) / float64(res.Refreshes)
		end := res.DrainS
		if end < 0 {
			end = time.Since(started).Seconds()
		}
		if end > res.FirstRefreshS {
			res.PerSecond = float64(res.Refreshes) / (end - res.FirstRefreshS)
		}
	}
	fmt.Fprintf(os.Stderr, "benchload drain: %d/%d refreshes, first at %.1f s, drained at %.1f s (%.0f/s), %d token requests, %d rejected, %d reuse, %.1f store commands per refresh\n",
		res.Refreshes, res.Want, res.FirstRefreshS, res.DrainS, res.PerSecond, res.TokenRequests, res.RefreshRejected, res.ReuseDetected, res.CmdsPerRefresh)
	return appendJSON(*out, res)
}

// settleCmd waits until the store is quiet: fewer than -below record reads
// (HMGET) per second for -for in a row, at most -timeout. A replica started
// against a large store reads every record once at startup (the
// refresher's first full read); settle lets a steady-state measurement
// start after it.
func settleCmd(args []string) error {
	fs := flag.NewFlagSet("settle", flag.ExitOnError)
	redisAddr := fs.String("redis", "", "host:port of the store")
	below := fs.Float64("below", 100, "reads per second that count as quiet")
	quiet := fs.Duration("for", 3*time.Second, "how long the store must stay quiet")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long (not an error)")
	_ = fs.Parse(args)
	if *redisAddr == "" {
		return errors.New("-redis is required")
	}
	reads := func() (int64, error) {
		st, err := commandStats(*redisAddr)
		return st["hmget"], err
	}
	start := time.Now()
	r0, err := reads()
	if err != nil {
		return err
	}
	first, calm := r0, time.Duration(0)
	for time.Since(start) < *timeout {
		time.Sleep(time.Second) // sampling window
		r1, err := reads()
		if err != nil {
			return err
		}
		if float64(r1-r0) < *below {
			calm += time.Second
		} else {
			calm = 0
		}
		r0 = r1
		if calm >= *quiet {
			fmt.Fprintf(os.Stderr, "benchload settle: store quiet after %.0f s (%d record reads meanwhile)\n", time.Since(start).Seconds(), r1-first)
			return nil
		}
	}
	fmt.Fprintf(os.Stderr, "benchload settle: store still busy after %v (%d record reads meanwhile); measuring anyway\n", *timeout, r0-first)
	return nil
}
