package onboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testclock"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/store"
)

var _ control.Onboarding = (*onboard.Onboarder)(nil)

const adminToken = "test-admin-token"

// spyStore counts one-time writes and can inject one conflicting write
// before the onboarding's final Put.
type spyStore struct {
	store.Store
	putOnce  atomic.Int64
	takeOnce atomic.Int64
	conflict atomic.Bool
}

func (s *spyStore) PutOnce(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	s.putOnce.Add(1)
	return s.Store.PutOnce(ctx, key, value, ttl)
}

func (s *spyStore) TakeOnce(ctx context.Context, key string) ([]byte, error) {
	s.takeOnce.Add(1)
	return s.Store.TakeOnce(ctx, key)
}

func (s *spyStore) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	if t.Status == store.StatusActive && t.AccessToken != "" && s.conflict.CompareAndSwap(true, false) {
		cur, err := s.Store.Get(ctx, t.ID)
		if err != nil {
			return 0, err
		}
		cur.Extra = map[string]string{"touched": "yes"}
		if _, err := s.Store.Put(ctx, cur, cur.Version); err != nil {
			return 0, err
		}
	}
	return s.Store.Put(ctx, t, expect)
}

type nopTokens struct{}

func (nopTokens) ForceRefresh(context.Context, string) (auth.Token, error) { return auth.Token{}, nil }
func (nopTokens) Retry(context.Context, string) (auth.Token, error)        { return auth.Token{}, nil }
func (nopTokens) Invalidate(string)                                        {}

type fixOpts struct {
	refreshWait time.Duration // Onboarder.RefreshWait
	mode        emulator.Mode
	pkce        bool
	secret      string // client secret the Onboarder uses; "" = the right one
	successURL  string
}

type fixture struct {
	t         *testing.T
	em        *emulator.Emulator
	emSrv     *httptest.Server
	st        *spyStore
	ob        *onboard.Onboarder
	ctlURL    string
	clock     *testclock.Clock
	logs      *observer.ObservedLogs
	recovered chan string
	connected chan string
}

