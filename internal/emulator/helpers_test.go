package emulator_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/testclock"

	"github.com/lsproxy/lsproxy/internal/emulator"
)

const (
	redirectURL = "https://app.example/callback"
	// RFC 7636 appendix B test vector.
	verifier  = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
)

var allModes = []emulator.Mode{
	emulator.ModeKSeries, emulator.ModeKSeriesV1, emulator.ModeLSeries,
	emulator.ModeOSeries, emulator.ModeRSeries, emulator.ModeXSeries,
}

func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) }

// env is one emulator behind a real loopback HTTP server.
type env struct {
	t   *testing.T
	em  *emulator.Emulator
	srv *httptest.Server
	clk *testclock.Clock
	cfg emulator.Config // effective
}

func start(t *testing.T, cfg emulator.Config) *env {
	t.Helper()
	clk := newClock()
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	em := emulator.New(cfg)
	srv := httptest.NewServer(em)
	t.Cleanup(srv.Close)
	return &env{t: t, em: em, srv: srv, clk: clk, cfg: em.Config()}
}

// noFollow does not follow redirects.
var noFollow = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// result is a read HTTP response.
type result struct {
	status int
	hdr    http.Header
	raw    string
	body   map[string]any // nil unless JSON
}

func (r result) str(k string) string { s, _ := r.body[k].(string); return s }

func (r result) num(k string) (float64, bool) { f, ok := r.body[k].(float64); return f, ok }

func do(t *testing.T, req *http.Request) result {
	t.Helper()
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	r := result{status: resp.StatusCode, hdr: resp.Header, raw: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.body); err != nil {
			t.Fatalf("bad JSON %q: %v", b, err)
		}
	}
	return r
}

func (v *env) redirect() string {
	if v.cfg.RedirectURL != "" {
		return v.cfg.RedirectURL
	}
	return redirectURL
}

// authParams is a valid authorize query for tenant (login_hint; none when "").
func (v *env) authParams(tenant string) url.Values {
	p := url.Values{
		"response_type": {"code"},
		"client_id":     {v.cfg.ClientID},
		"redirect_uri":  {v.redirect()},
		"state":         {"state-123"},
	}
	if tenant != "" {
		p.Set("login_hint", tenant)
	}
	if v.cfg.PKCE {
		p.Set("code_challenge", challenge)
		p.Set("code_challenge_method", "S256")
	}
	return p
}

func (v *env) authorize(p url.Values) result {
	v.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, v.srv.URL+v.em.Paths().Authorize+"?"+p.Encode(), nil)
	return do(v.t, req)
}

// location parses the redirect of a 302.
func location(t *testing.T, r result) *url.URL {
	t.Helper()
	if r.status != http.StatusFound {
		t.Fatalf("authorize: status %d, want 302; body %q", r.status, r.raw)
	}
	u, err := url.Parse(r.hdr.Get("Location"))
	if err != nil {
		t.Fatalf("bad Location: %v", err)
	}
	return u
}

// code runs a valid authorize for tenant and returns the code.
func (v *env) code(tenant string) string {
	v.t.Helper()
	u := location(v.t, v.authorize(v.authParams(tenant)))
	c := u.Query().Get("code")
	if c == "" {
		v.t.Fatalf("no code in redirect (error=%q)", u.Query().Get("error"))
	}
	return c
}

// tokenAs posts form to the token endpoint with client auth style "basic",
// "body" or "none".
func (v *env) tokenAs(style string, form url.Values) result {
	v.t.Helper()
	f := url.Values{}
	for k, vs := range form {
		f[k] = append([]string(nil), vs...)
	}
	if style == emulator.AuthBody {
		f.Set("client_id", v.cfg.ClientID)
		f.Set("client_secret", v.cfg.ClientSecret)
	}
	req, _ := http.NewRequest(http.MethodPost, v.srv.URL+v.em.Paths().Token, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if style == emulator.AuthBasic {
		req.SetBasicAuth(url.QueryEscape(v.cfg.ClientID), url.QueryEscape(v.cfg.ClientSecret))
	}
	return do(v.t, req)
}

func (v *env) token(form url.Values) result { return v.tokenAs(v.cfg.ClientAuth, form) }

func (v *env) exchangeForm(code string) url.Values {
	f := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {v.redirect()}}
	if v.cfg.PKCE {
		f.Set("code_verifier", verifier)
	}
	return f
}

func (v *env) exchange(code string) result { return v.token(v.exchangeForm(code)) }

func (v *env) refresh(rt string) result {
	return v.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
}

// api sends method path with "Authorization: Bearer token" (none when "").
func (v *env) api(method, path, token string) result {
	v.t.Helper()
	req, _ := http.NewRequest(method, v.srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(v.t, req)
}

// tokens extracts the token pair of a 200 token response.
func tokens(t *testing.T, r result) (at, rt string) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("token endpoint: status %d, want 200; body %s", r.status, r.raw)
	}
	at, rt = r.str("access_token"), r.str("refresh_token")
	if at == "" || rt == "" {
		t.Fatalf("token response without tokens: %s", r.raw)
	}
	return at, rt
}

// wantOAuthError checks an RFC 6749 §5.2 error response.
func wantOAuthError(t *testing.T, r result, status int, code string) {
	t.Helper()
	if r.status != status || r.str("error") != code {
		t.Fatalf("got %d %q, want %d %q; body %s", r.status, r.str("error"), status, code, r.raw)
	}
	if r.str("error_description") == "" {
		t.Errorf("error_description missing: %s", r.raw)
	}
	if r.hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", r.hdr.Get("Cache-Control"))
	}
}

// wantAPITenant checks a 200 API answer bound to tenant.
func wantAPITenant(t *testing.T, r result, tenant string) {
	t.Helper()
	if r.status != http.StatusOK || r.str("tenant") != tenant {
		t.Fatalf("API: got %d tenant %q, want 200 %q; body %s", r.status, r.str("tenant"), tenant, r.raw)
	}
}

func wantAPI401(t *testing.T, r result) {
	t.Helper()
	if r.status != http.StatusUnauthorized || r.str("error") != "invalid_token" {
		t.Fatalf("API: got %d %q, want 401 invalid_token; body %s", r.status, r.str("error"), r.raw)
	}
	if !strings.HasPrefix(r.hdr.Get("WWW-Authenticate"), "Bearer ") {
		t.Errorf("WWW-Authenticate = %q", r.hdr.Get("WWW-Authenticate"))
	}
}
