package control

import (
	"net/http"
	"strings"
	"testing"

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
