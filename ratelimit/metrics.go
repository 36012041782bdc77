package ratelimit

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the governor's metrics. They carry no tenant label (the
// number of tenants is unbounded). A nil *Metrics records nothing.
type Metrics struct {
	delayedTotal  prometheus.Counter
	refusedTotal  prometheus.Counter
	upstreamTotal prometheus.Counter
	storeErrors   prometheus.Counter
	wait          prometheus.Histogram
	storeSteps    prometheus.Counter
	leaseGrants   prometheus.Counter
	leaseAdmits   prometheus.Counter
	leaseCuts     prometheus.Counter
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		delayedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_ratelimit_delayed_total",
			Help: "Requests held by lsproxy until their tenant's upstream budget had room.",
		}),
		refusedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_ratelimit_refused_total",
			Help: "Requests answered by lsproxy with 429 rate_limited (budget exhausted within the allowed wait).",
		}),
		upstreamTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_ratelimit_upstream_throttled_total",
			Help: "429 answers seen from the upstream (API and token endpoint).",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_ratelimit_store_errors_total",
			Help: "Budget store failures; the request was sent unpaced.",
		}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lsproxy_ratelimit_wait_seconds",
			Help:    "Time held requests waited for budget, whether then sent or refused.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		storeSteps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_ratelimit_store_steps_total",
			Help: "Budget store round trips of governed tenants (bookings, leases, corrections).",
		}),
		leaseGrants: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_ratelimit_lease_grants_total",
			Help: "Store steps that booked a batch of units (a lease) for later requests.",
		}),
		leaseAdmits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_ratelimit_lease_admitted_total",
			Help: "Governed requests admitted from this replica's lease, without a store step.",
		}),
		leaseCuts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lsproxy_ratelimit_lease_cut_total",
			Help: "Upstream answers (a 429, or a bucket fuller than a lease assumed) that cut a lease short.",
		}),
	}
	reg.MustRegister(m.delayedTotal, m.refusedTotal, m.upstreamTotal, m.storeErrors, m.wait,
		m.storeSteps, m.leaseGrants, m.leaseAdmits, m.leaseCuts)
	return m
}

func (m *Metrics) delayed() {
	if m != nil {
		m.delayedTotal.Inc()
	}
}

func (m *Metrics) refused() {
	if m != nil {
		m.refusedTotal.Inc()
	}
}

func (m *Metrics) upstream429() {
	if m != nil {
		m.upstreamTotal.Inc()
	}
}

func (m *Metrics) storeError() {
	if m != nil {
		m.storeErrors.Inc()
	}
}

func (m *Metrics) waited(d time.Duration) {
	if m != nil {
		m.wait.Observe(d.Seconds())
	}
}

func (m *Metrics) storeStep() {
	if m != nil {
		m.storeSteps.Inc()
	}
}

func (m *Metrics) leaseGranted() {
	if m != nil {
		m.leaseGrants.Inc()
	}
}

func (m *Metrics) leaseAdmitted() {
	if m != nil {
		m.leaseAdmits.Inc()
	}
}

func (m *Metrics) leaseCut() {
	if m != nil {
		m.leaseCuts.Inc()
	}
}
