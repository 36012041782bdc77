package control

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lsproxy/lsproxy/internal/testclock"
	"github.com/lsproxy/lsproxy/store"
)

// consoleFixture is a control server with a settable clock and a browser-
// like client (cookie jar, no redirects followed, Origin set on POSTs).
type consoleFixture struct {
	srv    *httptest.Server
	store  *store.Bolt
	tokens *fakeTokens
	logs   *observer.ObservedLogs
	clock  *testclock.Clock
	client *http.Client
}

func newConsoleFixture(t *testing.T, admin string, key []byte) *consoleFixture {
	t.Helper()
	keys, _ := store.NewKeyring([]byte(strings.Repeat("c", 32)))
	s, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return newConsoleFixtureOn(t, admin, key, s)
}

// newConsoleFixtureOn is a console on an existing store: another replica.
func newConsoleFixtureOn(t *testing.T, admin string, key []byte, s *store.Bolt) *consoleFixture {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	clock := testclock.New(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	ft := &fakeTokens{}
	cs := &Server{Store: s, Tokens: ft, AdminToken: admin, Gatherer: prometheus.NewRegistry(), Provider: "k-series",
		Logger: zap.New(core), Now: clock.Now, SessionKey: key, ConsoleIdle: 10 * time.Minute}
	srv := httptest.NewServer(cs.Handler())
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &consoleFixture{srv: srv, store: s, tokens: ft, logs: logs, clock: clock, client: client}
}

type page struct {
	status int
	body   string
	header http.Header
}

func (f *consoleFixture) get(t *testing.T, path string) page {
	t.Helper()
	resp, err := f.client.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, string(b), resp.Header}
}

// post submits a form as the console's own pages do (same-origin fetch
// metadata); extra headers override.
func (f *consoleFixture) post(t *testing.T, path string, form url.Values, hdr ...string) page {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", f.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, string(b), resp.Header}
}

func (f *consoleFixture) signin(t *testing.T, operator, token string) page {
	t.Helper()
	return f.post(t, "/console/signin", url.Values{"operator": {operator}, "token": {token}})
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the synchronizer token from a console page.
func (f *consoleFixture) csrf(t *testing.T) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(f.get(t, "/console/tenants").body)
	if m == nil {
		t.Fatal("no csrf token on the tenants page")
	}
	return m[1]
}

func (f *consoleFixture) put(t *testing.T, tn *store.Tenant) {
	t.Helper()
	if _, err := f.store.Put(context.Background(), tn, 0); err != nil {
		t.Fatal(err)
	}
}

func auditLines(logs *observer.ObservedLogs, action string) []map[string]any {
	var out []map[string]any
	for _, e := range logs.FilterMessage("admin").All() {
		if m := e.ContextMap(); m["action"] == action {
			out = append(out, m)
		}
	}
	return out
}

// No admin token: the console does not exist.
func TestConsoleOffWithoutAdminToken(t *testing.T) {
	f := newConsoleFixture(t, "", nil)
	for _, p := range []string{"/console/", "/console/signin", "/console/static/console.js"} {
		if r := f.get(t, p); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
	if r := f.signin(t, "alice", ""); r.status != http.StatusNotFound {
		t.Errorf("sign-in with the console off: %d", r.status)
	}
}

// Sign-in exchanges the admin token for a session cookie with the right
// attributes; a wrong token or name is refused and audited.
func TestConsoleSignin(t *testing.T) {
	f := newConsoleFixture(t, adminToken, nil)
	if r := f.get(t, "/console/tenants"); r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/signin" {
		t.Fatalf("unauthenticated tenants page: %d %s", r.status, r.header.Get("Location"))
	}
	r := f.get(t, "/console/signin")
	if r.status != http.StatusOK || !strings.Contains(r.body, `type="password"`) {
		t.Fatalf("sign-in page: %d", r.status)
	}
	csp := r.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if strings.Contains(r.body, "<script>") || strings.Contains(r.body, " on") && regexp.MustCompile(`\son[a-z]+=`).MatchString(r.body) {
		t.Error("inline script on the sign-in page")
	}

	if r := f.signin(t, "alice", "wrong"); r.status != http.StatusUnauthorized || len(r.header.Values("Set-Cookie")) != 0 {
		t.Errorf("wrong token: %d cookies %v", r.status, r.header.Values("Set-Cookie"))
	}
	if r := f.signin(t, "bad name!", adminToken); r.status != http.StatusBadRequest {
		t.Errorf("bad operator name: %d", r.status)
	}
	r = f.signin(t, "alice", adminToken)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/tenants" {
		t.Fatalf("sign-in: %d %s", r.status, r.body)
	}
	c := r.header.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/console/"} {
		if !strings.Contains(c, attr) {
			t.Errorf("cookie %q lacks %s", c, attr)
		}
	}
	if strings.Contains(c, "Secure") {
		t.Errorf("cookie over plain HTTP marked Secure: %q", c)
	}
	if strings.Contains(c, adminToken) {
		t.Error("cookie holds the admin token")
	}
	if r := f.get(t, "/console/tenants"); r.status != http.StatusOK || !strings.Contains(r.body, "Signed in as <b>alice</b>") {
		t.Fatalf("tenants page after sign-in: %d", r.status)
	}
	if l := auditLines(f.logs, "signin"); len(l) != 3 || l[0]["refused"] != "bad_token" || l[2]["operator"] != "alice" || l[2]["who"] != "console" {
		t.Errorf("sign-in audit: %v", l)
	}
}

