package onboard_test

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// revoke calls POST /admin/tenants/{id}/revoke-links.
func (f *fixture) revoke(tenant string) {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.ctlURL+"/admin/tenants/"+tenant+"/revoke-links", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("revoke-links: %d", resp.StatusCode)
	}
}

// Revoked links stop working at /oauth/start and at the callback of a
// flow started before; links made afterwards work. A link made before a
// tenant id was deleted does not work for the tenant created again.
func TestOnboardRevokeLinks(t *testing.T) {
	f := newFixture(t, fixOpts{})
	f.em.Approve("acme")
	old := f.link("acme")
	midFlow := f.toCallback(f.link("acme")) // started, not finished
	f.revoke("acme")
	mustFail(t, get(t, browser, old), http.StatusGone, "withdrawn")
	mustFail(t, get(t, browser, midFlow), http.StatusGone, "withdrawn")
	if rec := f.tenant("acme"); rec.Status != store.StatusPending || rec.AccessToken != "" {
		t.Fatalf("a revoked link changed the tenant: %+v", rec)
	}
	if r := f.open(f.link("acme")); r.status != http.StatusOK {
		t.Fatalf("a new link after revocation: %d %s", r.status, r.body)
	}
	if h := f.tenant("acme").History; len(h) < 2 || h[0].Kind != store.EventLinksRevoked {
		t.Fatalf("history %+v", h)
	}

	// Delete and create again: the earlier link is dead.
	stale := f.link("gone")
	if err := f.st.Delete(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Put(context.Background(), &store.Tenant{ID: "gone", Status: store.StatusActive, RefreshToken: "rt"}, 0); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Second)
	mustFail(t, get(t, browser, stale), http.StatusGone, "withdrawn")
}

// The state is bound to the browser that opened the link: a callback in
// another browser is refused and does not use the state up; the right
// browser then finishes.
func TestOnboardStateBoundToBrowser(t *testing.T) {
	f := newFixture(t, fixOpts{})
	f.em.Approve("acme")
	cb := f.toCallback(f.link("acme"))
	jar, _ := cookiejar.New(nil)
	other := &http.Client{Timeout: 10 * time.Second, Jar: jar}
	mustFail(t, get(t, other, cb), http.StatusBadRequest, "another browser")
	if rec := f.tenant("acme"); rec.AccessToken != "" {
		t.Fatal("a callback in another browser stored tokens")
	}
	if r := get(t, browser, cb); r.status != http.StatusOK {
		t.Fatalf("the browser that started: %d %s", r.status, r.body)
	}
	if rec := f.tenant("acme"); rec.Status != store.StatusActive {
		t.Fatalf("not connected: %+v", rec)
	}
}
