package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

// artifactDir receives a screenshot of every console page the browser test
// visits (ignored by git; good ones are copied to docs/img/ by hand).
const artifactDir = "artifacts"

// requireChromium returns Debian's Chromium. Missing, the test is skipped,
// unless CI is set: then it fails (.ci/run installs the package).
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("LSPROXY_TEST_CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "" {
		t.Skip("chromium is not installed (apt-get install -y chromium); with CI set this is a failure")
	}
	t.Fatal("chromium is not installed and CI is set: .ci/run must install it")
	return ""
}

// browser is one headless Chromium with a fresh profile, closed at cleanup.
type browser struct {
	t    *testing.T
	ctx  context.Context
	html []string // every page's DOM seen, for the no-secrets check
}

func newBrowser(t *testing.T, exe string, timeout time.Duration) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// On a closed network Chromium otherwise waits on its own services.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelTimeout(); cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx}
}

// do runs steps, failing the test with what on error.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("browser: %s: %v (page: %s)", what, err, b.describe())
	}
}

// describe says where the browser is, for failure messages; it uses a
// context of its own (the test's may have run out).
func (b *browser) describe() string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.ctx), 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " " + document.body.innerText.slice(0, 400)`))
	if err != nil {
		return "unknown: " + err.Error()
	}
	return s
}

// act runs steps that make the page navigate (a click, a submit), then
// waits until the new page has loaded and holds an element matching sel.
// Polling from here survives the navigation; a query inside the page does not.
func (b *browser) act(what, sel string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.do(what, steps...)
	b.waitFor(what, sel)
}

// waitFor waits until the loaded page holds an element matching sel.
func (b *browser) waitFor(what, sel string) {
	b.t.Helper()
	js := `document.readyState === "complete" && document.querySelector(` + jsString(sel) + `) !== null`
	if !eventually(20*time.Second, func() bool {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](js))
		return err == nil && ok
	}) {
		b.t.Fatalf("browser: %s: no %s within 20s (page: %s)", what, sel, b.describe())
	}
}

// get runs one action that returns a value.
func get[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// snap saves a screenshot of the page as artifacts/name.png and keeps its DOM.
func (b *browser) snap(name string) {
	b.t.Helper()
	b.t.Logf("%s page %s", time.Now().Format("15:04:05.000"), name)
	b.html = append(b.html, get(b, "html of "+name, chromedp.OuterHTML("html")))
	png := get(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.MkdirAll(artifactDir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(artifactDir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return get(b, "read "+sel, chromedp.Text(sel))
}

func (b *browser) location() string {
	b.t.Helper()
	return get(b, "location", chromedp.Location())
}

// cookies returns every cookie the browser holds for the current page.
func (b *browser) cookies() []*network.Cookie {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		b.t.Fatalf("browser: cookies: %v", err)
	}
	return res.Cookies
}

// postStatus submits a form POST from the page with fetch and returns the
// status (a same-origin request, as a forged form in the page would be).
func (b *browser) postStatus(path, body string) int {
	b.t.Helper()
	js := `fetch(` + jsString(path) + `, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: ` + jsString(body) + `}).then(r => r.status)`
	return get(b, "fetch "+path, chromedp.Evaluate[int](js, chromedp.EvalAwaitPromise))
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// signIn signs in on the console's sign-in page.
func (b *browser) signIn(controlURL, operator, token string) {
	b.t.Helper()
	b.do("sign in",
		chromedp.Navigate(controlURL+"/console/"),
		chromedp.WaitVisible(`input[name="operator"]`),
		chromedp.SendKeys(`input[name="operator"]`, operator),
		chromedp.SendKeys(`input[name="token"]`, token),
	)
	b.snap("console-signin")
	b.act("submit sign-in", `#counts`, chromedp.Submit(`form.signin`))
}