// Over TLS the cookie is Secure and __Secure- prefixed.
func TestConsoleCookieSecureOnTLS(t *testing.T) {
	keys, _ := store.NewKeyring([]byte(strings.Repeat("c", 32)))
	s, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cs := &Server{Store: s, Tokens: &fakeTokens{}, AdminToken: adminToken, Gatherer: prometheus.NewRegistry()}
	srv := httptest.NewTLSServer(cs.Handler())
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/console/signin", strings.NewReader(url.Values{"operator": {"bob"}, "token": {adminToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c := resp.Header.Get("Set-Cookie")
	if !strings.HasPrefix(c, "__Secure-lsproxy-console=") || !strings.Contains(c, "; Secure") || !strings.Contains(c, "HttpOnly") {
		t.Errorf("TLS cookie %q", c)
	}
}

// Every action needs the session's CSRF token and a same-origin request;
// a refused action changes nothing and is audited.
func TestConsoleCSRFRefused(t *testing.T) {
	f := newConsoleFixture(t, adminToken, nil)
	f.put(t, &store.Tenant{ID: "acme", RefreshToken: "RT-1", Status: store.StatusActive})
	f.signin(t, "alice", adminToken)
	token := f.csrf(t)

	// Another session's token does not work for this one.
	other := newConsoleFixture(t, adminToken, nil)
	other.signin(t, "mallory", adminToken)
	foreign := other.csrf(t)

	cases := []struct {
		name string
		form url.Values
		hdr  []string
	}{
		{"no token", url.Values{"confirm": {"acme"}}, nil},
		{"wrong token", url.Values{"confirm": {"acme"}, "csrf": {"x" + token}}, nil},
		{"another session's token", url.Values{"confirm": {"acme"}, "csrf": {foreign}}, nil},
		{"cross-site fetch metadata", url.Values{"confirm": {"acme"}, "csrf": {token}}, []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}},
		{"foreign origin", url.Values{"confirm": {"acme"}, "csrf": {token}}, []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}},
	}
	for _, c := range cases {
		r := f.post(t, "/console/tenants/acme/delete", c.form, c.hdr...)
		if r.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", c.name, r.status)
		}
	}
	if _, err := f.store.Get(context.Background(), "acme"); err != nil {
		t.Fatalf("tenant gone after refused deletes: %v", err)
	}
	if l := auditLines(f.logs, "csrf_refused"); len(l) != len(cases) {
		t.Errorf("%d csrf_refused audit lines, want %d", len(l), len(cases))
	}
	// The same request with the token is accepted.
	if r := f.post(t, "/console/tenants/acme/delete", url.Values{"confirm": {"acme"}, "csrf": {token}}); r.status != http.StatusSeeOther {
		t.Fatalf("delete with token: %d %s", r.status, r.body)
	}
	if _, err := f.store.Get(context.Background(), "acme"); err == nil {
		t.Fatal("tenant still there after the delete")
	}
	if l := auditLines(f.logs, "delete"); len(l) != 1 || l[0]["operator"] != "alice" || l[0]["tenant"] != "acme" || l[0]["status"] != int64(204) {
		t.Errorf("delete audit: %v", l)
	}
}

