package onboard

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/store"
)

// writeGrant writes g onto the tenant with compare-and-set, re-reading the
// record on a conflict (at most casAttempts tries). cur is the record read
// before the exchange. It returns the record written and the one it
// replaced, or the page to answer: pageTenantGone (deleted during the
// exchange: the tokens are discarded), pageLinkUsed (another tab finished
// this link's flow meanwhile), pageStoreDown (a store failure or too many
// conflicts). Failures are logged here.
//
// deferred, when not nil, is why identification could not be completed:
// the grant is stored and served, the account left unknown and the
// record marked for the Verifier.
func (o *Onboarder) writeGrant(ctx context.Context, log *zap.Logger, sv stateValue, cur *store.Tenant, g *auth.Grant, params map[string]string, ident *auth.Identified, deferred error) (written, replaced *store.Tenant, fail *page) {
	now := o.now()
	return o.writeLocked(ctx, log, sv, cur, "tokens not stored", func(cur *store.Tenant) (*store.Tenant, *page) {
		if ident != nil && cur.Account != nil && cur.Account.ID != ident.Account.ID && !sv.Rebind {
			// Identified as another account by a write during the exchange.
			log.Warn("onboarding callback refused: another merchant account",
				zap.String("expected", cur.Account.ID), zap.String("signed_in", ident.Account.ID))
			p := pageOtherAccount(*cur.Account, ident.Account)
			return nil, &p
		}
		next := o.authorized(cur, g, params, ident, now)
		if deferred != nil {
			// First authorization or rebind: whoever it is, it is the
			// tenant's account now; which one is learnt later.
			next.Account, next.Locations, next.LocationsAt = nil, nil, time.Time{}
			next.StartIdentify(identifyError(deferred), now.Add(o.Verifier.delay(1)), now)
		} else {
			next.Identify = nil
		}
		next.Candidate = nil // a completed authorization supersedes a waiting one
		return next, nil
	})
}

// writeLocked writes build(cur) with compare-and-set under the tenant's
// refresh lock (rule 19: never over a refresh in flight, whose holder may
// be writing a new refresh token), re-reading the record on a conflict
// (at most casAttempts tries). build may refuse with a page. It returns
// the record written and the one it replaced, or the page to answer
// (pageTenantGone, pageLinkUsed, pageStoreDown, lockIdle's pages, build's);
// failures are logged here, what names what was not stored.
func (o *Onboarder) writeLocked(ctx context.Context, log *zap.Logger, sv stateValue, cur *store.Tenant, what string, build func(cur *store.Tenant) (*store.Tenant, *page)) (written, replaced *store.Tenant, fail *page) {
	cur, release, fail := o.lockForWrite(ctx, log, sv.Tenant, cur)
	if fail != nil {
		return nil, nil, fail
	}
	defer release()
	var err error
	for attempt := 0; attempt < casAttempts; attempt++ {
		if attempt > 0 {
			cur, err = o.Store.Get(ctx, sv.Tenant)
			if errors.Is(err, store.ErrNotFound) {
				log.Warn("onboarding callback: tenant deleted during the exchange; tokens discarded")
				p := pageTenantGone
				return nil, nil, &p
			}
			if err != nil {
				break
			}
			if linkUsed(cur, sv.IAT) {
				log.Info("onboarding callback rejected", zap.String("why", "link used concurrently"))
				p := pageLinkUsed
				return nil, nil, &p
			}
		}
		next, refused := build(cur)
		if refused != nil {
			return nil, nil, refused
		}
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
		return next, cur, nil
	}
	log.Error("onboarding callback: "+what, zap.Error(err))
	p := pageStoreDown
	return nil, nil, &p
}

// Waiting of lockIdle for a refresh in flight to end.
const (
	lockIdleWait = 10 * time.Second // default RefreshWait: a refresh's token_timeout with the defaults
	lockIdleTTL  = 10 * time.Second // the lock held while the grant is written
)

