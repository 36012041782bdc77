package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/internal/emulator"
)

// overflow reports the page's scroll width when it is wider than the
// viewport, else 0.
func (b *browser) overflow() int {
	b.t.Helper()
	return get(b, "overflow", chromedp.Evaluate[int](
		`document.documentElement.scrollWidth > document.documentElement.clientWidth ? document.documentElement.scrollWidth : 0`))
}

// TestConsoleWebhooksInBrowser: with the receiver down and a two-retry
// schedule, two tenants' flag events become dead letters. In Chromium the
// operator finds them on the webhooks page and on the tenant's page, at
// 390 px without horizontal overflow (and the tenants list too), brings
// the receiver back and redelivers one from the tenant's page and the
// rest with "redeliver all"; the result page is a GET (a reload sends
// nothing again), and every event arrives with its original id.
func TestConsoleWebhooksInBrowser(t *testing.T) {
	exe := requireChromium(t)
	recv := newHookReceiver(t)
	emu := startEmulator(t, emulator.Config{})
	env := with(baseEnv(emu), append(webhookEnv(recv.URL(), "100ms,100ms"), "LSPROXY_DATA_DIR", t.TempDir())...)
	p := startProxy(t, env)
	for _, id := range []string{"shop-porto", "shop-faro"} {
		p.importTenant(t, id, emu.IssueGrant(id))
		flagThrough(t, p, emu, id)
	}
	var dead control.WebhookEventsView
	if !eventually(15*time.Second, func() bool {
		dead, _ = outboxView(t, p, "dead")
		return dead.Dead == 2
	}) {
		t.Fatalf("dead letters %+v, want 2", dead)
	}

	b := newBrowser(t, exe, 90*time.Second)
	b.signIn(p.ControlURL, "carol", p.adminToken)
	b.act("webhooks page", `table.hooks`, chromedp.Click(`a[href="/console/webhooks"]`))
	if rows := b.text(`table.hooks tbody`); !strings.Contains(rows, "shop-porto") || !strings.Contains(rows, "shop-faro") ||
		!strings.Contains(rows, "dead letter") || !strings.Contains(rows, "3 failed attempts") || !strings.Contains(rows, "dial error") {
		t.Errorf("dead letters on the webhooks page: %q", rows)
	}
	b.snap("console-webhooks")

	// 390 px: no page wider than the screen.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844))
	for _, path := range []string{"/console/webhooks", "/console/tenants", "/console/tenants/shop-porto"} {
		b.do("open "+path, chromedp.Navigate(p.ControlURL+path), chromedp.WaitVisible(`footer`))
		if w := b.overflow(); w != 0 {
			t.Errorf("%s at 390 px: the page is %d px wide", path, w)
		}
	}
	b.snap("console-tenant-390")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 900))

	recv.up(t)
	b.do("tenant page", chromedp.Navigate(p.ControlURL+"/console/tenants/shop-porto"), chromedp.WaitVisible(`#webhooks button.redeliver`))
	b.act("redeliver from the tenant page", `p.flash`, chromedp.Click(`#webhooks button.redeliver`))
	if loc := b.location(); !strings.HasSuffix(loc, "/console/tenants/shop-porto?done=redelivered") {
		t.Errorf("after the redelivery at %s, want the tenant page (a GET)", loc)
	}
	got := recv.waitUnique(t, 1, 15*time.Second)
	if got[0].tenant != "shop-porto" {
		t.Errorf("first redelivered event is %s's", got[0].tenant)
	}
	// The delivery shows among the tenant's last outcomes.
	if !eventually(10*time.Second, func() bool {
		b.do("reload", chromedp.Reload(), chromedp.WaitVisible(`#webhooks`))
		return strings.Contains(b.text(`#webhooks`), "delivered")
	}) {
		t.Errorf("tenant page does not show the delivery: %q", b.text(`#webhooks`))
	}
	b.snap("console-tenant-webhooks")
	if n, _ := recv.deliveries(); len(n) != 1 {
		t.Errorf("%d deliveries after reloading the result page, want 1", len(n))
	}

	b.do("webhooks page again", chromedp.Navigate(p.ControlURL+"/console/webhooks"), chromedp.WaitVisible(`#redeliver-all`))
	b.act("redeliver all", `p.flash`, chromedp.Click(`#redeliver-all`))
	got = recv.waitUnique(t, 2, 15*time.Second)
	want := map[string]bool{}
	for _, e := range dead.Events {
		want[e.ID] = true
	}
	for _, d := range got {
		if !want[d.id] {
			t.Errorf("delivered %s, not a dead letter's id", d.id)
		}
	}
	if !eventually(5*time.Second, func() bool {
		v, code := outboxView(t, p, "queued")
		return code == http.StatusOK && v.Queued == 0 && v.Dead == 0
	}) {
		t.Error("outbox not empty after redeliver all")
	}
	if audit := p.Logs(); !strings.Contains(audit, `"operator":"carol","action":"webhook_redeliver_all"`) {
		t.Errorf("no audit line for redeliver all")
	}
}

