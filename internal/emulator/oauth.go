package emulator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"
)

// maxFormBytes bounds a token request body.
const maxFormBytes = 64 << 10

// serveAuthorize plays the merchant's browser visit: validates the request
// and, as the approved tenant, redirects back with a one-time code.
//
// RFC 6749 §4.1.2.1: a bad client_id or redirect_uri is answered with a 400
// page (never a redirect to an unverified URI); every other error redirects
// with error, error_description and state.
func (e *Emulator) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	e.c.authorizeRequests.Add(1)
	if r.Method != http.MethodGet {
		e.c.authorizeRejected.Add(1)
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "emulator: authorize accepts GET only", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	page := func(desc string) {
		e.c.authorizeRejected.Add(1)
		e.logf("authorize rejected (page): %s", desc)
		http.Error(w, "emulator: invalid authorization request: "+desc, http.StatusBadRequest)
	}
	if len(q["client_id"]) != 1 || len(q["redirect_uri"]) > 1 {
		page("client_id must be given once, redirect_uri at most once")
		return
	}
	if q.Get("client_id") != e.cfg.ClientID {
		page("unknown client_id")
		return
	}
	redirectURI := q.Get("redirect_uri")
	if e.cfg.RedirectURL != "" {
		if redirectURI != e.cfg.RedirectURL {
			page("redirect_uri does not match the registered redirect URL")
			return
		}
	} else if !validRedirectURI(redirectURI) {
		page("redirect_uri missing or not an absolute http(s) URL without fragment")
		return
	}
	state := q.Get("state")
	fail := func(code, desc string) {
		e.c.authorizeRejected.Add(1)
		if code == "access_denied" {
			e.c.authorizeDenied.Add(1)
		}
		e.logf("authorize rejected (redirect): %s: %s", code, desc)
		v := url.Values{"error": {code}, "error_description": {desc}}
		if state != "" {
			v.Set("state", state)
		}
		http.Redirect(w, r, appendQuery(redirectURI, v), http.StatusFound)
	}
	for k, v := range q {
		if len(v) > 1 {
			fail("invalid_request", "parameter "+k+" repeated")
			return
		}
	}
	switch rt := q.Get("response_type"); rt {
	case "code":
	case "":
		fail("invalid_request", "response_type missing")
		return
	default:
		fail("unsupported_response_type", "only response_type=code is supported")
		return
	}
	if e.cfg.RequireState && state == "" {
		fail("invalid_request", "state missing")
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "" && method != "":
		fail("invalid_request", "code_challenge_method without code_challenge")
		return
	case challenge == "" && e.cfg.PKCE:
		fail("invalid_request", "code_challenge required (PKCE S256)")
		return
	case challenge != "" && method != "S256":
		fail("invalid_request", "code_challenge_method must be S256")
		return
	case challenge != "" && !validChallenge(challenge):
		fail("invalid_request", "code_challenge is not a base64url SHA-256 (43 characters)")
		return
	}
	scope := q.Get("scope")
	if scope == "" {
		scope = e.cfg.Scope
	}

	e.mu.Lock()
	if e.denyNext > 0 {
		e.denyNext--
		e.mu.Unlock()
		fail("access_denied", "the merchant denied access")
		return
	}
	tenant := q.Get("login_hint")
	if tenant == "" {
		tenant = e.approved
	}
	if q.Get("emulator_deny") == "1" {
		e.mu.Unlock()
		fail("access_denied", "the merchant denied access on the sign-in page")
		return
	}
	if tenant == "" && e.cfg.SignInPage {
		logins := e.signInLoginsLocked()
		e.mu.Unlock()
		e.serveSignInPage(w, r, logins)
		return
	}
	if tenant == "" {
		e.mu.Unlock()
		fail("access_denied", "no merchant logged in (Approve a tenant or pass login_hint)")
		return
	}
	code := newSecret("code-")
	e.codes[code] = &authCode{
		tenant:      tenant,
		clientID:    e.cfg.ClientID,
		redirectURI: redirectURI,
		challenge:   challenge,
		scope:       scope,
		expires:     e.now().Add(e.cfg.CodeTTL),
	}
	e.mu.Unlock()
	e.c.codesIssued.Add(1)
	e.logf("authorize approved tenant=%q pkce=%t", tenant, challenge != "")

	v := url.Values{"code": {code}}
	if state != "" {
		v.Set("state", state)
	}
	if e.cfg.Mode == ModeXSeries {
		e.mu.Lock()
		v.Set("domain_prefix", e.domainPrefixLocked(tenant))
		e.mu.Unlock()
	}
	http.Redirect(w, r, appendQuery(redirectURI, v), http.StatusFound)
}

