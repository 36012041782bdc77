package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/store"
)

// ErrOnboardingConfig: the Onboarder's fields are unusable (no store, no
// client, a redirect URL that is not absolute, a link key shorter than 32
// bytes). Returned (wrapped) by AuthorizeLink; the HTTP handlers answer 503.
var ErrOnboardingConfig = errors.New("auth: onboarding is misconfigured")

// Defaults for Onboarder fields left zero.
const (
	DefaultLinkTTL  = 7 * 24 * time.Hour
	DefaultStateTTL = time.Hour
)

// AwaitingFirstAuthorization is the Reason of the placeholder record that
// AuthorizeLink creates for a tenant that does not exist yet.
const AwaitingFirstAuthorization = "awaiting the merchant's first authorization"

const (
	stateKeyPrefix = "state:"
	stateBytes     = 32 // 256 bits of randomness
	// linkMACLabel separates authorize-link MACs from any other use of the
	// key.
	linkMACLabel = "lsproxy/authorize-link/v1"
	// maxCallbackValue bounds code and provider parameters we accept.
	maxCallbackValue = 4096
	// casAttempts bounds the compare-and-set retries of the final write.
	casAttempts = 8
	// storeTimeout bounds store calls made after the code exchange, which
	// run detached from the browser's request (see ServeCallback).
	storeTimeout = 10 * time.Second
)

// Onboarder runs the OAuth authorization-code flow that connects a merchant
// to a tenant. It implements control.Onboarding:
//
//   - AuthorizeLink (admin API) returns a signed, reusable link to
//     /oauth/start; it stores nothing but a placeholder tenant record when the
//     tenant does not exist yet.
//   - ServeStart (the merchant opens the link) verifies the link, stores a
//     single-use state bound to the tenant (with the PKCE verifier) in the
//     shared store, and redirects to the provider's authorize endpoint. Only
//     a link signed with LinkKey can create a state.
//   - ServeCallback (the provider's redirect) takes the state once, exchanges
//     the code at once and writes the tokens onto the tenant record with
//     compare-and-set. Because state lives in the store, any replica can
//     finish a flow that another replica started.
//
// Failures answer a plain HTML page with a 4xx (or 502/503) status that says
// what to do; no page, log line or error ever contains a code, state,
// verifier or token value.
//
// Set the fields, then use it; do not change them afterwards. All methods
// are safe for concurrent use.
type Onboarder struct {
	// Store holds tenants and the one-time states. Required.
	Store store.Store
	// Client exchanges codes. Required; its ClientID is also sent to the
	// authorize endpoint.
	Client *OAuthClient
	// Preset supplies the provider name recorded on tenants and the callback
	// parameters to keep (CallbackParams, e.g. x-series domain_prefix).
	Preset Preset
	// AuthorizeURL is the provider's authorize endpoint. Required.
	AuthorizeURL string
	// RedirectURL is the public URL of the control listener's
	// /oauth/callback, exactly as registered with the provider. The start
	// URL of links is derived from it by replacing the last path element
	// with "start". Required.
	RedirectURL string
	// Scopes requested at authorize.
	Scopes []string
	// PKCE sends an S256 code challenge and keeps the verifier server-side.
	PKCE bool
	// LinkKey is the HMAC-SHA256 key that signs authorize links; at least 32
	// bytes. Every replica must have the same key.
	LinkKey []byte
	// LinkTTL is how long an authorize link works; 0 = DefaultLinkTTL (7 days).
	LinkTTL time.Duration
	// StateTTL is how long the merchant has between opening the link and the
	// provider's redirect; 0 = DefaultStateTTL (1 h).
	StateTTL time.Duration
	// SuccessURL, when set, is where the browser is redirected after a
	// successful authorization; "" = a built-in success page.
	SuccessURL string
	// Logger receives onboarding events (never a code, state or token);
	// nil = no logging.
	Logger *zap.Logger
	// OnRecover is called, synchronously and after the write, when a tenant
	// that was not active (flagged reauthorization_required, or a
	// placeholder awaiting its first authorization) becomes active. It must
	// not block. nil = nothing. It is not called when an already active
	// tenant is re-authorized.
	OnRecover func(tenant string)
	// Now is the clock for link and state expiry and record timestamps;
	// nil = time.Now.
	Now func() time.Time

	once     sync.Once
	initErr  error
	startURL string
	log      *zap.Logger
}

