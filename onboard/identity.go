package onboard

import (
	"context"
	"errors"
	"sync"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/store"
)

// identify asks the provider who the new grant g belongs to (SPEC §8,
// amended 2026-12-07: a grant is discarded only when identification
// positively shows another account). It returns:
//
//   - ident: the account, or nil when the preset identifies none or
//     identification could not be completed;
//   - deferred: why identification could not be completed (endpoint down,
//     forbidden, an answer of another shape); the caller stores the grant
//     (first authorization, rebind) or keeps it as a candidate
//     (re-authorization of a known account) and the Verifier retries;
//   - fail: the page to answer instead when the grant is positively
//     another account than the tenant's and the link allows no rebind;
//     nothing is stored then and the tenant keeps its grant.
func (o *Onboarder) identify(ctx context.Context, log *zap.Logger, cur *store.Tenant, g *auth.Grant, extra map[string]string, rebind bool) (ident *auth.Identified, deferred error, fail *page) {
	if o.Identifier == nil {
		return nil, nil, nil
	}
	ident, err := o.Identifier.Identify(ctx, g.AccessToken, extra)
	if err != nil {
		log.Warn("onboarding callback: merchant account not identified yet; the grant is kept and identified in the background", zap.Error(err))
		forbiddenHint(log, err)
		return nil, err, nil
	}
	if ident == nil {
		return nil, nil, nil
	}
	if cur.Account != nil && cur.Account.ID != ident.Account.ID {
		if !rebind {
			log.Warn("onboarding callback refused: another merchant account",
				zap.String("expected", cur.Account.ID), zap.String("signed_in", ident.Account.ID))
			p := pageOtherAccount(*cur.Account, ident.Account)
			return nil, nil, &p
		}
		log.Info("tenant rebound to another merchant account",
			zap.String("previous", cur.Account.ID), zap.String("account", ident.Account.ID))
	}
	return ident, nil, nil
}

// forbiddenOnce logs, once per process, the hint for an identity endpoint
// that refuses the app's tokens.
var forbiddenOnce sync.Once

// forbiddenHint logs once that a 401/403 from the identity endpoint means
// the app's scopes do not cover it, and how to turn identification off.
func forbiddenHint(log *zap.Logger, err error) {
	if !errors.Is(err, auth.ErrIdentifyForbidden) {
		return
	}
	forbiddenOnce.Do(func() {
		log.Warn("the identity endpoint refuses this app's tokens (401/403): its scopes probably do not cover it; "+
			"grants are kept, but merchant accounts stay unidentified. Add the scope, or set LSPROXY_IDENTIFY=false "+
			"(YAML identify: false) to turn identification off", zap.Error(err))
	})
}

// identifyError is the text stored on a record for a failed
// identification: the error's own words, which never hold a token or a
// body (auth.Identifier's contract).
func identifyError(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// indexLocations updates the store's location index after a write, when
// the tenant's K-Series locations changed. A failure is logged: the
// location refresher rewrites the index after the next refresh.
func (o *Onboarder) indexLocations(ctx context.Context, log *zap.Logger, prev, written *store.Tenant) {
	indexLocations(ctx, log, o.Locations, o.Store, prev, written)
}

func indexLocations(ctx context.Context, log *zap.Logger, idx store.LocationIndex, s store.Store, prev, written *store.Tenant) {
	if idx == nil {
		idx, _ = s.(store.LocationIndex)
	}
	if idx == nil || len(prev.Locations) == 0 && len(written.Locations) == 0 {
		return
	}
	ids := make([]string, len(written.Locations))
	for i, l := range written.Locations {
		ids[i] = l.ID
	}
	if err := idx.SetTenantLocations(ctx, written.ID, ids); err != nil {
		log.Error("location index not updated", zap.Error(err))
	}
}
