package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// rlTally counts what clients saw.
type rlTally struct {
	ok, refused, passed, other atomic.Int64
	mu                         sync.Mutex
	bad                        []string        // first few unexpected answers
	start                      time.Time       // of the phase
	passedAt                   []time.Duration // when upstream 429s came through
}

// check classifies one answer: 200, or lsproxy's own 429 rate_limited
// with an integer Retry-After ≥ 1 and none of the upstream's headers.
func (c *rlTally) check(r result, err error) (refused bool) {
	switch {
	case err != nil:
		c.note("transport error: " + err.Error())
	case r.Status == http.StatusOK:
		c.ok.Add(1)
		return false
	case r.Status == http.StatusTooManyRequests && r.Header.Get("X-Lsproxy-Error") == "":
		// An upstream 429 that still happened passes through unchanged
		// (SPEC §8); the emulator counts these too.
		c.passed.Add(1)
		c.mu.Lock()
		c.passedAt = append(c.passedAt, time.Since(c.start).Round(10*time.Millisecond))
		c.mu.Unlock()
		return true
	case r.Status == http.StatusTooManyRequests:
		ra, convErr := strconv.Atoi(r.Header.Get("Retry-After"))
		problem := ""
		switch {
		case r.Header.Get("X-Lsproxy-Error") != "rate_limited" || r.str("error") != "rate_limited":
			problem = "lsproxy 429 with code " + r.Header.Get("X-Lsproxy-Error")
		case convErr != nil || ra < 1:
			problem = "Retry-After " + r.Header.Get("Retry-After")
		}
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-ls-api") || strings.HasPrefix(strings.ToLower(k), "x-ratelimit") {
				problem = "lsproxy's 429 carries upstream header " + k
			}
		}
		if problem == "" {
			c.refused.Add(1)
			return true
		}
		c.note(problem)
		return true
	default:
		c.note(fmt.Sprintf("status %d: %s", r.Status, r.Body))
	}
	return false
}

func (c *rlTally) note(s string) {
	c.other.Add(1)
	c.mu.Lock()
	if len(c.bad) < 5 {
		c.bad = append(c.bad, s)
	}
	c.mu.Unlock()
}