// stateValue is what a state key holds in the store.
type stateValue struct {
	Tenant   string `json:"tenant"`
	Verifier string `json:"verifier,omitempty"`
	// IAT is the issue time (Unix seconds) of the link that started the
	// flow: a tenant authorized at or after it has used the link.
	IAT int64 `json:"iat"`
	// Expires (Unix nanoseconds, by Onboarder.Now) lets the clock seam
	// expire states independently of the store's own TTL.
	Expires int64 `json:"exp"`
}

func (o *Onboarder) init() error {
	o.once.Do(func() {
		o.log = o.Logger
		if o.log == nil {
			o.log = zap.NewNop()
		}
		var problems []string
		if o.Store == nil {
			problems = append(problems, "no store")
		}
		if o.Client == nil || o.Client.ClientID == "" {
			problems = append(problems, "no OAuth client id")
		}
		if len(o.LinkKey) < 32 {
			problems = append(problems, "link key shorter than 32 bytes")
		}
		if u, err := url.Parse(o.AuthorizeURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			problems = append(problems, "authorize URL is not an absolute http(s) URL")
		}
		start, err := startURLFor(o.RedirectURL)
		if err != nil {
			problems = append(problems, err.Error())
		}
		o.startURL = start
		if len(problems) > 0 {
			o.initErr = fmt.Errorf("%w: %s", ErrOnboardingConfig, strings.Join(problems, "; "))
		}
	})
	return o.initErr
}

// startURLFor derives the link's start URL from the redirect URL:
// https://h/p/oauth/callback → https://h/p/oauth/start.
func startURLFor(redirect string) (string, error) {
	u, err := url.Parse(redirect)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" {
		return "", errors.New("redirect URL is not an absolute http(s) URL without fragment")
	}
	dir, last := path.Split(u.Path)
	if last == "" {
		return "", errors.New("redirect URL path must end in /oauth/callback")
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: dir + "start"}).String(), nil
}

func (o *Onboarder) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Onboarder) linkTTL() time.Duration {
	if o.LinkTTL > 0 {
		return o.LinkTTL
	}
	return DefaultLinkTTL
}

func (o *Onboarder) stateTTL() time.Duration {
	if o.StateTTL > 0 {
		return o.StateTTL
	}
	return DefaultStateTTL
}

func (o *Onboarder) linkMAC(tenant string, iat, exp int64) []byte {
	m := hmac.New(sha256.New, o.LinkKey)
	fmt.Fprintf(m, "%s|%s|%d|%d", linkMACLabel, tenant, iat, exp)
	return m.Sum(nil)
}

