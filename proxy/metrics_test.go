package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsLabels: code and method labels (bounded), upstream time only
// for requests that reached the upstream, replays counted.
func TestMetricsLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	hn := newHarness(t, func(h *Handler) { h.Metrics = NewMetrics(reg) })
	hn.do(t, "GET", "/x", map[string]string{"X-Tenant": "acme"}, "")
	hn.do(t, "BREW", "/x", map[string]string{"X-Tenant": "acme"}, "")
	hn.do(t, "GET", "/x", nil, "")
	hn.tokens.tokens["acme"] = "stale"
	hn.tokens.onRecover["acme"] = "tok-acme"
	hn.do(t, "POST", "/x", map[string]string{"X-Tenant": "acme"}, "body")

	got := map[string]float64{}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			if mf.GetName() != "lsproxy_requests_total" && mf.GetName() != "lsproxy_request_replays_total" {
				continue
			}
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"lsproxy_requests_total{code=200,error=,method=GET}":               1,
		"lsproxy_requests_total{code=200,error=,method=POST}":              1,
		"lsproxy_requests_total{code=200,error=,method=other}":             1,
		"lsproxy_requests_total{code=400,error=missing_tenant,method=GET}": 1,
		"lsproxy_request_replays_total{}":                                  1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	mfs, _ = reg.Gather()
	for _, mf := range mfs {
		switch mf.GetName() {
		case "lsproxy_upstream_duration_seconds":
			if c := mf.Metric[0].Histogram.GetSampleCount(); c != 3 {
				t.Errorf("upstream observations %d, want 3 (not the missing-tenant request)", c)
			}
		case "lsproxy_request_duration_seconds":
			if c := mf.Metric[0].Histogram.GetSampleCount(); c != 4 {
				t.Errorf("request observations %d, want 4", c)
			}
		}
	}
}

// TestMetricsCodeBounded: a status outside 100..599 counts as "other", so
// the code label stays bounded; a nil *Metrics records nothing.
func TestMetricsCodeBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for _, status := range []int{101, 200, 599, 0, 99, 600, 999} {
		m.observe(status, "GET", &reqState{}, time.Millisecond)
	}
	var nilMetrics *Metrics
	nilMetrics.observe(200, "GET", &reqState{}, time.Millisecond)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" {
					got[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	want := map[string]float64{"101": 1, "200": 1, "599": 1, "other": 4}
	if len(got) != len(want) {
		t.Fatalf("codes = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("code %q = %v, want %v", k, got[k], v)
		}
	}
}
