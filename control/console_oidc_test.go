package control

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testIdP is an in-process OpenID Connect provider: discovery and keys
// from go-oidc's oidctest, an authorize endpoint that signs in User at
// once, and a token endpoint that checks the client, the code and its
// PKCE verifier.
type testIdP struct {
	t      *testing.T
	srv    *httptest.Server
	key    *rsa.PrivateKey
	client string
	secret string

	mu    sync.Mutex
	user  map[string]any // claims of the person who signs in
	codes map[string]idpCode
	// badNonce makes the ID token carry another nonce.
	badNonce bool
}

type idpCode struct{ nonce, challenge, redirect string }

func newTestIdP(t *testing.T) *testIdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &testIdP{t: t, key: key, client: "console-client", secret: "console-client-secret-xyz", codes: map[string]idpCode{}}
	disc := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: oidc.RS256}}}
	mux := http.NewServeMux()
	mux.Handle("/", disc)
	mux.HandleFunc("/auth", p.auth)
	mux.HandleFunc("/token", p.token)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	disc.SetIssuer(p.srv.URL)
	return p
}

func (p *testIdP) setUser(claims map[string]any) {
	p.mu.Lock()
	p.user = claims
	p.mu.Unlock()
}

func (p *testIdP) auth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != p.client || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" ||
		!strings.Contains(q.Get("scope"), "openid") {
		http.Error(w, "bad authorize request", http.StatusBadRequest)
		return
	}
	code := fmt.Sprintf("code-%d", time.Now().UnixNano())
	p.mu.Lock()
	p.codes[code] = idpCode{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
	p.mu.Unlock()
	http.Redirect(w, r, q.Get("redirect_uri")+"?code="+code+"&state="+url.QueryEscape(q.Get("state")), http.StatusSeeOther)
}

func (p *testIdP) token(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	p.mu.Lock()
	c, found := p.codes[r.PostForm.Get("code")]
	delete(p.codes, r.PostForm.Get("code"))
	user, badNonce := p.user, p.badNonce
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case id != p.client || secret != p.secret:
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	case !found || r.PostForm.Get("redirect_uri") != c.redirect || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	claims := map[string]any{"iss": p.srv.URL, "aud": p.client, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(), "nonce": c.nonce}
	if badNonce {
		claims["nonce"] = "another"
	}
	for k, v := range user {
		claims[k] = v
	}
	raw, _ := json.Marshal(claims)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600,
		"id_token": oidctest.SignIDToken(p.key, "k1", oidc.RS256, string(raw))})
}

// newOIDCConsole is a console fixture with OIDC sign-in on p.
func newOIDCConsole(t *testing.T, p *testIdP) *consoleFixture {
	t.Helper()
	f := newConsoleFixture(t, adminToken, nil)
	f.srv.Close()
	core, logs := observer.New(zap.InfoLevel)
	oc := &ConsoleOIDC{Issuer: p.srv.URL, ClientID: p.client, ClientSecret: p.secret,
		AllowedEmails: []string{"Alice@Example.com"}, AllowedGroups: []string{"lsproxy-operators"}}
	cs := &Server{Store: f.store, Tokens: f.tokens, AdminToken: adminToken, Gatherer: prometheus.NewRegistry(),
		Logger: zap.New(core), Now: time.Now, ConsoleOIDC: oc}
	f.srv = httptest.NewServer(cs.Handler())
	oc.RedirectURL = f.srv.URL + "/console/oidc/callback"
	t.Cleanup(f.srv.Close)
	f.logs = logs
	return f
}

