package emulator

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// RateLimit configures the emulator's per-tenant API rate limits, as the
// R-Series and X-Series APIs meter a merchant account. The zero value
// limits nothing. Only API requests with a valid token are metered.
type RateLimit struct {
	// BucketSize > 0 turns on the R-Series leaky bucket: each request adds
	// its cost (ReadCost for GET/HEAD, WriteCost otherwise) and the bucket
	// drains DripRate units per second; a request that does not fit gets
	// 429 with Retry-After in seconds. Every answer carries
	// X-LS-API-Bucket-Level: used/size and X-LS-API-Drip-Rate.
	BucketSize, DripRate float64
	// ReadCost and WriteCost: 0 = 1 and 10.
	ReadCost, WriteCost float64
	// Burst > 0 is the 1-second burst limiter: more than Burst requests
	// within one second get 429 with Retry-After: 1.
	Burst int
	// WindowLimit > 0 turns on the X-Series window: WindowLimit requests per
	// Window (0 = 5 min), reported as X-RateLimit-Limit / -Remaining /
	// -Reset (epoch seconds); beyond it, 429 with Retry-After as an
	// HTTP-date (RFC 1123), as X-Series does.
	WindowLimit int
	Window      time.Duration
}

// rateLimiter is the emulator's metering state; the zero value is ready.
type rateLimiter struct {
	mu      sync.Mutex
	cfg     RateLimit
	tenants map[string]*meter
	limited int64
}

type meter struct {
	level       float64
	levelAt     time.Time
	burst       []time.Time // request times within the last second
	windowStart time.Time
	windowUsed  int
	throttled   time.Time // Throttle: 429 with an HTTP-date until then
	accepted    int64
	limited     int64
}

// SetRateLimit replaces the rate limits (and resets every tenant's meter).
func (e *Emulator) SetRateLimit(rl RateLimit) {
	e.rl.mu.Lock()
	defer e.rl.mu.Unlock()
	e.rl.cfg = rl
	e.rl.tenants = nil
}

// Throttle makes every API request of tenant answer 429 with an HTTP-date
// Retry-After of until, until then, whatever the limits.
func (e *Emulator) Throttle(tenant string, until time.Time) {
	e.rl.mu.Lock()
	defer e.rl.mu.Unlock()
	e.rl.meterOf(tenant, e.now()).throttled = until
}

// RateLimitCounts returns how many metered API requests of tenant were
// accepted and how many were answered 429 by the limits.
func (e *Emulator) RateLimitCounts(tenant string) (accepted, limited int64) {
	e.rl.mu.Lock()
	defer e.rl.mu.Unlock()
	if m := e.rl.tenants[tenant]; m != nil {
		return m.accepted, m.limited
	}
	return 0, 0
}

// RateLimited returns how many API requests the limits answered 429, over
// all tenants.
func (e *Emulator) RateLimited() int64 {
	e.rl.mu.Lock()
	defer e.rl.mu.Unlock()
	return e.rl.limited
}

func (rl *rateLimiter) meterOf(tenant string, now time.Time) *meter {
	if rl.tenants == nil {
		rl.tenants = make(map[string]*meter)
	}
	m := rl.tenants[tenant]
	if m == nil {
		m = &meter{levelAt: now, windowStart: now}
		rl.tenants[tenant] = m
	}
	return m
}

