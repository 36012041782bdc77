package emulator_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
)

func TestNewDefaultsAndPanics(t *testing.T) {
	cfg := emulator.New(emulator.Config{}).Config()
	if cfg.Mode != emulator.ModeKSeries || cfg.ClientAuth != emulator.AuthBasic ||
		cfg.ClientID != emulator.DefaultClientID || cfg.ClientSecret != emulator.DefaultClientSecret ||
		cfg.AccessTTL != time.Hour || cfg.CodeTTL != 30*time.Second || cfg.RefreshIdleTTL != 0 || cfg.PKCE || cfg.Scope == "" {
		t.Errorf("defaults: %+v", cfg)
	}
	if !emulator.New(emulator.Config{Mode: emulator.ModeLSeries}).Config().PKCE {
		t.Error("l-series must always require PKCE")
	}
	for _, bad := range []emulator.Config{{Mode: "m-series"}, {ClientAuth: "jwt"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%+v) did not panic", bad)
				}
			}()
			emulator.New(bad)
		}()
	}
}

func TestPathsPerMode(t *testing.T) {
	tests := []struct {
		mode emulator.Mode
		want emulator.Paths
		auth string
	}{
		{emulator.ModeKSeries, emulator.Paths{"/realms/k-series/protocol/openid-connect/auth", "/realms/k-series/protocol/openid-connect/token", "/"}, emulator.AuthBasic},
		{emulator.ModeKSeriesV1, emulator.Paths{"/oauth/authorize", "/oauth/token", "/"}, emulator.AuthBasic},
		{emulator.ModeLSeries, emulator.Paths{"/resto/oauth2/v1/authorize", "/resto/oauth2/v1/token", "/resto/"}, emulator.AuthBasic},
		{emulator.ModeOSeries, emulator.Paths{"/authorize", "/v1/token.json", "/"}, emulator.AuthBody},
		{emulator.ModeRSeries, emulator.Paths{"/auth/oauth/authorize", "/auth/oauth/token", "/"}, emulator.AuthBody},
		{emulator.ModeXSeries, emulator.Paths{"/connect", "/api/1.0/token", "/"}, emulator.AuthBody},
	}
	for _, tc := range tests {
		t.Run(string(tc.mode), func(t *testing.T) {
			v := start(t, emulator.Config{Mode: tc.mode})
			if got := v.em.Paths(); got != tc.want {
				t.Fatalf("Paths() = %+v, want %+v", got, tc.want)
			}
			if got := emulator.DefaultClientAuth(tc.mode); got != tc.auth || v.cfg.ClientAuth != tc.auth {
				t.Errorf("client auth = %q / %q, want %q", got, v.cfg.ClientAuth, tc.auth)
			}
			// Both OAuth paths are served where the mode says ...
			g := v.em.IssueGrant("t1")
			tokens(t, v.refresh(g.RefreshToken))
			location(t, v.authorize(v.authParams("t1")))
			// ... and everything else is API: another mode's token path is not a token endpoint.
			other := "/oauth/token"
			if tc.mode == emulator.ModeKSeriesV1 {
				other = "/v1/token.json"
			}
			req, _ := http.NewRequest(http.MethodPost, v.srv.URL+other, strings.NewReader("grant_type=refresh_token"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			wantAPI401(t, do(t, req))
			wantAPITenant(t, v.api(http.MethodGet, tc.want.APIPrefix+"items", g.AccessToken), "t1")
		})
	}
}

func TestClientAuthDefaultPerMode(t *testing.T) {
	for _, mode := range allModes {
		for _, style := range []string{emulator.AuthBasic, emulator.AuthBody} {
			t.Run(string(mode)+"/"+style, func(t *testing.T) {
				v := start(t, emulator.Config{Mode: mode})
				g := v.em.IssueGrant("t1")
				r := v.tokenAs(style, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {g.RefreshToken}})
				if style == emulator.DefaultClientAuth(mode) {
					tokens(t, r)
					return
				}
				wantOAuthError(t, r, http.StatusUnauthorized, "invalid_client")
				if got := v.em.Stats().ClientAuthFailures; got != 1 {
					t.Errorf("ClientAuthFailures = %d, want 1", got)
				}
				// Client authentication comes first: the refresh token was not spent.
				tokens(t, v.refresh(g.RefreshToken))
			})
		}
	}
	t.Run("override", func(t *testing.T) {
		v := start(t, emulator.Config{Mode: emulator.ModeOSeries, ClientAuth: emulator.AuthBasic})
		g := v.em.IssueGrant("t1")
		tokens(t, v.tokenAs(emulator.AuthBasic, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {g.RefreshToken}}))
	})
}