// lockIdle takes tenant's refresh lock once no refresh of it is in flight
// (lock free, no holder's mark on the record), waiting up to RefreshWait.
// It returns the lock and the record read under it, or the page to answer:
// pageRefreshInFlight when a refresh stayed in flight, pageTenantGone,
// pageStoreDown.
func (o *Onboarder) lockIdle(ctx context.Context, log *zap.Logger, tenant string) (store.Lock, *store.Tenant, *page) {
	wait := o.RefreshWait
	if wait <= 0 {
		wait = lockIdleWait
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	delay := 50 * time.Millisecond
	for {
		lock, err := o.Store.TryLock(wctx, "tenant:"+tenant, lockIdleTTL)
		if err == nil {
			cur, gerr := o.Store.Get(wctx, tenant)
			if gerr == nil && !holderMark(cur) {
				return lock, cur, nil
			}
			_ = lock.Release(context.WithoutCancel(ctx))
			switch {
			case errors.Is(gerr, store.ErrNotFound):
				log.Warn("onboarding callback: tenant deleted during the exchange; tokens discarded")
				p := pageTenantGone
				return nil, nil, &p
			case gerr != nil:
				err = gerr
			}
		}
		if err != nil && !errors.Is(err, store.ErrLockHeld) && wctx.Err() == nil {
			log.Error("onboarding callback: tokens not stored", zap.Error(err))
			p := pageStoreDown
			return nil, nil, &p
		}
		t := time.NewTimer(delay)
		select {
		case <-wctx.Done():
			t.Stop()
			log.Warn("onboarding callback refused: a refresh of the tenant stayed in flight; tokens discarded")
			p := pageRefreshInFlight
			return nil, nil, &p
		case <-t.C:
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// lockForWrite takes the tenant's lock through lockIdle for an onboarding
// write: the record to write from (cur, or the one read under the lock)
// and the lock's release, or the page to answer.
func (o *Onboarder) lockForWrite(ctx context.Context, log *zap.Logger, tenant string, cur *store.Tenant) (*store.Tenant, func(), *page) {
	lock, fresh, fail := o.lockIdle(ctx, log, tenant)
	if fail != nil {
		return nil, nil, fail
	}
	if fresh != nil {
		cur = fresh
	}
	return cur, func() { _ = lock.Release(context.WithoutCancel(ctx)) }, nil
}

// holderMark reports whether t carries a refresh holder's mark (a holder
// that may still write); an interrupted refresh's undone mark has none.
func holderMark(t *store.Tenant) bool {
	return t.RefreshInFlight && (t.RefreshMark != "" || !t.RefreshStartedAt.IsZero())
}

// writeCandidate stores g as cur's candidate grant (not served) with
// compare-and-set, re-reading on a conflict; failures as for writeGrant.
func (o *Onboarder) writeCandidate(ctx context.Context, log *zap.Logger, sv stateValue, cur *store.Tenant, g *auth.Grant, params map[string]string, deferred error) (*store.Tenant, *page) {
	// Under the lock as well: a candidate is written beside the served
	// grant, but its write would still fence out a holder's grant write.
	now := o.now()
	written, _, fail := o.writeLocked(ctx, log, sv, cur, "candidate grant not stored", func(cur *store.Tenant) (*store.Tenant, *page) {
		next := cur.Clone()
		next.KeepCandidate(o.tokensOf(g, now), params, identifyError(deferred), now.Add(o.Verifier.delay(1)), now)
		return next, nil
	})
	return written, fail
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
func (o *Onboarder) authorized(cur *store.Tenant, g *auth.Grant, params map[string]string, ident *auth.Identified, now time.Time) *store.Tenant {
	next := cur.Clone()
	if o.Preset.Name != "" {
		next.Provider = o.Preset.Name
	}
	tokens := o.tokensOf(g, now)
	next.Extra = mergeExtra(cur.Extra, params)
	if ident != nil {
		a := ident.Account
		next.Account = &a
		next.Locations = append([]store.Location(nil), ident.Locations...)
		next.LocationsAt = now
	}
	next.Authorize(tokens, now)
	return next
}

// tokensOf is what an authorization's grant stores.
func (o *Onboarder) tokensOf(g *auth.Grant, now time.Time) store.Tokens {
	tokens := store.Tokens{Access: g.AccessToken, AccessExpiry: g.Expiry, Refresh: g.RefreshToken, RefreshExpiry: g.RefreshExpiry, Scope: g.Scope}
	if tokens.RefreshExpiry.IsZero() && o.Preset.RefreshIdleTTL > 0 && g.RefreshToken != "" {
		tokens.RefreshExpiry = now.Add(o.Preset.RefreshIdleTTL)
	}
	if tokens.Scope == "" {
		tokens.Scope = strings.Join(o.Scopes, " ") // RFC 6749 §5.1: omitted = as requested
	}
	return tokens
}

// exchangeFailurePage maps a code-exchange error to a page.
func exchangeFailurePage(err error) page {
	var ee *auth.EndpointError
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