func newFixture(t *testing.T, o fixOpts) *fixture {
	t.Helper()
	if o.mode == "" {
		o.mode = emulator.ModeKSeries
	}
	keys, err := store.NewKeyring([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	bolt, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	f := &fixture{t: t, st: &spyStore{Store: bolt}, clock: testclock.New(time.Now()), recovered: make(chan string, 16), connected: make(chan string, 16)}

	ctl := httptest.NewUnstartedServer(nil)
	f.ctlURL = "http://" + ctl.Listener.Addr().String()
	redirect := f.ctlURL + "/oauth/callback"

	f.em = emulator.New(emulator.Config{Mode: o.mode, RedirectURL: redirect, RequireState: true})
	f.emSrv = httptest.NewServer(f.em)
	t.Cleanup(f.emSrv.Close)

	preset := auth.Presets[string(o.mode)]
	style, err := auth.AuthStyleFor(preset.ClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	secret := emulator.DefaultClientSecret
	if o.secret != "" {
		secret = o.secret
	}
	paths := f.em.Paths()
	client := &auth.OAuthClient{
		ClientID: emulator.DefaultClientID, ClientSecret: secret,
		TokenURL: f.emSrv.URL + paths.Token, AuthStyle: style, Timeout: 5 * time.Second,
	}
	if o.mode == emulator.ModeXSeries {
		// The token host is per merchant: keep the template and dial the
		// emulator whatever host the domain prefix names.
		addr := f.emSrv.Listener.Addr().String()
		client.TokenURL = "http://{domain_prefix}.retail.lightspeed.test" + paths.Token
		client.HTTPClient = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
		}}
	}
	core, logs := observer.New(zapcore.DebugLevel)
	f.logs = logs
	f.ob = &onboard.Onboarder{
		Store:        f.st,
		Client:       client,
		Preset:       preset,
		AuthorizeURL: f.emSrv.URL + paths.Authorize,
		RedirectURL:  redirect,
		Scopes:       preset.Scopes,
		PKCE:         o.pkce,
		LinkKey:      []byte(strings.Repeat("L", 32)),
		SuccessURL:   o.successURL,
		Logger:       zap.New(core),
		OnActivated:  func(tenant string) { f.recovered <- tenant },
		OnConnected:  func(tenant string) { f.connected <- tenant },
		Now:          f.clock.Now,
		RefreshWait:  o.refreshWait,
	}
	cs := &control.Server{Store: f.st, Tokens: nopTokens{}, AdminToken: adminToken, Onboarding: f.ob,
		Provider: preset.Name, Logger: zap.NewNop()}
	ctl.Config.Handler = cs.Handler()
	ctl.Start()
	t.Cleanup(ctl.Close)
	return f
}

// link asks the admin API for tenant's authorize link.
func (f *fixture) link(tenant string) string {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.ctlURL+"/admin/tenants/"+tenant+"/authorize", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.AuthorizeURL == "" {
		f.t.Fatalf("authorize link: status %d, err %v", resp.StatusCode, err)
	}
	if !strings.HasPrefix(body.AuthorizeURL, f.ctlURL+"/oauth/start?") {
		f.t.Fatalf("link %q does not start at /oauth/start", body.AuthorizeURL)
	}
	return body.AuthorizeURL
}

type result struct {
	status int
	body   string
	header http.Header
	url    *url.URL // the last URL requested
}

func get(t *testing.T, client *http.Client, u string) result {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return result{status: resp.StatusCode, body: string(b), header: resp.Header, url: resp.Request.URL}
}

var (
	// One browser: the OAuth state is bound to its cookies.
	browserJar, _ = cookiejar.New(nil)
	browser       = &http.Client{Timeout: 10 * time.Second, Jar: browserJar}
	noRedirect    = &http.Client{Timeout: 10 * time.Second, Jar: browserJar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
)

// open plays the merchant's browser: link → start → provider → callback.
func (f *fixture) open(link string) result {
	f.t.Helper()
	return get(f.t, browser, link)
}

// toCallback follows the link up to (not including) the callback and
// returns the callback URL the provider redirected to.
func (f *fixture) toCallback(link string) string {
	f.t.Helper()
	r := get(f.t, noRedirect, link)
	if r.status != http.StatusFound {
		f.t.Fatalf("start: status %d: %s", r.status, r.body)
	}
	r = get(f.t, noRedirect, r.header.Get("Location"))
	if r.status != http.StatusFound {
		f.t.Fatalf("authorize: status %d: %s", r.status, r.body)
	}
	cb := r.header.Get("Location")
	if !strings.HasPrefix(cb, f.ctlURL+"/oauth/callback?") {
		f.t.Fatalf("provider redirected to %q", cb)
	}
	return cb
}

func (f *fixture) tenant(id string) *store.Tenant {
	f.t.Helper()
	rec, err := f.st.Get(context.Background(), id)
	if err != nil {
		f.t.Fatalf("get %s: %v", id, err)
	}
	return rec
}

// mustFail checks a failure page: status, headers, and no secret value.
func mustFail(t *testing.T, r result, status int, want string, secrets ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	checkPage(t, r, secrets...)
	if code := r.header.Get("X-Lsproxy-Error"); code == "" || strings.ContainsAny(code, " <>") {
		t.Errorf("failure page without a code from the error table: %q", code)
	}
	if !strings.Contains(r.body, want) {
		t.Fatalf("page lacks %q:\n%s", want, r.body)
	}
}

func checkPage(t *testing.T, r result, secrets ...string) {
	t.Helper()
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q", got)
	}
	if got := r.header.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("Referrer-Policy %q", got)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q", ct)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(r.body, s) {
			t.Errorf("page contains a secret value")
		}
	}
}

// callbackSecrets returns the code and state of a callback URL.
func callbackSecrets(t *testing.T, cb string) []string {
	u, err := url.Parse(cb)
	if err != nil {
		t.Fatal(err)
	}
	return []string{u.Query().Get("code"), u.Query().Get("state")}
}

