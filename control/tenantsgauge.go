package control

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lsproxy/lsproxy/store"
)

// TenantsGauge exports lsproxy_tenants{status}: the number of tenants per
// status, counted from the store. Alerts on it stay firing while a tenant
// stays flagged (a counter's increase clears after its window).
//
// A store that implements store.Counter (Redis) counts from its index, a
// few hundred commands whatever the number of tenants; otherwise counting
// reads every record. Either way a scrape recounts only when the last count
// is older than MaxAge; a failed count keeps the last one. Safe for
// concurrent use (Prometheus may scrape in parallel).
type TenantsGauge struct {
	Store store.Store
	// MaxAge is how long a count is reused; 0 means 30s.
	MaxAge time.Duration
	// Timeout bounds one count; 0 means 10s.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	at      time.Time
	counts  map[store.Status]int
	desc    *prometheus.Desc
	errDesc *prometheus.Desc
	errs    float64
}

var _ prometheus.Collector = (*TenantsGauge)(nil)

var tenantStatuses = store.Statuses

func (g *TenantsGauge) descs() (*prometheus.Desc, *prometheus.Desc) {
	if g.desc == nil {
		g.desc = prometheus.NewDesc("lsproxy_tenants", "Tenants by status (counted from the store at most every 30s).", []string{"status"}, nil)
		g.errDesc = prometheus.NewDesc("lsproxy_tenants_count_errors_total", "Failed counts of lsproxy_tenants (the last good count is exported).", nil, nil)
	}
	return g.desc, g.errDesc
}

func (g *TenantsGauge) Describe(ch chan<- *prometheus.Desc) {
	g.mu.Lock()
	d, e := g.descs()
	g.mu.Unlock()
	ch <- d
	ch <- e
}

func (g *TenantsGauge) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	defer g.mu.Unlock()
	d, e := g.descs()
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	maxAge := g.MaxAge
	if maxAge <= 0 {
		maxAge = 30 * time.Second
	}
	if g.counts == nil || now().Sub(g.at) >= maxAge {
		counts, err := g.count()
		if err != nil {
			g.errs++
		} else {
			g.counts, g.at = counts, now()
		}
	}
	for _, st := range tenantStatuses {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(g.counts[st]), string(st))
	}
	ch <- prometheus.MustNewConstMetric(e, prometheus.CounterValue, g.errs)
}

// count counts from the store's index when it can, else reads every
// tenant; it is the one place the gauge reads the store.
func (g *TenantsGauge) count() (map[store.Status]int, error) {
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if c, ok := g.Store.(store.Counter); ok {
		counts, err := c.CountByStatus(ctx)
		if !errors.Is(err, store.ErrNotCounted) {
			return counts, err
		}
	}
	ids, err := g.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	counts := make(map[store.Status]int, len(tenantStatuses))
	for _, id := range ids {
		t, err := g.Store.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrDecrypt) {
			continue // deleted meanwhile; or unreadable, which the admin API reports
		}
		if err != nil {
			return nil, err
		}
		counts[t.Status]++
	}
	return counts, nil
}