func TestClientAuthRules(t *testing.T) {
	const secret = "p+ss w/rd%" // needs form-encoding inside Basic (RFC 6749 §2.3.1)
	type reqFn func(form url.Values, req *http.Request)
	basic := func(id, sec string) reqFn {
		return func(_ url.Values, req *http.Request) { req.SetBasicAuth(id, sec) }
	}
	body := func(kv ...string) reqFn {
		return func(form url.Values, _ *http.Request) {
			for i := 0; i+1 < len(kv); i += 2 {
				form.Set(kv[i], kv[i+1])
			}
		}
	}
	both := func(fs ...reqFn) reqFn {
		return func(form url.Values, req *http.Request) {
			for _, f := range fs {
				f(form, req)
			}
		}
	}
	enc := url.QueryEscape
	tests := []struct {
		name   string
		auth   string
		build  reqFn
		wantOK bool
	}{
		{"basic/ok", emulator.AuthBasic, basic(enc("cid"), enc(secret)), true},
		{"basic/ok with matching client_id in body", emulator.AuthBasic, both(basic(enc("cid"), enc(secret)), body("client_id", "cid")), true},
		{"basic/secret not form-encoded", emulator.AuthBasic, basic("cid", secret), false},
		{"basic/credentials only in body", emulator.AuthBasic, body("client_id", "cid", "client_secret", secret), false},
		{"basic/header plus secret in body", emulator.AuthBasic, both(basic(enc("cid"), enc(secret)), body("client_secret", secret)), false},
		{"basic/body client_id differs", emulator.AuthBasic, both(basic(enc("cid"), enc(secret)), body("client_id", "other")), false},
		{"basic/wrong secret", emulator.AuthBasic, basic(enc("cid"), "nope"), false},
		{"basic/unknown client", emulator.AuthBasic, basic("other", enc(secret)), false},
		{"basic/none", emulator.AuthBasic, body(), false},
		{"body/ok", emulator.AuthBody, body("client_id", "cid", "client_secret", secret), true},
		{"body/basic header", emulator.AuthBody, basic(enc("cid"), enc(secret)), false},
		{"body/basic header plus body", emulator.AuthBody, both(basic(enc("cid"), enc(secret)), body("client_id", "cid", "client_secret", secret)), false},
		{"body/secret missing", emulator.AuthBody, body("client_id", "cid"), false},
		{"body/client_id missing", emulator.AuthBody, body("client_secret", secret), false},
		{"body/wrong secret", emulator.AuthBody, body("client_id", "cid", "client_secret", "nope"), false},
		{"body/empty secret", emulator.AuthBody, body("client_id", "cid", "client_secret", ""), false},
		{"body/none", emulator.AuthBody, body(), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := start(t, emulator.Config{ClientID: "cid", ClientSecret: secret, ClientAuth: tc.auth})
			g := v.em.IssueGrant("t1")
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {g.RefreshToken}}
			req, _ := http.NewRequest(http.MethodPost, v.srv.URL+v.em.Paths().Token, nil)
			tc.build(form, req)
			enc := form.Encode()
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(enc)), int64(len(enc))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r := do(t, req)
			if tc.wantOK {
				tokens(t, r)
				return
			}
			wantOAuthError(t, r, http.StatusUnauthorized, "invalid_client")
			wantBasic := tc.auth == emulator.AuthBasic
			if got := r.hdr.Get("WWW-Authenticate"); strings.HasPrefix(got, "Basic ") != wantBasic {
				t.Errorf("WWW-Authenticate = %q (basic mode %t)", got, wantBasic)
			}
			if strings.Contains(r.raw, secret) || strings.Contains(r.raw, g.RefreshToken) {
				t.Errorf("error body leaks a secret: %s", r.raw)
			}
			if s := v.em.Stats(); s.ClientAuthFailures != 1 || s.RefreshRejected != 0 || s.RefreshGrants != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestTokenRequestValidation(t *testing.T) {
	v := start(t, emulator.Config{})
	g := v.em.IssueGrant("t1")
	basicReq := func(method, ctype, query, body string) *http.Request {
		u := v.srv.URL + v.em.Paths().Token
		if query != "" {
			u += "?" + query
		}
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		req.SetBasicAuth(v.cfg.ClientID, v.cfg.ClientSecret)
		return req
	}
	form := "application/x-www-form-urlencoded"
	refresh := "grant_type=refresh_token&refresh_token=" + url.QueryEscape(g.RefreshToken)
	tests := []struct {
		name   string
		req    *http.Request
		status int
		code   string
	}{
		{"GET", basicReq(http.MethodGet, "", refresh, ""), http.StatusMethodNotAllowed, "invalid_request"},
		{"PUT", basicReq(http.MethodPut, form, "", refresh), http.StatusMethodNotAllowed, "invalid_request"},
		{"JSON body", basicReq(http.MethodPost, "application/json", "", `{"grant_type":"refresh_token"}`), http.StatusBadRequest, "invalid_request"},
		{"no content type", basicReq(http.MethodPost, "", "", refresh), http.StatusBadRequest, "invalid_request"},
		{"multipart", basicReq(http.MethodPost, "multipart/form-data; boundary=x", "", refresh), http.StatusBadRequest, "invalid_request"},
		{"parameters in the URL query", basicReq(http.MethodPost, form, refresh, ""), http.StatusBadRequest, "invalid_request"},
		{"repeated parameter", basicReq(http.MethodPost, form, "", refresh+"&refresh_token=x"), http.StatusBadRequest, "invalid_request"},
		{"grant_type missing", basicReq(http.MethodPost, form, "", "refresh_token=x"), http.StatusBadRequest, "invalid_request"},
		{"grant_type password", basicReq(http.MethodPost, form, "", "grant_type=password&username=a&password=b"), http.StatusBadRequest, "unsupported_grant_type"},
		{"grant_type client_credentials", basicReq(http.MethodPost, form, "", "grant_type=client_credentials"), http.StatusBadRequest, "unsupported_grant_type"},
		{"refresh_token missing", basicReq(http.MethodPost, form, "", "grant_type=refresh_token"), http.StatusBadRequest, "invalid_request"},
		{"code missing", basicReq(http.MethodPost, form, "", "grant_type=authorization_code&redirect_uri=x"), http.StatusBadRequest, "invalid_request"},
		{"body too large", basicReq(http.MethodPost, form, "", refresh+"&pad="+strings.Repeat("a", 70<<10)), http.StatusBadRequest, "invalid_request"},
		{"malformed form", basicReq(http.MethodPost, form, "", "grant_type=%zz"), http.StatusBadRequest, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.req)
			wantOAuthError(t, r, tc.status, tc.code)
			if tc.status == http.StatusMethodNotAllowed && r.hdr.Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q", r.hdr.Get("Allow"))
			}
		})
	}
	if s := v.em.Stats(); s.TokenBadRequests != int64(len(tests)) || s.RefreshGrants != 0 {
		t.Errorf("TokenBadRequests = %d, want %d (stats %+v)", s.TokenBadRequests, len(tests), s)
	}
	// None of that spent the refresh token; a charset parameter is fine.
	tokens(t, do(t, basicReq(http.MethodPost, form+"; charset=UTF-8", "", refresh)))
}

