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

// noOverflow reports the page's scroll width when it is wider than the
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
	if !eventually(5*time.Second, func() bool { v, code := outboxView(t, p, "queued"); return code == http.StatusOK && v.Queued == 0 && v.Dead == 0 }) {
		t.Error("outbox not empty after redeliver all")
	}
	if audit := p.Logs(); !strings.Contains(audit, `"operator":"carol","action":"webhook_redeliver_all"`) {
		t.Errorf("no audit line for redeliver all")
	}
}