// A session ends after the idle timeout: pages go to the sign-in page, an
// action is refused (401) and changes nothing. A forged or other-key
// cookie is no session either.
func TestConsoleSessionExpiry(t *testing.T) {
	f := newConsoleFixture(t, adminToken, []byte(strings.Repeat("k", 32)))
	f.put(t, &store.Tenant{ID: "acme", RefreshToken: "RT-1", Status: store.StatusActive})
	f.signin(t, "alice", adminToken)
	token := f.csrf(t)

	// Activity keeps it alive past one idle period.
	for i := 0; i < 3; i++ {
		f.clock.Advance(6 * time.Minute)
		if r := f.get(t, "/console/tenants"); r.status != http.StatusOK {
			t.Fatalf("active session after %d min: %d", 6*(i+1), r.status)
		}
	}
	// The counts poll does not count as activity.
	f.clock.Advance(6 * time.Minute)
	f.get(t, "/console/counts")
	f.clock.Advance(5 * time.Minute)
	r := f.post(t, "/console/tenants/acme/delete", url.Values{"confirm": {"acme"}, "csrf": {token}})
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, "expired") {
		t.Fatalf("action after the idle timeout: %d %s", r.status, r.body)
	}
	if _, err := f.store.Get(context.Background(), "acme"); err != nil {
		t.Fatalf("expired session deleted the tenant: %v", err)
	}
	// The refusal cleared the cookie; a fresh expired cookie sends pages to sign-in.
	if r := f.get(t, "/console/tenants"); r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/console/signin") {
		t.Errorf("page after expiry: %d %s", r.status, r.header.Get("Location"))
	}
	if l := auditLines(f.logs, "session_refused"); len(l) != 1 || l[0]["refused"] != "delete" {
		t.Errorf("session_refused audit: %v", l)
	}

	// A session signed with another key (another deployment) is refused.
	g := newConsoleFixture(t, adminToken, []byte(strings.Repeat("z", 32)))
	g.signin(t, "eve", adminToken)
	u, _ := url.Parse(g.srv.URL + "/console/")
	fu, _ := url.Parse(f.srv.URL + "/console/")
	f.client.Jar.SetCookies(fu, g.client.Jar.Cookies(u))
	if r := f.get(t, "/console/tenants"); r.status != http.StatusSeeOther {
		t.Errorf("cookie of another key: %d", r.status)
	}
	// The same key (another replica on the same store) accepts it.
	h := newConsoleFixtureOn(t, adminToken, []byte(strings.Repeat("z", 32)), g.store)
	hu, _ := url.Parse(h.srv.URL + "/console/")
	h.client.Jar.SetCookies(hu, g.client.Jar.Cookies(u))
	if r := h.get(t, "/console/tenants"); r.status != http.StatusOK {
		t.Errorf("cookie on a replica with the same key: %d", r.status)
	}
}