func (f *fixture) assertLogsClean(secrets ...string) {
	f.t.Helper()
	for _, e := range f.logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				f.t.Fatalf("log line contains a secret: %q", e.Message)
			}
		}
	}
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestOnboardKSeriesEndToEnd(t *testing.T) {
	f := newFixture(t, fixOpts{mode: emulator.ModeKSeries, pkce: true})
	f.em.Approve("acme")
	link := f.link("acme")

	ph := f.tenant("acme")
	if ph.Status != store.StatusPending || ph.Reason != onboard.AwaitingFirstAuthorization ||
		ph.Provider != "k-series" || ph.AccessToken != "" || ph.RefreshToken != "" || ph.CreatedAt.IsZero() {
		t.Fatalf("placeholder: %+v", ph)
	}
	if f.st.putOnce.Load() != 0 {
		t.Fatal("issuing a link stored a state")
	}

	r := f.open(link)
	if r.status != http.StatusOK || !strings.Contains(r.body, "Connected") {
		t.Fatalf("success page: %d %s", r.status, r.body)
	}
	// Merchant pages speak to merchants: no tenant id, no status code.
	for _, internal := range []string{"acme", "HTTP 200", "tenant"} {
		if strings.Contains(r.body, internal) {
			t.Errorf("success page names %q", internal)
		}
	}
	if code := r.header.Get("X-Lsproxy-Error"); code != "" {
		t.Errorf("success page carries X-Lsproxy-Error %q", code)
	}
	rec := f.tenant("acme")
	secrets := append(callbackSecrets(t, r.url.String()), rec.AccessToken, rec.RefreshToken)
	checkPage(t, r, secrets...)
	switch {
	case rec.Status != store.StatusActive, rec.Reason != "", !rec.FlaggedAt.IsZero():
		t.Fatalf("not active: %+v", rec)
	case !strings.HasPrefix(rec.AccessToken, "at-"), !strings.HasPrefix(rec.RefreshToken, "rt-"):
		t.Fatal("tokens not stored")
	case !rec.AccessExpiresAt.After(time.Now().Add(50 * time.Minute)):
		t.Fatalf("access expiry %v", rec.AccessExpiresAt)
	case rec.Scope != "offline_access", rec.Provider != "k-series":
		t.Fatalf("scope %q provider %q", rec.Scope, rec.Provider)
	case !rec.AuthorizedAt.Equal(f.clock.Now()), !rec.CreatedAt.Equal(ph.CreatedAt), rec.Version != ph.Version+1:
		t.Fatalf("timestamps/version: %+v", rec)
	}
	if st := f.em.Stats(); st.CodeExchanges != 1 || st.CodesIssued != 1 {
		t.Fatalf("emulator: %+v", st)
	}
	select {
	case got := <-f.connected:
		if got != "acme" {
			t.Fatalf("OnConnected(%q)", got)
		}
	default:
		t.Fatal("OnConnected not called for the first authorization")
	}
	select {
	case got := <-f.recovered:
		t.Fatalf("OnActivated(%q) for a first authorization", got)
	default:
	}

	// Replaying the callback URL fails and changes nothing.
	replay := get(t, browser, r.url.String())
	mustFail(t, replay, http.StatusBadRequest, "could not be matched", secrets...)
	if again := f.tenant("acme"); again.Version != rec.Version || again.AccessToken != rec.AccessToken {
		t.Fatal("replay changed the tenant")
	}
	if st := f.em.Stats(); st.CodeExchanges != 1 || st.CodeReuse != 0 || st.TokenRequests != 1 {
		t.Fatalf("replay reached the token endpoint: %+v", st)
	}

	// The link is spent: reopening it says so and stores no state.
	before := f.st.putOnce.Load()
	mustFail(t, f.open(link), http.StatusGone, "already used", secrets...)
	if f.st.putOnce.Load() != before {
		t.Fatal("a used link stored a state")
	}
	f.assertLogsClean(secrets...)
}

func TestOnboardLSeriesPKCE(t *testing.T) {
	f := newFixture(t, fixOpts{mode: emulator.ModeLSeries, pkce: true})
	f.em.Approve("resto-1")
	r := f.open(f.link("resto-1"))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	rec := f.tenant("resto-1")
	if rec.Status != store.StatusActive || rec.RefreshToken == "" || rec.Provider != "l-series" {
		t.Fatalf("%+v", rec)
	}
	// L-Series gives no refresh_expires_in: the preset's idle TTL applies.
	if want := f.clock.Now().Add(30 * 24 * time.Hour); !rec.RefreshExpiresAt.Equal(want) {
		t.Fatalf("refresh expiry %v, want %v", rec.RefreshExpiresAt, want)
	}
	checkPage(t, r, append(callbackSecrets(t, r.url.String()), rec.AccessToken, rec.RefreshToken)...)
}

