package onboard

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/store"
)

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
	if !o.browserBound(r, state) {
		// Not the browser that opened the link (a forged callback, a
		// link forwarded mid-flow): the state stays for its own browser.
		o.log.Info("onboarding callback rejected", zap.String("why", "state not bound to this browser"), zap.String("remote", r.RemoteAddr))
		renderPage(w, pageOtherBrowser)
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
	case cur.LinkGeneration != sv.Gen:
		log.Info("onboarding callback rejected", zap.String("why", "link revoked during the flow"))
		renderPage(w, pageLinkRevoked)
		return
	case linkUsed(cur, sv.IAT):
		log.Info("onboarding callback rejected", zap.String("why", "link already used"))
		renderPage(w, pageLinkUsed)
		return
	}
	params, pg := o.callbackParams(q, cur, sv.Rebind)
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
		log.Warn("onboarding callback: code exchange failed", zap.Error(err), zap.Int("status", pg.Status()))
		renderPage(w, pg)
		return
	}
	if g.RefreshToken == "" {
		log.Warn("provider issued no refresh token: the tenant will need re-authorization when the access token expires")
	}
	ident, deferred, fail := o.identify(ctx, log, cur, g, probe.Extra, sv.Rebind)
	if fail != nil {
		renderPage(w, *fail)
		return
	}
	if deferred != nil && cur.Account != nil && !sv.Rebind {
		// A re-authorization of a tenant whose account is known, not
		// identified: the new grant waits beside the served one.
		if _, fail := o.writeCandidate(ctx, log, sv, cur, g, params, deferred); fail != nil {
			renderPage(w, *fail)
			return
		}
		o.invalidate(sv.Tenant)
		if o.Verifier != nil {
			o.Verifier.Kick(sv.Tenant)
		}
		log.Info("tenant re-authorized; the new grant is kept as a candidate until the merchant account is verified")
		o.finish(w, r, pageVerificationPending)
		return
	}

	written, replaced, fail := o.writeGrant(ctx, log, sv, cur, g, params, ident, deferred)
	if fail != nil {
		renderPage(w, *fail)
		return
	}
	// Synchronously, before the merchant's page: this replica never serves
	// the previous grant again (other replicas learn it from the store's
	// change notification).
	o.invalidate(sv.Tenant)
	o.indexLocations(ctx, log, replaced, written)
	if deferred != nil && o.Verifier != nil {
		o.Verifier.Kick(sv.Tenant)
	}

	first := replaced.Pending() || replaced.AuthorizedAt.IsZero() && replaced.RefreshToken == ""
	recovered := !first && replaced.Status != store.StatusActive
	log.Info("tenant authorized",
		zap.Bool("first", first), zap.Bool("recovered", recovered), zap.Bool("identify_pending", written.Identify != nil),
		zap.String("scope", written.Scope), zap.Time("access_expires_at", written.AccessExpiresAt),
		zap.Int64("version", written.Version))
	switch {
	case first && o.OnConnected != nil:
		o.OnConnected(sv.Tenant)
	case recovered && o.OnActivated != nil:
		o.OnActivated(sv.Tenant)
	}
	if written.Identify != nil {
		o.finish(w, r, pageVerificationPending)
		return
	}
	o.finish(w, r, pageSuccess())
}

// finish answers a completed authorization: the configured success URL,
// or p.
func (o *Onboarder) finish(w http.ResponseWriter, r *http.Request, p page) {
	if o.SuccessURL != "" {
		countOutcome(p)
		noStore(w.Header())
		http.Redirect(w, r, o.SuccessURL, http.StatusFound)
		return
	}
	renderPage(w, p)
}

func (o *Onboarder) invalidate(tenant string) {
	if o.Invalidate != nil {
		o.Invalidate(tenant)
	}
}

// callbackParams validates the preset's callback parameters (x-series
// domain_prefix names the token host). A value that differs from the one
// already stored is refused: the merchant connected another account than
// the tenant's.
func (o *Onboarder) callbackParams(q url.Values, cur *store.Tenant, rebind bool) (map[string]string, *page) {
	var params map[string]string
	for _, name := range o.Preset.CallbackParams {
		v, ok := single(q, name)
		if !ok || !auth.ValidDomainPrefix(v) {
			p := pageMissingParam(name)
			return nil, &p
		}
		if old := cur.Extra[name]; old != "" && !strings.EqualFold(old, v) && !rebind {
			p := pageOtherAccount(store.Account{ID: old, Name: old}, store.Account{ID: v, Name: v})
			return nil, &p
		}
		if params == nil {
			params = map[string]string{}
		}
		params[name] = v
	}
	return params, nil
}
