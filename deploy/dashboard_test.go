package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDashboardQueries: every query of deploy/grafana-dashboard.json names
// only metrics lsproxy exports (or Prometheus's own up), and the dashboard
// shows the metrics an operator looks at first.
func TestDashboardQueries(t *testing.T) {
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	names := metricNames(t)
	exported := func(n string) bool {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && names[base] {
				return true
			}
		}
		return false
	}
	used := map[string]bool{}
	ident := regexp.MustCompile(`\b(lsproxy_[a-z_]*[a-z]|up)\b`)
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			ms := ident.FindAllString(tg.Expr, -1)
			if len(ms) == 0 {
				t.Errorf("panel %q: query %q names no metric", p.Title, tg.Expr)
			}
			for _, m := range ms {
				if m != "up" && !exported(m) {
					t.Errorf("panel %q: %s is not exported by lsproxy", p.Title, m)
				}
				used[strings.TrimSuffix(m, "_bucket")] = true
			}
			if !strings.Contains(tg.Expr, `job=~"$job"`) {
				t.Errorf("panel %q: query %q ignores the $job variable", p.Title, tg.Expr)
			}
		}
	}
	for _, must := range []string{"lsproxy_requests_total", "lsproxy_request_duration_seconds", "lsproxy_upstream_duration_seconds",
		"lsproxy_token_refreshes_total", "lsproxy_tenants", "lsproxy_token_endpoint_breaker_state", "lsproxy_webhook_events_total",
		"lsproxy_token_cache_requests_total", "lsproxy_build_info", "up"} {
		if !used[must] {
			t.Errorf("the dashboard does not show %s", must)
		}
	}
}
