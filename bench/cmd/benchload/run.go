package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Result is one measurement, one JSON line in results.jsonl.
type Result struct {
	Scenario    string           `json:"scenario"`
	Target      string           `json:"target"`
	Mode        string           `json:"mode"` // "closed" or "rate"
	Tenants     int              `json:"tenants"`
	Concurrency int              `json:"concurrency"`
	Rate        float64          `json:"rate,omitempty"` // scheduled requests/s (mode rate)
	DurationS   float64          `json:"duration_s"`
	Requests    int64            `json:"requests"`
	OK          int64            `json:"ok"`
	Errors      int64            `json:"errors"` // transport errors and non-200 answers
	Statuses    map[string]int64 `json:"statuses"`
	RPS         float64          `json:"rps"`
	P50Ms       float64          `json:"p50_ms"`
	P90Ms       float64          `json:"p90_ms"`
	P99Ms       float64          `json:"p99_ms"`
	P999Ms      float64          `json:"p999_ms"`
	MaxMs       float64          `json:"max_ms"`
	MeanMs      float64          `json:"mean_ms"`

	CPUSeconds      float64 `json:"cpu_s"`                // proxy processes, during the window
	CPUMicrosPerReq float64 `json:"cpu_us_per_req"`       // proxy processes
	PeakRSSKiB      int64   `json:"peak_rss_kib"`         // VmHWM, summed over the proxy processes
	RSSKiB          int64   `json:"rss_kib,omitempty"`    // VmRSS at the end, summed over the proxy processes
	ClientCPU       float64 `json:"client_cpu_s"`         // this load generator
	UpstreamCPU     float64 `json:"upstream_cpu_s"`       // the upstream process(es)
	AuxCPU          float64 `json:"aux_cpu_s"`            // Redis, token endpoint
	ForeignCPU      float64 `json:"foreign_cores"`        // cores used by processes outside the setup (and steal)
	Attempts        int     `json:"attempts,omitempty"`   // measurements taken; earlier ones had too much foreign load
	MachineCPUBusy  float64 `json:"machine_cpu_busy_pct"` // all cores, from /proc/stat

	RedisCommands     int64            `json:"redis_commands,omitempty"`
	RedisCmdsPerReq   *float64         `json:"redis_cmds_per_req,omitempty"`
	RedisCommandStats map[string]int64 `json:"redis_command_stats,omitempty"`

	EmulatorChecked bool  `json:"emulator_checked,omitempty"` // the two counts below were taken
	TokenRequests   int64 `json:"token_requests,omitempty"`   // at the emulator during the window
	Refreshes       int64 `json:"refreshes,omitempty"`

	Histogram [][2]int64 `json:"histogram_us"`     // [upper bound µs, count]
	Slices    int        `json:"slices,omitempty"` // measurements merged into this one (report)
}

