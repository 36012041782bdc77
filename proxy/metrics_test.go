package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Request metrics are labelled by status class only: a status outside
// 1xx..5xx counts as "other", so the label stays bounded.
func TestMetricsStatusClass(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for _, status := range []int{101, 200, 204, 302, 404, 503, 599, 0, 99, 600, 999} {
		m.observe(status, "", time.Millisecond)
	}
	var nilMetrics *Metrics
	nilMetrics.observe(200, "", time.Millisecond) // records nothing, does not panic

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetCounter() == nil {
				continue
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "class" {
					got[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	want := map[string]float64{"1xx": 1, "2xx": 2, "3xx": 1, "4xx": 1, "5xx": 2, "other": 4}
	if len(got) != len(want) {
		t.Fatalf("classes = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("class %q = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}
