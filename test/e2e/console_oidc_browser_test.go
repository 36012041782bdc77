package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"

	"github.com/lsproxy/lsproxy/internal/emulator"
)

// e2eIdP is an in-process OpenID Connect provider that signs in one
// person at once (discovery and keys from go-oidc's oidctest).
type e2eIdP struct {
	srv            *httptest.Server
	key            *rsa.PrivateKey
	client, secret string
	email          string

	mu    sync.Mutex
	codes map[string][2]string // code → nonce, PKCE challenge
}

func newE2EIdP(t *testing.T, email string) *e2eIdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &e2eIdP{key: key, client: "lsproxy-console", secret: "e2e-oidc-secret-" + randomHex(8), email: email, codes: map[string][2]string{}}
	disc := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: oidc.RS256}}}
	mux := http.NewServeMux()
	mux.Handle("/", disc)
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		code := "c" + randomHex(8)
		p.mu.Lock()
		p.codes[code] = [2]string{q.Get("nonce"), q.Get("code_challenge")}
		p.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code="+code+"&state="+url.QueryEscape(q.Get("state")), http.StatusSeeOther)
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id, secret, ok := r.BasicAuth()
		if !ok {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		p.mu.Lock()
		c, found := p.codes[r.PostForm.Get("code")]
		delete(p.codes, r.PostForm.Get("code"))
		p.mu.Unlock()
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if id != p.client || secret != p.secret || !found || base64.RawURLEncoding.EncodeToString(sum[:]) != c[1] {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		claims, _ := json.Marshal(map[string]any{"iss": p.srv.URL, "aud": p.client, "sub": "erin", "email": p.email, "email_verified": true,
			"nonce": c[0], "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "x", "token_type": "Bearer", "expires_in": 60,
			"id_token": oidctest.SignIDToken(p.key, "k1", oidc.RS256, string(claims))})
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	disc.SetIssuer(p.srv.URL)
	return p
}

// TestConsoleOIDCInBrowser: through the built binary, an operator signs in
// with the OpenID Connect provider (the admin token never typed), is named
// in the console and the audit log by the verified email, and signs out.
func TestConsoleOIDCInBrowser(t *testing.T) {
	exe := requireChromium(t)
	idp := newE2EIdP(t, "erin@example.com")
	emu := startEmulator(t, emulator.Config{})
	p := startProxyAt(t, func(controlAddr string) map[string]string {
		return with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir(),
			"LSPROXY_CONSOLE_OIDC_ISSUER", idp.srv.URL,
			"LSPROXY_CONSOLE_OIDC_CLIENT_ID", idp.client,
			"LSPROXY_CONSOLE_OIDC_CLIENT_SECRET", idp.secret,
			"LSPROXY_CONSOLE_OIDC_REDIRECT_URL", "http://"+controlAddr+"/console/oidc/callback",
			"LSPROXY_CONSOLE_OIDC_ALLOWED_EMAILS", "erin@example.com")
	})
	b := newBrowser(t, exe, 60*time.Second)
	b.do("sign-in page", chromedp.Navigate(p.ControlURL+"/console/"), chromedp.WaitVisible(`#oidc-signin`))
	b.snap("console-signin-oidc")
	b.act("single sign-on", `#counts`, chromedp.Click(`#oidc-signin`))
	if who := b.text(`header .operator`); !strings.Contains(who, "erin@example.com") {
		t.Errorf("signed in as %q", who)
	}
	if loc := b.location(); !strings.HasSuffix(loc, "/console/tenants") {
		t.Errorf("after sign-in at %s", loc)
	}
	b.act("sign out", `input[name="operator"]`, chromedp.Click(`form.signout button`))
	b.do("console after sign-out", chromedp.Navigate(p.ControlURL+"/console/tenants"), chromedp.WaitVisible(`#oidc-signin`))
	if loc := b.location(); !strings.Contains(loc, "/console/signin") {
		t.Errorf("after sign-out the console is at %s", loc)
	}
	logs := p.Logs()
	if !strings.Contains(logs, `"operator":"erin@example.com","action":"signin_oidc"`) {
		t.Errorf("no audit line for the OIDC sign-in:\n%s", tail(logs, 3000))
	}
	if strings.Contains(logs, idp.secret) {
		t.Error("the OIDC client secret is in the log")
	}
	for i, html := range b.html {
		if strings.Contains(html, idp.secret) || strings.Contains(html, p.adminToken) {
			t.Errorf("page %d holds a secret", i)
		}
	}
}