// AuthorizeLink returns a link for the merchant of tenant, valid for
// LinkTTL and reusable until the merchant completes an authorization with
// it. When the tenant does not exist, a placeholder record is created
// (status reauthorization_required, reason AwaitingFirstAuthorization) so
// that a later delete is detected by the callback. The link itself is not
// stored.
//
// Errors: ErrOnboardingConfig (wrapped) when the Onboarder is misconfigured;
// store errors (wrapped) when the tenant cannot be read or created.
func (o *Onboarder) AuthorizeLink(ctx context.Context, tenant string) (string, error) {
	if err := o.init(); err != nil {
		return "", err
	}
	if !store.ValidTenantID(tenant) {
		return "", fmt.Errorf("auth: invalid tenant id %q", tenant)
	}
	now := o.now()
	t, err := o.Store.Get(ctx, tenant)
	if errors.Is(err, store.ErrNotFound) {
		t = &store.Tenant{
			ID: tenant, Provider: o.Preset.Name,
			Status: store.StatusReauthorizationRequired, Reason: AwaitingFirstAuthorization,
			CreatedAt: now, UpdatedAt: now,
		}
		_, err = o.Store.Put(ctx, t, 0)
		if errors.Is(err, store.ErrConflict) {
			// Created concurrently (another admin call, an import): use it.
			t, err = o.Store.Get(ctx, tenant)
		} else if err == nil {
			o.log.Info("onboarding placeholder created", zap.String("tenant", tenant))
		}
	}
	if err != nil {
		return "", fmt.Errorf("auth: authorize link for %q: %w", tenant, err)
	}
	iat := now.Unix()
	// A link must not count as used by an authorization that finished
	// before it was issued, even within the same second.
	if !t.AuthorizedAt.IsZero() && t.AuthorizedAt.Unix() >= iat {
		iat = t.AuthorizedAt.Unix() + 1
	}
	exp := now.Add(o.linkTTL()).Unix()
	q := url.Values{
		"tenant": {tenant},
		"iat":    {strconv.FormatInt(iat, 10)},
		"exp":    {strconv.FormatInt(exp, 10)},
		"sig":    {base64.RawURLEncoding.EncodeToString(o.linkMAC(tenant, iat, exp))},
	}
	o.log.Info("authorize link issued", zap.String("tenant", tenant), zap.Time("expires", time.Unix(exp, 0).UTC()))
	return o.startURL + "?" + q.Encode(), nil
}

// single returns the one value of q[key]; ok is false when it is missing,
// repeated or longer than maxCallbackValue.
func single(q url.Values, key string) (string, bool) {
	v := q[key]
	if len(v) != 1 || v[0] == "" || len(v[0]) > maxCallbackValue {
		return "", false
	}
	return v[0], true
}

// parseLink checks an authorize link's parameters and signature.
func (o *Onboarder) parseLink(q url.Values) (tenant string, iat, exp int64, ok bool) {
	tenant, ok1 := single(q, "tenant")
	iatS, ok2 := single(q, "iat")
	expS, ok3 := single(q, "exp")
	sigS, ok4 := single(q, "sig")
	if !ok1 || !ok2 || !ok3 || !ok4 || !store.ValidTenantID(tenant) {
		return "", 0, 0, false
	}
	iat, err1 := strconv.ParseInt(iatS, 10, 64)
	exp, err2 := strconv.ParseInt(expS, 10, 64)
	sig, err3 := base64.RawURLEncoding.DecodeString(sigS)
	if err1 != nil || err2 != nil || err3 != nil || iat <= 0 || exp <= 0 {
		return "", 0, 0, false
	}
	if !hmac.Equal(sig, o.linkMAC(tenant, iat, exp)) {
		return "", 0, 0, false
	}
	return tenant, iat, exp, true
}

func linkUsed(t *store.Tenant, iat int64) bool {
	return !t.AuthorizedAt.IsZero() && t.AuthorizedAt.Unix() >= iat
}

