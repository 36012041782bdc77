package control

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// ConsoleOIDC turns on signing in to the console with an OpenID Connect
// provider, so that the audit log names a verified person; the admin token
// stays as the fallback. A person may sign in when their verified email is
// in AllowedEmails or one of their groups (the ID token's "groups" claim)
// is in AllowedGroups.
type ConsoleOIDC struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	// RedirectURL is the public URL of /console/oidc/callback, registered
	// with the provider.
	RedirectURL   string
	AllowedEmails []string
	AllowedGroups []string
	// HTTPClient reaches the provider; nil = a client with a 10 s timeout.
	HTTPClient *http.Client
}

// oidcStateTTL bounds the time from the redirect to the provider to the
// callback.
const oidcStateTTL = 10 * time.Minute

// oidcCookie binds a sign-in's state to the browser that started it.
const oidcCookie = "lsproxy-console-oidc"

// oidcLogin is the console's OIDC client: the provider is discovered on
// first use and kept once discovery worked. Safe for concurrent use.
type oidcLogin struct {
	cfg *ConsoleOIDC

	mu       sync.Mutex
	oauth    *oauth2.Config
	verifier *oidc.IDTokenVerifier
}

func (o *oidcLogin) client() *http.Client {
	if o.cfg.HTTPClient != nil {
		return o.cfg.HTTPClient
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (o *oidcLogin) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, o.client())
}

// setup discovers the provider (once it worked, never again).
func (o *oidcLogin) setup(ctx context.Context) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.oauth != nil {
		return o.oauth, o.verifier, nil
	}
	p, err := oidc.NewProvider(o.ctx(ctx), o.cfg.Issuer)
	if err != nil {
		return nil, nil, err
	}
	o.oauth = &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: o.cfg.RedirectURL, Scopes: []string{oidc.ScopeOpenID, "email", "profile", "groups"}}
	o.verifier = p.Verifier(&oidc.Config{ClientID: o.cfg.ClientID})
	return o.oauth, o.verifier, nil
}