// oidcSignin runs the browser's part: start, the provider, the callback.
func (f *consoleFixture) oidcSignin(t *testing.T) page {
	t.Helper()
	r := f.get(t, "/console/oidc/start")
	if r.status != http.StatusSeeOther {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	resp, err := f.client.Get(r.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(cb, f.srv.URL+"/console/oidc/callback?") {
		t.Fatalf("provider: %d to %q", resp.StatusCode, cb)
	}
	return f.get(t, strings.TrimPrefix(cb, f.srv.URL))
}

// TestConsoleOIDCSignin: a verified allowed person signs in through the
// provider (state once, bound to the browser; PKCE; nonce) and is named
// in the audit log; sign-out ends the session; the admin token still
// works beside it.
func TestConsoleOIDCSignin(t *testing.T) {
	p := newTestIdP(t)
	f := newOIDCConsole(t, p)
	if r := f.get(t, "/console/signin"); !strings.Contains(r.body, `id="oidc-signin"`) || !strings.Contains(r.body, `name="token"`) {
		t.Fatalf("sign-in page without both ways:\n%s", r.body)
	}
	p.setUser(map[string]any{"sub": "u1", "email": "alice@example.com", "email_verified": true})
	r := f.oidcSignin(t)
	if r.status != http.StatusOK || !strings.Contains(r.body, "Signed in as <b>alice@example.com</b>") || !strings.Contains(r.body, `http-equiv="refresh"`) {
		t.Fatalf("callback: %d %s", r.status, r.body)
	}
	if r := f.get(t, "/console/tenants"); r.status != http.StatusOK || !strings.Contains(r.body, "alice@example.com") {
		t.Fatalf("console after OIDC sign-in: %d", r.status)
	}
	if l := auditLines(f.logs, "signin_oidc"); len(l) != 1 || l[0]["operator"] != "alice@example.com" || l[0]["status"] != int64(200) {
		t.Errorf("audit %v", l)
	}
	if strings.Contains(fmt.Sprint(f.logs.All()), p.secret) {
		t.Error("the client secret is in the log")
	}
	// Sign out.
	if r := f.post(t, "/console/signout", url.Values{"csrf": {f.csrf(t)}}); r.status != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", r.status)
	}
	if r := f.get(t, "/console/tenants"); r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/console/signin") {
		t.Errorf("after sign-out: %d %q", r.status, r.header.Get("Location"))
	}
	// By group, and the admin token fallback.
	p.setUser(map[string]any{"sub": "u2", "email": "bob+ops@example.com", "email_verified": false, "groups": []string{"x", "lsproxy-operators"}})
	if r := f.oidcSignin(t); r.status != http.StatusOK || !strings.Contains(r.body, "bob-ops@example.com") {
		t.Fatalf("group sign-in: %d %s", r.status, r.body)
	}
	if r := f.signin(t, "carol", adminToken); r.status != http.StatusSeeOther {
		t.Errorf("admin-token sign-in beside OIDC: %d", r.status)
	}
}

// TestConsoleOIDCRefused: a person not allowed, an unverified email, a
// replayed callback, a callback in another browser and a wrong nonce get
// no session.
func TestConsoleOIDCRefused(t *testing.T) {
	p := newTestIdP(t)
	noSession := func(f *consoleFixture, what string) {
		t.Helper()
		if r := f.get(t, "/console/tenants"); r.status != http.StatusSeeOther {
			t.Errorf("%s: a session exists (%d)", what, r.status)
		}
	}
	for name, user := range map[string]map[string]any{
		"not allowed":      {"sub": "u3", "email": "eve@example.com", "email_verified": true},
		"email unverified": {"sub": "u4", "email": "alice@example.com", "email_verified": false},
		"no email claim":   {"sub": "u5"},
	} {
		f := newOIDCConsole(t, p)
		p.setUser(user)
		if r := f.oidcSignin(t); r.status != http.StatusForbidden {
			t.Errorf("%s: callback %d %s", name, r.status, r.body)
		}
		noSession(f, name)
	}

	// Replay: the same callback URL a second time.
	f := newOIDCConsole(t, p)
	p.setUser(map[string]any{"sub": "u1", "email": "alice@example.com", "email_verified": true})
	start := f.get(t, "/console/oidc/start")
	resp, err := f.client.Get(start.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb := strings.TrimPrefix(resp.Header.Get("Location"), f.srv.URL)
	// Another browser (no binding cookie) with the callback: refused, and
	// the state is spent.
	g := newOIDCConsole(t, p)
	g.srv.Close()
	g.srv = f.srv
	g.client.Jar, _ = cookiejar.New(nil)
	if r := g.get(t, cb); r.status != http.StatusBadRequest {
		t.Errorf("callback in another browser: %d", r.status)
	}
	noSession(g, "another browser")
	if r := f.get(t, cb); r.status != http.StatusBadRequest {
		t.Errorf("callback after the state was spent: %d", r.status)
	}
	noSession(f, "spent state")

	// A token whose nonce is not this sign-in's.
	h := newOIDCConsole(t, p)
	p.mu.Lock()
	p.badNonce = true
	p.mu.Unlock()
	if r := h.oidcSignin(t); r.status != http.StatusForbidden {
		t.Errorf("wrong nonce: %d", r.status)
	}
	noSession(h, "wrong nonce")
}