// The pages show what the admin view holds (status, reason in words,
// history, account and locations when present) and never a token; an
// import failure does not echo the pasted tokens.
func TestConsolePagesShowNoSecrets(t *testing.T) {
	f := newConsoleFixture(t, adminToken, nil)
	now := f.clock.Now()
	flagged := &store.Tenant{ID: "shop-flagged", AccessToken: "AT-SECRET-1", RefreshToken: "RT-SECRET-1",
		Status: store.StatusReauthorizationRequired, Reason: "refresh token rejected by the provider (invalid_grant)", FlaggedAt: now,
		Extra: map[string]string{"domain_prefix": "shop"}}
	flagged.Record(now.Add(-2*time.Hour), store.EventRefreshed, "")
	flagged.Record(now.Add(-90*time.Minute), store.EventRefreshed, "")
	flagged.Record(now.Add(-10*time.Minute), store.EventRefreshFailed, "token endpoint answered 503")
	flagged.Record(now, store.EventFlagged, flagged.Reason)
	f.put(t, flagged)
	for i := 0; i < 30; i++ {
		f.put(t, &store.Tenant{ID: fmt.Sprintf("shop-%02d", i), AccessToken: "AT-SECRET-2", RefreshToken: "RT-SECRET-2",
			AccessExpiresAt: now.Add(time.Hour), Status: store.StatusActive})
	}
	f.signin(t, "alice", adminToken)

	var all strings.Builder
	list := f.get(t, "/console/tenants")
	all.WriteString(list.body)
	if !strings.Contains(list.body, `data-count="active">30<`) || !strings.Contains(list.body, `data-count="flagged">1<`) ||
		!strings.Contains(list.body, `data-count="refresh_failures_last_hour">2<`) {
		t.Errorf("counts wrong:\n%s", list.body[:min(len(list.body), 3000)])
	}
	if n := strings.Count(list.body, `<tr class="`); n != consolePageSize {
		t.Errorf("first page: %d rows, want %d", n, consolePageSize)
	}
	m := regexp.MustCompile(`href="(/console/tenants\?[^"]*after=[^"]+)"`).FindStringSubmatch(list.body)
	if m == nil {
		t.Fatal("no next-page link")
	}
	next := f.get(t, strings.ReplaceAll(m[1], "&amp;", "&"))
	all.WriteString(next.body)
	if n := strings.Count(next.body, `<tr class="`); n != 31-consolePageSize {
		t.Errorf("second page: %d rows", n)
	}
	flaggedOnly := f.get(t, "/console/tenants?status=reauthorization_required")
	if n := strings.Count(flaggedOnly.body, `<tr class="`); n != 1 || !strings.Contains(flaggedOnly.body, "shop-flagged") {
		t.Errorf("status filter: %d rows", n)
	}
	search := f.get(t, "/console/tenants?q=SHOP-0")
	if n := strings.Count(search.body, `<tr class="`); n != 10 {
		t.Errorf("search shop-0: %d rows, want 10", n)
	}

	tp := f.get(t, "/console/tenants/shop-flagged")
	all.WriteString(tp.body)
	for _, want := range []string{"needs re-authorization", "no longer accepts this merchant", "Flagged: needs re-authorization",
		"Refresh failed (will retry)", "2 times since", "domain_prefix", "Retry the stored grant"} {
		if !strings.Contains(tp.body, want) {
			t.Errorf("tenant page lacks %q", want)
		}
	}

	// Import: a failing import comes back without the pasted tokens.
	token := f.csrf(t)
	bad := f.post(t, "/console/import", url.Values{"csrf": {token}, "id": {"new-shop"}, "refresh_token": {"RT-PASTED-9"},
		"access_token": {"AT-PASTED-9"}})
	all.WriteString(bad.body)
	if bad.status != http.StatusBadRequest || !strings.Contains(bad.body, "expires_in") {
		t.Errorf("import without expiry: %d %s", bad.status, bad.body)
	}
	ok := f.post(t, "/console/import", url.Values{"csrf": {token}, "id": {"new-shop"}, "refresh_token": {"RT-PASTED-9"},
		"access_token": {"AT-PASTED-9"}, "expires_in": {"3600"}})
	if ok.status != http.StatusSeeOther || ok.header.Get("Location") != "/console/tenants/new-shop?done=imported" {
		t.Fatalf("import: %d %s", ok.status, ok.body)
	}
	got, err := f.store.Get(context.Background(), "new-shop")
	if err != nil || got.RefreshToken != "RT-PASTED-9" || len(got.History) != 1 || got.History[0].Kind != store.EventImported {
		t.Fatalf("imported tenant: %+v %v", got, err)
	}
	// Another refresh token for it: refused unless "Replace" is ticked.
	again := f.post(t, "/console/import", url.Values{"csrf": {token}, "id": {"new-shop"}, "refresh_token": {"RT-PASTED-10"}})
	all.WriteString(again.body)
	if again.status != http.StatusConflict || !strings.Contains(again.body, "overwrite") {
		t.Errorf("import of another refresh token: %d %s", again.status, again.body)
	}
	replaced := f.post(t, "/console/import", url.Values{"csrf": {token}, "id": {"new-shop"}, "refresh_token": {"RT-PASTED-10"}, "overwrite": {"true"}})
	if cur, _ := f.store.Get(context.Background(), "new-shop"); replaced.status != http.StatusSeeOther || cur.RefreshToken != "RT-PASTED-10" {
		t.Errorf("import with Replace ticked: %d %s", replaced.status, replaced.body)
	}
	ip := f.get(t, ok.header.Get("Location"))
	all.WriteString(ip.body)
	if !strings.Contains(ip.body, "The tenant was imported.") {
		t.Error("no import notice")
	}

	// Refresh and retry go through the admin API.
	if r := f.post(t, "/console/tenants/shop-00/refresh", url.Values{"csrf": {token}}); r.status != http.StatusSeeOther {
		t.Errorf("refresh: %d", r.status)
	}
	if len(f.tokens.refreshed) != 1 || f.tokens.refreshed[0] != "shop-00" {
		t.Errorf("refreshed %v", f.tokens.refreshed)
	}
	r := f.post(t, "/console/tenants/shop-flagged/retry", url.Values{"csrf": {token}})
	all.WriteString(r.body)
	if r.status != http.StatusSeeOther && !strings.Contains(r.body, "did not happen") {
		t.Errorf("retry: %d", r.status)
	}

	for _, secret := range []string{"AT-SECRET-1", "RT-SECRET-1", "AT-SECRET-2", "RT-SECRET-2", "RT-PASTED-9", "AT-PASTED-9", adminToken} {
		if strings.Contains(all.String(), secret) {
			t.Errorf("a page holds %q", secret)
		}
		if strings.Contains(fmt.Sprint(f.logs.All()), secret) {
			t.Errorf("the log holds %q", secret)
		}
		for _, c := range f.client.Jar.Cookies(mustURL(f.srv.URL + "/console/")) {
			if strings.Contains(c.Value, secret) {
				t.Errorf("a cookie holds %q", secret)
			}
		}
	}
}

