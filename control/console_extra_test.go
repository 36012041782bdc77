package control

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/store"
)

// TestConsoleUnknownTenantPage: an unknown tenant's page keeps the
// navigation and offers to create a link; a malformed id still gets the
// plain problem page.
func TestConsoleUnknownTenantPage(t *testing.T) {
	f := newConsoleFixture(t, "admin-secret", nil)
	f.signin(t, "alice", "admin-secret")
	p := f.get(t, "/console/tenants/nobody")
	if p.status != http.StatusNotFound || !strings.Contains(p.body, `href="/console/webhooks"`) || !strings.Contains(p.body, `href="/console/tenants"`) ||
		!strings.Contains(p.body, `action="/console/tenants/nobody/authorize"`) || !strings.Contains(p.body, `name="csrf"`) {
		t.Fatalf("unknown tenant page %d:\n%s", p.status, p.body)
	}
	if p := f.get(t, "/console/tenants/-bad"); p.status != http.StatusBadRequest {
		t.Errorf("malformed id: %d", p.status)
	}
}

// TestConsoleHidesImpossibleActions: a placeholder (no grant yet) offers
// neither refresh nor retry; a flagged tenant with a grant offers both; an
// active one refresh only.
func TestConsoleHidesImpossibleActions(t *testing.T) {
	f := newConsoleFixture(t, "admin-secret", nil)
	f.put(t, &store.Tenant{ID: "placeholder", Status: store.StatusReauthorizationRequired, Reason: "awaiting the merchant's first authorization"})
	f.put(t, &store.Tenant{ID: "flagged", Status: store.StatusReauthorizationRequired, Reason: "refresh token rejected by the provider (invalid_grant)", RefreshToken: "RT-x"})
	f.put(t, &store.Tenant{ID: "active", Status: store.StatusActive, RefreshToken: "RT-y"})
	f.signin(t, "alice", "admin-secret")
	for _, tc := range []struct {
		id             string
		refresh, retry bool
	}{{"placeholder", false, false}, {"flagged", true, true}, {"active", true, false}} {
		p := f.get(t, "/console/tenants/"+tc.id)
		if got := strings.Contains(p.body, `id="force-refresh"`); got != tc.refresh {
			t.Errorf("%s: refresh offered %v, want %v", tc.id, got, tc.refresh)
		}
		if got := strings.Contains(p.body, `id="retry"`); got != tc.retry {
			t.Errorf("%s: retry offered %v, want %v", tc.id, got, tc.retry)
		}
		if got := strings.Contains(p.body, `id="no-grant"`); got == tc.refresh {
			t.Errorf("%s: the no-grant note shown %v", tc.id, got)
		}
		if !strings.Contains(p.body, `id="create-link"`) {
			t.Errorf("%s: no link button", tc.id)
		}
	}
}

func TestBudgetWords(t *testing.T) {
	for _, tc := range []struct {
		in   map[string]any
		want string
	}{
		{map[string]any{"kind": "bucket", "level": 15.0, "size": 60.0, "drip_rate": 1.0}, "45 of 60 units free (25% used), refilling 1 per second"},
		{map[string]any{"kind": "window", "limit": 300.0, "used": 120.0, "reset_at": "2026-12-01T12:05:00Z"}, "180 of 300 requests left in this window, which resets at 12:05:00 UTC"},
		{map[string]any{"blocked_until": "2026-12-01T12:00:30Z"}, "Lightspeed asked to wait (429) until 12:00:30 UTC"},
		{map[string]any{"kind": "bucket", "size": 0.0}, ""},
		{map[string]any{"something": "else"}, ""},
	} {
		if got := budgetWords(tc.in); got != tc.want {
			t.Errorf("budgetWords(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// The tenant page uses the words, not the raw keys.
	if got := budget(map[string]any{"rate_limit": map[string]any{"kind": "bucket", "level": 0.0, "size": 10.0, "drip_rate": 0.5}}); strings.Contains(got, "drip_rate") || !strings.Contains(got, "10 of 10 units free") {
		t.Errorf("budget = %q", got)
	}
}

type expiringOnboarding struct{ fakeOnboarding }

func (expiringOnboarding) AuthorizeLink(_ context.Context, tenant string) (string, error) {
	return "https://merchant.example/start?tenant=" + tenant + "&exp=1796212800&sig=abc", nil
}

// TestConsoleActionLog: console actions (with a link's expiry) and admin
// API calls land in the tenant's action log, shown on its page with who,
// what, when and the result; the link itself is never recorded.
func TestConsoleActionLog(t *testing.T) {
	f := newConsoleFixture(t, adminToken, nil)
	f.put(t, &store.Tenant{ID: "acme", Status: store.StatusActive, RefreshToken: "RT-secret-1"})
	f.srv.Close()
	cs := &Server{Store: f.store, Tokens: f.tokens, AdminToken: adminToken, Gatherer: prometheus.NewRegistry(),
		Logger: zap.NewNop(), Now: f.clock.Now, Onboarding: expiringOnboarding{}}
	f.srv = httptest.NewServer(cs.Handler())
	t.Cleanup(f.srv.Close)
	f.signin(t, "alice", adminToken)
	token := f.csrf(t)
	if r := f.post(t, "/console/tenants/acme/authorize", url.Values{"csrf": {token}}); r.status != http.StatusSeeOther {
		t.Fatalf("authorize %d", r.status)
	}
	if r := f.post(t, "/console/tenants/acme/refresh", url.Values{"csrf": {token}}); r.status != http.StatusSeeOther {
		t.Fatalf("refresh %d", r.status)
	}
	// The admin API: a refused retry (the tenant is active) is recorded as failed.
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/admin/tenants/acme/retry", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	acts, err := f.store.Actions(context.Background(), "acme", 10)
	if err != nil || len(acts) != 3 {
		t.Fatalf("actions %+v, %v", acts, err)
	}
	if a := acts[2]; a.Operator != "alice" || a.Action != "authorize" || a.Result != "ok" || a.Detail != "link valid until 2026-12-02 12:00 UTC" || !a.At.Equal(f.clock.Now()) {
		t.Errorf("authorize entry %+v", a)
	}
	if a := acts[1]; a.Operator != "alice" || a.Action != "refresh" || a.Status != http.StatusOK {
		t.Errorf("refresh entry %+v", a)
	}
	if a := acts[0]; a.Operator != "admin-token" || a.Action != "retry" || (a.Result == "ok") != (resp.StatusCode < 400) {
		t.Errorf("admin retry entry %+v (answered %d)", a, resp.StatusCode)
	}
	p := f.get(t, "/console/tenants/acme")
	log := p.body[strings.Index(p.body, `id="actions-log"`):]
	for _, want := range []string{"alice", "created an authorization link", "link valid until 2026-12-02 12:00 UTC", "forced a refresh", "admin API", "retried the stored grant"} {
		if !strings.Contains(log, want) {
			t.Errorf("action log on the page lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "sig=abc") || strings.Contains(p.body, "RT-secret-1") {
		t.Error("the action log shows a link or a token")
	}
}