func TestOnboardPKCERequiredButOff(t *testing.T) {
	// The provider refuses the authorize request (invalid_request) and
	// redirects with an error: a 400 page, nothing stored.
	f := newFixture(t, fixOpts{mode: emulator.ModeLSeries, pkce: false})
	f.em.Approve("resto-1")
	link := f.link("resto-1")
	ph := f.tenant("resto-1")
	r := f.open(link)
	mustFail(t, r, http.StatusBadRequest, "invalid_request")
	if rec := f.tenant("resto-1"); rec.Version != ph.Version || rec.Status != store.StatusPending {
		t.Fatal("tenant changed")
	}
	if f.em.Stats().TokenRequests != 0 {
		t.Fatal("token endpoint called")
	}
}

func TestOnboardAccessDenied(t *testing.T) {
	f := newFixture(t, fixOpts{})
	f.em.Approve("acme")
	link := f.link("acme")
	ph := f.tenant("acme")
	f.em.Deny()
	cb := f.toCallback(link)
	if !strings.Contains(cb, "error=access_denied") {
		t.Fatalf("callback %q", cb)
	}
	r := get(t, browser, cb)
	mustFail(t, r, http.StatusForbidden, "declined", callbackSecrets(t, cb)...)
	// The state is consumed: the same callback now fails as unknown.
	mustFail(t, get(t, browser, cb), http.StatusBadRequest, "could not be matched")
	if rec := f.tenant("acme"); rec.Version != ph.Version {
		t.Fatal("tenant changed")
	}
	if f.em.Stats().TokenRequests != 0 {
		t.Fatal("token endpoint called")
	}
	// The link still works for a second try.
	if r := f.open(link); r.status != http.StatusOK {
		t.Fatalf("retry after decline: %d %s", r.status, r.body)
	}
}

func TestOnboardExpiredState(t *testing.T) {
	f := newFixture(t, fixOpts{})
	f.em.Approve("acme")
	link := f.link("acme")
	ph := f.tenant("acme")
	cb := f.toCallback(link)
	f.clock.Advance(onboard.DefaultStateTTL + time.Second)
	mustFail(t, get(t, browser, cb), http.StatusBadRequest, "could not be matched", callbackSecrets(t, cb)...)
	if rec := f.tenant("acme"); rec.Version != ph.Version {
		t.Fatal("tenant changed")
	}
	if f.em.Stats().TokenRequests != 0 {
		t.Fatal("an expired state's code was exchanged")
	}
}

func TestOnboardBadLinks(t *testing.T) {
	f := newFixture(t, fixOpts{})
	f.em.Approve("acme")
	link := f.link("acme")
	f.link("other") // a second tenant, to try swapping names
	u, _ := url.Parse(link)
	mod := func(fn func(q url.Values)) string {
		q := u.Query()
		fn(q)
		c := *u
		c.RawQuery = q.Encode()
		return c.String()
	}
	cases := []struct {
		name   string
		link   string
		status int
		want   string
	}{
		{"tenant swapped", mod(func(q url.Values) { q.Set("tenant", "other") }), 400, "not valid"},
		{"signature changed", mod(func(q url.Values) { q.Set("sig", strings.Repeat("A", 43)) }), 400, "not valid"},
		{"signature not base64", mod(func(q url.Values) { q.Set("sig", "!!") }), 400, "not valid"},
		{"expiry extended", mod(func(q url.Values) { q.Set("exp", "99999999999") }), 400, "not valid"},
		{"iat changed", mod(func(q url.Values) { q.Set("iat", "1") }), 400, "not valid"},
		{"no signature", mod(func(q url.Values) { q.Del("sig") }), 400, "not valid"},
		{"no tenant", mod(func(q url.Values) { q.Del("tenant") }), 400, "not valid"},
		{"repeated tenant", mod(func(q url.Values) { q.Add("tenant", "acme") }), 400, "not valid"},
		{"bad tenant id", mod(func(q url.Values) { q.Set("tenant", "-x") }), 400, "not valid"},
		{"non-numeric exp", mod(func(q url.Values) { q.Set("exp", "soon") }), 400, "not valid"},
		{"no query", f.ctlURL + "/oauth/start", 400, "not valid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mustFail(t, get(t, browser, c.link), c.status, c.want)
		})
	}
	// HEAD (link scanners) creates nothing.
	resp, err := http.Head(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("HEAD: %d", resp.StatusCode)
	}

	// Expired link.
	f.clock.Advance(onboard.DefaultLinkTTL + time.Second)
	mustFail(t, get(t, browser, link), http.StatusGone, "expired")

	if n := f.st.putOnce.Load(); n != 0 {
		t.Fatalf("%d states stored by bad links", n)
	}
	if st := f.em.Stats(); st.AuthorizeRequests != 0 {
		t.Fatal("a bad link reached the provider")
	}
}