// TestConsoleInBrowser drives Debian's Chromium against the built binary: an
// operator signs in, finds a flagged tenant, creates its link, the merchant
// follows it through the emulator's authorize endpoint and the tenant turns
// active; a forged action and an expired session are refused. No token,
// code or the admin token ever shows in a page, a URL or a cookie.
func TestConsoleInBrowser(t *testing.T) {
	exe := requireChromium(t)
	const flagged = "shop-flagged"
	var emu *upstream
	p := startProxyAt(t, func(controlAddr string) map[string]string {
		redirect := "http://" + controlAddr + "/oauth/callback"
		emu = startEmulator(t, emulator.Config{Mode: emulator.ModeKSeries, RedirectURL: redirect, RequireState: true})
		return with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir(), "LSPROXY_REDIRECT_URL", redirect)
	})
	for _, id := range []string{"shop-amsterdam", "shop-berlin", "shop-lisbon", flagged} {
		p.importTenant(t, id, emu.IssueGrant(id))
		p.expectServes(t, id)
	}
	// The merchant disconnects the app: the next request flags the tenant.
	emu.Revoke(flagged)
	for i := 0; i < 3 && p.getTenant(t, flagged).Status != store.StatusReauthorizationRequired; i++ {
		p.mustGet(t, flagged, "/f/data/businesses")
	}
	if v := p.getTenant(t, flagged); v.Status != store.StatusReauthorizationRequired {
		t.Fatalf("%s not flagged: %+v", flagged, v)
	}

	b := newBrowser(t, exe, 60*time.Second)
	b.signIn(p.ControlURL, "alice", p.adminToken)
	if got := b.text(`[data-count="flagged"]`); got != "1" {
		t.Errorf("flagged count %q, want 1", got)
	}
	b.snap("console-tenants")

	// Find the flagged tenant through the status filter, open it.
	b.do("filter flagged",
		chromedp.SetValue(`select[name="status"]`, "reauthorization_required"),
		chromedp.Submit(`form.filters`),
	)
	b.waitFor("filtered list", `a[href="/console/tenants/`+flagged+`"]`)
	if rows := b.text(`table.tenants tbody`); strings.Contains(rows, "shop-berlin") {
		t.Errorf("status filter shows an active tenant: %q", rows)
	}
	b.act("open tenant", `#create-link`, chromedp.Click(`a[href="/console/tenants/`+flagged+`"]`))
	if why := b.text(`.reason .explain`); !strings.Contains(why, "no longer accepts") {
		t.Errorf("reason in words: %q", why)
	}
	b.snap("console-tenant-flagged")

	// Create the link; the copy button works (the script runs under the CSP).
	b.act("create link", `#authorize-link`, chromedp.Click(`#create-link`))
	link := get(b, "read link", chromedp.Value(`#authorize-link`))
	b.do("copy link", chromedp.Click(`button[data-copy]`), chromedp.WaitVisible(`[data-copied]`))
	if !strings.HasPrefix(link, p.ControlURL+"/oauth/start?") {
		t.Fatalf("authorize link %q", link)
	}
	if loc := b.location(); strings.Contains(loc, "sig=") || strings.Contains(loc, "oauth") {
		t.Errorf("the link is in the console's URL: %s", loc)
	}
	b.snap("console-link")

	// The merchant opens the link (here in the same browser).
	emu.Approve(flagged)
	// (Navigated from the page: the redirect chain crosses origins.)
	get(b, "follow link", chromedp.Evaluate[bool]("window.location.assign("+jsString(link)+"); true"))
	if !eventually(20*time.Second, func() bool {
		loc, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.readyState === "complete" ? location.pathname : ""`))
		return err == nil && loc == "/oauth/callback"
	}) {
		t.Fatalf("the link did not end at the callback page (at %s)", b.location())
	}
	if loc := b.location(); !strings.Contains(loc, "/oauth/callback") {
		t.Fatalf("the link ended at %s", loc)
	}
	b.snap("merchant-authorized")
	p.expectServes(t, flagged)

	b.do("tenant again", chromedp.Navigate(p.ControlURL+"/console/tenants/"+flagged), chromedp.WaitVisible(`.history`))
	if st := b.text(`h1 .status`); st != "active" {
		t.Errorf("tenant status after authorization: %q", st)
	}
	if h := b.text(`.history tbody`); !strings.Contains(h, "Merchant authorized") || !strings.Contains(h, "Flagged") {
		t.Errorf("history: %q", h)
	}
	b.snap("console-tenant-active")
	b.act("force refresh", `p.flash`, chromedp.Click(`#force-refresh`))
	if h := b.text(`.history tbody`); !strings.Contains(h, "Token refreshed") {
		t.Errorf("history after a forced refresh: %q", h)
	}
	b.act("delete page", `input[name="confirm"]`, chromedp.Click(`a.danger`))
	b.snap("console-delete")
	b.do("import page", chromedp.Navigate(p.ControlURL+"/console/import"), chromedp.WaitVisible(`input[name="refresh_token"]`))
	b.snap("console-import")

	// CSRF: a same-origin POST without the form's token, and a form whose
	// token was tampered with, are refused and change nothing.
	if st := b.postStatus("/console/tenants/shop-berlin/delete", "confirm=shop-berlin"); st != http.StatusForbidden {
		t.Errorf("POST without the CSRF token: %d, want 403", st)
	}
	b.do("tampered form",
		chromedp.Navigate(p.ControlURL+"/console/tenants/shop-berlin/delete"),
		chromedp.WaitVisible(`input[name="confirm"]`),
		chromedp.SetAttributeValue(`form.card input[name="csrf"]`, "value", "forged"),
		chromedp.SendKeys(`input[name="confirm"]`, "shop-berlin"),
		chromedp.Submit(`form.card`),
	)
	b.waitFor("tampered form answer", `p.error`)
	if msg := b.text(`p.error`); !strings.Contains(msg, "nothing was changed") {
		t.Errorf("tampered form answer: %q", msg)
	}
	b.snap("console-csrf-refused")
	p.getTenant(t, "shop-berlin") // still there

	// Nothing secret anywhere the browser saw.
	secrets := append(emu.issued(), p.adminToken)
	for _, c := range b.cookies() {
		if c.Name == "lsproxy-console" && (!c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict) {
			t.Errorf("session cookie attributes: %+v", c)
		}
		for _, s := range secrets {
			if strings.Contains(c.Value, s) {
				t.Errorf("cookie %s holds a secret", c.Name)
			}
		}
	}
	for i, html := range b.html {
		for _, s := range secrets {
			if strings.Contains(html, s) {
				t.Errorf("page %d holds a token, code or the admin token", i)
			}
		}
	}
	if audit := p.Logs(); !strings.Contains(audit, `"operator":"alice","action":"authorize","tenant":"`+flagged+`"`) {
		t.Errorf("no audit line for the authorize action:\n%s", tail(audit, 3000))
	}

	// Session expiry, on a process with a short idle timeout: sign in, open
	// a tenant page, let the timeout pass, then act.
	const idle = 5 * time.Second
	q := startProxy(t, with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir(), "LSPROXY_CONSOLE_SESSION_IDLE", idle.String()))
	q.importTenant(t, "shop-porto", emu.IssueGrant("shop-porto"))
	b.signIn(q.ControlURL, "bob", q.adminToken)
	b.do("tenant page", chromedp.Navigate(q.ControlURL+"/console/tenants/shop-porto"), chromedp.WaitVisible(`#force-refresh`))
	// Let the idle timeout pass since the page view (which may have reset
	// the idle clock), plus the second the session's clock is truncated to:
	// there is no event to wait for.
	time.Sleep(idle + 1200*time.Millisecond)
	b.act("refresh after expiry", `p.error`, chromedp.Click(`#force-refresh`))
	if msg := b.text(`p.error`); !strings.Contains(msg, "session expired") {
		t.Errorf("action after expiry: %q", msg)
	}
	b.snap("console-session-expired")
	b.do("page after expiry", chromedp.Navigate(q.ControlURL+"/console/tenants"), chromedp.WaitVisible(`input[name="operator"]`))
	if loc := b.location(); !strings.HasSuffix(loc, "/console/signin") && !strings.Contains(loc, "/console/signin?") {
		t.Errorf("page after expiry at %s", loc)
	}
	if v := q.getTenant(t, "shop-porto"); v.RefreshCount != 0 {
		t.Errorf("the expired session's refresh ran: %+v", v)
	}
}