func TestAuthorize(t *testing.T) {
	type want struct {
		page  bool   // 400 page, no redirect
		err   string // redirect with this error
		query string // redirect must contain this key (success)
	}
	set := func(kv ...string) func(url.Values) {
		return func(p url.Values) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] == "-" {
					p.Del(kv[i])
				} else {
					p.Set(kv[i], kv[i+1])
				}
			}
		}
	}
	tests := []struct {
		name string
		cfg  emulator.Config
		mod  func(url.Values)
		want want
	}{
		{"ok", emulator.Config{}, set(), want{query: "code"}},
		{"ok registered redirect", emulator.Config{RedirectURL: redirectURL}, set(), want{query: "code"}},
		{"ok pkce", emulator.Config{PKCE: true}, set(), want{query: "code"}},
		{"ok optional pkce given", emulator.Config{}, set("code_challenge", challenge, "code_challenge_method", "S256"), want{query: "code"}},
		{"x-series domain_prefix", emulator.Config{Mode: emulator.ModeXSeries}, set(), want{query: "domain_prefix"}},
		{"redirect mismatch (trailing slash)", emulator.Config{RedirectURL: redirectURL}, set("redirect_uri", redirectURL+"/"), want{page: true}},
		{"redirect mismatch (case)", emulator.Config{RedirectURL: redirectURL}, set("redirect_uri", strings.ToUpper(redirectURL)), want{page: true}},
		{"registered redirect omitted", emulator.Config{RedirectURL: redirectURL}, set("redirect_uri", "-"), want{page: true}},
		{"redirect missing", emulator.Config{}, set("redirect_uri", "-"), want{page: true}},
		{"redirect relative", emulator.Config{}, set("redirect_uri", "/callback"), want{page: true}},
		{"redirect with fragment", emulator.Config{}, set("redirect_uri", redirectURL+"#x"), want{page: true}},
		{"redirect javascript", emulator.Config{}, set("redirect_uri", "javascript:alert(1)"), want{page: true}},
		{"client_id wrong", emulator.Config{}, set("client_id", "other"), want{page: true}},
		{"client_id missing", emulator.Config{}, set("client_id", "-"), want{page: true}},
		{"response_type missing", emulator.Config{}, set("response_type", "-"), want{err: "invalid_request"}},
		{"response_type token", emulator.Config{}, set("response_type", "token"), want{err: "unsupported_response_type"}},
		{"pkce required, no challenge", emulator.Config{PKCE: true}, set("code_challenge", "-", "code_challenge_method", "-"), want{err: "invalid_request"}},
		{"l-series pkce always required", emulator.Config{Mode: emulator.ModeLSeries}, set("code_challenge", "-", "code_challenge_method", "-"), want{err: "invalid_request"}},
		{"pkce plain", emulator.Config{PKCE: true}, set("code_challenge_method", "plain"), want{err: "invalid_request"}},
		{"pkce method missing", emulator.Config{PKCE: true}, set("code_challenge_method", "-"), want{err: "invalid_request"}},
		{"pkce method without challenge", emulator.Config{}, set("code_challenge_method", "S256"), want{err: "invalid_request"}},
		{"pkce challenge malformed", emulator.Config{PKCE: true}, set("code_challenge", "short"), want{err: "invalid_request"}},
		{"state required", emulator.Config{RequireState: true}, set("state", "-"), want{err: "invalid_request"}},
		{"no merchant", emulator.Config{}, set("login_hint", "-"), want{err: "access_denied"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := start(t, tc.cfg)
			p := v.authParams("t1")
			tc.mod(p)
			r := v.authorize(p)
			if tc.want.page {
				if r.status != http.StatusBadRequest || r.hdr.Get("Location") != "" {
					t.Fatalf("got %d Location %q, want a 400 page", r.status, r.hdr.Get("Location"))
				}
			} else {
				u := location(t, r)
				q := u.Query()
				if got := u.Scheme + "://" + u.Host + u.Path; got != p.Get("redirect_uri") {
					t.Errorf("redirected to %q, want %q", got, p.Get("redirect_uri"))
				}
				if p.Get("state") != "" && q.Get("state") != p.Get("state") {
					t.Errorf("state = %q, want %q", q.Get("state"), p.Get("state"))
				}
				if q.Get("error") != tc.want.err {
					t.Fatalf("error = %q (%s), want %q", q.Get("error"), q.Get("error_description"), tc.want.err)
				}
				if tc.want.err != "" && (q.Get("error_description") == "" || q.Has("code")) {
					t.Errorf("error redirect: %s", u.RawQuery)
				}
				if tc.want.query != "" && q.Get(tc.want.query) == "" {
					t.Errorf("redirect lacks %s: %s", tc.want.query, u.RawQuery)
				}
			}
			s := v.em.Stats()
			ok := !tc.want.page && tc.want.err == ""
			if s.AuthorizeRequests != 1 || (s.CodesIssued == 1) != ok || (s.AuthorizeRejected == 1) == ok {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestAuthorizeDetails(t *testing.T) {
	t.Run("redirect query kept, state omitted when absent, domain_prefix", func(t *testing.T) {
		v := start(t, emulator.Config{Mode: emulator.ModeXSeries})
		p := v.authParams("shop-1")
		p.Set("redirect_uri", redirectURL+"?from=emu")
		p.Del("state")
		q := location(t, v.authorize(p)).Query()
		if q.Get("from") != "emu" || q.Has("state") || q.Get("domain_prefix") != "shop-1" || !strings.HasPrefix(q.Get("code"), "code-") {
			t.Errorf("redirect query %v", q)
		}
	})
	t.Run("repeated parameter", func(t *testing.T) {
		v := start(t, emulator.Config{})
		p := v.authParams("t1")
		p.Add("scope", "a")
		p.Add("scope", "b")
		if q := location(t, v.authorize(p)).Query(); q.Get("error") != "invalid_request" {
			t.Errorf("got %v", q)
		}
		p = v.authParams("t1")
		p.Add("client_id", v.cfg.ClientID)
		if r := v.authorize(p); r.status != http.StatusBadRequest {
			t.Errorf("repeated client_id: %d", r.status)
		}
	})
	t.Run("POST", func(t *testing.T) {
		v := start(t, emulator.Config{})
		req, _ := http.NewRequest(http.MethodPost, v.srv.URL+v.em.Paths().Authorize+"?"+v.authParams("t1").Encode(), nil)
		if r := do(t, req); r.status != http.StatusMethodNotAllowed || r.hdr.Get("Location") != "" {
			t.Errorf("got %d", r.status)
		}
	})
	t.Run("Approve, login_hint, Deny", func(t *testing.T) {
		v := start(t, emulator.Config{})
		v.em.Approve("approved")
		tenantOf := func(p url.Values) string {
			t.Helper()
			q := location(t, v.authorize(p)).Query()
			if q.Get("error") != "" {
				return q.Get("error")
			}
			at, _ := tokens(t, v.exchange(q.Get("code")))
			return v.api(http.MethodGet, "/who", at).str("tenant")
		}
		if got := tenantOf(v.authParams("")); got != "approved" {
			t.Errorf("Approve: tenant %q", got)
		}
		if got := tenantOf(v.authParams("hinted")); got != "hinted" {
			t.Errorf("login_hint: tenant %q", got)
		}
		v.em.Deny()
		v.em.Deny()
		for i := range 2 {
			if got := tenantOf(v.authParams("hinted")); got != "access_denied" {
				t.Errorf("Deny #%d: %q", i, got)
			}
		}
		if got := tenantOf(v.authParams("")); got != "approved" {
			t.Errorf("after denials: %q", got)
		}
		v.em.Approve("")
		if got := tenantOf(v.authParams("")); got != "access_denied" {
			t.Errorf("approval withdrawn: %q", got)
		}
		if s := v.em.Stats(); s.AuthorizeDenied != 3 || s.CodesIssued != 3 {
			t.Errorf("stats %+v", s)
		}
	})
}

func TestCodeExchange(t *testing.T) {
	tests := []struct {
		name    string
		cfg     emulator.Config
		prepare func(v *env, form url.Values)
		wantErr string // "" = success
	}{
		{"ok", emulator.Config{}, nil, ""},
		{"ok pkce", emulator.Config{PKCE: true}, nil, ""},
		{"ok l-series", emulator.Config{Mode: emulator.ModeLSeries}, nil, ""},
		{"ok registered redirect", emulator.Config{RedirectURL: redirectURL}, nil, ""},
		{"redirect_uri differs", emulator.Config{}, func(_ *env, f url.Values) { f.Set("redirect_uri", redirectURL+"/") }, "invalid_grant"},
		{"redirect_uri missing", emulator.Config{}, func(_ *env, f url.Values) { f.Del("redirect_uri") }, "invalid_grant"},
		{"redirect_uri differs (registered)", emulator.Config{RedirectURL: redirectURL}, func(_ *env, f url.Values) { f.Set("redirect_uri", "https://app.example/other") }, "invalid_grant"},
		{"verifier wrong", emulator.Config{PKCE: true}, func(_ *env, f url.Values) { f.Set("code_verifier", strings.Repeat("x", 43)) }, "invalid_grant"},
		{"verifier wrong l-series", emulator.Config{Mode: emulator.ModeLSeries}, func(_ *env, f url.Values) { f.Set("code_verifier", verifier+"x") }, "invalid_grant"},
		{"verifier missing", emulator.Config{PKCE: true}, func(_ *env, f url.Values) { f.Del("code_verifier") }, "invalid_grant"},
		{"verifier is the challenge", emulator.Config{PKCE: true}, func(_ *env, f url.Values) { f.Set("code_verifier", challenge) }, "invalid_grant"},
		{"verifier malformed", emulator.Config{PKCE: true}, func(_ *env, f url.Values) { f.Set("code_verifier", verifier[:42]) }, "invalid_grant"},
		{"verifier without challenge", emulator.Config{}, func(_ *env, f url.Values) { f.Set("code_verifier", verifier) }, "invalid_grant"},
		{"unknown code", emulator.Config{}, func(_ *env, f url.Values) { f.Set("code", "code-NOPE") }, "invalid_grant"},
		{"expired", emulator.Config{}, func(v *env, _ url.Values) { v.clk.Advance(30 * time.Second) }, "invalid_grant"},
		{"just before expiry", emulator.Config{}, func(v *env, _ url.Values) { v.clk.Advance(30*time.Second - time.Millisecond) }, ""},
		{"custom CodeTTL expired", emulator.Config{CodeTTL: 5 * time.Second}, func(v *env, _ url.Values) { v.clk.Advance(5 * time.Second) }, "invalid_grant"},
		{"tenant revoked before exchange", emulator.Config{}, func(v *env, _ url.Values) { v.em.Revoke("t1") }, "invalid_grant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := start(t, tc.cfg)
			form := v.exchangeForm(v.code("t1"))
			if tc.prepare != nil {
				tc.prepare(v, form)
			}
			r := v.token(form)
			s := v.em.Stats()
			if tc.wantErr != "" {
				wantOAuthError(t, r, http.StatusBadRequest, tc.wantErr)
				if s.CodeRejected != 1 || s.CodeExchanges != 0 || s.GrantsIssued != 0 {
					t.Errorf("stats %+v", s)
				}
				return
			}
			at, rt := tokens(t, r)
			if !strings.HasPrefix(at, "at-") || !strings.HasPrefix(rt, "rt-") || r.str("token_type") != "bearer" {
				t.Errorf("response %s", r.raw)
			}
			if s.CodeExchanges != 1 || s.CodeRejected != 0 {
				t.Errorf("stats %+v", s)
			}
			wantAPITenant(t, v.api(http.MethodGet, v.em.Paths().APIPrefix+"x", at), "t1")
		})
	}
}

func TestCodeSpentByFailedAttempt(t *testing.T) {
	v := start(t, emulator.Config{PKCE: true})
	code := v.code("t1")
	f := v.exchangeForm(code)
	f.Set("code_verifier", strings.Repeat("y", 43))
	wantOAuthError(t, v.token(f), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, v.exchange(code), http.StatusBadRequest, "invalid_grant")
	if s := v.em.Stats(); s.CodeReuse != 1 || s.CodeExchanges != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestCodeReuseRevokesTokens(t *testing.T) {
	v := start(t, emulator.Config{})
	other := v.em.IssueGrant("t2")
	code := v.code("t1")
	at, rt := tokens(t, v.exchange(code))
	wantAPITenant(t, v.api(http.MethodGet, "/x", at), "t1")

	r := v.exchange(code)
	wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
	if strings.Contains(r.raw, code) {
		t.Errorf("error leaks the code: %s", r.raw)
	}
	wantAPI401(t, v.api(http.MethodGet, "/x", at))
	wantOAuthError(t, v.refresh(rt), http.StatusBadRequest, "invalid_grant")
	if s := v.em.Stats(); s.CodeReuse != 1 || s.CodeRejected != 1 || s.GrantsRevoked != 1 || s.ReuseDetected != 0 {
		t.Errorf("stats %+v", s)
	}
	if v.em.ActiveGrants("t1") != 0 {
		t.Error("t1 grant still active")
	}
	wantAPITenant(t, v.api(http.MethodGet, "/x", other.AccessToken), "t2")
}

func TestRefreshRotates(t *testing.T) {
	v := start(t, emulator.Config{})
	g := v.em.IssueGrant("t1")
	seen := map[string]bool{g.AccessToken: true, g.RefreshToken: true}
	at, rt := g.AccessToken, g.RefreshToken
	for i := 1; i <= 3; i++ {
		r := v.refresh(rt)
		nat, nrt := tokens(t, r)
		if seen[nat] || seen[nrt] || !strings.HasPrefix(nat, "at-") || !strings.HasPrefix(nrt, "rt-") {
			t.Fatalf("refresh %d did not rotate to fresh tokens", i)
		}
		seen[nat], seen[nrt] = true, true
		// Old access tokens stay valid until they expire (default).
		wantAPITenant(t, v.api(http.MethodGet, "/x", at), "t1")
		wantAPITenant(t, v.api(http.MethodGet, "/x", nat), "t1")
		at, rt = nat, nrt
		if got := v.em.RefreshCount("t1"); got != i {
			t.Errorf("RefreshCount = %d, want %d", got, i)
		}
	}
	if s := v.em.Stats(); s.RefreshGrants != 3 || s.RefreshRejected != 0 || s.GrantsIssued != 1 {
		t.Errorf("stats %+v", s)
	}
	if v.em.RefreshCount("t2") != 0 {
		t.Error("RefreshCount of another tenant")
	}
}

func TestRefreshReuseRevokesGrant(t *testing.T) {
	v := start(t, emulator.Config{})
	g := v.em.IssueGrant("t1")
	sibling := v.em.IssueGrant("t1") // another grant of the same tenant
	other := v.em.IssueGrant("t2")
	at2, rt2 := tokens(t, v.refresh(g.RefreshToken))

	r := v.refresh(g.RefreshToken) // reuse
	wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
	if s := v.em.Stats(); s.ReuseDetected != 1 || s.RefreshRejected != 1 || s.GrantsRevoked != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The whole grant is gone: the rotated pair and the original access token.
	wantOAuthError(t, v.refresh(rt2), http.StatusBadRequest, "invalid_grant")
	wantAPI401(t, v.api(http.MethodGet, "/x", at2))
	wantAPI401(t, v.api(http.MethodGet, "/x", g.AccessToken))
	// Other grants are untouched.
	wantAPITenant(t, v.api(http.MethodGet, "/x", sibling.AccessToken), "t1")
	tokens(t, v.refresh(sibling.RefreshToken))
	tokens(t, v.refresh(other.RefreshToken))
	if v.em.ActiveGrants("t1") != 1 {
		t.Errorf("ActiveGrants(t1) = %d, want 1", v.em.ActiveGrants("t1"))
	}
	// Presenting the used token again is counted again.
	wantOAuthError(t, v.refresh(g.RefreshToken), http.StatusBadRequest, "invalid_grant")
	if s := v.em.Stats(); s.ReuseDetected != 2 || s.GrantsRevoked != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestConcurrentRefreshOneWins is the race lsproxy's lock exists for: two
// workers refreshing the same tenant at once lose the grant.
func TestConcurrentRefreshOneWins(t *testing.T) {
	v := start(t, emulator.Config{})
	g := v.em.IssueGrant("t1")
	const n = 8
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[int]int{}
		gate  = make(chan struct{})
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			req, _ := http.NewRequest(http.MethodPost, v.srv.URL+v.em.Paths().Token,
				strings.NewReader("grant_type=refresh_token&refresh_token="+url.QueryEscape(g.RefreshToken)))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(v.cfg.ClientID, v.cfg.ClientSecret)
			resp, err := noFollow.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	close(gate)
	wg.Wait()
	if codes[200] != 1 || codes[400] != n-1 {
		t.Fatalf("statuses %v, want one 200 and %d 400", codes, n-1)
	}
	if s := v.em.Stats(); s.RefreshGrants != 1 || s.ReuseDetected != n-1 || s.GrantsRevoked != 1 {
		t.Errorf("stats %+v", s)
	}
	if v.em.ActiveGrants("t1") != 0 {
		t.Error("grant survived concurrent reuse")
	}
}

func TestRefreshRejected(t *testing.T) {
	tests := []struct {
		name    string
		cfg     emulator.Config
		prepare func(v *env, g emulator.Grant) url.Values
		wantErr string
	}{
		{"unknown", emulator.Config{}, func(*env, emulator.Grant) url.Values {
			return url.Values{"refresh_token": {"rt-UNKNOWN"}}
		}, "invalid_grant"},
		{"access token as refresh token", emulator.Config{}, func(_ *env, g emulator.Grant) url.Values {
			return url.Values{"refresh_token": {g.AccessToken}}
		}, "invalid_grant"},
		{"revoked", emulator.Config{}, func(v *env, g emulator.Grant) url.Values {
			v.em.Revoke("t1")
			return url.Values{"refresh_token": {g.RefreshToken}}
		}, "invalid_grant"},
		{"idle expired", emulator.Config{RefreshIdleTTL: time.Hour}, func(v *env, g emulator.Grant) url.Values {
			v.clk.Advance(time.Hour)
			return url.Values{"refresh_token": {g.RefreshToken}}
		}, "invalid_grant"},
		{"scope widened", emulator.Config{Scope: "a b"}, func(_ *env, g emulator.Grant) url.Values {
			return url.Values{"refresh_token": {g.RefreshToken}, "scope": {"a c"}}
		}, "invalid_scope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := start(t, tc.cfg)
			g := v.em.IssueGrant("t1")
			f := tc.prepare(v, g)
			f.Set("grant_type", "refresh_token")
			wantOAuthError(t, v.token(f), http.StatusBadRequest, tc.wantErr)
			if s := v.em.Stats(); s.RefreshRejected != 1 || s.RefreshGrants != 0 || s.ReuseDetected != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
	t.Run("scope narrowed", func(t *testing.T) {
		v := start(t, emulator.Config{Scope: "a b"})
		g := v.em.IssueGrant("t1")
		r := v.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {g.RefreshToken}, "scope": {"b"}})
		if tokens(t, r); r.str("scope") != "b" {
			t.Errorf("scope %q", r.str("scope"))
		}
	})
}

func TestRefreshIdleTTL(t *testing.T) {
	v := start(t, emulator.Config{Mode: emulator.ModeKSeriesV1, RefreshIdleTTL: 14 * 24 * time.Hour})
	g := v.em.IssueGrant("t1")
	if g.RefreshExpiresIn != 14*24*3600 {
		t.Errorf("RefreshExpiresIn = %d", g.RefreshExpiresIn)
	}
	rt := g.RefreshToken
	for range 3 { // each rotation starts a new window
		v.clk.Advance(13 * 24 * time.Hour)
		_, rt = tokens(t, v.refresh(rt))
	}
	v.clk.Advance(14 * 24 * time.Hour)
	wantOAuthError(t, v.refresh(rt), http.StatusBadRequest, "invalid_grant")

	never := start(t, emulator.Config{})
	g = never.em.IssueGrant("t1")
	never.clk.Advance(1000 * 24 * time.Hour)
	tokens(t, never.refresh(g.RefreshToken))
}

func TestTokenResponseFields(t *testing.T) {
	for _, mode := range allModes {
		for _, idle := range []time.Duration{0, 30 * 24 * time.Hour} {
			t.Run(fmt.Sprintf("%s/idle=%s", mode, idle), func(t *testing.T) {
				v := start(t, emulator.Config{Mode: mode, RefreshIdleTTL: idle, AccessTTL: 90 * time.Second})
				check := func(r result) {
					t.Helper()
					tokens(t, r)
					if exp, _ := r.num("expires_in"); exp != 90 || r.str("token_type") != "bearer" || r.str("scope") == "" {
						t.Errorf("fields: %s", r.raw)
					}
					rexp, has := r.num("refresh_expires_in")
					wantHas := mode == emulator.ModeKSeries && idle > 0
					if has != wantHas || (has && rexp != idle.Seconds()) {
						t.Errorf("refresh_expires_in present=%t (%v), want present=%t", has, rexp, wantHas)
					}
					if got := r.str("domain_prefix"); (mode == emulator.ModeXSeries) != (got == "t1") {
						t.Errorf("domain_prefix %q", got)
					}
					if r.hdr.Get("Cache-Control") != "no-store" || !strings.HasPrefix(r.hdr.Get("Content-Type"), "application/json") {
						t.Errorf("headers %v", r.hdr)
					}
				}
				check(v.exchange(v.code("t1")))
				check(v.refresh(v.em.IssueGrant("t1").RefreshToken))
			})
		}
	}
}

func TestAccessTokenExpiry(t *testing.T) {
	v := start(t, emulator.Config{AccessTTL: time.Hour})
	g := v.em.IssueGrant("t1")
	if g.ExpiresIn != 3600 {
		t.Errorf("ExpiresIn = %d", g.ExpiresIn)
	}
	v.clk.Advance(time.Hour - time.Second)
	wantAPITenant(t, v.api(http.MethodGet, "/x", g.AccessToken), "t1")
	v.clk.Advance(time.Second)
	r := v.api(http.MethodGet, "/x", g.AccessToken)
	wantAPI401(t, r)
	if !strings.Contains(r.hdr.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("WWW-Authenticate %q", r.hdr.Get("WWW-Authenticate"))
	}
	// The refresh token still works; the new access token is valid.
	at, _ := tokens(t, v.refresh(g.RefreshToken))
	wantAPITenant(t, v.api(http.MethodGet, "/x", at), "t1")
}

func TestRevokeOldAccessOnRefresh(t *testing.T) {
	for _, revoke := range []bool{false, true} {
		t.Run(fmt.Sprint(revoke), func(t *testing.T) {
			v := start(t, emulator.Config{RevokeOldAccessOnRefresh: revoke})
			g := v.em.IssueGrant("t1")
			at, _ := tokens(t, v.refresh(g.RefreshToken))
			wantAPITenant(t, v.api(http.MethodGet, "/x", at), "t1")
			old := v.api(http.MethodGet, "/x", g.AccessToken)
			if revoke {
				wantAPI401(t, old)
			} else {
				wantAPITenant(t, old, "t1")
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	v := start(t, emulator.Config{})
	g := v.em.IssueGrant("t1")
	at2, _ := tokens(t, v.refresh(v.em.IssueGrant("t1").RefreshToken))
	other := v.em.IssueGrant("t2")
	pending := v.code("t1")

	v.em.Revoke("t1")
	wantAPI401(t, v.api(http.MethodGet, "/x", g.AccessToken))
	wantAPI401(t, v.api(http.MethodGet, "/x", at2))
	wantOAuthError(t, v.refresh(g.RefreshToken), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, v.exchange(pending), http.StatusBadRequest, "invalid_grant")
	wantAPITenant(t, v.api(http.MethodGet, "/x", other.AccessToken), "t2")
	if s := v.em.Stats(); s.GrantsRevoked != 2 || s.ReuseDetected != 0 {
		t.Errorf("stats %+v", s)
	}
	// The merchant can authorize again.
	at, _ := tokens(t, v.exchange(v.code("t1")))
	wantAPITenant(t, v.api(http.MethodGet, "/x", at), "t1")
}

func TestTokenOutage(t *testing.T) {
	for _, status := range []int{500, 502, 503, 504, 429} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			v := start(t, emulator.Config{})
			g := v.em.IssueGrant("t1")
			code := v.code("t1")
			v.em.SetTokenOutage(status)
			for _, r := range []result{v.refresh(g.RefreshToken), v.exchange(code)} {
				if r.status != status || r.body != nil || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/plain") {
					t.Fatalf("got %d %q, want %d plain text", r.status, r.raw, status)
				}
			}
			v.em.SetTokenOutage(0)
			// Nothing was spent during the outage.
			tokens(t, v.refresh(g.RefreshToken))
			tokens(t, v.exchange(code))
			if s := v.em.Stats(); s.TokenOutages != 2 || s.RefreshGrants != 1 || s.CodeExchanges != 1 || s.TokenRequests != 4 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// postRefresh sends a refresh with ctx and returns the transport error, if any.
func postRefresh(ctx context.Context, v *env, baseURL, rt string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+v.em.Paths().Token,
		strings.NewReader("grant_type=refresh_token&refresh_token="+url.QueryEscape(rt)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(v.cfg.ClientID, v.cfg.ClientSecret)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

// abandon sends a refresh that the client gives up on after 100ms, then closes
// the server, which waits for the handler: it must return promptly.
func abandon(t *testing.T, v *env, rt string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := postRefresh(ctx, v, v.srv.URL, rt); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	began := time.Now()
	v.srv.Close() // blocks until the handler has returned
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("handler ignored the request context (%s)", d)
	}
}

// reopen serves the same emulator on a new server.
func reopen(t *testing.T, v *env) {
	v.srv = httptest.NewServer(v.em)
	t.Cleanup(v.srv.Close)
}

func TestTokenDelay(t *testing.T) {
	t.Run("slow but answers", func(t *testing.T) {
		v := start(t, emulator.Config{})
		g := v.em.IssueGrant("t1")
		v.em.SetTokenDelay(150 * time.Millisecond)
		began := time.Now()
		tokens(t, v.refresh(g.RefreshToken))
		if d := time.Since(began); d < 150*time.Millisecond {
			t.Errorf("answered after %s, want >= 150ms", d)
		}
	})
	t.Run("respects request context, processes nothing", func(t *testing.T) {
		v := start(t, emulator.Config{})
		g := v.em.IssueGrant("t1")
		v.em.SetTokenDelay(time.Minute)
		abandon(t, v, g.RefreshToken)
		if s := v.em.Stats(); s.TokenAbandoned != 1 || s.RefreshGrants != 0 {
			t.Fatalf("stats %+v", s)
		}
		v.em.SetTokenDelay(0)
		reopen(t, v)
		tokens(t, v.refresh(g.RefreshToken)) // not spent
	})
	t.Run("before outage", func(t *testing.T) {
		v := start(t, emulator.Config{})
		v.em.SetTokenDelay(time.Minute)
		v.em.SetTokenOutage(503)
		abandon(t, v, "rt-x")
		if s := v.em.Stats(); s.TokenAbandoned != 1 || s.TokenOutages != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestTokenHoldLosesResponseAfterRotation(t *testing.T) {
	v := start(t, emulator.Config{})
	g := v.em.IssueGrant("t1")
	v.em.SetTokenHold(time.Minute)
	abandon(t, v, g.RefreshToken)
	if s := v.em.Stats(); s.TokenAbandoned != 1 || s.RefreshGrants != 1 {
		t.Fatalf("stats %+v", s)
	}
	v.em.SetTokenHold(0)
	reopen(t, v)
	// The token rotated although the client never saw it: retrying is reuse.
	wantOAuthError(t, v.refresh(g.RefreshToken), http.StatusBadRequest, "invalid_grant")
	if s := v.em.Stats(); s.ReuseDetected != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestTokenDropAfterGrant(t *testing.T) {
	v := start(t, emulator.Config{})
	v.em.SetTokenDropAfterGrant(2)
	// Code exchanges are not dropped.
	_, rt := tokens(t, v.exchange(v.code("t1")))
	for i := 1; i <= 2; i++ {
		resp, err := postRefresh(context.Background(), v, v.srv.URL, rt)
		if err == nil {
			t.Fatalf("drop %d: got a response %d, want a closed connection", i, resp.StatusCode)
		}
		if s := v.em.Stats(); s.TokenDropped != int64(i) || s.RefreshGrants != int64(i) || v.em.RefreshCount("t1") != i {
			t.Fatalf("drop %d: stats %+v", i, s)
		}
		// The grant happened: the old token is now reuse (and kills the grant).
		wantOAuthError(t, v.refresh(rt), http.StatusBadRequest, "invalid_grant")
		_, rt = tokens(t, v.exchange(v.code("t1")))
	}
	tokens(t, v.refresh(rt)) // drops exhausted
	if s := v.em.Stats(); s.TokenDropped != 2 || s.ReuseDetected != 2 {
		t.Errorf("stats %+v", s)
	}
	v.em.SetTokenDropAfterGrant(1)
	v.em.SetTokenDropAfterGrant(0) // cancels
	tokens(t, v.refresh(v.em.IssueGrant("t1").RefreshToken))
}

func TestAPI(t *testing.T) {
	v := start(t, emulator.Config{Mode: emulator.ModeLSeries})
	g := v.em.IssueGrant("t1")
	type tc struct {
		name   string
		method string
		path   string
		auth   []string // Authorization header values
		body   string
		status int
		errStr string
		check  func(t *testing.T, r result)
	}
	bearer := []string{"Bearer " + g.AccessToken}
	tests := []tc{
		{name: "ok", method: "GET", path: "/resto/api/items?x=1&y=2", auth: bearer, status: 200, check: func(t *testing.T, r result) {
			n, _ := r.num("body_len")
			if r.str("tenant") != "t1" || r.str("path") != "/resto/api/items" || r.str("method") != "GET" ||
				r.str("query") != "x=1&y=2" || n != 0 || r.str("token_fp") != emulator.TokenFingerprint(g.AccessToken) {
				t.Errorf("body %s", r.raw)
			}
		}},
		{name: "POST body_len", method: "POST", path: "/resto/api/orders", auth: bearer, body: "hello", status: 200, check: func(t *testing.T, r result) {
			if n, _ := r.num("body_len"); n != 5 || r.str("method") != "POST" {
				t.Errorf("body %s", r.raw)
			}
		}},
		{name: "lowercase scheme", method: "GET", path: "/resto/x", auth: []string{"bearer " + g.AccessToken}, status: 200},
		{name: "no token", method: "GET", path: "/resto/x", status: 401, errStr: "invalid_token", check: func(t *testing.T, r result) {
			if h := r.hdr.Get("WWW-Authenticate"); h != `Bearer realm="lightspeed-emulator"` {
				t.Errorf("WWW-Authenticate %q", h)
			}
		}},
		{name: "unknown token", method: "GET", path: "/resto/x", auth: []string{"Bearer at-NOPE"}, status: 401, errStr: "invalid_token"},
		{name: "refresh token as bearer", method: "GET", path: "/resto/x", auth: []string{"Bearer " + g.RefreshToken}, status: 401, errStr: "invalid_token"},
		{name: "basic scheme", method: "GET", path: "/resto/x", auth: []string{"Basic " + g.AccessToken}, status: 401, errStr: "invalid_token"},
		{name: "empty bearer", method: "GET", path: "/resto/x", auth: []string{"Bearer "}, status: 401, errStr: "invalid_token"},
		{name: "two Authorization headers", method: "GET", path: "/resto/x", auth: []string{"Bearer " + g.AccessToken, "Bearer " + g.AccessToken}, status: 400, errStr: "invalid_request"},
		{name: "token in query", method: "GET", path: "/resto/x?access_token=" + g.AccessToken, auth: bearer, status: 400, errStr: "invalid_request"},
		{name: "wrong location", method: "GET", path: "/resto/api/wrong-location/1", auth: bearer, status: 403, errStr: "forbidden"},
		{name: "wrong location without token", method: "GET", path: "/resto/api/wrong-location/1", status: 401, errStr: "invalid_token"},
		{name: "status 418", method: "GET", path: "/resto/status/418", auth: bearer, status: 418},
		{name: "status 503", method: "POST", path: "/status/503", auth: bearer, status: 503},
		{name: "status 204", method: "DELETE", path: "/status/204", auth: bearer, status: 204, check: func(t *testing.T, r result) {
			if r.raw != "" {
				t.Errorf("body %q", r.raw)
			}
		}},
		{name: "status 401 simulated", method: "GET", path: "/status/401", auth: bearer, status: 401, check: func(t *testing.T, r result) {
			if r.hdr.Get("WWW-Authenticate") == "" {
				t.Error("no WWW-Authenticate")
			}
		}},
		{name: "status out of range", method: "GET", path: "/status/099", auth: bearer, status: 400, errStr: "invalid_request"},
		{name: "status without token", method: "GET", path: "/status/200", status: 401, errStr: "invalid_token"},
	}
	var unauthorized, forbidden, bad int64
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, v.srv.URL+tc.path, strings.NewReader(tc.body))
			for _, a := range tc.auth {
				req.Header.Add("Authorization", a)
			}
			r := do(t, req)
			if r.status != tc.status || r.str("error") != tc.errStr {
				t.Fatalf("got %d %q, want %d %q; body %s", r.status, r.str("error"), tc.status, tc.errStr, r.raw)
			}
			if r.status != 204 && !strings.HasPrefix(r.hdr.Get("Content-Type"), "application/json") {
				t.Errorf("Content-Type %q", r.hdr.Get("Content-Type"))
			}
			if strings.Contains(r.raw, g.AccessToken) || strings.Contains(r.raw, g.RefreshToken) {
				t.Errorf("response leaks a token: %s", r.raw)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
		switch {
		case tc.errStr == "invalid_token":
			unauthorized++
		case tc.errStr == "forbidden":
			forbidden++
		case tc.status == 400:
			bad++
		}
	}
	s := v.em.Stats()
	if s.APIRequests != int64(len(tests)) || s.APIUnauthorized != unauthorized || s.APIForbidden != forbidden || s.APIBadRequests != bad {
		t.Errorf("stats %+v, want unauthorized %d forbidden %d bad %d", s, unauthorized, forbidden, bad)
	}
	if got, want := v.em.APICount("t1"), len(tests)-int(unauthorized)-2; got != want {
		t.Errorf("APICount = %d, want %d", got, want)
	}
}

func TestAPIEchoHeaders(t *testing.T) {
	v := start(t, emulator.Config{})
	g := v.em.IssueGrant("t1")
	req, _ := http.NewRequest(http.MethodGet, v.srv.URL+"/api/echo-headers", nil)
	req.Header.Set("Authorization", "Bearer "+g.AccessToken)
	req.Header.Add("X-Foo", "a")
	req.Header.Add("X-Foo", "b")
	req.Header.Set("X-Tenant", "leaked")
	req.Host = "api.lsk.lightspeed.app"
	r := do(t, req)
	wantAPITenant(t, r, "t1")
	h, _ := r.body["headers"].(map[string]any)
	str := func(k string) string { return fmt.Sprint(h[k]) }
	if str("X-Foo") != "[a b]" || str("X-Tenant") != "[leaked]" ||
		str("Authorization") != "[Bearer "+emulator.TokenFingerprint(g.AccessToken)+"]" || r.str("host") != "api.lsk.lightspeed.app" {
		t.Errorf("echo %s", r.raw)
	}
	if strings.Contains(r.raw, g.AccessToken) {
		t.Error("echo leaks the token")
	}
}

func TestAPIDelay(t *testing.T) {
	v := start(t, emulator.Config{})
	g := v.em.IssueGrant("t1")
	v.em.SetAPIDelay(150 * time.Millisecond)
	began := time.Now()
	wantAPITenant(t, v.api(http.MethodGet, "/x", g.AccessToken), "t1")
	if d := time.Since(began); d < 150*time.Millisecond {
		t.Errorf("answered after %s", d)
	}

	v.em.SetAPIDelay(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, v.srv.URL+"/x", nil)
	req.Header.Set("Authorization", "Bearer "+g.AccessToken)
	if _, err := http.DefaultTransport.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	began = time.Now()
	v.srv.Close()
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("API delay ignored the request context (%s)", d)
	}
	if s := v.em.Stats(); s.APIAbandoned != 1 || s.APIRequests != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestTokenFormat(t *testing.T) {
	v := start(t, emulator.Config{})
	seen := map[string]bool{}
	check := func(tok, prefix string) {
		t.Helper()
		rest, ok := strings.CutPrefix(tok, prefix)
		// base32: 5 bits a character; at least 128 bits.
		if !ok || len(rest)*5 < 128 || seen[tok] {
			t.Fatalf("token %q: want prefix %q, >= 128 random bits, unique", tok[:min(len(tok), 6)], prefix)
		}
		seen[tok] = true
	}
	for range 50 {
		g := v.em.IssueGrant("t1")
		check(g.AccessToken, "at-")
		check(g.RefreshToken, "rt-")
		check(v.code("t1"), "code-")
	}
}

// TestNoSecretsInLogs runs a flow full of failures with a Logf hook and checks
// no line carries a token, code, verifier or secret.
func TestNoSecretsInLogs(t *testing.T) {
	var (
		mu    sync.Mutex
		lines []string
	)
	logf := func(format string, args ...any) {
		mu.Lock()
		lines = append(lines, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	v := start(t, emulator.Config{Mode: emulator.ModeLSeries, ClientSecret: "s3cret-value", Logf: logf, RefreshIdleTTL: time.Hour})
	var secrets []string
	code := v.code("t1")
	at, rt := tokens(t, v.exchange(code))
	secrets = append(secrets, code, at, rt, verifier, "s3cret-value")
	v.exchange(code) // code reuse
	g := v.em.IssueGrant("t1")
	_, rt2 := tokens(t, v.refresh(g.RefreshToken))
	v.refresh(g.RefreshToken) // reuse
	secrets = append(secrets, g.AccessToken, g.RefreshToken, rt2)
	bad := v.code("t1")
	f := v.exchangeForm(bad)
	f.Set("code_verifier", strings.Repeat("z", 50))
	v.token(f)
	secrets = append(secrets, bad)
	v.tokenAs(emulator.AuthBody, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt2}})
	v.em.SetTokenDropAfterGrant(1)
	g2 := v.em.IssueGrant("t2")
	secrets = append(secrets, g2.RefreshToken)
	_, _ = postRefresh(context.Background(), v, v.srv.URL, g2.RefreshToken)
	v.em.Revoke("t2")

	mu.Lock()
	defer mu.Unlock()
	if len(lines) < 8 {
		t.Fatalf("only %d log lines: %q", len(lines), lines)
	}
	for _, l := range lines {
		for _, s := range secrets {
			if strings.Contains(l, s) {
				t.Errorf("log line leaks a secret: %q", l)
			}
		}
	}
}

func TestControlHandler(t *testing.T) {
	v := start(t, emulator.Config{})
	ctl := httptest.NewServer(v.em.ControlHandler())
	defer ctl.Close()
	call := func(method, path string) result {
		t.Helper()
		req, _ := http.NewRequest(method, ctl.URL+path, nil)
		return do(t, req)
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"POST", "/approve?tenant=ctl", 204},
		{"POST", "/deny", 204},
		{"POST", "/token-outage?status=503", 204},
		{"POST", "/token-outage?status=0", 204},
		{"POST", "/token-outage?status=42", 400},
		{"POST", "/token-delay?d=0s", 204},
		{"POST", "/token-delay?d=soon", 400},
		{"POST", "/token-hold?d=0s", 204},
		{"POST", "/token-drop?n=0", 204},
		{"POST", "/token-drop?n=-1", 400},
		{"POST", "/api-delay?d=0s", 204},
		{"POST", "/api-delay?d=-1s", 400},
		{"POST", "/revoke", 400},
		{"POST", "/grant", 400},
		{"GET", "/grant?tenant=x", 405},
	} {
		if r := call(c.method, c.path); r.status != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, r.status, c.status)
		}
	}
	// Deny was consumed by this authorize; Approve applies to the next.
	if q := location(t, v.authorize(v.authParams(""))).Query(); q.Get("error") != "access_denied" {
		t.Errorf("deny via control: %v", q)
	}
	at, _ := tokens(t, v.exchange(v.code("")))
	wantAPITenant(t, v.api(http.MethodGet, "/x", at), "ctl")

	r := call("POST", "/grant?tenant=g1")
	if r.status != 200 || r.str("access_token") == "" {
		t.Fatalf("grant: %d %s", r.status, r.raw)
	}
	g1 := r.str("access_token")
	wantAPITenant(t, v.api(http.MethodGet, "/x", g1), "g1")
	tokens(t, v.refresh(r.str("refresh_token")))
	if r := call("GET", "/refresh-count?tenant=g1"); r.body["refresh_count"] != float64(1) || r.body["api_count"] != float64(1) || r.body["active_grants"] != float64(1) {
		t.Errorf("refresh-count: %s", r.raw)
	}
	if r := call("POST", "/revoke?tenant=g1"); r.status != 204 {
		t.Errorf("revoke: %d", r.status)
	}
	wantAPI401(t, v.api(http.MethodGet, "/x", g1))
	wantAPITenant(t, v.api(http.MethodGet, "/x", at), "ctl")
	if r := call("GET", "/stats"); r.body["RefreshGrants"] != float64(1) || r.body["GrantsRevoked"] != float64(1) {
		t.Errorf("stats: %s", r.raw)
	}
	if r := call("POST", "/token-outage?status=502"); r.status != 204 {
		t.Fatal(r.status)
	}
	if r := v.refresh("rt-x"); r.status != 502 {
		t.Errorf("outage via control: %d", r.status)
	}
}