// An authorize link is never in a URL: the POST redirects (a reload
// repeats nothing) to the tenant page, which shows the link kept for the
// operator's session (again on a reload, never to another session).
func TestConsoleAuthorizeLink(t *testing.T) {
	f := newConsoleFixture(t, adminToken, nil)
	f.put(t, &store.Tenant{ID: "acme", Status: store.StatusReauthorizationRequired, Reason: "awaiting the merchant's first authorization"})
	f.signin(t, "alice", adminToken)
	token := f.csrf(t)
	// No onboarding configured: a clear problem, no link.
	r := f.post(t, "/console/tenants/acme/authorize", url.Values{"csrf": {token}})
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "No link was created") {
		t.Fatalf("authorize without onboarding: %d %s", r.status, r.body)
	}
	if l := auditLines(f.logs, "authorize"); len(l) != 1 || l[0]["status"] != int64(503) || l[0]["operator"] != "alice" {
		t.Errorf("authorize audit: %v", l)
	}

	// With onboarding: the link is in the answer's page, not in a URL.
	g := newConsoleFixture(t, adminToken, nil)
	g.put(t, &store.Tenant{ID: "acme", Status: store.StatusReauthorizationRequired, Reason: "awaiting the merchant's first authorization"})
	g.srvOnboarding(t)
	g.signin(t, "alice", adminToken)
	r = g.post(t, "/console/tenants/acme/authorize", url.Values{"csrf": {g.csrf(t)}})
	loc := r.header.Get("Location")
	if r.status != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/tenants/acme?link=") || strings.Contains(loc, "sig=") {
		t.Fatalf("authorize: %d to %q", r.status, loc)
	}
	for i := 0; i < 2; i++ { // the page, then a reload
		r = g.get(t, loc)
		if r.status != http.StatusOK || !strings.Contains(r.body, `value="https://merchant.example/start?tenant=acme&amp;sig=abc"`) {
			t.Fatalf("tenant page after authorize (%d): %d %s", i, r.status, r.body)
		}
	}
	other := newConsoleFixture(t, adminToken, nil)
	other.srv.Close()
	other.srv = g.srv
	other.signin(t, "mallory", adminToken)
	if r := other.get(t, loc); strings.Contains(r.body, "sig=abc") || !strings.Contains(r.body, "no longer shown here") {
		t.Errorf("another session's view of the link page: %s", r.body)
	}
	r = g.get(t, loc)
	if !strings.Contains(r.body, "awaiting") && !strings.Contains(r.body, "has not completed the authorization") {
		t.Error("the reason is not explained")
	}
}

type fakeOnboarding struct{}

func (fakeOnboarding) AuthorizeLink(_ context.Context, tenant string) (string, error) {
	return "https://merchant.example/start?tenant=" + tenant + "&sig=abc", nil
}
func (fakeOnboarding) ServeStart(w http.ResponseWriter, _ *http.Request)    {}
func (fakeOnboarding) ServeCallback(w http.ResponseWriter, _ *http.Request) {}

