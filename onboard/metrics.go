package onboard

import "github.com/prometheus/client_golang/prometheus"

// webhookCollector exports a Notifier's counters as
// lsproxy_webhook_events_total{outcome="delivered|failed|dropped"}.
type webhookCollector struct {
	n    *Notifier // nil: no webhook configured, every count 0
	desc *prometheus.Desc
}

var _ prometheus.Collector = webhookCollector{}

// RegisterWebhookMetrics registers the webhook counters of n (nil when no
// webhook is configured: the series exist and stay 0) and the onboarding
// outcomes (lsproxy_onboarding_total, outcomes.go) with reg.
func RegisterWebhookMetrics(reg prometheus.Registerer, n *Notifier) {
	reg.MustRegister(onboardingTotal())
	reg.MustRegister(webhookCollector{n: n, desc: prometheus.NewDesc("lsproxy_webhook_events_total",
		"Webhook events by outcome: delivered (2xx), failed (gave up after retries or a final status), dropped (queue full).",
		[]string{"outcome"}, nil)})
}

func (c webhookCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c webhookCollector) Collect(ch chan<- prometheus.Metric) {
	var delivered, failed, dropped int64
	if c.n != nil {
		delivered, failed, dropped = c.n.Delivered(), c.n.Failed(), c.n.Dropped()
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(delivered), "delivered")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(failed), "failed")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(dropped), "dropped")
}