func TestOnboardCallbackBadInput(t *testing.T) {
	f := newFixture(t, fixOpts{})
	f.em.Approve("acme")
	link := f.link("acme")
	ph := f.tenant("acme")
	cb := f.ctlURL + "/oauth/callback"
	unknown := strings.Repeat("A", 43)
	for _, c := range []struct{ name, query string }{
		{"no parameters", ""},
		{"no state", "?code=abc"},
		{"short state", "?code=abc&state=xyz"},
		{"state not base64url", "?code=abc&state=" + strings.Repeat("*", 43)},
		{"repeated state", "?code=abc&state=" + unknown + "&state=" + unknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			mustFail(t, get(t, browser, cb+c.query), http.StatusBadRequest, "could not be matched")
		})
	}
	// A well-formed state this browser never started: refused before the
	// store is asked (the state stays for the browser it belongs to).
	mustFail(t, get(t, browser, cb+"?code=abc&state="+unknown), http.StatusBadRequest, "another browser")
	if f.st.takeOnce.Load() != 0 {
		t.Fatalf("TakeOnce called %d times", f.st.takeOnce.Load())
	}

	// A valid state without a code: 400, and the state is spent.
	real := f.toCallback(link)
	u, _ := url.Parse(real)
	q := u.Query()
	q.Del("code")
	u.RawQuery = q.Encode()
	mustFail(t, get(t, browser, u.String()), http.StatusBadRequest, "authorization code")
	mustFail(t, get(t, browser, real), http.StatusBadRequest, "could not be matched")
	if rec := f.tenant("acme"); rec.Version != ph.Version {
		t.Fatal("tenant changed")
	}
	if f.em.Stats().TokenRequests != 0 {
		t.Fatal("token endpoint called")
	}
}

// A state is bound to the tenant whose link created it: a code obtained in
// tenant B's session cannot be completed through tenant A's state (PKCE
// binds the code to B's verifier), and completing A never touches B.
func TestOnboardStateBoundToTenant(t *testing.T) {
	f := newFixture(t, fixOpts{pkce: true})
	linkA, linkB := f.link("tenant-a"), f.link("tenant-b")
	phA, phB := f.tenant("tenant-a"), f.tenant("tenant-b")

	f.em.Approve("merchant-b")
	cbB := f.toCallback(linkB)
	f.em.Approve("merchant-a")
	cbA := f.toCallback(linkA)

	// A's state with B's code.
	ua, _ := url.Parse(cbA)
	ub, _ := url.Parse(cbB)
	q := ua.Query()
	q.Set("code", ub.Query().Get("code"))
	ua.RawQuery = q.Encode()
	mustFail(t, get(t, browser, ua.String()), http.StatusBadRequest, "rejected", q.Get("code"), q.Get("state"))
	if rec := f.tenant("tenant-a"); rec.Version != phA.Version || rec.AccessToken != "" {
		t.Fatal("tenant A changed")
	}
	if rec := f.tenant("tenant-b"); rec.Version != phB.Version {
		t.Fatal("tenant B changed")
	}
	if f.em.Stats().CodeRejected != 1 {
		t.Fatalf("emulator: %+v", f.em.Stats())
	}

	// A fresh flow for A writes A only.
	if r := f.open(linkA); r.status != http.StatusOK {
		t.Fatalf("A: %d %s", r.status, r.body)
	}
	if rec := f.tenant("tenant-a"); rec.Status != store.StatusActive {
		t.Fatal("A not active")
	}
	if rec := f.tenant("tenant-b"); rec.Version != phB.Version || rec.AccessToken != "" {
		t.Fatal("completing A touched B")
	}
}