// meterAPI meters one API request of tenant: it sets the rate-limit
// headers and, when the request is over a limit, answers 429 and returns true.
func (e *Emulator) meterAPI(w http.ResponseWriter, r *http.Request, tenant string) bool {
	now := e.now()
	rl := &e.rl
	rl.mu.Lock()
	defer rl.mu.Unlock()
	cfg := rl.cfg
	throttled := rl.tenants[tenant] != nil && now.Before(rl.tenants[tenant].throttled)
	if cfg.BucketSize <= 0 && cfg.WindowLimit <= 0 && cfg.Burst <= 0 && !throttled {
		return false
	}
	m := rl.meterOf(tenant, now)
	h := w.Header()
	refuse := func(retryAfter string) bool {
		m.limited++
		rl.limited++
		h.Set("Retry-After", retryAfter)
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "Too Many Requests", "message": "Rate limiting enforced"})
		return true
	}

	cost := 1.0
	if cfg.BucketSize > 0 {
		read, write := cfg.ReadCost, cfg.WriteCost
		if read == 0 {
			read = 1
		}
		if write == 0 {
			write = 10
		}
		cost = write
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			cost = read
		}
		m.level = math.Max(0, m.level-cfg.DripRate*now.Sub(m.levelAt).Seconds())
		m.levelAt = now
	}
	window := cfg.Window
	if window <= 0 {
		window = 5 * time.Minute
	}
	if cfg.WindowLimit > 0 && !now.Before(m.windowStart.Add(window)) {
		m.windowStart, m.windowUsed = now, 0
	}
	setHeaders := func() {
		if cfg.BucketSize > 0 {
			h.Set("X-LS-API-Bucket-Level", strconv.FormatFloat(m.level, 'f', -1, 64)+"/"+strconv.FormatFloat(cfg.BucketSize, 'f', -1, 64))
			h.Set("X-LS-API-Drip-Rate", strconv.FormatFloat(cfg.DripRate, 'f', -1, 64))
		}
		if cfg.WindowLimit > 0 {
			h.Set("X-RateLimit-Limit", strconv.Itoa(cfg.WindowLimit))
			h.Set("X-RateLimit-Remaining", strconv.Itoa(max(0, cfg.WindowLimit-m.windowUsed)))
			h.Set("X-RateLimit-Reset", strconv.FormatInt(m.windowStart.Add(window).Unix(), 10))
		}
	}
	setHeaders()

	switch {
	case throttled:
		return refuse(m.throttled.UTC().Format(http.TimeFormat))
	case cfg.Burst > 0 && m.burstCount(now) >= cfg.Burst:
		return refuse("1")
	case cfg.BucketSize > 0 && m.level+cost > cfg.BucketSize:
		wait := (m.level + cost - cfg.BucketSize) / cfg.DripRate
		return refuse(strconv.Itoa(max(1, int(math.Ceil(wait)))))
	case cfg.WindowLimit > 0 && m.windowUsed >= cfg.WindowLimit:
		return refuse(m.windowStart.Add(window).UTC().Format(http.TimeFormat))
	}
	m.accepted++
	m.level += cost
	m.windowUsed++
	if cfg.Burst > 0 {
		m.burst = append(m.burst, now)
	}
	setHeaders()
	return false
}

// burstCount drops requests older than a second and counts the rest.
func (m *meter) burstCount(now time.Time) int {
	i := 0
	for i < len(m.burst) && now.Sub(m.burst[i]) >= time.Second {
		i++
	}
	m.burst = m.burst[i:]
	return len(m.burst)
}

// rateLimitControl adds /rate-limit and /throttle to the control handler.
func (e *Emulator) rateLimitControl(mux *http.ServeMux) {
	mux.HandleFunc("POST /rate-limit", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var rl RateLimit
		num := func(name string) (float64, bool) {
			v := q.Get(name)
			if v == "" {
				return 0, true
			}
			n, err := strconv.ParseFloat(v, 64)
			return n, err == nil && n >= 0 && !math.IsInf(n, 0)
		}
		var ok [4]bool
		var burst, wl float64
		rl.BucketSize, ok[0] = num("bucket")
		rl.DripRate, ok[1] = num("drip")
		burst, ok[2] = num("burst")
		wl, ok[3] = num("window_limit")
		rl.Burst, rl.WindowLimit = int(burst), int(wl)
		if d := q.Get("window"); d != "" {
			var err error
			if rl.Window, err = time.ParseDuration(d); err != nil || rl.Window < 0 {
				ok[3] = false
			}
		}
		if !ok[0] || !ok[1] || !ok[2] || !ok[3] || (rl.BucketSize > 0 && rl.DripRate <= 0) {
			http.Error(w, "bucket, drip, burst, window_limit must be non-negative numbers (drip > 0 with a bucket); window a duration", http.StatusBadRequest)
			return
		}
		e.SetRateLimit(rl)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /throttle", func(w http.ResponseWriter, r *http.Request) {
		t := r.URL.Query().Get("tenant")
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if t == "" || err != nil || d < 0 {
			http.Error(w, "tenant and d (a non-negative duration) required", http.StatusBadRequest)
			return
		}
		e.Throttle(t, e.now().Add(d))
		w.WriteHeader(http.StatusNoContent)
	})
}
