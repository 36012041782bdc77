package control

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// A pending tenant has its own badge, filter and count and is not counted
// as flagged; a tenant with a candidate grant shows the identification and
// the accept button, and revoke-links and accept-candidate work from the
// console (issue 22).
func TestConsolePendingAndCandidate(t *testing.T) {
	f := newConsoleFixture(t, adminToken, nil)
	now := f.clock.Now()
	f.put(t, &store.Tenant{ID: "newbie", Status: store.StatusPending, Reason: store.ReasonAwaitingFirstAuthorization, CreatedAt: now})
	f.put(t, &store.Tenant{ID: "flagged", Status: store.StatusReauthorizationRequired, Reason: "refresh token rejected by the provider (invalid_grant)", RefreshToken: "RT-1"})
	cand := &store.Tenant{ID: "biz", Status: store.StatusActive, AccessToken: "AT-OLD", RefreshToken: "RT-OLD",
		AccessExpiresAt: now.Add(time.Hour), Account: &store.Account{ID: "1234", Name: "Bistro"}}
	cand.KeepCandidate(store.Tokens{Access: "AT-NEW", Refresh: "RT-NEW", AccessExpiry: now.Add(time.Hour)}, nil,
		"auth: cannot identify the merchant account: /f/data/businesses answered 503", now.Add(5*time.Second), now)
	f.put(t, cand)
	f.signin(t, "alice", adminToken)

	list := f.get(t, "/console/tenants")
	if !strings.Contains(list.body, `data-count="flagged">1<`) || !strings.Contains(list.body, `data-count="pending">1<`) {
		t.Errorf("counts: pending must not count as flagged:\n%s", list.body[:min(len(list.body), 3000)])
	}
	if !strings.Contains(list.body, `class="status pending"`) {
		t.Error("no pending badge")
	}
	pend := f.get(t, "/console/tenants?status=pending")
	if n := strings.Count(pend.body, `<tr class="`); n != 1 || !strings.Contains(pend.body, "newbie") {
		t.Errorf("pending filter: %d rows", n)
	}
	page := f.get(t, "/console/tenants/biz")
	for _, want := range []string{"Identification", "answered 503", `id="accept-candidate"`, `id="revoke-links"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("tenant page lacks %q", want)
		}
	}
	for _, secret := range []string{"AT-OLD", "RT-OLD", "AT-NEW", "RT-NEW"} {
		if strings.Contains(page.body, secret) {
			t.Fatalf("tenant page shows a token")
		}
	}
	csrf := f.csrf(t)
	if r := f.post(t, "/console/tenants/biz/accept-candidate", url.Values{"csrf": {csrf}}); r.status != 303 {
		t.Fatalf("accept-candidate: %d %s", r.status, r.body)
	}
	if rec, _ := f.store.Get(t.Context(), "biz"); rec.Candidate != nil || rec.AccessToken != "AT-NEW" {
		t.Fatalf("not promoted: %+v", rec)
	}
	if r := f.post(t, "/console/tenants/newbie/revoke-links", url.Values{"csrf": {csrf}}); r.status != 303 {
		t.Fatalf("revoke-links: %d %s", r.status, r.body)
	}
	if rec, _ := f.store.Get(t.Context(), "newbie"); rec.LinkGeneration != 1 {
		t.Fatalf("links not revoked: generation %d", rec.LinkGeneration)
	}
	if len(auditLines(f.logs, "revoke_links")) == 0 || len(auditLines(f.logs, "accept_candidate")) == 0 {
		t.Error("console actions not in the audit log")
	}
}