type runOpts struct {
	url, path, header, prefix string
	tenants, concurrency      int
	duration, warmup          time.Duration
	rate                      float64
	warmPass                  bool
	zipf                      float64 // 0: round robin; > 1: Zipf exponent s
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var o runOpts
	fs.StringVar(&o.url, "url", "", "proxy base URL")
	fs.StringVar(&o.path, "path", "/f/data/businesses", "request path")
	fs.StringVar(&o.header, "tenant-header", "X-Tenant", "tenant header")
	fs.StringVar(&o.prefix, "prefix", "t", "tenant id prefix (as for import)")
	fs.IntVar(&o.tenants, "tenants", 10, "tenants, requested round-robin")
	fs.IntVar(&o.concurrency, "concurrency", 32, "closed loop: concurrent clients; rate mode: max requests in flight")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "closed-loop load before measuring (after one request per tenant)")
	fs.Float64Var(&o.rate, "rate", 0, "fixed request rate per second (open loop); 0 = closed loop")
	fs.BoolVar(&o.warmPass, "warm-pass", true, "request every tenant once before the warm-up; each must answer 200")
	fs.Float64Var(&o.zipf, "zipf", 0, "choose each request's tenant by a Zipf distribution with this exponent s (> 1; tenant 0 the most requested); 0 = round robin")
	scenario := fs.String("scenario", "", "scenario label for the result")
	target := fs.String("target", "", "target label for the result")
	pids := fs.String("pids", "", "comma-separated pids of the proxy processes")
	upPids := fs.String("upstream-pids", "", "comma-separated pids of the upstream")
	auxPids := fs.String("aux-pids", "", "comma-separated pids of other processes of the setup (Redis, token endpoint)")
	maxForeign := fs.Float64("max-foreign", 0.25, "repeat the measurement when processes outside the setup (or the hypervisor) used more CPU cores than this")
	quietWait := fs.Duration("quiet-wait", 5*time.Second, "before each measurement, wait up to this long for outside load below -max-foreign")
	attempts := fs.Int("attempts", 2, "measurements tried at most (see -max-foreign); the one with the least outside load is kept")
	redisAddr := fs.String("redis", "", "host:port of the proxy's Redis: count commands")
	emu := fs.String("emulator-control", "", "emulator control base URL: count token requests")
	out := fs.String("out", "", "append the JSON result line to this file (also printed)")
	_ = fs.Parse(args)
	if o.url == "" {
		return errors.New("-url is required")
	}
	if o.zipf != 0 && o.zipf <= 1 {
		return errors.New("-zipf must be above 1 (or 0 for round robin)")
	}
	var ps [3][]int
	for i, s := range []string{*pids, *upPids, *auxPids} {
		var err error
		if ps[i], err = parsePids(s); err != nil {
			return err
		}
	}
	m := measurer{proxy: ps[0], upstream: ps[1], aux: ps[2], redis: *redisAddr, emu: *emu}

	l := newLoader(o)
	// One request per tenant fills caches and connection pools, then a
	// short closed-loop warm-up reaches steady state.
	if o.warmPass {
		if err := l.warmPass(); err != nil {
			return err
		}
	}
	var r Result
	for attempt := 1; ; attempt++ {
		m.waitQuiet(*maxForeign, *quietWait)
		if o.warmup > 0 {
			l.closedLoop(o.warmup, false)
		}
		next, err := m.measure(l)
		if err != nil {
			return err
		}
		if attempt == 1 || next.ForeignCPU < r.ForeignCPU {
			r = next
		}
		r.Attempts = attempt
		if r.ForeignCPU <= *maxForeign || attempt >= *attempts {
			break
		}
		fmt.Fprintf(os.Stderr, "benchload: other processes used %.2f cores during the measurement; measuring again\n", next.ForeignCPU)
	}
	r.Scenario, r.Target, r.Tenants, r.Concurrency = *scenario, *target, o.tenants, o.concurrency

	line, _ := json.Marshal(r)
	fmt.Println(string(line))
	fmt.Fprintf(os.Stderr, "%-28s %-18s %-6s rps=%8.0f p50=%.3fms p99=%.3fms cpu=%.1fµs/req rss=%dKiB errors=%d redis=%d refreshes=%d busy=%.0f%% foreign=%.2f attempts=%d\n",
		r.Scenario, r.Target, r.Mode, r.RPS, r.P50Ms, r.P99Ms, r.CPUMicrosPerReq, r.PeakRSSKiB, r.Errors, r.RedisCommands, r.Refreshes, r.MachineCPUBusy, r.ForeignCPU, r.Attempts)
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Write(append(line, '\n')); err != nil {
			return err
		}
	}
	return nil
}

// measurer takes the counters around one measurement.
type measurer struct {
	proxy, upstream, aux []int
	redis, emu           string
}

// waitQuiet waits, at most max, until processes outside the setup use less
// than limit cores over a 250 ms window (the proxies not measured are paused
// and the setup is idle, so nearly all busy time is outside load).
func (m measurer) waitQuiet(limit float64, max time.Duration) {
	deadline := time.Now().Add(max)
	pids := append(append(append([]int{os.Getpid()}, m.proxy...), m.upstream...), m.aux...)
	for {
		b0, _ := machineTicks()
		c0, _ := cpuSeconds(pids)
		t0 := time.Now()
		time.Sleep(250 * time.Millisecond) // sampling window
		b1, _ := machineTicks()
		c1, _ := cpuSeconds(pids)
		foreign := (float64(b1-b0)/clockTicks - (c1 - c0)) / time.Since(t0).Seconds()
		if foreign <= limit || time.Now().After(deadline) {
			return
		}
	}
}