// ServeStart handles GET /oauth/start: the merchant opening an authorize
// link. A valid link stores a fresh single-use state and redirects (302) to
// the provider. A malformed or forged link answers 400, an expired or used
// link or a deleted tenant 410, a store failure 503; none of them stores
// anything.
func (o *Onboarder) ServeStart(w http.ResponseWriter, r *http.Request) {
	if err := o.init(); err != nil {
		o.log.Error("onboarding misconfigured", zap.Error(err))
		renderPage(w, pageMisconfigured)
		return
	}
	if r.Method != http.MethodGet {
		// HEAD (link scanners) must not create states.
		w.Header().Set("Allow", http.MethodGet)
		renderPage(w, pageMethod)
		return
	}
	tenant, iat, exp, ok := o.parseLink(r.URL.Query())
	if !ok {
		o.log.Warn("onboarding link rejected", zap.String("why", "malformed or bad signature"), zap.String("remote", r.RemoteAddr))
		renderPage(w, pageBadLink)
		return
	}
	log := o.log.With(zap.String("tenant", tenant))
	now := o.now()
	if now.Unix() >= exp {
		log.Info("onboarding link rejected", zap.String("why", "expired"))
		renderPage(w, pageLinkExpired)
		return
	}
	t, err := o.Store.Get(r.Context(), tenant)
	switch {
	case errors.Is(err, store.ErrNotFound):
		log.Info("onboarding link rejected", zap.String("why", "tenant deleted"))
		renderPage(w, pageTenantGone)
		return
	case err != nil:
		log.Error("onboarding start: store read failed", zap.Error(err))
		renderPage(w, pageStoreDown)
		return
	case linkUsed(t, iat):
		log.Info("onboarding link rejected", zap.String("why", "already used"))
		renderPage(w, pageLinkUsed)
		return
	}

	var raw [stateBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		log.Error("onboarding start: no randomness", zap.Error(err))
		renderPage(w, pageStoreDown)
		return
	}
	state := base64.RawURLEncoding.EncodeToString(raw[:])
	sv := stateValue{Tenant: tenant, IAT: iat, Expires: now.Add(o.stateTTL()).UnixNano()}
	var opts []oauth2.AuthCodeOption
	if o.PKCE {
		sv.Verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(sv.Verifier))
	}
	val, err := json.Marshal(sv)
	if err == nil {
		err = o.Store.PutOnce(r.Context(), stateKeyPrefix+state, val, o.stateTTL())
	}
	if err != nil {
		log.Error("onboarding start: state not stored", zap.Error(err))
		renderPage(w, pageStoreDown)
		return
	}
	cfg := &oauth2.Config{
		ClientID:    o.Client.ClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: o.AuthorizeURL},
		RedirectURL: o.RedirectURL,
		Scopes:      o.Scopes,
	}
	log.Info("onboarding started", zap.Bool("pkce", o.PKCE))
	noStore(w.Header())
	http.Redirect(w, r, cfg.AuthCodeURL(state, opts...), http.StatusFound)
}

// validState accepts exactly what ServeStart issues: 32 bytes, base64url.
func validState(s string) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(stateBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}

// providerErrorCode keeps an RFC 6749 error code printable in a page and a
// log line; anything else becomes "other".
func providerErrorCode(s string) string {
	if s == "" || len(s) > 64 {
		return "other"
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_') {
			return "other"
		}
	}
	return s
}