// TestConsoleRoundTwoInBrowser: the unknown-tenant page keeps the
// navigation and creates a link; the link page survives a reload (POST-
// redirect-GET); a placeholder offers no refresh or retry; every action is
// in the tenant's action log with who, what, when, result and the link's
// expiry; a reload after a forced refresh refreshes nothing again; 390 px
// without horizontal overflow.
func TestConsoleRoundTwoInBrowser(t *testing.T) {
	exe := requireChromium(t)
	var emu *upstream
	p := startProxyAt(t, func(controlAddr string) map[string]string {
		redirect := "http://" + controlAddr + "/oauth/callback"
		emu = startEmulator(t, emulator.Config{RedirectURL: redirect})
		return with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir(), "LSPROXY_REDIRECT_URL", redirect)
	})
	p.importTenant(t, "shop-active", emu.IssueGrant("shop-active"))

	b := newBrowser(t, exe, 90*time.Second)
	b.signIn(p.ControlURL, "dora", p.adminToken)
	b.do("unknown tenant", chromedp.Navigate(p.ControlURL+"/console/tenants/shop-new"), chromedp.WaitVisible(`#create-link`))
	if nav := b.text(`header nav`); !strings.Contains(nav, "Tenants") || !strings.Contains(nav, "Webhooks") {
		t.Errorf("unknown-tenant page without navigation: %q", nav)
	}
	b.snap("console-unknown-tenant")
	b.act("create link", `#authorize-link`, chromedp.Click(`#create-link`))
	link := get(b, "read link", chromedp.Value(`#authorize-link`))
	if loc := b.location(); strings.Contains(loc, "sig=") || !strings.Contains(loc, "/console/tenants/shop-new?link=") {
		t.Errorf("after creating the link at %s", loc)
	}
	b.do("reload the link page", chromedp.Reload())
	b.waitFor("link after reload", `#authorize-link`)
	if again := get(b, "read link again", chromedp.Value(`#authorize-link`)); again != link {
		t.Errorf("after a reload the link is %q, was %q", again, link)
	}
	if v := p.getTenant(t, "shop-new"); v.HasRefreshToken {
		t.Fatalf("placeholder %+v", v)
	}
	// A tenant awaiting its first authorization is pending, not flagged:
	// its own count and badge (issue 22).
	// (The header counts are cached for a few seconds: the filters answer
	// from the store.)
	b.do("pending filter", chromedp.Navigate(p.ControlURL+"/console/tenants?status=pending"), chromedp.WaitVisible(`tr.pending`))
	if rows := b.text(`tbody`); !strings.Contains(rows, "shop-new") || strings.Contains(rows, "shop-active") {
		t.Errorf("the pending filter lists %q", rows)
	}
	b.do("flagged filter", chromedp.Navigate(p.ControlURL+"/console/tenants?status=reauthorization_required"), chromedp.WaitVisible(`footer`))
	if rows := get(b, "count flagged-filter rows", chromedp.Evaluate[int](`document.querySelectorAll("tbody tr[class]").length`)); rows != 0 {
		t.Errorf("the flagged filter lists %d tenants, want 0 (a pending tenant is not flagged)", rows)
	}
	b.do("tenant list", chromedp.Navigate(p.ControlURL+"/console/tenants"), chromedp.WaitVisible(`tr.pending`))
	if badge := b.text(`tr.pending span.status`); !strings.Contains(badge, "awaiting") && !strings.Contains(badge, "pending") {
		t.Errorf("pending badge %q", badge)
	}
	if n := get(b, "count flagged rows", chromedp.Evaluate[int](`document.querySelectorAll("tr.reauthorization_required").length`)); n != 0 {
		t.Errorf("%d rows shown as flagged", n)
	}
	b.do("back to the tenant", chromedp.Navigate(p.ControlURL+"/console/tenants/shop-new"), chromedp.WaitVisible(`#actions-log`))
	for _, sel := range []string{`#force-refresh`, `#retry`} {
		if n := get(b, "count "+sel, chromedp.Evaluate[int](`document.querySelectorAll(`+jsString(sel)+`).length`)); n != 0 {
			t.Errorf("a placeholder offers %s", sel)
		}
	}
	if log := b.text(`#actions-log`); !strings.Contains(log, "dora") || !strings.Contains(log, "created an authorization link") ||
		!strings.Contains(log, "link valid until") || !strings.Contains(log, "done") {
		t.Errorf("action log after creating a link: %q", log)
	}
	b.do("phone viewport", chromedp.EmulateViewport(390, 844))
	b.do("reload at 390", chromedp.Reload())
	b.waitFor("page at 390", `footer`)
	if w := b.overflow(); w != 0 {
		t.Errorf("the tenant page at 390 px is %d px wide", w)
	}
	b.snap("console-link-390")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 900))
	for _, path := range []string{"/console/tenants", "/console/tenants/shop-new", "/console/webhooks"} {
		b.do("open "+path+" at 1280", chromedp.Navigate(p.ControlURL+path), chromedp.WaitVisible(`footer`))
		if w := b.overflow(); w != 0 {
			t.Errorf("%s at 1280 px: the page is %d px wide", path, w)
		}
	}

	// A forced refresh, then a reload of the result page: one refresh.
	b.do("active tenant", chromedp.Navigate(p.ControlURL+"/console/tenants/shop-active"), chromedp.WaitVisible(`#force-refresh`))
	before := emu.RefreshCount("shop-active")
	b.act("force refresh", `p.flash`, chromedp.Click(`#force-refresh`))
	b.do("reload the result", chromedp.Reload())
	b.waitFor("result after reload", `#actions-log`)
	if n := emu.RefreshCount("shop-active") - before; n != 1 {
		t.Errorf("%d refreshes after a forced refresh and a reload, want 1", n)
	}
	if log := b.text(`#actions-log`); !strings.Contains(log, "forced a refresh") || !strings.Contains(log, "dora") {
		t.Errorf("action log after a refresh: %q", log)
	}
	b.snap("console-actions-log")
}
