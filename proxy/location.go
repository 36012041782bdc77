package proxy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/store"
)

// ErrUnknownLocation: no active tenant covers the requested location.
var ErrUnknownLocation = errors.New("proxy: no active tenant covers this business location")

// LocationResolver routes a K-Series business location id to the active
// tenant whose grant covers it, from the store's location index (so every
// replica agrees), each candidate confirmed against its record. When
// several grants cover a location (users who each see part of a business)
// the first active one by tenant id is chosen, so replicas choose alike.
//
// A choice is cached for TTL and dropped as soon as the store reports a
// change of the chosen tenant (Run). Unknown locations are not cached: a
// new grant is routable at once. Safe for concurrent use.
type LocationResolver struct {
	// Store must implement store.LocationIndex.
	Store store.Store
	// TTL bounds a cached choice when change notifications are lost;
	// 0 = 30s.
	TTL time.Duration
	// Now is the clock; nil = time.Now.
	Now func() time.Time

	mu    sync.Mutex
	cache map[string]locationChoice
}

type locationChoice struct {
	tenant string
	at     time.Time
}

func (r *LocationResolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Resolve returns the tenant for location. Errors: ErrUnknownLocation, or
// *auth.UnavailableError when the store does not answer.
func (r *LocationResolver) Resolve(ctx context.Context, location string) (string, error) {
	if !store.ValidTenantID(location) {
		return "", ErrUnknownLocation
	}
	ttl := r.TTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	now := r.now()
	r.mu.Lock()
	c, ok := r.cache[location]
	r.mu.Unlock()
	if ok && now.Sub(c.at) < ttl {
		return c.tenant, nil
	}
	idx, ok := r.Store.(store.LocationIndex)
	if !ok {
		return "", ErrUnknownLocation
	}
	ids, err := idx.LocationTenants(ctx, location)
	if err != nil {
		return "", &auth.UnavailableError{RetryAfter: time.Second, Err: err}
	}
	for _, id := range ids {
		t, err := r.Store.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted; its index entry is stale
		}
		if err != nil {
			return "", &auth.UnavailableError{Tenant: id, RetryAfter: time.Second, Err: err}
		}
		if t.Status != store.StatusActive || !slices.ContainsFunc(t.Locations, func(l store.Location) bool { return l.ID == location }) {
			continue
		}
		r.mu.Lock()
		if r.cache == nil {
			r.cache = map[string]locationChoice{}
		}
		r.cache[location] = locationChoice{tenant: id, at: now}
		r.mu.Unlock()
		return id, nil
	}
	return "", ErrUnknownLocation
}

// Forget drops cached choices of tenant.
func (r *LocationResolver) Forget(tenant string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for loc, c := range r.cache {
		if c.tenant == tenant {
			delete(r.cache, loc)
		}
	}
}

// Run forgets the choices of every tenant any process changes, until ctx
// ends. It returns the store's Subscribe error, or nil at ctx end.
func (r *LocationResolver) Run(ctx context.Context) error {
	ch, err := r.Store.Subscribe(ctx)
	if err != nil {
		return err
	}
	for id := range ch {
		r.Forget(id)
	}
	return nil
}