func (m measurer) measure(l *loader) (Result, error) {
	l.resetStatuses()
	cpu0, err := cpuSeconds(m.proxy)
	if err != nil {
		return Result{}, err
	}
	up0, _ := cpuSeconds(m.upstream)
	aux0, _ := cpuSeconds(m.aux)
	self0, _ := cpuSeconds([]int{os.Getpid()})
	busy0, total0 := machineTicks()
	var redis0 map[string]int64
	if m.redis != "" {
		if redis0, err = commandStats(m.redis); err != nil {
			return Result{}, err
		}
	}
	var emu0 emuStats
	if m.emu != "" {
		if emu0, err = fetchEmuStats(m.emu); err != nil {
			return Result{}, err
		}
	}

	var h *hist
	var elapsed time.Duration
	r := Result{Mode: "closed", Statuses: map[string]int64{}}
	if l.o.rate > 0 {
		r.Mode, r.Rate = "rate", l.o.rate
		h, elapsed = l.fixedRate(l.o.duration, l.o.rate)
	} else {
		h, elapsed = l.closedLoop(l.o.duration, true)
	}
	r.DurationS = elapsed.Seconds()

	cpu1, err := cpuSeconds(m.proxy)
	if err != nil {
		return Result{}, err
	}
	up1, _ := cpuSeconds(m.upstream)
	aux1, _ := cpuSeconds(m.aux)
	self1, _ := cpuSeconds([]int{os.Getpid()})
	busy1, total1 := machineTicks()
	if total1 > total0 {
		r.MachineCPUBusy = 100 * float64(busy1-busy0) / float64(total1-total0)
	}
	r.CPUSeconds, r.UpstreamCPU, r.AuxCPU, r.ClientCPU = cpu1-cpu0, up1-up0, aux1-aux0, self1-self0
	machineBusy := float64(busy1-busy0) / clockTicks
	r.ForeignCPU = math.Max(0, (machineBusy-r.CPUSeconds-r.UpstreamCPU-r.AuxCPU-r.ClientCPU)/elapsed.Seconds())
	r.PeakRSSKiB = peakRSS(m.proxy)
	r.RSSKiB = procStatusKiB(m.proxy, "VmRSS:")
	if m.redis != "" {
		redis1, err := commandStats(m.redis)
		if err != nil {
			return Result{}, err
		}
		r.RedisCommandStats = map[string]int64{}
		for k, v := range redis1 {
			if d := v - redis0[k]; d > 0 && k != "info" {
				r.RedisCommandStats[k] = d
				if k != "ping" { // keep-alive of the change-notification connection
					r.RedisCommands += d
				}
			}
		}
	}
	if m.emu != "" {
		emu1, err := fetchEmuStats(m.emu)
		if err != nil {
			return Result{}, err
		}
		r.EmulatorChecked = true
		r.TokenRequests = emu1.TokenRequests - emu0.TokenRequests
		r.Refreshes = emu1.RefreshGrants - emu0.RefreshGrants
	}

	l.mu.Lock()
	for k, v := range l.statuses {
		r.Statuses[k] = v
	}
	l.mu.Unlock()
	r.OK = r.Statuses["200"]
	for k, v := range r.Statuses {
		if k != "200" {
			r.Errors += v
		}
	}
	r.Requests = h.n
	r.RPS = float64(h.n) / elapsed.Seconds()
	r.P50Ms, r.P90Ms = h.quantile(0.50)/1000, h.quantile(0.90)/1000
	r.P99Ms, r.P999Ms = h.quantile(0.99)/1000, h.quantile(0.999)/1000
	r.MaxMs = float64(h.max) / 1000
	if h.n > 0 {
		r.MeanMs = float64(h.sum) / float64(h.n) / 1000
		r.CPUMicrosPerReq = r.CPUSeconds / float64(h.n) * 1e6
		if m.redis != "" {
			v := float64(r.RedisCommands) / float64(h.n)
			r.RedisCmdsPerReq = &v
		}
	}
	r.Histogram = h.buckets()
	return r, nil
}

// loader sends the requests.
type loader struct {
	o        runOpts
	rt       *http.Transport
	reqs     []*http.Request // templates of the first tenants; headers are shared read-only
	base     *http.Request   // template of the others (a header map of its own per request)
	header   string          // o.header, canonical
	next     atomic.Uint64
	seeds    atomic.Uint64
	mu       sync.Mutex
	statuses map[string]int64
}

// maxTemplates bounds the per-tenant request templates (about 1 KB each):
// with a million tenants the rest are built per request.
const maxTemplates = 1 << 16

func (l *loader) resetStatuses() {
	l.mu.Lock()
	clear(l.statuses)
	l.mu.Unlock()
}