func TestOnboardTenantDeletedMeanwhile(t *testing.T) {
	f := newFixture(t, fixOpts{})
	f.em.Approve("acme")
	link := f.link("acme")
	cb := f.toCallback(link)
	req, _ := http.NewRequest(http.MethodDelete, f.ctlURL+"/admin/tenants/acme", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	mustFail(t, get(t, browser, cb), http.StatusGone, "no longer exists", callbackSecrets(t, cb)...)
	if _, err := f.st.Get(context.Background(), "acme"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("tenant re-created: %v", err)
	}
	if f.em.Stats().TokenRequests != 0 {
		t.Fatal("code exchanged for a deleted tenant")
	}
	// The link itself is dead too.
	mustFail(t, get(t, browser, link), http.StatusGone, "no longer exists")
}

func TestOnboardExchangeFailures(t *testing.T) {
	t.Run("wrong client secret", func(t *testing.T) {
		f := newFixture(t, fixOpts{secret: "not-the-secret"})
		f.em.Approve("acme")
		link := f.link("acme")
		ph := f.tenant("acme")
		r := f.open(link)
		mustFail(t, r, http.StatusBadRequest, "credentials", callbackSecrets(t, r.url.String())...)
		if rec := f.tenant("acme"); rec.Version != ph.Version || rec.RefreshToken != "" {
			t.Fatal("tenant changed")
		}
		if f.em.Stats().ClientAuthFailures != 1 {
			t.Fatalf("%+v", f.em.Stats())
		}
		f.assertLogsClean("not-the-secret")
	})
	t.Run("token endpoint down keeps an active tenant", func(t *testing.T) {
		f := newFixture(t, fixOpts{})
		f.em.Approve("acme")
		if r := f.open(f.link("acme")); r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		active := f.tenant("acme")
		f.clock.Advance(2 * time.Second)
		link := f.link("acme")
		f.em.SetTokenOutage(http.StatusServiceUnavailable)
		mustFail(t, f.open(link), http.StatusBadGateway, "did not answer")
		rec := f.tenant("acme")
		if rec.Version != active.Version || rec.AccessToken != active.AccessToken || rec.RefreshToken != active.RefreshToken {
			t.Fatal("active tenant changed by a failed exchange")
		}
		// The link was not spent by the failure.
		f.em.SetTokenOutage(0)
		if r := f.open(link); r.status != http.StatusOK {
			t.Fatalf("retry: %d %s", r.status, r.body)
		}
	})
	t.Run("expired code", func(t *testing.T) {
		f := newFixture(t, fixOpts{})
		f.em.Approve("acme")
		link := f.link("acme")
		cb := f.toCallback(link)
		// The same code presented twice: the emulator rejects the second
		// exchange (invalid_grant) the way an expired code is rejected.
		u, _ := url.Parse(cb)
		code := u.Query().Get("code")
		if r := get(t, browser, cb); r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		f.clock.Advance(2 * time.Second)
		cb2 := f.toCallback(f.link("acme"))
		u2, _ := url.Parse(cb2)
		q := u2.Query()
		q.Set("code", code)
		u2.RawQuery = q.Encode()
		before := f.tenant("acme")
		mustFail(t, get(t, browser, u2.String()), http.StatusBadRequest, "rejected", code)
		if rec := f.tenant("acme"); rec.Version != before.Version {
			t.Fatal("tenant changed")
		}
	})
}

func TestOnboardReauthorizeFlagged(t *testing.T) {
	f := newFixture(t, fixOpts{pkce: true})
	f.em.Approve("acme")
	if r := f.open(f.link("acme")); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	<-f.connected // first authorization
	first := f.tenant("acme")

	// The token manager flags it.
	flagged := first.Clone()
	flagged.Status, flagged.Reason, flagged.FlaggedAt = store.StatusReauthorizationRequired, "refresh token rejected (invalid_grant)", time.Now()
	flagged.RefreshCount, flagged.FailureCount, flagged.RefreshInFlight = 7, 3, true
	flagged.LastRefreshAt = time.Now()
	if _, err := f.st.Put(context.Background(), flagged, first.Version); err != nil {
		t.Fatal(err)
	}

	f.clock.Advance(3 * time.Second)
	r := f.open(f.link("acme"))
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := f.tenant("acme")
	switch {
	case rec.Status != store.StatusActive, rec.Reason != "", !rec.FlaggedAt.IsZero(), rec.RefreshInFlight:
		t.Fatalf("flag not cleared: %+v", rec)
	case rec.RefreshCount != 0, rec.FailureCount != 0:
		t.Fatalf("counters not reset: %+v", rec)
	case !rec.CreatedAt.Equal(first.CreatedAt):
		t.Fatal("CreatedAt changed")
	case !rec.AuthorizedAt.Equal(f.clock.Now()), !rec.AuthorizedAt.After(first.AuthorizedAt):
		t.Fatal("AuthorizedAt not updated")
	case rec.AccessToken == first.AccessToken, rec.RefreshToken == first.RefreshToken:
		t.Fatal("tokens not replaced")
	case !rec.LastRefreshAt.Equal(flagged.LastRefreshAt):
		t.Fatal("history lost")
	}
	select {
	case got := <-f.recovered:
		if got != "acme" {
			t.Fatal(got)
		}
	default:
		t.Fatal("OnActivated not called")
	}

	// Re-authorizing an active tenant is not a recovery.
	f.clock.Advance(3 * time.Second)
	if r := f.open(f.link("acme")); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	select {
	case got := <-f.recovered:
		t.Fatalf("OnActivated(%q) for an active tenant", got)
	default:
	}
}

func TestOnboardTwoTabsOneLink(t *testing.T) {
	f := newFixture(t, fixOpts{})
	f.em.Approve("acme")
	link := f.link("acme")
	cb1 := f.toCallback(link)
	cb2 := f.toCallback(link) // the merchant opened the link twice
	if r := get(t, browser, cb1); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := f.tenant("acme")
	mustFail(t, get(t, browser, cb2), http.StatusGone, "already used", callbackSecrets(t, cb2)...)
	if again := f.tenant("acme"); again.Version != rec.Version {
		t.Fatal("second tab overwrote the tenant")
	}
	if f.em.Stats().CodeExchanges != 1 {
		t.Fatal("second code exchanged")
	}
}

func TestOnboardRetriesConflictingWrite(t *testing.T) {
	f := newFixture(t, fixOpts{})
	f.em.Approve("acme")
	link := f.link("acme")
	f.st.conflict.Store(true)
	if r := f.open(link); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := f.tenant("acme")
	if rec.Status != store.StatusActive || rec.Extra["touched"] != "yes" || rec.AccessToken == "" {
		t.Fatalf("conflict not merged: %+v", rec)
	}
}

func TestOnboardSuccessURL(t *testing.T) {
	f := newFixture(t, fixOpts{successURL: "https://app.example/connected"})
	f.em.Approve("acme")
	cb := f.toCallback(f.link("acme"))
	r := get(t, noRedirect, cb)
	if r.status != http.StatusFound || r.header.Get("Location") != "https://app.example/connected" {
		t.Fatalf("%d %q", r.status, r.header.Get("Location"))
	}
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatal("headers")
	}
	if f.tenant("acme").Status != store.StatusActive {
		t.Fatal("not active")
	}
}

