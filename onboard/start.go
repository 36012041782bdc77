package onboard

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/store"
)

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
	// Rebind: the link allows another merchant account than the tenant's.
	Rebind bool `json:"rebind,omitempty"`
	// Gen is the link's generation: the callback refuses it once the
	// tenant's changed (links revoked, tenant re-created).
	Gen int64 `json:"gen,omitempty"`
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
	lp, ok := o.parseLink(r.URL.Query())
	tenant, iat, exp, rebind := lp.tenant, lp.iat, lp.exp, lp.rebind
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
	case t.LinkGeneration != lp.gen:
		log.Info("onboarding link rejected", zap.String("why", "revoked (link generation changed)"))
		renderPage(w, pageLinkRevoked)
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
	sv := stateValue{Tenant: tenant, IAT: iat, Expires: now.Add(o.stateTTL()).UnixNano(), Rebind: rebind, Gen: lp.gen}
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
	o.bindBrowser(w, state)
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
