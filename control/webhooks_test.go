package control

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// TestAdminWebhookEvents: list dead and failed events of the outbox,
// redeliver one and all; bad input changes nothing.
func TestAdminWebhookEvents(t *testing.T) {
	f := newFixture(t, adminToken)
	ctx := context.Background()
	ob := store.Outbox(f.store)
	now := time.Now()
	for i, tenant := range []string{"acme", "bolt", "acme"} {
		ev := store.OutboxEvent{ID: "evt_" + string(rune('a'+i)), Tenant: tenant, Type: "tenant.flagged", Payload: []byte(`{}`), CreatedAt: now.Add(time.Duration(i) * time.Millisecond)}
		if err := ob.OutboxAdd(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	claimed, err := ob.OutboxClaim(ctx, now.Add(time.Second), time.Minute, 10)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claim = %v, %v", claimed, err)
	}
	for _, ev := range claimed {
		if ev.Tenant == "acme" {
			if err := ob.OutboxBury(ctx, ev, now, "503 Service Unavailable"); err != nil {
				t.Fatal(err)
			}
		} else if err := ob.OutboxRetry(ctx, ev, now.Add(time.Hour), "connection refused"); err != nil {
			t.Fatal(err)
		}
	}
	list := func(query string) WebhookEventsView {
		t.Helper()
		code, body, _ := f.call(t, http.MethodGet, "/admin/webhooks/events"+query, adminToken, "")
		if code != http.StatusOK {
			t.Fatalf("GET %s = %d %s", query, code, body)
		}
		var v WebhookEventsView
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := list("")
	if len(v.Events) != 1 || v.Events[0].ID != "evt_a" || v.Events[0].State != "dead" || v.Events[0].LastError != "503 Service Unavailable" ||
		v.Events[0].DeadAt == nil || v.Queued != 2 || v.Dead != 1 || v.OldestQueuedAt == nil {
		t.Fatalf("dead list %+v", v)
	}
	v = list("?state=failed")
	if len(v.Events) != 1 || v.Events[0].ID != "evt_b" || v.Events[0].State != "failed" || v.Events[0].NextAttemptAt == nil || v.Events[0].Attempts != 1 {
		t.Fatalf("failed list %+v", v)
	}
	if v = list("?state=queued&tenant=acme"); len(v.Events) != 1 || v.Events[0].ID != "evt_c" || v.Events[0].State != "queued" {
		t.Fatalf("queued acme list %+v", v)
	}
	if v = list("?state=recent&tenant=acme"); len(v.Events) != 1 || v.Events[0].ID != "evt_a" || v.Events[0].State != "dead" {
		t.Fatalf("recent acme list %+v", v)
	}
	for _, q := range []string{"?state=nope", "?limit=0", "?limit=1001", "?tenant=-bad", "?state=recent"} {
		if code, body, _ := f.call(t, http.MethodGet, "/admin/webhooks/events"+q, adminToken, ""); code != http.StatusBadRequest {
			t.Errorf("GET %s = %d %s, want 400", q, code, body)
		}
	}
	if code, _, _ := f.call(t, http.MethodGet, "/admin/webhooks/events", "", ""); code != http.StatusUnauthorized {
		t.Errorf("without the admin token: %d", code)
	}

	code, body, hdr := f.call(t, http.MethodPost, "/admin/webhooks/events/evt_zz/redeliver", adminToken, "")
	if code != http.StatusNotFound || hdr.Get("X-Lsproxy-Error") != "unknown_event" {
		t.Errorf("redeliver unknown = %d %s", code, body)
	}
	if code, body, _ := f.call(t, http.MethodPost, "/admin/webhooks/events/bad%20id/redeliver", adminToken, ""); code != http.StatusBadRequest {
		t.Errorf("redeliver malformed id = %d %s", code, body)
	}
	if st, _ := ob.OutboxStats(ctx); st.Dead != 1 || st.Queued != 2 {
		t.Fatalf("bad input changed the outbox: %+v", st)
	}
	code, body, _ = f.call(t, http.MethodPost, "/admin/webhooks/events/evt_a/redeliver", adminToken, "")
	if code != http.StatusOK || !strings.Contains(body, `"redelivered":1`) {
		t.Fatalf("redeliver evt_a = %d %s", code, body)
	}
	if st, _ := ob.OutboxStats(ctx); st.Dead != 0 || st.Queued != 3 {
		t.Fatalf("after redeliver: %+v", st)
	}
	code, body, _ = f.call(t, http.MethodPost, "/admin/webhooks/redeliver", adminToken, "")
	if code != http.StatusOK || !strings.Contains(body, `"redelivered":1`) { // evt_b, waiting for its retry
		t.Fatalf("redeliver all = %d %s", code, body)
	}
	if !strings.Contains(f.logs.All()[len(f.logs.All())-1].ContextMap()["action"].(string), "webhook_redeliver_all") {
		t.Errorf("audit line %v", f.logs.All()[len(f.logs.All())-1].ContextMap())
	}
}
