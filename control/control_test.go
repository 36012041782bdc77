package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/testclock"
	"github.com/lsproxy/lsproxy/store"
)

const adminToken = "admin-secret-token"

type fakeTokens struct {
	mu          sync.Mutex
	refreshed   []string
	retried     []string
	invalidated []string
	err         error
}

func (f *fakeTokens) ForceRefresh(_ context.Context, tenant string) (auth.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshed = append(f.refreshed, tenant)
	return auth.Token{}, f.err
}

func (f *fakeTokens) Retry(_ context.Context, tenant string) (auth.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retried = append(f.retried, tenant)
	return auth.Token{}, f.err
}

func (f *fakeTokens) Invalidate(tenant string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, tenant)
}

type fixture struct {
	srv    *httptest.Server
	store  *store.Bolt
	tokens *fakeTokens
	logs   *observer.ObservedLogs
}

func newFixture(t *testing.T, admin string) *fixture {
	t.Helper()
	keys, _ := store.NewKeyring([]byte(strings.Repeat("c", 32)))
	s, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	core, logs := observer.New(zap.InfoLevel)
	ft := &fakeTokens{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "lsproxy_test_total", Help: "x"}))
	cs := &Server{Store: s, Tokens: ft, AdminToken: admin, Gatherer: reg, Provider: "k-series", Logger: zap.New(core)}
	srv := httptest.NewServer(cs.Handler())
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, store: s, tokens: ft, logs: logs}
}

func (f *fixture) call(t *testing.T, method, path, token, body string) (int, string, http.Header) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestHealthReadyMetrics(t *testing.T) {
	f := newFixture(t, adminToken)
	if code, _, _ := f.call(t, "GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, _, _ := f.call(t, "GET", "/readyz", "", ""); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	if code, body, _ := f.call(t, "GET", "/metrics", "", ""); code != 200 || !strings.Contains(body, "lsproxy_test_total") {
		t.Fatalf("metrics %d", code)
	}
	f.store.Close()
	if code, _, _ := f.call(t, "GET", "/readyz", "", ""); code != 503 {
		t.Fatalf("readyz with store closed: %d", code)
	}
	if code, _, _ := f.call(t, "GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("healthz with store closed: %d", code)
	}
}

func TestAdminAuth(t *testing.T) {
	f := newFixture(t, adminToken)
	for _, tok := range []string{"", "wrong", adminToken + "x", strings.ToUpper(adminToken)} {
		code, body, hdr := f.call(t, "GET", "/admin/tenants", tok, "")
		if code != 401 || hdr.Get("WWW-Authenticate") == "" || strings.Contains(body, adminToken) {
			t.Errorf("token %q: %d %s", tok, code, body)
		}
	}
	if code, _, _ := f.call(t, "GET", "/admin/tenants", adminToken, ""); code != 200 {
		t.Errorf("right token: %d", code)
	}
	disabled := newFixture(t, "")
	if code, _, _ := disabled.call(t, "GET", "/admin/tenants", "", ""); code != 404 {
		t.Errorf("disabled admin: %d", code)
	}
	if code, _, _ := disabled.call(t, "GET", "/admin/tenants", "anything", ""); code != 404 {
		t.Errorf("disabled admin with a token: %d", code)
	}
}

