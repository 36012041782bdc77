package proxy

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxied-traffic metrics. A nil *Metrics records nothing.
// Labels are bounded: the status code, a standard method (else "other")
// and lsproxy's own error code — never a tenant or a path.
type Metrics struct {
	requests *prometheus.CounterVec
	// answered caches requests' counters for upstream answers (no error
	// code) by status and method, so the common request skips the label
	// hashing; filled on first use.
	answered [600][len(methods) + 1]atomic.Pointer[prometheus.Counter]
	duration prometheus.Histogram
	upstream prometheus.Histogram
	replays  prometheus.Counter
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := prometheus.ExponentialBuckets(0.001, 2, 15)
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lsproxy_requests_total",
			Help: "Proxied requests by status code, method and lsproxy error code (empty when the upstream answered).",
		}, []string{"code", "method", "error"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lsproxy_request_duration_seconds",
			Help:    "Time to serve a proxied request, including the upstream.",
			Buckets: buckets,
		}),
		upstream: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lsproxy_upstream_duration_seconds",
			Help:    "Time the upstream took to answer (to its response headers; both attempts of a replayed request).",
			Buckets: buckets,
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_request_replays_total",
			Help: "Proxied requests replayed once with a new token after an upstream 401.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.upstream, m.replays)
	return m
}

// methods are the method label's values besides "other".
var methods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodTrace, http.MethodConnect}

// methodIndex keeps the label bounded: the index of a standard method in
// methods, else len(methods) ("other").
func methodIndex(m string) int {
	for i, s := range methods {
		if m == s {
			return i
		}
	}
	return len(methods)
}

// method is methodIndex's label.
func method(m string) string {
	if i := methodIndex(m); i < len(methods) {
		return methods[i]
	}
	return "other"
}

// requestCounter returns the requests counter of one label set.
func (m *Metrics) requestCounter(status int, meth, errCode string) prometheus.Counter {
	if errCode != "" || status < 100 || status > 599 {
		code := "other" // keeps the label bounded whatever status an upstream sends
		if status >= 100 && status <= 599 {
			code = strconv.Itoa(status)
		}
		return m.requests.WithLabelValues(code, method(meth), errCode)
	}
	mi := methodIndex(meth)
	slot := &m.answered[status][mi]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(strconv.Itoa(status), method(meth), "")
	slot.Store(&c)
	return c
}

func (m *Metrics) observe(status int, meth string, st *reqState, d time.Duration) {
	if m == nil {
		return
	}
	m.requestCounter(status, meth, st.errCode).Inc()
	m.duration.Observe(d.Seconds())
	if st.upstreamTime > 0 {
		m.upstream.Observe(st.upstreamTime.Seconds())
	}
	if st.replayed {
		m.replays.Inc()
	}
}