// TestRateLimitGovernor is issue 13's acceptance test: three replicas on one
// Redis, two tenants on an R-Series-like emulator (bucket 20, drip 2/s), 24
// clients for 20 s. The emulator must answer at most 5 % of its requests
// with 429 and accept at least 80 % of its capacity; clients see only 200 or
// lsproxy's own 429. Then an upstream 429 with an HTTP-date Retry-After
// silences that tenant on every replica until then, while the other tenant
// keeps being served.
func TestRateLimitGovernor(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const (
		replicas = 3
		clients  = 24
		size     = 20.0
		drip     = 2.0
		duration = 20 * time.Second
		path     = "/API/Account/1/Item.json"
	)
	emu := startEmulator(t, emulator.Config{Mode: emulator.ModeRSeries})
	// The burst limiter sits above the bucket size: a governed merchant
	// never meets it, an ungoverned one would.
	emu.SetRateLimit(emulator.RateLimit{BucketSize: size, DripRate: drip, Burst: 30})
	rdb := testredis.Start(t)
	env := with(baseEnv(emu), "LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_RATE_LIMIT_WAIT", "1s")
	procs := make([]*proc, replicas)
	for i := range procs {
		procs[i] = startProxy(t, env)
	}
	tenants := []string{"merchant-a", "merchant-b"}
	for i, id := range tenants {
		procs[i].importTenant(t, id, emu.IssueGrant(id))
	}

	// Phase 1: sustained overload.
	tally := rlTally{start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	start := tally.start
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, tenant := procs[c%replicas], tenants[c%2]
			for n := 0; ctx.Err() == nil && n < 10000; n++ {
				r, err := p.get(ctx, tenant, path)
				if ctx.Err() != nil {
					return // the phase ended mid-request
				}
				if tally.check(r, err) {
					// An app that respects a refusal a little; the bound
					// keeps 24 clients from spinning on a loaded machine.
					sleepCtx(ctx, 200*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	elapsed := time.Since(start)

	var accepted, limited int64
	for _, id := range tenants {
		a, l := emu.RateLimitCounts(id)
		accepted, limited = accepted+a, limited+l
	}
	capacity := float64(len(tenants)) * (size + drip*elapsed.Seconds())
	seen := accepted + limited
	t.Logf("phase 1 (%v): clients got %d × 200, %d × lsproxy 429, %d × upstream 429; emulator accepted %d of capacity %.0f (%.0f %%), answered %d of %d with 429 (%.1f %%)",
		elapsed.Round(time.Millisecond), tally.ok.Load(), tally.refused.Load(), tally.passed.Load(), accepted, capacity, 100*float64(accepted)/capacity,
		limited, seen, 100*float64(limited)/float64(max(seen, 1)))
	if len(tally.passedAt) > 0 {
		t.Logf("upstream 429s passed through at %v", tally.passedAt)
	}
	if n := tally.other.Load(); n > 0 {
		t.Errorf("%d answers were neither 200 nor a well-formed 429; first: %q", n, tally.bad)
	}
	if tally.passed.Load() > limited {
		t.Errorf("clients saw %d upstream 429s, the emulator sent %d", tally.passed.Load(), limited)
	}
	if float64(limited) > 0.05*float64(seen) {
		t.Errorf("emulator answered %d of %d requests with 429 (> 5 %%)", limited, seen)
	}
	if float64(accepted) < 0.8*capacity {
		t.Errorf("emulator accepted %d requests, < 80 %% of its capacity %.0f", accepted, capacity)
	}
	if tally.refused.Load() == 0 {
		t.Errorf("24 clients on a 2/s budget were never refused: is the governor on?")
	}

	// The admin API shows the shared budget.
	if v := procs[2].getTenant(t, tenants[0]); v.RateLimit == nil || v.RateLimit.Kind != "bucket" || v.RateLimit.Size != size {
		t.Errorf("admin view of %s: rate_limit = %+v", tenants[0], v.RateLimit)
	}
	metrics := getBody(t, procs[0].ControlURL+"/metrics")
	for _, m := range []string{"lsproxy_ratelimit_delayed_total", "lsproxy_ratelimit_refused_total", "lsproxy_ratelimit_wait_seconds_bucket"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metric %s missing", m)
		}
	}
	if strings.Contains(metrics, "merchant-") {
		t.Errorf("metrics carry a tenant label")
	}

	// Phase 2: the upstream throttles merchant-a until a whole second (the
	// HTTP-date's resolution) 4-5 s ahead.
	quiet, busy := tenants[0], tenants[1]
	until := time.Now().Add(5 * time.Second).Truncate(time.Second)
	emu.Throttle(quiet, until)
	_, limitedBefore := emu.RateLimitCounts(quiet)
	acceptedBusyBefore, _ := emu.RateLimitCounts(busy)
	var quietTally, busyTally rlTally
	refusedOn := make([]atomic.Int64, replicas)
	ctx, cancel = context.WithDeadline(context.Background(), until.Add(-200*time.Millisecond))
	defer cancel()
	for c := range 2 * replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := procs[c%replicas]
			for n := 0; ctx.Err() == nil && n < 1000; n++ {
				if c < replicas {
					r, err := p.get(ctx, quiet, path)
					if ctx.Err() != nil {
						return
					}
					if quietTally.check(r, err) {
						if r.Status == http.StatusTooManyRequests {
							refusedOn[c].Add(1)
						}
						sleepCtx(ctx, 200*time.Millisecond)
					}
				} else {
					r, err := p.get(ctx, busy, path)
					if ctx.Err() != nil {
						return
					}
					if busyTally.check(r, err) {
						sleepCtx(ctx, 200*time.Millisecond)
					}
				}
			}
		}()
	}
	wg.Wait()
	_, limitedAfter := emu.RateLimitCounts(quiet)
	acceptedBusyAfter, _ := emu.RateLimitCounts(busy)
	t.Logf("phase 2: %s reached the emulator %d times while throttled (refused by lsproxy per replica: %d %d %d); %s got %d more requests accepted",
		quiet, limitedAfter-limitedBefore, refusedOn[0].Load(), refusedOn[1].Load(), refusedOn[2].Load(), busy, acceptedBusyAfter-acceptedBusyBefore)
	if n := quietTally.other.Load() + busyTally.other.Load(); n > 0 {
		t.Errorf("phase 2: %d unexpected answers; first: %q %q", n, quietTally.bad, busyTally.bad)
	}
	// Only requests already on their way when the first 429 came back may
	// reach the emulator: at most one per client.
	if d := limitedAfter - limitedBefore; d < 1 || d > int64(replicas) {
		t.Errorf("throttled tenant reached the emulator %d times during the block, want 1..%d", d, replicas)
	}
	for i := range refusedOn {
		if refusedOn[i].Load() == 0 {
			t.Errorf("replica %d never refused the throttled tenant", i)
		}
	}
	if quietTally.ok.Load() != 0 {
		t.Errorf("throttled tenant got %d × 200 during the block", quietTally.ok.Load())
	}
	if acceptedBusyAfter-acceptedBusyBefore < 3 {
		t.Errorf("the other tenant was served only %d times during the block", acceptedBusyAfter-acceptedBusyBefore)
	}

	// After the block the tenant is served again, on every replica.
	for i, p := range procs {
		ok := eventually(10*time.Second, func() bool {
			r, err := p.get(context.Background(), quiet, path)
			return err == nil && r.Status == http.StatusOK
		})
		if !ok {
			t.Errorf("replica %d does not serve %s after the block", i, quiet)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