func TestImportGetListDelete(t *testing.T) {
	f := newFixture(t, adminToken)
	code, body, _ := f.call(t, "PUT", "/admin/tenants/acme", adminToken,
		`{"refresh_token":"RT-SECRET-1","access_token":"AT-SECRET-1","expires_in":3600,"scope":"orders-api"}`)
	if code != 201 {
		t.Fatalf("import: %d %s", code, body)
	}
	rec, err := f.store.Get(context.Background(), "acme")
	if err != nil || rec.RefreshToken != "RT-SECRET-1" || rec.AccessToken != "AT-SECRET-1" || rec.Status != store.StatusActive {
		t.Fatalf("stored %+v %v", rec, err)
	}
	if time.Until(rec.AccessExpiresAt) < 59*time.Minute {
		t.Fatalf("expiry %v", rec.AccessExpiresAt)
	}
	// Re-import keeps identity and history, clears a flag.
	flagged := rec.Clone()
	flagged.Status, flagged.Reason, flagged.RefreshCount = store.StatusReauthorizationRequired, "revoked", 7
	if _, err := f.store.Put(context.Background(), flagged, rec.Version); err != nil {
		t.Fatal(err)
	}
	// Another refresh token needs overwrite (rule 19); nothing changes.
	code, body, _ = f.call(t, "PUT", "/admin/tenants/acme", adminToken, `{"refresh_token":"RT-SECRET-2"}`)
	if code != 409 || !strings.Contains(body, `"error":"refresh_token_differs"`) {
		t.Fatalf("re-import without overwrite: %d %s", code, body)
	}
	if cur, _ := f.store.Get(context.Background(), "acme"); cur.Version != flagged.Version || cur.RefreshToken != "RT-SECRET-1" {
		t.Fatalf("refused re-import changed the record: v%d", cur.Version)
	}
	code, body, hdr := f.call(t, "PUT", "/admin/tenants/acme?overwrite=true", adminToken, `{"refresh_token":"RT-SECRET-2"}`)
	if code != 200 || hdr.Get(ImportHeader) != "updated" {
		t.Fatalf("re-import: %d %s", code, body)
	}
	rec2, _ := f.store.Get(context.Background(), "acme")
	if rec2.Status != store.StatusActive || rec2.Reason != "" || rec2.RefreshCount != 7 || !rec2.CreatedAt.Equal(rec.CreatedAt) || rec2.AccessToken != "" {
		t.Fatalf("re-imported %+v", rec2)
	}

	code, body, _ = f.call(t, "GET", "/admin/tenants/acme", adminToken, "")
	var view map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &view) != nil || view["status"] != "active" || view["id"] != "acme" {
		t.Fatalf("get: %d %s", code, body)
	}
	for _, k := range []string{"refresh_count", "version", "has_refresh_token"} {
		if _, ok := view[k]; !ok {
			t.Errorf("view lacks %s", k)
		}
	}
	code, body, _ = f.call(t, "GET", "/admin/tenants", adminToken, "")
	if code != 200 || !strings.Contains(body, `"tenants":[{"id":"acme"`) {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, _, _ = f.call(t, "GET", "/admin/tenants/nobody", adminToken, ""); code != 404 {
		t.Fatalf("unknown get: %d", code)
	}
	if code, _, _ = f.call(t, "DELETE", "/admin/tenants/acme", adminToken, ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code, _, _ = f.call(t, "DELETE", "/admin/tenants/acme", adminToken, ""); code != 404 {
		t.Fatalf("delete again: %d", code)
	}
	if len(f.tokens.invalidated) != 3 {
		t.Errorf("invalidations %v", f.tokens.invalidated)
	}
	all := fmt.Sprint(f.logs.All())
	if !strings.Contains(all, "import") || !strings.Contains(all, "delete") {
		t.Errorf("audit log missing: %s", all)
	}
	if strings.Contains(all, "SECRET") {
		t.Errorf("audit log holds a token")
	}
}

func TestImportBadInputChangesNothing(t *testing.T) {
	f := newFixture(t, adminToken)
	if code, _, _ := f.call(t, "PUT", "/admin/tenants/acme", adminToken, `{"refresh_token":"RT-KEEP"}`); code != 201 {
		t.Fatal(code)
	}
	before, _ := f.store.Get(context.Background(), "acme")
	cases := map[string]struct{ path, body string }{
		"malformed":        {"/admin/tenants/acme", `{"refresh_token":`},
		"empty":            {"/admin/tenants/acme", ``},
		"no refresh_token": {"/admin/tenants/acme", `{"access_token":"AT-X","expires_in":10}`},
		"blank refresh":    {"/admin/tenants/acme", `{"refresh_token":"  "}`},
		"unknown field":    {"/admin/tenants/acme", `{"refresh_token":"RT-X","bogus":1}`},
		"wrong type":       {"/admin/tenants/acme", `{"refresh_token":"RT-X","expires_in":"soon"}`},
		"access no expiry": {"/admin/tenants/acme", `{"refresh_token":"RT-X","access_token":"AT-X"}`},
		"negative":         {"/admin/tenants/acme", `{"refresh_token":"RT-X","expires_in":-5}`},
		"two objects":      {"/admin/tenants/acme", `{"refresh_token":"RT-X"}{"refresh_token":"RT-Y"}`},
		"too large":        {"/admin/tenants/acme", `{"refresh_token":"` + strings.Repeat("x", 70<<10) + `"}`},
		"bad id":           {"/admin/tenants/bad%20id", `{"refresh_token":"RT-X"}`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code, body, hdr := f.call(t, "PUT", c.path, adminToken, c.body)
			if code != 400 || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("got %d %s", code, body)
			}
			if strings.Contains(body, "RT-X") || strings.Contains(body, "AT-X") {
				t.Fatalf("error echoes a token: %s", body)
			}
		})
	}
	after, _ := f.store.Get(context.Background(), "acme")
	if after.Version != before.Version || after.RefreshToken != "RT-KEEP" {
		t.Fatalf("bad input changed the tenant")
	}
	if ids, _ := f.store.List(context.Background()); len(ids) != 1 {
		t.Fatalf("tenants %v", ids)
	}
}

