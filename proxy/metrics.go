package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxied-traffic metrics. A nil *Metrics records nothing.
// Labels are bounded: a status class and lsproxy's own error code.
type Metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lsproxy_requests_total",
			Help: "Proxied requests by status class (2xx..5xx) and lsproxy error code (empty when the upstream answered).",
		}, []string{"class", "error"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lsproxy_request_duration_seconds",
			Help:    "Time to serve a proxied request, including the upstream.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

var classes = [...]string{"1xx", "1xx", "2xx", "3xx", "4xx", "5xx"}

func (m *Metrics) observe(status int, errCode string, d time.Duration) {
	if m == nil {
		return
	}
	class := "other" // keeps the label bounded whatever status an upstream sends
	if i := status / 100; i >= 1 && i <= 5 {
		class = classes[i]
	}
	m.requests.WithLabelValues(class, errCode).Inc()
	m.duration.Observe(d.Seconds())
}