// srvOnboarding restarts the fixture's server with a fake onboarding.
func (f *consoleFixture) srvOnboarding(t *testing.T) {
	t.Helper()
	f.srv.Close()
	core, logs := observer.New(zap.InfoLevel)
	cs := &Server{Store: f.store, Tokens: f.tokens, AdminToken: adminToken, Gatherer: prometheus.NewRegistry(),
		Logger: zap.New(core), Now: f.clock.Now, Onboarding: fakeOnboarding{}}
	f.srv, f.logs = httptest.NewServer(cs.Handler()), logs
	t.Cleanup(f.srv.Close)
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// copyCookies gives to's browser from's console cookies (a stolen or
// copied cookie).
func copyCookies(t *testing.T, from, to *consoleFixture) {
	t.Helper()
	u, _ := url.Parse(from.srv.URL + "/console/")
	tu, _ := url.Parse(to.srv.URL + "/console/")
	to.client.Jar.SetCookies(tu, from.client.Jar.Cookies(u))
}

// Signing out ends the session in the store: a copy of the cookie made
// before is refused afterwards, on this replica and on another.
func TestConsoleSignoutEndsCopiedSession(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	f := newConsoleFixture(t, adminToken, key)
	other := newConsoleFixtureOn(t, adminToken, key, f.store)
	thief := newConsoleFixtureOn(t, adminToken, key, f.store)
	f.signin(t, "alice", adminToken)
	token := f.csrf(t)
	copyCookies(t, f, thief)
	copyCookies(t, f, other)
	if r := thief.get(t, "/console/tenants"); r.status != http.StatusOK {
		t.Fatalf("copied cookie before sign-out: %d", r.status)
	}
	if r := f.post(t, "/console/signout", url.Values{"csrf": {token}}); r.status != http.StatusSeeOther {
		t.Fatalf("sign-out: %d %s", r.status, r.body)
	}
	for name, c := range map[string]*consoleFixture{"same replica": thief, "other replica": other} {
		if r := c.get(t, "/console/tenants"); r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/console/signin") {
			t.Errorf("%s: copied cookie after sign-out: %d %s", name, r.status, r.header.Get("Location"))
		}
	}
	f.put(t, &store.Tenant{ID: "acme", RefreshToken: "RT-1", Status: store.StatusActive})
	copyCookies(t, f, thief) // the jar of f dropped the cookie; thief's was cleared by the refusal
	r := other.post(t, "/console/tenants/acme/delete", url.Values{"confirm": {"acme"}, "csrf": {token}})
	if r.status != http.StatusUnauthorized {
		t.Errorf("action with a signed-out session: %d", r.status)
	}
	if _, err := f.store.Get(context.Background(), "acme"); err != nil {
		t.Fatalf("a signed-out session deleted the tenant: %v", err)
	}
}

// Rotating the admin token (the answer to a leaked one) ends every console
// session signed in with the old token, although the record is still in
// the store and the encryption key is the same.
func TestConsoleAdminTokenRotationEndsSessions(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	f := newConsoleFixture(t, adminToken, key)
	f.signin(t, "alice", adminToken)
	if r := f.get(t, "/console/tenants"); r.status != http.StatusOK {
		t.Fatalf("signed in: %d", r.status)
	}
	rotated := newConsoleFixtureOn(t, adminToken+"-rotated", key, f.store)
	copyCookies(t, f, rotated)
	if r := rotated.get(t, "/console/tenants"); r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/console/signin") {
		t.Fatalf("session of the old admin token after rotation: %d %s", r.status, r.header.Get("Location"))
	}
	// The new token signs in as usual.
	rotated.signin(t, "alice", adminToken+"-rotated")
	if r := rotated.get(t, "/console/tenants"); r.status != http.StatusOK {
		t.Fatalf("sign-in with the new token: %d", r.status)
	}
}

// When the store cannot say whether a session lives, pages answer 503 and
// keep the cookie (the session may be alive); nothing is changed.
func TestConsoleSessionStoreDown(t *testing.T) {
	f := newConsoleFixture(t, adminToken, []byte(strings.Repeat("k", 32)))
	f.signin(t, "alice", adminToken)
	token := f.csrf(t)
	f.store.Close()
	if r := f.get(t, "/console/tenants"); r.status != http.StatusServiceUnavailable || r.header.Get("Set-Cookie") != "" {
		t.Errorf("page with the store down: %d, Set-Cookie %q", r.status, r.header.Get("Set-Cookie"))
	}
	if r := f.post(t, "/console/tenants/acme/delete", url.Values{"confirm": {"acme"}, "csrf": {token}}); r.status != http.StatusServiceUnavailable {
		t.Errorf("action with the store down: %d", r.status)
	}
	g := newConsoleFixture(t, adminToken, []byte(strings.Repeat("k", 32)))
	g.store.Close()
	if r := g.signin(t, "bob", adminToken); r.status != http.StatusServiceUnavailable || r.header.Get("Set-Cookie") != "" {
		t.Errorf("sign-in with the store down: %d, Set-Cookie %q", r.status, r.header.Get("Set-Cookie"))
	}
}
