package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Every change of a tenant's state is one method here, used by the token
// manager, the admin API and onboarding alike, so that the fields each
// transition touches cannot drift apart between callers. The methods change
// the receiver only; the caller writes it (see Update).

// Mark describes an in-flight refresh; see Tenant.RefreshMark.
type Mark struct {
	ID        string        // random, unique per refresh
	StartedAt time.Time     // when it was set
	Lease     time.Duration // the holder's lock TTL (renewed while it works)
	Grace     time.Duration // what a successor must observe before takeover
}

// Tokens are what a grant, an import or an authorization gives a tenant.
type Tokens struct {
	Access        string
	AccessExpiry  time.Time
	Refresh       string
	RefreshExpiry time.Time // zero: the provider did not say
	Scope         string
}

// MarkRefresh records that a refresh grant is about to be sent.
func (t *Tenant) MarkRefresh(m Mark) {
	t.RefreshInFlight = true
	t.RefreshMark = m.ID
	t.RefreshStartedAt = m.StartedAt
	t.RefreshLease = m.Lease
	t.RefreshGrace = m.Grace
}

// HasMark reports whether the record carries the in-flight mark id.
func (t *Tenant) HasMark(id string) bool {
	return t.RefreshInFlight && id != "" && t.RefreshMark == id
}

// Mark returns the record's in-flight mark (zero when none).
func (t *Tenant) Mark() Mark {
	if !t.RefreshInFlight {
		return Mark{}
	}
	return Mark{ID: t.RefreshMark, StartedAt: t.RefreshStartedAt, Lease: t.RefreshLease, Grace: t.RefreshGrace}
}

func (t *Tenant) clearMark() {
	t.RefreshInFlight = false
	t.RefreshMark = ""
	t.RefreshStartedAt = time.Time{}
	t.RefreshLease, t.RefreshGrace = 0, 0
}

// UndoMark removes a mark after a refresh that did not consume the refresh
// token (it failed before or without reaching the provider) and counts the
// failure. interrupted keeps "an earlier refresh may have consumed the
// token" on the record, with no holder left to wait for.
func (t *Tenant) UndoMark(interrupted bool, now time.Time) {
	t.clearMark()
	t.RefreshInFlight = interrupted
	t.FailureCount++
	t.UpdatedAt = now
}

// ApplyGrant stores a refresh result: new tokens (an empty refresh token or
// scope keeps the stored one), mark and flag cleared, counters updated. It
// reports whether the tenant was flagged before (it recovered).
func (t *Tenant) ApplyGrant(g Tokens, now time.Time) (recovered bool) {
	recovered = t.Status != StatusActive
	t.AccessToken = g.Access
	t.AccessExpiresAt = g.AccessExpiry
	if g.Refresh != "" {
		t.RefreshToken = g.Refresh
	}
	t.RefreshExpiresAt = g.RefreshExpiry
	if g.Scope != "" {
		t.Scope = g.Scope
	}
	t.clearFlag()
	t.clearMark()
	t.LastRefreshAt = now
	t.UpdatedAt = now
	t.RefreshCount++
	t.FailureCount = 0
	if recovered {
		t.Record(now, EventRetried, "the stored grant worked again")
	} else {
		t.Record(now, EventRefreshed, "")
	}
	return recovered
}

// Flag marks the tenant as needing re-authorization by the merchant.
func (t *Tenant) Flag(reason string, now time.Time) {
	t.Status = StatusReauthorizationRequired
	t.Reason = reason
	t.FlaggedAt = now
	t.clearMark()
	t.FailureCount++
	t.UpdatedAt = now
	t.Record(now, EventFlagged, reason)
}

// Unflag reverts Flag (the rejection turned out not to be the merchant's).
// The refresh token, which Flag kept, is used again.
func (t *Tenant) Unflag(now time.Time) {
	t.clearFlag()
	t.UpdatedAt = now
	t.Record(now, EventUnflagged, "flag reverted: one of many invalid_grant answers at once (configuration)")
}

func (t *Tenant) clearFlag() {
	t.Status, t.Reason, t.FlaggedAt = StatusActive, "", time.Time{}
}

// Import replaces the tokens with ones obtained elsewhere (admin API): the
// tenant is active, its mark and flag cleared; identity and history stay.
func (t *Tenant) Import(g Tokens, now time.Time) {
	t.AccessToken, t.AccessExpiresAt = g.Access, g.AccessExpiry
	t.RefreshToken, t.RefreshExpiresAt = g.Refresh, g.RefreshExpiry
	if g.Scope != "" {
		t.Scope = g.Scope
	}
	t.clearFlag()
	t.clearMark()
	t.FailureCount = 0
	t.UpdatedAt = now
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	t.Record(now, EventImported, "tokens imported through the admin API")
}

// Authorize applies the tokens of a completed OAuth authorization: tokens
// and scope replaced, active, mark, flag and counters cleared.
func (t *Tenant) Authorize(g Tokens, now time.Time) {
	t.Record(now, EventAuthorized, t.authorizedReason())
	t.AccessToken, t.AccessExpiresAt = g.Access, g.AccessExpiry
	t.RefreshToken, t.RefreshExpiresAt = g.Refresh, g.RefreshExpiry
	t.Scope = g.Scope
	t.clearFlag()
	t.clearMark()
	t.RefreshCount = 0
	t.FailureCount = 0
	t.AuthorizedAt = now
	t.UpdatedAt = now
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
}

// UpdateAttempts bounds Update's compare-and-set rounds.
const UpdateAttempts = 5

// ErrSkip, returned by an Update func, ends Update without writing.
var ErrSkip = errors.New("store: update skipped")

// Update reads tenant id, lets fn change a copy and writes it fenced on
// what was read, retrying on ErrConflict up to UpdateAttempts times. fn may
// run several times; it returns ErrSkip to write nothing (Update then
// returns the record read and ErrSkip) or another error to abort. It
// returns the written record.
//
// Errors: ErrNotFound, ErrConflict after UpdateAttempts lost races, fn's
// error, or the store's.
func Update(ctx context.Context, s Store, id string, fn func(t *Tenant) error) (*Tenant, error) {
	var err error
	for range UpdateAttempts {
		var cur *Tenant
		if cur, err = s.Get(ctx, id); err != nil {
			return nil, err
		}
		next := cur.Clone()
		if err := fn(next); err != nil {
			if errors.Is(err, ErrSkip) {
				return cur, err
			}
			return nil, err
		}
		if _, err = s.Put(ctx, next, cur.Version); err == nil {
			return next, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("tenant %q changed on each of %d attempts: %w", id, UpdateAttempts, err)
}
