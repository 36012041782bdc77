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

func (f fakeBudgets) Forget(context.Context, string) error { return f.err }

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

// TestAdminResetRateLimit: DELETE /admin/tenants/{id}/rate-limit clears a
// learned block in the shared store (204), answers 404 for an unknown
// tenant, 503 when the budget store fails, 204 with the governor off, and
// needs the admin token.
func TestAdminResetRateLimit(t *testing.T) {
	f := newFixture(t, adminToken)
	if code, body, _ := f.call(t, "PUT", "/admin/tenants/acme", adminToken, `{"refresh_token":"RT-SECRET-9","access_token":"AT-SECRET-9","expires_in":3600}`); code != 201 {
		t.Fatalf("import: %d %s", code, body)
	}
	gov := &ratelimit.Governor{Backend: ratelimit.NewMemory()}
	h := http.Header{}
	h.Set("Retry-After", "3600")
	gov.Observe("acme", http.StatusTooManyRequests, h)
	if b, ok, _ := gov.Budget(context.Background(), "acme"); !ok || b.BlockedUntil == nil {
		t.Fatalf("no block learned: %+v", b)
	}
	for _, tc := range []struct {
		name, tenant, token string
		rl                  RateLimits
		want                int
	}{
		{"no admin token", "acme", "wrong", gov, http.StatusUnauthorized},
		{"unknown tenant", "nobody", adminToken, gov, http.StatusNotFound},
		{"store down", "acme", adminToken, fakeBudgets{err: ratelimit.ErrStore}, http.StatusServiceUnavailable},
		{"governor off", "acme", adminToken, nil, http.StatusNoContent},
		{"cleared", "acme", adminToken, gov, http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := &Server{Store: f.store, Tokens: f.tokens, AdminToken: adminToken, Gatherer: prometheus.NewRegistry(), Logger: zap.NewNop(), RateLimits: tc.rl}
			srv := httptest.NewServer(cs.Handler())
			defer srv.Close()
			req, _ := http.NewRequest("DELETE", srv.URL+"/admin/tenants/"+tc.tenant+"/rate-limit", nil)
			req.Header.Set("Authorization", "Bearer "+tc.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	if _, ok, _ := gov.Budget(context.Background(), "acme"); ok {
		t.Fatal("the block is still known after DELETE")
	}
	if err := gov.AdmitWait(context.Background(), "acme", 1, "", 0); err != nil {
		t.Fatalf("a request after the reset: %v", err)
	}
}
