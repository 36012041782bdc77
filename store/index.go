package store

import (
	"context"
	"errors"
	"time"
)

// Lister pages through tenant ids and finds the tenants whose refresh
// token is due, without reading every record. Redis and Bolt implement it;
// callers fall back to List and Get for a Store that does not.
// Methods are safe for concurrent use.
type Lister interface {
	// ListPage returns up to limit ids (1 ≤ limit ≤ MaxPageLimit) after
	// cursor ("" = from the start) and the cursor of the next page, "" at
	// the end. Cursors are opaque. Order is the backend's (Bolt: sorted;
	// Redis: by index shard); an id created or deleted meanwhile may be
	// missed or, on Redis while a shard is resized, returned twice. An
	// invalid cursor returns an error wrapping ErrInvalidCursor.
	ListPage(ctx context.Context, cursor string, limit int) (ids []string, next string, err error)

	// ListDue returns the ids of active tenants that have a refresh token
	// and whose refresh token expires (RefreshExpiresAt) at or before
	// expiresBy, or, for those whose provider gave no expiry, whose last
	// activity (DueActivity) is at or before idleBy; a zero idleBy skips
	// the latter. It may return more (an index entry a concurrent write
	// has not updated yet): callers check the record.
	ListDue(ctx context.Context, expiresBy, idleBy time.Time) ([]string, error)
}

// Counter counts tenants by status without reading every record. Redis
// implements it; callers fall back to List and Get for a Store that does
// not, or when it returns an error wrapping ErrNotCounted. Safe for
// concurrent use.
type Counter interface {
	// CountByStatus returns the number of tenants of each status. A
	// tenant deleted by a process that died mid-delete may still be
	// counted (as it is still listed).
	CountByStatus(ctx context.Context) (map[Status]int, error)
}

// ErrNotCounted: the store cannot count from its index yet.
var ErrNotCounted = errors.New("store: tenants not countable from the index yet")

// MaxPageLimit is the largest page ListPage returns.
const MaxPageLimit = 1000

// ErrInvalidCursor: a ListPage cursor this store did not hand out.
var ErrInvalidCursor = errors.New("store: invalid cursor")

// DueActivity is the last use of t's refresh token the due index keys on
// when the provider gave no refresh expiry: its latest refresh,
// authorization or creation.
func DueActivity(t *Tenant) time.Time {
	l := t.LastRefreshAt
	for _, ts := range []time.Time{t.AuthorizedAt, t.CreatedAt} {
		if ts.After(l) {
			l = ts
		}
	}
	return l
}

// dueKind says under which due index t belongs: 'e' (by refresh expiry),
// 'i' (by last activity), or 0 (none: not active or no refresh token).
func dueKind(t *Tenant) (kind byte, at time.Time) {
	if t.Status != StatusActive || t.RefreshToken == "" {
		return 0, time.Time{}
	}
	if !t.RefreshExpiresAt.IsZero() {
		return 'e', t.RefreshExpiresAt
	}
	return 'i', DueActivity(t)
}