func newLoader(o runOpts) *loader {
	l := &loader{o: o, statuses: map[string]int64{}, header: http.CanonicalHeaderKey(o.header)}
	l.rt = &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   o.concurrency + 64,
		IdleConnTimeout:       time.Minute,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
	}
	var err error
	l.base, err = http.NewRequestWithContext(context.Background(), http.MethodGet, strings.TrimRight(o.url, "/")+o.path, nil)
	if err != nil {
		panic(err) // -url was validated by the caller's use; a bad URL is a usage error
	}
	for i := range min(o.tenants, maxTemplates) {
		req := l.base.Clone(context.Background())
		req.Header = http.Header{l.header: {tenantID(o.prefix, i)}}
		l.reqs = append(l.reqs, req)
	}
	return l
}

// do sends one request for the next tenant and reports whether it got 200.
func (l *loader) do(record bool, tenant int) bool {
	var r http.Request
	if tenant < len(l.reqs) {
		r = *l.reqs[tenant] // shallow copy: RoundTrip must not see a shared *Request
	} else {
		r = *l.base
		r.Header = http.Header{l.header: {tenantID(l.o.prefix, tenant)}}
	}
	resp, err := l.rt.RoundTrip(&r)
	code := "transport_error"
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		code = strconv.Itoa(resp.StatusCode)
	}
	if record {
		l.mu.Lock()
		l.statuses[code]++
		l.mu.Unlock()
	}
	return code == "200"
}

// picker returns one client goroutine's tenant chooser (not safe for
// concurrent use): round robin over a counter shared by all clients, or a
// Zipf draw from the goroutine's own source (-zipf).
func (l *loader) picker() func() int {
	if l.o.zipf == 0 || l.o.tenants < 2 {
		return func() int { return int((l.next.Add(1) - 1) % uint64(l.o.tenants)) }
	}
	seed := time.Now().UnixNano() + int64(l.seeds.Add(1))*1_000_003
	z := rand.NewZipf(rand.New(rand.NewSource(seed)), l.o.zipf, 1, uint64(l.o.tenants-1))
	return func() int { return int(z.Uint64()) }
}

// warmPass requests every tenant once, concurrently; every answer must be 200.
func (l *loader) warmPass() error {
	var idx atomic.Int64
	var bad atomic.Int64
	var wg sync.WaitGroup
	for range l.o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(idx.Add(1) - 1)
				if i >= l.o.tenants {
					return
				}
				if !l.do(false, i) {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		return fmt.Errorf("warm pass: %d of %d tenants did not answer 200", n, l.o.tenants)
	}
	return nil
}

// closedLoop runs concurrency clients back to back for d. Requests started
// before the deadline are counted; the elapsed time runs to the last answer.
func (l *loader) closedLoop(d time.Duration, record bool) (*hist, time.Duration) {
	start := time.Now()
	deadline := start.Add(d)
	hs := make([]hist, l.o.concurrency)
	var wg sync.WaitGroup
	for w := range l.o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &hs[w]
			next := l.picker()
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				l.do(record, next())
				h.record(time.Since(t0).Microseconds())
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := &hist{}
	for i := range hs {
		total.merge(&hs[i])
	}
	return total, elapsed
}

// fixedRate schedules rate requests per second for d (open loop), with at
// most concurrency in flight; latency counts from the scheduled time, so
// requests that wait for a free slot count their wait.
func (l *loader) fixedRate(d time.Duration, rate float64) (*hist, time.Duration) {
	total := int64(d.Seconds() * rate)
	due := make(chan time.Time, 1<<16)
	start := time.Now()
	go func() {
		defer close(due)
		interval := float64(time.Second) / rate
		var i int64
		for i < total {
			now := time.Now()
			for i < total {
				at := start.Add(time.Duration(float64(i) * interval))
				if at.After(now) {
					break
				}
				due <- at
				i++
			}
			if i < total {
				at := start.Add(time.Duration(float64(i) * interval))
				time.Sleep(time.Until(at)) // pacing: the next request is not due yet
			}
		}
	}()
	hs := make([]hist, l.o.concurrency)
	var wg sync.WaitGroup
	for w := range l.o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &hs[w]
			next := l.picker()
			for at := range due {
				l.do(true, next())
				h.record(time.Since(at).Microseconds())
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	out := &hist{}
	for i := range hs {
		out.merge(&hs[i])
	}
	return out, elapsed
}

// sortedKeys is used by the report.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
