package onboard

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// webhookCollector exports a Notifier's counters as
// lsproxy_webhook_events_total{outcome="delivered|failed|dead|dropped"} and
// its outbox (shared by every replica) as lsproxy_webhook_outbox_events
// {state="queued|dead"} and lsproxy_webhook_outbox_oldest_age_seconds.
type webhookCollector struct {
	n              *Notifier // nil: no webhook configured, every value 0
	events         *prometheus.Desc
	outbox, oldest *prometheus.Desc
	outboxUp       *prometheus.Desc
}

var _ prometheus.Collector = webhookCollector{}

// RegisterWebhookMetrics registers the webhook metrics of n (nil when no
// webhook is configured: the series exist and stay 0) and the onboarding
// outcomes (lsproxy_onboarding_total, outcomes.go) with reg.
func RegisterWebhookMetrics(reg prometheus.Registerer, n *Notifier) {
	reg.MustRegister(onboardingTotal())
	reg.MustRegister(webhookCollector{
		n: n,
		events: prometheus.NewDesc("lsproxy_webhook_events_total",
			"Webhook deliveries by this process, by outcome: delivered (2xx), failed (an attempt that failed and is retried or buried), dead (buried in the dead-letter list after the last attempt), dropped (never reached the outbox).",
			[]string{"outcome"}, nil),
		outbox: prometheus.NewDesc("lsproxy_webhook_outbox_events",
			"Webhook events in the store's outbox (all replicas): queued (not delivered yet) and dead (dead letters awaiting redelivery).",
			[]string{"state"}, nil),
		oldest: prometheus.NewDesc("lsproxy_webhook_outbox_oldest_age_seconds",
			"Age of the oldest queued webhook event; 0 when the outbox is empty.", nil, nil),
		outboxUp: prometheus.NewDesc("lsproxy_webhook_outbox_up",
			"1 when the outbox figures above were read from the store at this scrape, 0 when the store did not answer.", nil, nil),
	})
}

func (c webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.events
	ch <- c.outbox
	ch <- c.oldest
	ch <- c.outboxUp
}

func (c webhookCollector) Collect(ch chan<- prometheus.Metric) {
	var delivered, failed, dead, dropped int64
	var queued, deadLetters, age float64
	up := 1.0
	if c.n != nil {
		delivered, failed, dead, dropped = c.n.Delivered(), c.n.Failed(), c.n.Dead(), c.n.Dropped()
		if c.n.Outbox != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := c.n.Outbox.OutboxStats(ctx)
			cancel()
			if err != nil {
				up = 0
			} else {
				queued, deadLetters = float64(st.Queued), float64(st.Dead)
				if !st.Oldest.IsZero() {
					age = max(c.n.now().Sub(st.Oldest).Seconds(), 0)
				}
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(delivered), "delivered")
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(failed), "failed")
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(dead), "dead")
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(dropped), "dropped")
	ch <- prometheus.MustNewConstMetric(c.outbox, prometheus.GaugeValue, queued, "queued")
	ch <- prometheus.MustNewConstMetric(c.outbox, prometheus.GaugeValue, deadLetters, "dead")
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(c.outboxUp, prometheus.GaugeValue, up)
}