func TestOnboardXSeriesDomainPrefix(t *testing.T) {
	f := newFixture(t, fixOpts{mode: emulator.ModeXSeries})
	f.em.Approve("coolshop")
	link := f.link("coolshop")
	cb := f.toCallback(link)

	// A domain prefix that would steer the token request elsewhere.
	u, _ := url.Parse(cb)
	q := u.Query()
	q.Set("domain_prefix", "evil.example.com/x")
	u.RawQuery = q.Encode()
	mustFail(t, get(t, browser, u.String()), http.StatusBadRequest, "address")
	if f.em.Stats().TokenRequests != 0 {
		t.Fatal("token request sent with a bad domain prefix")
	}

	if r := f.open(link); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := f.tenant("coolshop")
	if rec.Extra["domain_prefix"] != "coolshop" || rec.Status != store.StatusActive {
		t.Fatalf("%+v", rec)
	}

	// Another store answering for this tenant is refused.
	f.clock.Advance(2 * time.Second)
	f.em.Approve("othershop")
	r := f.open(f.link("coolshop"))
	mustFail(t, r, http.StatusConflict, "different Lightspeed account")
	if again := f.tenant("coolshop"); again.Version != rec.Version {
		t.Fatal("tenant changed")
	}
}

func TestOnboarderConfig(t *testing.T) {
	keys, _ := store.NewKeyring([]byte(strings.Repeat("k", 32)))
	bolt, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	good := func() *onboard.Onboarder {
		return &onboard.Onboarder{Store: bolt, Client: &auth.OAuthClient{ClientID: "c"},
			AuthorizeURL: "https://auth.example/authorize", RedirectURL: "https://gw.example/lsproxy/oauth/callback?x=1",
			LinkKey: []byte(strings.Repeat("L", 32))}
	}
	link, err := good().AuthorizeLink(context.Background(), "t1")
	if err != nil || !strings.HasPrefix(link, "https://gw.example/lsproxy/oauth/start?") {
		t.Fatalf("%q %v", link, err)
	}
	for name, breakIt := range map[string]func(o *onboard.Onboarder){
		"short link key":    func(o *onboard.Onboarder) { o.LinkKey = []byte("short") },
		"relative redirect": func(o *onboard.Onboarder) { o.RedirectURL = "/oauth/callback" },
		"redirect ends /":   func(o *onboard.Onboarder) { o.RedirectURL = "https://gw.example/" },
		"no client":         func(o *onboard.Onboarder) { o.Client = nil },
		"no authorize URL":  func(o *onboard.Onboarder) { o.AuthorizeURL = "" },
	} {
		t.Run(name, func(t *testing.T) {
			o := good()
			breakIt(o)
			if _, err := o.AuthorizeLink(context.Background(), "t2"); !errors.Is(err, onboard.ErrMisconfigured) {
				t.Fatalf("err %v", err)
			}
			rec := httptest.NewRecorder()
			o.ServeStart(rec, httptest.NewRequest(http.MethodGet, "/oauth/start", nil))
			if rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("start: %d", rec.Code)
			}
			rec = httptest.NewRecorder()
			o.ServeCallback(rec, httptest.NewRequest(http.MethodGet, "/oauth/callback", nil))
			if rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("callback: %d", rec.Code)
			}
		})
	}
	if _, err := bolt.Get(context.Background(), "t2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a misconfigured onboarder created a tenant")
	}
	if _, err := good().AuthorizeLink(context.Background(), "bad id"); err == nil {
		t.Fatal("invalid tenant id accepted")
	}
}