// oidcState is what the store keeps between the redirect and the callback.
type oidcState struct {
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"` // PKCE
	Browser  string `json:"browser"`  // sha256 of the binding cookie
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func hashHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func (c *console) mountOIDC(cm *http.ServeMux) {
	if c.s.ConsoleOIDC == nil || c.s.ConsoleOIDC.Issuer == "" {
		return
	}
	c.oidc = &oidcLogin{cfg: c.s.ConsoleOIDC}
	cm.HandleFunc("GET /console/oidc/start", c.oidcStart)
	cm.HandleFunc("GET /console/oidc/callback", c.oidcCallback)
}

// signinBody is the sign-in page's: whether the provider button shows.
type signinBody struct{ OIDC bool }

func (c *console) signinBody() signinBody { return signinBody{OIDC: c.oidc != nil} }

func (c *console) oidcFail(w http.ResponseWriter, r *http.Request, status int, refused, msg string) {
	c.audit(r, "", "signin_oidc", refused, status)
	d := pageData{Title: "Sign in", Error: msg, Body: c.signinBody()}
	c.pages.render(w, status, "signin", d)
}

// oidcStart sends the browser to the provider with a fresh state, nonce
// and PKCE verifier (kept in the store: any replica takes the callback).
func (c *console) oidcStart(w http.ResponseWriter, r *http.Request) {
	conf, _, err := c.oidc.setup(r.Context())
	if err != nil {
		c.s.Logger.Warn("console OIDC provider discovery failed", errField(err))
		c.oidcFail(w, r, http.StatusBadGateway, "provider_unavailable", "The sign-in provider did not answer. Try again, or sign in with the admin token.")
		return
	}
	state, nonce, bind, verifier := randomHex(16), randomHex(16), randomHex(16), oauth2.GenerateVerifier()
	raw, _ := json.Marshal(oidcState{Nonce: nonce, Verifier: verifier, Browser: hashHex(bind)})
	if err := c.s.Store.PutOnce(r.Context(), "console-oidc:"+state, raw, oidcStateTTL); err != nil {
		c.oidcFail(w, r, http.StatusServiceUnavailable, "store_unavailable", "The store did not answer. Try again in a moment.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: bind, Path: "/console/oidc/", MaxAge: int(oidcStateTTL.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode}) // Lax: sent on the provider's redirect back
	http.Redirect(w, r, conf.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusSeeOther)
}

// oidcClaims are the ID token claims the console reads.
type oidcClaims struct {
	Subject       string   `json:"sub"`
	Email         string   `json:"email"`
	EmailVerified *bool    `json:"email_verified"`
	Groups        []string `json:"groups"`
	Nonce         string   `json:"nonce"`
}

// allowed reports whether the person may use the console.
func (o *oidcLogin) allowed(cl oidcClaims) bool {
	if cl.Email != "" && cl.EmailVerified != nil && *cl.EmailVerified {
		for _, e := range o.cfg.AllowedEmails {
			if strings.EqualFold(strings.TrimSpace(e), cl.Email) {
				return true
			}
		}
	}
	for _, g := range cl.Groups {
		if slices.Contains(o.cfg.AllowedGroups, g) {
			return true
		}
	}
	return false
}

// operatorName is the audit log's name for a person: the email (or the
// subject), restricted to the operator name's characters.
func operatorName(cl oidcClaims) string {
	name := cl.Email
	if name == "" {
		name = "oidc-" + cl.Subject
	}
	b := []byte(name)
	for i, ch := range b {
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || (i > 0 && strings.IndexByte("._@-", ch) >= 0)
		if !ok {
			b[i] = '-'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// oidcCallback checks state (once, from this browser), exchanges the code
// with its PKCE verifier, verifies the ID token (issuer, audience, expiry,
// signature, nonce) and starts a session named after the person.
func (c *console) oidcCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: "/console/oidc/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	if q.Get("error") != "" {
		c.oidcFail(w, r, http.StatusForbidden, "provider_error", "The sign-in provider did not sign you in. Try again, or sign in with the admin token.")
		return
	}
	state, code := q.Get("state"), q.Get("code")
	if len(state) != 32 || code == "" {
		c.oidcFail(w, r, http.StatusBadRequest, "state_invalid", "This sign-in did not start here, or took too long. Start again.")
		return
	}
	// The state is spent whatever follows: a callback is tried once.
	raw, err := c.s.Store.TakeOnce(r.Context(), "console-oidc:"+state)
	cookie, cerr := r.Cookie(oidcCookie)
	var st oidcState
	if err != nil || cerr != nil || json.Unmarshal(raw, &st) != nil ||
		subtle.ConstantTimeCompare([]byte(st.Browser), []byte(hashHex(cookie.Value))) != 1 {
		c.oidcFail(w, r, http.StatusBadRequest, "state_invalid", "This sign-in did not start here, or took too long. Start again.")
		return
	}
	conf, verifier, err := c.oidc.setup(r.Context())
	if err != nil {
		c.oidcFail(w, r, http.StatusBadGateway, "provider_unavailable", "The sign-in provider did not answer. Try again, or sign in with the admin token.")
		return
	}
	ctx := c.oidc.ctx(r.Context())
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		c.s.Logger.Warn("console OIDC code exchange failed", errField(err))
		c.oidcFail(w, r, http.StatusBadGateway, "exchange_failed", "The sign-in provider refused the sign-in. Start again.")
		return
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := verifier.Verify(ctx, rawID)
	var cl oidcClaims
	if err == nil {
		err = idt.Claims(&cl)
	}
	if err == nil && subtle.ConstantTimeCompare([]byte(cl.Nonce), []byte(st.Nonce)) != 1 {
		err = errors.New("nonce mismatch")
	}
	if err != nil {
		c.s.Logger.Warn("console OIDC ID token refused", errField(err))
		c.oidcFail(w, r, http.StatusForbidden, "id_token_invalid", "The sign-in could not be verified. Start again.")
		return
	}
	if !c.oidc.allowed(cl) {
		c.audit(r, operatorName(cl), "signin_oidc", "not_allowed", http.StatusForbidden)
		d := pageData{Title: "Sign in", Body: c.signinBody(),
			Error: fmt.Sprintf("%s may not use this console (not among the allowed emails or groups).", operatorName(cl))}
		c.pages.render(w, http.StatusForbidden, "signin", d)
		return
	}
	op := operatorName(cl)
	sess := c.sessions.start(op)
	c.sessions.set(w, r, sess)
	c.audit(r, op, "signin_oidc", "", http.StatusOK)
	// A page, not a redirect: the session cookie is SameSite=Strict, which a
	// redirect chain begun at the provider's site would not carry.
	c.pages.render(w, http.StatusOK, "oidc-signed-in", pageData{Title: "Signed in", Operator: op, CSRF: c.sessions.csrf(sess)})
}

// errField logs an OIDC failure without the provider's response body (a
// token endpoint's answer may echo the request).
func errField(err error) zap.Field {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		return zap.String("error", fmt.Sprintf("token endpoint answered %d %s", status, re.ErrorCode))
	}
	return zap.String("error", err.Error())
}