func TestRefreshEndpoint(t *testing.T) {
	f := newFixture(t, adminToken)
	f.call(t, "PUT", "/admin/tenants/acme", adminToken, `{"refresh_token":"RT-1"}`)
	if code, body, _ := f.call(t, "POST", "/admin/tenants/acme/refresh", adminToken, ""); code != 200 || !strings.Contains(body, `"id":"acme"`) {
		t.Fatalf("refresh: %d %s", code, body)
	}
	f.tokens.err = &auth.ReauthError{Tenant: "acme", Reason: "refresh token rejected by the provider (invalid_grant)"}
	code, body, hdr := f.call(t, "POST", "/admin/tenants/acme/refresh", adminToken, "")
	if code != 409 || hdr.Get("X-Lsproxy-Error") != "reauthorization_required" || !strings.Contains(body, "invalid_grant") {
		t.Fatalf("flagged refresh: %d %s", code, body)
	}
	f.tokens.err = &auth.UnavailableError{Tenant: "acme", RetryAfter: 2 * time.Second, Err: auth.ErrBreakerOpen}
	code, _, hdr = f.call(t, "POST", "/admin/tenants/acme/refresh", adminToken, "")
	if code != 503 || hdr.Get("Retry-After") != "2" {
		t.Fatalf("unavailable refresh: %d %v", code, hdr)
	}
	f.tokens.err = fmt.Errorf("%w: nobody", auth.ErrUnknownTenant)
	if code, _, _ := f.call(t, "POST", "/admin/tenants/nobody/refresh", adminToken, ""); code != 404 {
		t.Fatalf("unknown refresh: %d", code)
	}
}

func TestRetryEndpoint(t *testing.T) {
	f := newFixture(t, adminToken)
	f.call(t, "PUT", "/admin/tenants/acme", adminToken, `{"refresh_token":"RT-1"}`)
	if code, body, _ := f.call(t, "POST", "/admin/tenants/acme/retry", adminToken, ""); code != 200 || !strings.Contains(body, `"id":"acme"`) || strings.Contains(body, "RT-1") {
		t.Fatalf("retry: %d %s", code, body)
	}
	if len(f.tokens.retried) != 1 || len(f.tokens.refreshed) != 0 {
		t.Fatalf("retried %v refreshed %v", f.tokens.retried, f.tokens.refreshed)
	}
	f.tokens.err = &auth.ReauthError{Tenant: "acme", Reason: "refresh token rejected by the provider (invalid_grant)"}
	if code, _, hdr := f.call(t, "POST", "/admin/tenants/acme/retry", adminToken, ""); code != 409 || hdr.Get("X-Lsproxy-Error") != "reauthorization_required" {
		t.Fatalf("still rejected: %d", code)
	}
	if code, _, _ := f.call(t, "POST", "/admin/tenants/acme/retry", "wrong", ""); code != 401 {
		t.Fatalf("without the admin token: %d", code)
	}
	if code, _, _ := f.call(t, "POST", "/admin/tenants/bad%20id/retry", adminToken, ""); code != 400 {
		t.Fatalf("bad id: %d", code)
	}
	if len(f.tokens.retried) != 2 {
		t.Fatalf("bad requests reached the manager: %v", f.tokens.retried)
	}
}