// ServeCallback handles GET /oauth/callback: the provider's redirect. The
// state is taken once (a replayed callback fails), the code is exchanged at
// once and the tokens are written onto the tenant record with
// compare-and-set, keeping its identity and history. On failure nothing is
// stored and an existing tenant is left untouched:
//
//	400 missing/unknown/used/expired state, missing code, bad provider
//	    parameters, or the provider rejected the code (invalid_grant, e.g.
//	    expired code or redirect_uri mismatch) or the client
//	403 the merchant declined (error=access_denied)
//	410 the tenant was deleted meanwhile, or the link was already used
//	502 the token endpoint did not answer
//	503 the store did not answer
//
// The exchange and the write run detached from the browser's request, so a
// merchant closing the tab cannot lose tokens already issued.
func (o *Onboarder) ServeCallback(w http.ResponseWriter, r *http.Request) {
	if err := o.init(); err != nil {
		o.log.Error("onboarding misconfigured", zap.Error(err))
		renderPage(w, pageMisconfigured)
		return
	}
	q := r.URL.Query()
	state, ok := single(q, "state")
	if !ok || !validState(state) {
		o.log.Info("onboarding callback rejected", zap.String("why", "missing or malformed state"), zap.String("remote", r.RemoteAddr))
		renderPage(w, pageBadState)
		return
	}
	raw, err := o.Store.TakeOnce(r.Context(), stateKeyPrefix+state)
	if errors.Is(err, store.ErrNotFound) {
		o.log.Info("onboarding callback rejected", zap.String("why", "unknown, used or expired state"), zap.String("remote", r.RemoteAddr))
		renderPage(w, pageBadState)
		return
	}
	if err != nil {
		o.log.Error("onboarding callback: state not readable", zap.Error(err))
		renderPage(w, pageStoreDown)
		return
	}
	var sv stateValue
	if err := json.Unmarshal(raw, &sv); err != nil || !store.ValidTenantID(sv.Tenant) {
		o.log.Error("onboarding callback: corrupt state value")
		renderPage(w, pageBadState)
		return
	}
	log := o.log.With(zap.String("tenant", sv.Tenant))
	if o.now().UnixNano() >= sv.Expires {
		log.Info("onboarding callback rejected", zap.String("why", "state expired"))
		renderPage(w, pageBadState)
		return
	}
	if _, has := q["error"]; has {
		code := providerErrorCode(q.Get("error"))
		log.Info("onboarding callback: provider answered an error", zap.String("error", code))
		if code == "access_denied" {
			renderPage(w, pageDeclined)
			return
		}
		renderPage(w, pageProviderError(code))
		return
	}
	code, ok := single(q, "code")
	if !ok {
		log.Info("onboarding callback rejected", zap.String("why", "missing code"))
		renderPage(w, pageNoCode)
		return
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), storeTimeout)
	defer cancel()
	cur, err := o.Store.Get(ctx, sv.Tenant)
	switch {
	case errors.Is(err, store.ErrNotFound):
		log.Info("onboarding callback rejected", zap.String("why", "tenant deleted meanwhile"))
		renderPage(w, pageTenantGone)
		return
	case err != nil:
		log.Error("onboarding callback: store read failed", zap.Error(err))
		renderPage(w, pageStoreDown)
		return
	case linkUsed(cur, sv.IAT):
		log.Info("onboarding callback rejected", zap.String("why", "link already used"))
		renderPage(w, pageLinkUsed)
		return
	}
	params, pg := o.callbackParams(q, cur)
	if pg != nil {
		log.Info("onboarding callback rejected", zap.String("why", pg.Heading))
		renderPage(w, *pg)
		return
	}

	// Exchange at once: codes live about 30 s.
	probe := cur.Clone()
	probe.Extra = mergeExtra(cur.Extra, params)
	g, err := o.Client.Exchange(ctx, probe, code, sv.Verifier, o.RedirectURL)
	if err != nil {
		pg := exchangeFailurePage(err)
		log.Warn("onboarding callback: code exchange failed", zap.Error(err), zap.Int("status", pg.Status))
		renderPage(w, pg)
		return
	}
	if g.RefreshToken == "" {
		log.Warn("provider issued no refresh token: the tenant will need re-authorization when the access token expires")
	}

	now := o.now()
	var (
		written  *store.Tenant
		previous store.Status
	)
	for attempt := 0; attempt < casAttempts && written == nil; attempt++ {
		if attempt > 0 {
			cur, err = o.Store.Get(ctx, sv.Tenant)
			if errors.Is(err, store.ErrNotFound) {
				log.Warn("onboarding callback: tenant deleted during the exchange; tokens discarded")
				renderPage(w, pageTenantGone)
				return
			}
			if err != nil {
				break
			}
			if linkUsed(cur, sv.IAT) {
				// Another tab finished this link's flow meanwhile.
				log.Info("onboarding callback rejected", zap.String("why", "link used concurrently"))
				renderPage(w, pageLinkUsed)
				return
			}
		}
		next := o.authorized(cur, g, params, now)
		v, perr := o.Store.Put(ctx, next, cur.Version)
		if errors.Is(perr, store.ErrConflict) {
			err = perr
			continue
		}
		if perr != nil {
			err = perr
			break
		}
		next.Version = v
		written, previous = next, cur.Status
	}
	if written == nil {
		log.Error("onboarding callback: tokens not stored", zap.Error(err))
		renderPage(w, pageStoreDown)
		return
	}

	recovered := previous != store.StatusActive
	log.Info("tenant authorized",
		zap.Bool("first", cur.AuthorizedAt.IsZero()), zap.Bool("recovered", recovered),
		zap.String("scope", written.Scope), zap.Time("access_expires_at", written.AccessExpiresAt),
		zap.Int64("version", written.Version))
	if recovered && o.OnRecover != nil {
		o.OnRecover(sv.Tenant)
	}
	if o.SuccessURL != "" {
		noStore(w.Header())
		http.Redirect(w, r, o.SuccessURL, http.StatusFound)
		return
	}
	renderPage(w, pageSuccess(sv.Tenant, o.Preset.Name))
}