// TestOnboardWaitsForRefreshInFlight (SPEC §3 rule 19): the callback never
// writes over a refresh in flight. A holder's mark that goes away within
// the wait lets the new grant be stored; one that stays answers 409
// refresh_in_flight and changes nothing.
func TestOnboardWaitsForRefreshInFlight(t *testing.T) {
	f := newFixture(t, fixOpts{refreshWait: 1500 * time.Millisecond})
	ctx := context.Background()
	mark := func(id string) *store.Tenant {
		t.Helper()
		cur := f.tenant("acme")
		cur.MarkRefresh(store.Mark{ID: id, StartedAt: time.Now(), Lease: time.Second, Grace: time.Second})
		if _, err := f.st.Store.Put(ctx, cur, cur.Version); err != nil {
			t.Fatal(err)
		}
		return cur
	}

	// The holder writes its grant 300 ms into the callback's wait.
	f.em.Approve("acme")
	cb := f.toCallback(f.link("acme"))
	marked := mark("holder-1")
	go func() {
		time.Sleep(300 * time.Millisecond) // the holder's token request
		done := marked.Clone()
		done.ApplyGrant(store.Tokens{Access: "at-holder", Refresh: "rt-holder", AccessExpiry: time.Now().Add(time.Hour)}, time.Now())
		if _, err := f.st.Store.Put(ctx, done, marked.Version); err != nil {
			t.Error(err)
		}
	}()
	r := get(t, browser, cb)
	if r.status != http.StatusOK {
		t.Fatalf("callback after the refresh: %d %s", r.status, r.body)
	}
	if got := f.tenant("acme"); got.RefreshToken == "rt-holder" || got.RefreshInFlight || got.AuthorizedAt.IsZero() {
		t.Fatalf("after the callback: refresh token is the holder's %v, in flight %v", got.RefreshToken == "rt-holder", got.RefreshInFlight)
	}

	// A mark that stays (its holder still writing after the wait): 409.
	f.em.Approve("acme")
	cb = f.toCallback(f.link("acme"))
	before := mark("holder-2")
	mustFail(t, get(t, browser, cb), http.StatusConflict, "being refreshed", callbackSecrets(t, cb)...)
	if got := f.tenant("acme"); !got.HasMark("holder-2") || got.RefreshToken != before.RefreshToken {
		t.Fatal("the callback wrote over a refresh in flight")
	}
}
