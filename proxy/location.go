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

// ErrUnknownLocation: no active tenant the caller may use covers the
// requested location (a location covered only by tenants the caller may
// not use reads the same: location ids are no oracle of tenants).
var ErrUnknownLocation = errors.New("proxy: no active tenant covers this business location")

// ErrAmbiguousLocation: several active tenants the caller may use cover
// the location and none is configured as preferred for it.
var ErrAmbiguousLocation = errors.New("proxy: several tenants cover this business location")

// LocationResolver routes a K-Series business location id to the active
// tenant whose grant covers it, from the store's location index (so every
// replica agrees), each candidate confirmed against its record. It picks
// only among the tenants the caller may use (Resolve's allow): one →
// that tenant; several → the location's Preferred tenant when it is one
// of them, else ErrAmbiguousLocation; none → ErrUnknownLocation. A newly
// onboarded tenant covering a location therefore never takes over its
// routing silently.
//
// The active covering tenants of a location are cached for TTL and
// dropped as soon as the store reports a change of one of them (Run).
// Unknown locations are not cached: a new grant is routable at once. Safe
// for concurrent use.
type LocationResolver struct {
	// Store must implement store.LocationIndex.
	Store store.Store
	// TTL bounds a cached entry when change notifications are lost;
	// 0 = 30s.
	TTL time.Duration
	// Preferred maps a location id to the tenant chosen when several
	// allowed tenants cover it (LSPROXY_LOCATION_PREFERRED).
	Preferred map[string]string
	// Now is the clock; nil = time.Now.
	Now func() time.Time

	mu    sync.Mutex
	cache map[string]locationChoice
}

type locationChoice struct {
	tenants []string // active tenants covering the location, sorted
	at      time.Time
}

func (r *LocationResolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Resolve returns the tenant for location among those allow accepts (nil
// = every tenant). Errors: ErrUnknownLocation, ErrAmbiguousLocation, or
// *auth.UnavailableError (without a tenant) when the store does not
// answer.
func (r *LocationResolver) Resolve(ctx context.Context, location string, allow func(tenant string) bool) (string, error) {
	if !store.ValidTenantID(location) {
		return "", ErrUnknownLocation
	}
	covering, err := r.covering(ctx, location)
	if err != nil {
		return "", err
	}
	var allowed []string
	for _, id := range covering {
		if allow == nil || allow(id) {
			allowed = append(allowed, id)
		}
	}
	switch len(allowed) {
	case 0:
		return "", ErrUnknownLocation
	case 1:
		return allowed[0], nil
	}
	if p, ok := r.Preferred[location]; ok && slices.Contains(allowed, p) {
		return p, nil
	}
	return "", ErrAmbiguousLocation
}

// covering returns the active tenants whose grant covers location.
func (r *LocationResolver) covering(ctx context.Context, location string) ([]string, error) {
	ttl := r.TTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	now := r.now()
	r.mu.Lock()
	c, ok := r.cache[location]
	r.mu.Unlock()
	if ok && now.Sub(c.at) < ttl {
		return c.tenants, nil
	}
	idx, ok := r.Store.(store.LocationIndex)
	if !ok {
		return nil, nil
	}
	ids, err := idx.LocationTenants(ctx, location)
	if err != nil {
		return nil, &auth.UnavailableError{RetryAfter: time.Second, Err: err}
	}
	var out []string
	for _, id := range ids {
		t, err := r.Store.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted; its index entry is stale
		}
		if err != nil {
			// No tenant named: the caller did not name it.
			return nil, &auth.UnavailableError{RetryAfter: time.Second, Err: errors.New("store: a tenant covering the location is not readable")}
		}
		if t.Status != store.StatusActive || !slices.ContainsFunc(t.Locations, func(l store.Location) bool { return l.ID == location }) {
			continue
		}
		out = append(out, id)
	}
	slices.Sort(out)
	if len(out) > 0 {
		r.mu.Lock()
		if r.cache == nil {
			r.cache = map[string]locationChoice{}
		}
		r.cache[location] = locationChoice{tenants: out, at: now}
		r.mu.Unlock()
	}
	return out, nil
}

// Forget drops cached choices of tenant.
func (r *LocationResolver) Forget(tenant string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for loc, c := range r.cache {
		if slices.Contains(c.tenants, tenant) {
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
