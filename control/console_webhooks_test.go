package control

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// buryEvent adds an event for tenant and makes it a dead letter.
func buryEvent(t *testing.T, s *store.Bolt, id, tenant string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	if err := s.OutboxAdd(ctx, store.OutboxEvent{ID: id, Tenant: tenant, Type: "tenant.flagged", Payload: []byte(`{}`), CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	evs, err := s.OutboxClaim(ctx, at.Add(time.Second), time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.ID == id {
			if err := s.OutboxBury(ctx, ev, at.Add(time.Second), "503 Service Unavailable"); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("event %s not claimed", id)
}

// TestConsoleWebhooks: the webhooks page lists a dead letter; redelivering
// it needs the session's CSRF token, answers with a redirect (a reload
// repeats nothing) and is audited under the operator; the tenant's page
// shows its webhook events.
func TestConsoleWebhooks(t *testing.T) {
	f := newConsoleFixture(t, "admin-secret", nil)
	now := f.clock.Now()
	f.put(t, &store.Tenant{ID: "acme", Status: store.StatusActive, RefreshToken: "RT-secret-xyz"})
	buryEvent(t, f.store, "evt_dead1", "acme", now)
	if r := f.signin(t, "alice", "admin-secret"); r.status != http.StatusSeeOther {
		t.Fatalf("sign-in %d", r.status)
	}
	p := f.get(t, "/console/webhooks")
	if p.status != http.StatusOK || !strings.Contains(p.body, "evt_dead1") || !strings.Contains(p.body, "dead letter") ||
		!strings.Contains(p.body, "503 Service Unavailable") || !strings.Contains(p.body, `id="redeliver-all"`) {
		t.Fatalf("webhooks page %d:\n%s", p.status, p.body)
	}
	tp := f.get(t, "/console/tenants/acme")
	if !strings.Contains(tp.body, `id="webhooks"`) || !strings.Contains(tp.body, "evt_dead1") || !strings.Contains(tp.body, "gave up") {
		t.Fatalf("tenant page without its webhook events:\n%s", tp.body)
	}
	csrf := f.csrf(t)

	// Without the CSRF token: refused, nothing moved.
	if r := f.post(t, "/console/webhooks/events/evt_dead1/redeliver", url.Values{"state": {"dead"}}); r.status != http.StatusForbidden {
		t.Errorf("redeliver without csrf: %d", r.status)
	}
	if st, _ := f.store.OutboxStats(context.Background()); st.Dead != 1 {
		t.Fatalf("a refused redelivery moved the event: %+v", st)
	}
	// A malformed id: a problem page, nothing moved.
	if r := f.post(t, "/console/webhooks/events/bad%20id/redeliver", url.Values{"csrf": {csrf}}); r.status != http.StatusBadRequest {
		t.Errorf("redeliver of a malformed id: %d", r.status)
	}

	r := f.post(t, "/console/webhooks/events/evt_dead1/redeliver", url.Values{"csrf": {csrf}, "tenant": {"acme"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/tenants/acme?done=redelivered" {
		t.Fatalf("redeliver: %d to %q", r.status, r.header.Get("Location"))
	}
	if st, _ := f.store.OutboxStats(context.Background()); st.Dead != 0 || st.Queued != 1 {
		t.Fatalf("after redeliver: %+v", st)
	}
	back := f.get(t, r.header.Get("Location"))
	if !strings.Contains(back.body, "queued for delivery again") || !strings.Contains(back.body, "waiting to be sent") {
		t.Errorf("tenant page after the redelivery:\n%s", back.body)
	}
	if lines := auditLines(f.logs, "webhook_redeliver"); len(lines) != 2 || lines[0]["status"] != int64(400) || lines[1]["operator"] != "alice" || lines[1]["status"] != int64(200) {
		t.Errorf("audit lines %v", lines)
	}

	// Redeliver all from the dead tab: back to that tab.
	buryEvent(t, f.store, "evt_dead2", "bolt", now.Add(time.Minute))
	r = f.post(t, "/console/webhooks/redeliver", url.Values{"csrf": {csrf}, "state": {"dead"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/webhooks?done=redelivered-all&state=dead" {
		t.Fatalf("redeliver all: %d to %q", r.status, r.header.Get("Location"))
	}
	if p := f.get(t, r.header.Get("Location")); !strings.Contains(p.body, "No events.") || strings.Contains(p.body, "RT-secret") {
		t.Errorf("dead tab after redeliver all:\n%s", p.body)
	}
}
