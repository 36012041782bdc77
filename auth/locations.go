package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/store"
)

// ErrLocationsBusy: the tenant's refresh lock is held or its refresh is in
// flight; its locations are left for the next round.
var ErrLocationsBusy = errors.New("auth: a refresh of the tenant is in flight")

// LocationRefresher re-reads a grant's K-Series locations when the grant
// is refreshed (Run) and on demand (RefreshLocations), and keeps the
// store's location index in step. It writes the record only while holding
// the tenant's refresh lock and only when no refresh is in flight, so it
// never races the token manager. Safe for concurrent use.
type LocationRefresher struct {
	Store      store.Store
	Identifier *Identifier
	// Token returns a valid access token (the Manager's Token).
	Token func(ctx context.Context, tenant string) (Token, error)
	// LockTTL bounds the lock held for the write; 0 = 10s.
	LockTTL time.Duration
	// Logger; nil = none.
	Logger *zap.Logger
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

func (r *LocationRefresher) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// RefreshLocations reads tenant's account and locations now and stores
// them. Errors: ErrLocationsBusy, ErrIdentify (wrapped), the token's
// errors, store errors; a grant that now identifies another account is
// an error and changes nothing.
func (r *LocationRefresher) RefreshLocations(ctx context.Context, tenant string) (*store.Tenant, error) {
	if r.Identifier == nil || !r.Identifier.Identity.Known() {
		return nil, fmt.Errorf("%w: the preset identifies no account", ErrIdentify)
	}
	tok, err := r.Token(ctx, tenant)
	if err != nil {
		return nil, err
	}
	rec, err := r.Store.Get(ctx, tenant)
	if err != nil {
		return nil, err
	}
	ident, err := r.Identifier.Identify(ctx, tok.AccessToken, rec.Extra)
	if err != nil {
		return nil, err
	}
	ttl := r.LockTTL
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	lock, err := r.Store.TryLock(ctx, "tenant:"+tenant, ttl)
	if errors.Is(err, store.ErrLockHeld) {
		return nil, ErrLocationsBusy
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = lock.Release(context.WithoutCancel(ctx)) }()
	cur, err := r.Store.Get(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if cur.RefreshInFlight {
		return nil, ErrLocationsBusy
	}
	if cur.Account != nil && cur.Account.ID != ident.Account.ID {
		return nil, fmt.Errorf("%w: the grant now identifies account %s, not %s", ErrIdentify, ident.Account.ID, cur.Account.ID)
	}
	next := cur.Clone()
	if next.Candidate == nil {
		// Also ends a background identification of the served grant.
		next.Identified(ident.Account, ident.Locations, r.now())
	} else {
		a := ident.Account
		next.Account = &a
		next.Locations = ident.Locations
		next.LocationsAt = r.now()
	}
	v, err := r.Store.Put(ctx, next, cur.Version)
	if err != nil {
		return nil, err
	}
	next.Version = v
	if idx, ok := r.Store.(store.LocationIndex); ok {
		ids := make([]string, len(next.Locations))
		for i, l := range next.Locations {
			ids[i] = l.ID
		}
		if err := idx.SetTenantLocations(ctx, tenant, ids); err != nil {
			return next, err
		}
	}
	return next, nil
}

// Run follows store changes until ctx ends: a tenant refreshed since its
// locations were read (LastRefreshAt after LocationsAt) gets them read
// again. Only presets with locations (K-Series) are followed. It returns
// the store's Subscribe error, or nil at ctx end.
func (r *LocationRefresher) Run(ctx context.Context) error {
	if r.Identifier == nil || r.Identifier.Identity.Locations == "" {
		<-ctx.Done()
		return nil
	}
	ch, err := r.Store.Subscribe(ctx)
	if err != nil {
		return err
	}
	log := r.Logger
	if log == nil {
		log = zap.NewNop()
	}
	for id := range ch {
		rec, err := r.Store.Get(ctx, id)
		if err != nil || rec.Status != store.StatusActive || rec.Account == nil || !rec.LastRefreshAt.After(rec.LocationsAt) {
			continue
		}
		// The refresh that notified may still hold the lock for a moment:
		// a few bounded retries.
		for attempt := 0; attempt < 3; attempt++ {
			_, err = r.RefreshLocations(ctx, id)
			if !errors.Is(err, ErrLocationsBusy) {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(500 * time.Millisecond):
			}
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("locations not refreshed", zap.String("tenant", id), zap.Error(err))
		}
	}
	return nil
}