// tokenResponse is the token endpoint's success body.
type tokenResponse struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int    `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	RefreshExpiresIn int    `json:"refresh_expires_in,omitempty"`
	Scope            string `json:"scope"`
	DomainPrefix     string `json:"domain_prefix,omitempty"`
}

// oauthError is an RFC 6749 §5.2 error.
type oauthError struct {
	status int
	code   string
	desc   string
}

// serveToken is the token endpoint: delay, outage, request checks, client
// authentication, then the grant; then the drop/hold faults.
func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request) {
	e.c.tokenRequests.Add(1)
	// Read the body first: the HTTP/1 server notices a client that went away
	// (and cancels r.Context()) only once the request body is consumed.
	body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBytes))
	e.mu.Lock()
	delay, outage := e.tokenDelay, e.outage
	e.mu.Unlock()
	if delay > 0 && !sleepCtx(r.Context(), delay) {
		e.c.tokenAbandoned.Add(1)
		return
	}
	slow, burst := e.brownoutNow()
	if outage == 0 && burst {
		if slow > 0 && !sleepCtx(r.Context(), slow) {
			e.c.tokenAbandoned.Add(1)
			return
		}
		outage = http.StatusServiceUnavailable
	}
	if outage != 0 {
		e.c.tokenOutages.Add(1)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(outage)
		fmt.Fprintf(w, "emulated token endpoint outage (%d)\n", outage)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.tokenError(w, oauthError{http.StatusMethodNotAllowed, "invalid_request", "the token endpoint accepts POST only"})
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		e.tokenError(w, oauthError{http.StatusBadRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"})
		return
	}
	if readErr != nil {
		e.tokenError(w, oauthError{http.StatusBadRequest, "invalid_request", "request body unreadable or too large"})
		return
	}
	form, err := url.ParseQuery(string(body)) // parameters in the URL query do not count
	if err != nil {
		e.tokenError(w, oauthError{http.StatusBadRequest, "invalid_request", "malformed form body"})
		return
	}
	for k, v := range form {
		if len(v) > 1 {
			e.tokenError(w, oauthError{http.StatusBadRequest, "invalid_request", "parameter " + k + " repeated"})
			return
		}
	}
	clientID, oerr := e.authenticateClient(r, form)
	if oerr != nil {
		e.tokenError(w, *oerr)
		return
	}

	var (
		resp   tokenResponse
		tenant string
		drop   bool
	)
	switch gt := form.Get("grant_type"); gt {
	case "authorization_code":
		resp, tenant, oerr = e.exchangeCode(form, clientID)
	case "refresh_token":
		resp, tenant, drop, oerr = e.refreshGrant(form, clientID)
	case "":
		oerr = &oauthError{http.StatusBadRequest, "invalid_request", "grant_type missing"}
	default:
		oerr = &oauthError{http.StatusBadRequest, "unsupported_grant_type", "grant_type not supported"}
	}
	if oerr != nil {
		e.tokenError(w, *oerr)
		return
	}
	if e.cfg.Mode == ModeXSeries {
		e.mu.Lock()
		resp.DomainPrefix = e.domainPrefixLocked(tenant)
		e.mu.Unlock()
	}
	if drop {
		e.c.tokenDropped.Add(1)
		e.c.grantsLost.Add(1)
		e.logf("token response dropped tenant=%q (refresh token already rotated)", tenant)
		abortConnection(w)
		return
	}
	e.mu.Lock()
	hold := max(e.tokenHold, slow)
	e.mu.Unlock()
	if hold > 0 && !sleepCtx(r.Context(), hold) {
		e.c.tokenAbandoned.Add(1)
		e.c.grantsLost.Add(1)
		e.logf("token response lost: client went away during hold tenant=%q", tenant)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// exchangeCode is grant_type=authorization_code. The code is spent by the
// first attempt, successful or not; presenting it again revokes the grant it
// produced (RFC 6749 §4.1.2).
func (e *Emulator) exchangeCode(form url.Values, clientID string) (tokenResponse, string, *oauthError) {
	reject := func(desc string) (tokenResponse, string, *oauthError) {
		e.c.codeRejected.Add(1)
		e.logf("code exchange rejected: %s", desc)
		return tokenResponse{}, "", &oauthError{http.StatusBadRequest, "invalid_grant", desc}
	}
	code := form.Get("code")
	if code == "" {
		e.c.codeRejected.Add(1)
		return tokenResponse{}, "", &oauthError{http.StatusBadRequest, "invalid_request", "code missing"}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.codes[code]
	if !ok {
		return reject("unknown authorization code")
	}
	if c.used {
		e.c.codeReuse.Add(1)
		if c.grant != nil {
			e.revokeGrantLocked(c.grant, "authorization code reused")
		}
		return reject("authorization code already used; tokens issued from it are revoked")
	}
	c.used = true
	switch {
	case c.revoked:
		return reject("authorization code revoked")
	case !e.now().Before(c.expires):
		return reject("authorization code expired")
	case c.clientID != clientID:
		return reject("authorization code was issued to another client")
	case !form.Has("redirect_uri"):
		return reject("redirect_uri missing (it was given at authorize)")
	case form.Get("redirect_uri") != c.redirectURI:
		return reject("redirect_uri differs from the one used at authorize")
	}
	verifier := form.Get("code_verifier")
	switch {
	case c.challenge == "" && form.Has("code_verifier"):
		return reject("code_verifier given but the authorize request had no code_challenge")
	case c.challenge != "" && verifier == "":
		return reject("code_verifier missing (PKCE)")
	case c.challenge != "" && !validVerifier(verifier):
		return reject("code_verifier malformed (43-128 unreserved characters)")
	case c.challenge != "" && s256(verifier) != c.challenge:
		return reject("code_verifier does not match code_challenge")
	}
	g := e.newGrantLocked(c.tenant, clientID, c.scope)
	c.grant = g
	e.c.codeExchanges.Add(1)
	e.logf("code exchanged tenant=%q grant=%d", g.tenant, g.id)
	return e.responseFor(e.issueLocked(g)), g.tenant, nil
}

// refreshGrant is grant_type=refresh_token: single use, rotating, with reuse
// detection. drop reports that this response is to be dropped.
func (e *Emulator) refreshGrant(form url.Values, clientID string) (resp tokenResponse, tenant string, drop bool, oerr *oauthError) {
	reject := func(code, desc string) (tokenResponse, string, bool, *oauthError) {
		e.c.refreshRejected.Add(1)
		e.logf("refresh rejected: %s", desc)
		return tokenResponse{}, "", false, &oauthError{http.StatusBadRequest, code, desc}
	}
	presented := form.Get("refresh_token")
	if presented == "" {
		return reject("invalid_request", "refresh_token missing")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rt, ok := e.refresh[presented]
	if !ok {
		return reject("invalid_grant", "unknown refresh token")
	}
	g := rt.g
	if g.clientID != clientID {
		return reject("invalid_grant", "refresh token was issued to another client")
	}
	if rt.used {
		e.c.reuseDetected.Add(1)
		e.logf("refresh token reuse detected tenant=%q grant=%d", g.tenant, g.id)
		e.revokeGrantLocked(g, "refresh token reuse")
		return reject("invalid_grant", "refresh token already used; the grant is revoked")
	}
	if g.revoked {
		return reject("invalid_grant", "refresh token revoked")
	}
	if !rt.expires.IsZero() && !e.now().Before(rt.expires) {
		return reject("invalid_grant", "refresh token expired (unused too long)")
	}
	if form.Has("scope") && !scopeSubset(form.Get("scope"), g.scope) {
		return reject("invalid_scope", "requested scope exceeds the granted scope")
	}
	rt.used = true
	if e.cfg.RevokeOldAccessOnRefresh {
		if at := e.access[rt.access]; at != nil {
			at.revoked = true
		}
	}
	issued := e.issueLocked(g)
	if form.Has("scope") {
		issued.Scope = form.Get("scope") // narrowed for this response only
	}
	e.refreshCount[g.tenant]++
	e.c.refreshGrants.Add(1)
	if e.dropN > 0 {
		e.dropN--
		drop = true
	}
	e.logf("refresh granted tenant=%q grant=%d", g.tenant, g.id)
	return e.responseFor(issued), g.tenant, drop, nil
}

func (e *Emulator) responseFor(g Grant) tokenResponse {
	resp := tokenResponse{
		AccessToken:  g.AccessToken,
		TokenType:    "bearer",
		ExpiresIn:    g.ExpiresIn,
		RefreshToken: g.RefreshToken,
		Scope:        g.Scope,
	}
	if e.cfg.Mode == ModeKSeries {
		resp.RefreshExpiresIn = g.RefreshExpiresIn // omitted when 0
	}
	return resp
}

func (e *Emulator) tokenError(w http.ResponseWriter, oe oauthError) {
	if oe.status == http.StatusBadRequest || oe.status == http.StatusMethodNotAllowed {
		if oe.code == "invalid_request" || oe.code == "unsupported_grant_type" {
			e.c.tokenBadRequests.Add(1)
		}
	}
	if oe.status == http.StatusUnauthorized && e.cfg.ClientAuth == AuthBasic {
		w.Header().Set("WWW-Authenticate", `Basic realm="lightspeed-emulator"`)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, oe.status, map[string]string{"error": oe.code, "error_description": oe.desc})
}

// abortConnection closes the client connection without a response.
func abortConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	// HTTP/2 or a wrapped writer: the server resets the stream/connection.
	panic(http.ErrAbortHandler)
}

// sleepCtx waits d; false when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func appendQuery(rawURL string, v url.Values) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL // validated before; unreachable
	}
	q := u.Query()
	for k, vs := range v {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	return u.String()
}
