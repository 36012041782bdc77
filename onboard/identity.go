package onboard

import (
	"context"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/store"
)

// identify asks the provider who the new grant g belongs to. It returns a
// page to answer instead when the account cannot be learnt, or when it is
// another account than the tenant's and the link does not allow a rebind;
// nothing is stored then and the tenant keeps its grant. (nil, nil) means
// the preset identifies no account.
func (o *Onboarder) identify(ctx context.Context, log *zap.Logger, cur *store.Tenant, g *auth.Grant, extra map[string]string, rebind bool) (*auth.Identified, *page) {
	if o.Identifier == nil {
		return nil, nil
	}
	ident, err := o.Identifier.Identify(ctx, g.AccessToken, extra)
	if err != nil {
		log.Warn("onboarding callback: merchant account not identified; tokens discarded", zap.Error(err))
		return nil, &pageIdentifyFailed
	}
	if ident == nil {
		return nil, nil
	}
	if cur.Account != nil && cur.Account.ID != ident.Account.ID {
		if !rebind {
			log.Warn("onboarding callback refused: another merchant account",
				zap.String("expected", cur.Account.ID), zap.String("signed_in", ident.Account.ID))
			p := pageOtherAccount(*cur.Account, ident.Account)
			return nil, &p
		}
		log.Info("tenant rebound to another merchant account",
			zap.String("previous", cur.Account.ID), zap.String("account", ident.Account.ID))
	}
	return ident, nil
}

// indexLocations updates the store's location index after a write, when
// the tenant's K-Series locations changed. A failure is logged: the
// location refresher rewrites the index after the next refresh.
func (o *Onboarder) indexLocations(ctx context.Context, log *zap.Logger, prev, written *store.Tenant) {
	idx := o.Locations
	if idx == nil {
		idx, _ = o.Store.(store.LocationIndex)
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