func TestAuthorizeWithoutOnboarding(t *testing.T) {
	f := newFixture(t, adminToken)
	if code, _, _ := f.call(t, "POST", "/admin/tenants/acme/authorize", adminToken, ""); code != 503 {
		t.Fatalf("authorize: %d", code)
	}
	if code, _, _ := f.call(t, "GET", "/oauth/callback?code=x&state=y", "", ""); code != 503 {
		t.Fatalf("callback: %d", code)
	}
}

// Wrong admin tokens are throttled per client: after the burst, the next
// request (even with the right token) is answered 429 too_many_attempts
// with Retry-After, before its token is compared; the allowance comes back
// with time. The console's sign-in shares the allowance.
func TestAdminTokenGuessingThrottled(t *testing.T) {
	clock := testclock.New(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	keys, _ := store.NewKeyring([]byte(strings.Repeat("c", 32)))
	s, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cs := &Server{Store: s, Tokens: &fakeTokens{}, AdminToken: adminToken, Gatherer: prometheus.NewRegistry(), Provider: "k-series", Now: clock.Now}
	srv := httptest.NewServer(cs.Handler())
	t.Cleanup(srv.Close)
	f := &fixture{srv: srv, store: s}
	for i := range DefaultAdminAttempts {
		if st, _, _ := f.call(t, "GET", "/admin/tenants", "wrong-token", ""); st != 401 {
			t.Fatalf("wrong token %d: %d, want 401", i+1, st)
		}
	}
	st, raw, h := f.call(t, "GET", "/admin/tenants", adminToken, "")
	if st != 429 || h.Get("X-Lsproxy-Error") != "too_many_attempts" || h.Get("Retry-After") == "" || !strings.Contains(raw, "too_many_attempts") {
		t.Fatalf("after %d wrong tokens: %d %s (Retry-After %q)", DefaultAdminAttempts, st, raw, h.Get("Retry-After"))
	}
	form := url.Values{"operator": {"alice"}, "token": {adminToken}}
	resp, err := http.PostForm(srv.URL+"/console/signin", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("console sign-in from a throttled client: %d", resp.StatusCode)
	}
	clock.Advance(adminAttemptEvery)
	if st, _, _ := f.call(t, "GET", "/admin/tenants", adminToken, ""); st != 200 {
		t.Fatalf("right token after the wait: %d, want 200", st)
	}
	// A right token costs nothing.
	for range 3 * DefaultAdminAttempts {
		if st, _, _ := f.call(t, "GET", "/admin/tenants", adminToken, ""); st != 200 {
			t.Fatalf("right token: %d", st)
		}
	}
}

// Wrong sign-ins on the console are throttled like wrong admin tokens.
func TestConsoleSigninThrottled(t *testing.T) {
	f := newConsoleFixture(t, adminToken, []byte(strings.Repeat("k", 32)))
	for i := range DefaultAdminAttempts {
		if r := f.signin(t, "mallory", "guess"); r.status != 401 {
			t.Fatalf("wrong sign-in %d: %d", i+1, r.status)
		}
	}
	r := f.signin(t, "mallory", adminToken)
	if r.status != 429 || r.header.Get("X-Lsproxy-Error") != "too_many_attempts" || !strings.Contains(r.body, "Too many wrong admin tokens") {
		t.Fatalf("sign-in after %d wrong ones: %d %s", DefaultAdminAttempts, r.status, r.header)
	}
	if l := auditLines(f.logs, "signin"); len(l) == 0 || l[len(l)-1]["status"] != int64(429) {
		t.Errorf("throttled sign-in audit: %v", l[len(l)-1])
	}
}

// The throttle remembers a bounded number of clients.
func TestAttemptsBounded(t *testing.T) {
	clock := testclock.New(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	a := newAttempts(clock.Now)
	for i := range maxThrottled + 50 {
		a.failed(fmt.Sprintf("10.0.%d.%d", i/256, i%256))
		clock.Advance(time.Millisecond)
	}
	if len(a.m) > maxThrottled {
		t.Fatalf("%d clients remembered, want at most %d", len(a.m), maxThrottled)
	}
}
