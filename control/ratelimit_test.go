package control

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/ratelimit"
)

type fakeBudgets struct {
	b   ratelimit.Budget
	ok  bool
	err error
}

func (f fakeBudgets) Budget(context.Context, string) (ratelimit.Budget, bool, error) {
	return f.b, f.ok, f.err
}

// TestAdminShowsBudget: GET /admin/tenants/{id} adds the last known budget,
// leaves it out when unknown or when the store does not answer, and never
// shows a token.
func TestAdminShowsBudget(t *testing.T) {
	f := newFixture(t, adminToken)
	if code, body, _ := f.call(t, "PUT", "/admin/tenants/acme", adminToken, `{"refresh_token":"RT-SECRET-9","access_token":"AT-SECRET-9","expires_in":3600}`); code != 201 {
		t.Fatalf("import: %d %s", code, body)
	}
	blocked := time.Date(2026, 12, 1, 12, 0, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		rl   RateLimits
		want string // substring of the view's rate_limit, "" = absent
	}{
		{"known", fakeBudgets{b: ratelimit.Budget{Kind: "bucket", Level: 12.5, Size: 60, DripRate: 1, BlockedUntil: &blocked}, ok: true}, `"rate_limit":{"kind":"bucket","level":12.5,"size":60,"drip_rate":1,"blocked_until":"2026-12-01T12:00:05Z"}`},
		{"unknown", fakeBudgets{}, ""},
		{"store down", fakeBudgets{err: ratelimit.ErrStore}, ""},
		{"governor off", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := &Server{Store: f.store, Tokens: f.tokens, AdminToken: adminToken, Gatherer: prometheus.NewRegistry(), Logger: zap.NewNop(), RateLimits: tc.rl}
			srv := httptest.NewServer(cs.Handler())
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL+"/admin/tenants/acme", nil)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var raw json.RawMessage
			if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&raw) != nil {
				t.Fatalf("status %d", resp.StatusCode)
			}
			body := string(raw)
			if strings.Contains(body, "SECRET") {
				t.Fatalf("a token in the admin view: %s", body)
			}
			switch {
			case tc.want == "" && strings.Contains(body, "rate_limit"):
				t.Fatalf("rate_limit shown: %s", body)
			case tc.want != "" && !strings.Contains(body, tc.want):
				t.Fatalf("view %s lacks %s", body, tc.want)
			}
		})
	}
}
