package auth

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Metrics are the token manager's Prometheus metrics. A nil *Metrics records
// nothing. No metric has a per-tenant label: tenant counts are unbounded.
type Metrics struct {
	refreshes      *prometheus.CounterVec
	refreshSeconds prometheus.Histogram
	lockWaitSecs   prometheus.Histogram
	breaker        *prometheus.GaugeVec
	flags          prometheus.Counter
	cache          *prometheus.CounterVec
	cacheHit       prometheus.Counter // cache's children, looked up once: a lookup per request costs a label hash
	cacheMiss      prometheus.Counter
	cacheBytes     prometheus.Gauge
	cacheEntries   prometheus.Gauge
	cacheEvictions prometheus.Counter
	refresherConc  prometheus.Gauge
	guardTripped   prometheus.Gauge
	guardHeld      prometheus.Counter
	writeRetries   prometheus.Counter
}

// RefreshOutcomes are every outcome label value of
// lsproxy_token_refreshes_total; each series exists at 0 from the start,
// so an alert's rate() sees the first event. (A test checks that every
// outcome the code records is listed here.)
var RefreshOutcomes = []string{"ok", "invalid_grant", "held", "transient", "unknown", "not_acked", "paced", "lease_lost", "shutdown", "lost_race", "discarded"}

// breakerStates are the label values of lsproxy_token_endpoint_breaker_state,
// indexed by gobreaker.State (closed 0, half-open 1, open 2).
var breakerStates = [...]string{"closed", "half_open", "open"}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lsproxy_token_refreshes_total",
			Help: "Refresh grants by outcome: ok, invalid_grant, held (invalid_grant not acted on by the guard), transient, unknown (sent, no answer), not_acked (replicas did not acknowledge; nothing sent), paced (the token endpoint's rate budget refused it; nothing sent), lease_lost (the lease could not cover the send; nothing sent), shutdown (too little shutdown budget left; nothing sent), lost_race, discarded.",
		}, []string{"outcome"}),
		refreshSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lsproxy_token_refresh_duration_seconds",
			Help:    "Latency of refresh-grant requests to the token endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		lockWaitSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lsproxy_lock_wait_seconds",
			Help:    "Time to take the per-tenant store lock.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lsproxy_token_endpoint_breaker_state",
			Help: "Token endpoint circuit breaker: 1 for the current state (closed, half_open, open), 0 for the others.",
		}, []string{"state"}),
		flags: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_tenants_flagged_total",
			Help: "Tenants flagged reauthorization_required.",
		}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lsproxy_token_cache_requests_total",
			Help: "Token lookups by result: hit (served from the in-process cache) or miss (read from the store, refreshed if due).",
		}, []string{"result"}),
	}
	m.guardTripped = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lsproxy_invalid_grant_guard_tripped",
		Help: "1 while the mass-invalid_grant guard holds back flagging (many tenants rejected at once: check client id, secret, environment, token URL).",
	})
	m.guardHeld = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lsproxy_invalid_grant_held_total",
		Help: "invalid_grant answers not acted on by the guard: the tenant was not flagged and keeps its refresh token.",
	})
	m.writeRetries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lsproxy_token_write_retries_total",
		Help: "Retried writes of a received grant (store unreachable); the holder retries for as long as it lives.",
	})
	m.cacheBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lsproxy_token_cache_bytes",
		Help: "Estimated memory held by the in-process token cache (bounded by cache_max_bytes).",
	})
	m.cacheEntries = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lsproxy_token_cache_entries",
		Help: "Tenants in the in-process token cache.",
	})
	m.cacheEvictions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lsproxy_token_cache_evictions_total",
		Help: "Cache entries evicted to stay within cache_max_bytes; the tenant's next request reads the store.",
	})
	m.refresherConc = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lsproxy_refresher_concurrency",
		Help: "Background refreshes allowed at once now: refresher_concurrency, halved while the token endpoint strains (429, 5xx, timeouts, slow answers).",
	})
	reg.MustRegister(m.refreshes, m.refreshSeconds, m.lockWaitSecs, m.breaker, m.flags, m.guardTripped, m.guardHeld, m.writeRetries, m.cache,
		m.cacheBytes, m.cacheEntries, m.cacheEvictions, m.refresherConc)
	m.breakerState(gobreaker.StateClosed)
	m.cacheHit = m.cache.WithLabelValues("hit")
	m.cacheMiss = m.cache.WithLabelValues("miss")
	for _, o := range RefreshOutcomes {
		m.refreshes.WithLabelValues(o)
	}
	return m
}

func (m *Metrics) refresh(outcome string) {
	if m != nil {
		m.refreshes.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) refreshLatency(d time.Duration) {
	if m != nil {
		m.refreshSeconds.Observe(d.Seconds())
	}
}

func (m *Metrics) lockWait(d time.Duration) {
	if m != nil {
		m.lockWaitSecs.Observe(d.Seconds())
	}
}

func (m *Metrics) breakerState(s gobreaker.State) {
	if m == nil {
		return
	}
	for i, name := range breakerStates {
		v := 0.0
		if gobreaker.State(i) == s {
			v = 1
		}
		m.breaker.WithLabelValues(name).Set(v)
	}
}

// cacheLookup counts one Token lookup as a cache hit or miss.
func (m *Metrics) cacheLookup(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cacheHit.Inc()
	} else {
		m.cacheMiss.Inc()
	}
}

// cacheSize sets the cache's size gauges.
func (m *Metrics) cacheSize(entries int, bytes int64) {
	if m != nil {
		m.cacheEntries.Set(float64(entries))
		m.cacheBytes.Set(float64(bytes))
	}
}

// refresherLimit sets the background refresher's current concurrency.
func (m *Metrics) refresherLimit(n int) {
	if m != nil {
		m.refresherConc.Set(float64(n))
	}
}

// cacheEvicted counts one eviction.
func (m *Metrics) cacheEvicted() {
	if m != nil {
		m.cacheEvictions.Inc()
	}
}

func (m *Metrics) flagged() {
	if m != nil {
		m.flags.Inc()
	}
}

func (m *Metrics) guard(tripped bool) {
	if m != nil {
		v := 0.0
		if tripped {
			v = 1
		}
		m.guardTripped.Set(v)
	}
}

func (m *Metrics) held() {
	if m != nil {
		m.guardHeld.Inc()
	}
}

func (m *Metrics) writeRetry() {
	if m != nil {
		m.writeRetries.Inc()
	}
}