// callbackParams validates the preset's callback parameters (x-series
// domain_prefix names the token host). A value that differs from the one
// already stored is refused: the merchant connected another account than
// the tenant's.
func (o *Onboarder) callbackParams(q url.Values, cur *store.Tenant) (map[string]string, *page) {
	var params map[string]string
	for _, name := range o.Preset.CallbackParams {
		v, ok := single(q, name)
		if !ok || !validDomainPrefix(v) {
			p := pageMissingParam(name)
			return nil, &p
		}
		if old := cur.Extra[name]; old != "" && !strings.EqualFold(old, v) {
			p := pageOtherAccount(name)
			return nil, &p
		}
		if params == nil {
			params = map[string]string{}
		}
		params[name] = v
	}
	return params, nil
}

// mergeExtra returns a copy of extra with params set.
func mergeExtra(extra, params map[string]string) map[string]string {
	if len(extra) == 0 && len(params) == 0 {
		return extra
	}
	out := make(map[string]string, len(extra)+len(params))
	for k, v := range extra {
		out[k] = v
	}
	for k, v := range params {
		out[k] = v
	}
	return out
}

// authorized returns cur with g applied: identity and history kept, tokens
// replaced, flag and counters cleared.
func (o *Onboarder) authorized(cur *store.Tenant, g *Grant, params map[string]string, now time.Time) *store.Tenant {
	next := cur.Clone()
	if o.Preset.Name != "" {
		next.Provider = o.Preset.Name
	}
	next.AccessToken = g.AccessToken
	next.AccessExpiresAt = g.Expiry
	next.RefreshToken = g.RefreshToken
	next.RefreshExpiresAt = g.RefreshExpiry
	if next.RefreshExpiresAt.IsZero() && o.Preset.RefreshIdleTTL > 0 && g.RefreshToken != "" {
		next.RefreshExpiresAt = now.Add(o.Preset.RefreshIdleTTL)
	}
	next.Scope = g.Scope
	if next.Scope == "" {
		next.Scope = strings.Join(o.Scopes, " ") // RFC 6749 §5.1: omitted = as requested
	}
	next.Extra = mergeExtra(cur.Extra, params)
	next.Status = store.StatusActive
	next.Reason = ""
	next.FlaggedAt = time.Time{}
	next.RefreshInFlight = false
	next.RefreshCount = 0
	next.FailureCount = 0
	next.AuthorizedAt = now
	next.UpdatedAt = now
	next.Record(now, store.EventAuthorized, authorizedReason(cur))
	if next.CreatedAt.IsZero() {
		next.CreatedAt = now
	}
	return next
}

// exchangeFailurePage maps a code-exchange error to a page.
func exchangeFailurePage(err error) page {
	var ee *EndpointError
	if errors.As(err, &ee) {
		switch {
		case ee.Status >= 500 || ee.Status == http.StatusTooManyRequests:
			return pageProviderDown
		case ee.Code == "invalid_client" || ee.Code == "unauthorized_client" || ee.Status == http.StatusUnauthorized:
			return pageClientRejected
		default:
			return pageCodeRejected
		}
	}
	return pageProviderDown
}
