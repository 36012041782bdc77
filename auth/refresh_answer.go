package auth

import (
	"errors"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// Answers from a record without a refresh, used along the acquisition
// path in refresh.go: before it refreshes and after it failed.

// useStored decides from a record alone when it can: a flagged or pending
// tenant (pending: awaiting its first authorization, answered like a
// flagged one, with its reason), a
// token another process already refreshed, or a fresh one. It returns
// done=false when the record must be refreshed.
func (m *Manager) useStored(rec *store.Tenant, w want) (Token, bool, error) {
	if rec.Status != store.StatusActive {
		if w.retry && rec.RefreshToken != "" {
			return Token{}, false, nil
		}
		re := &ReauthError{Tenant: rec.ID, Reason: rec.Reason, Since: rec.FlaggedAt}
		m.remember(rec, re, time.Time{}, w.since)
		return Token{}, true, re
	}
	now := m.now()
	if w.force && rec.AccessToken == w.used && !rec.LastRefreshAt.IsZero() && now.Sub(rec.LastRefreshAt) < w.minAge {
		return m.remember(rec, nil, time.Time{}, w.since), true, nil
	}
	if w.force && rec.AccessToken == w.used {
		return Token{}, false, nil
	}
	if w.force && now.Before(rec.AccessExpiresAt) {
		return m.remember(rec, nil, time.Time{}, w.since), true, nil // someone already replaced the used token
	}
	if m.fresh(rec.AccessExpiresAt, now) {
		return m.remember(rec, nil, time.Time{}, w.since), true, nil
	}
	return Token{}, false, nil
}

// staleOrUnavailable answers after a failure: a still-valid access token
// keeps being served (and is not retried for a second), else
// *UnavailableError (503 token_unavailable).
func (m *Manager) staleOrUnavailable(rec *store.Tenant, cause error) (Token, error) {
	retry := min(m.opts.BreakerOpenFor, 5*time.Second)
	if ue := (*UnavailableError)(nil); errors.As(cause, &ue) {
		cause = ue.Err
		if errors.Is(cause, ErrPaced) && ue.RetryAfter > 0 {
			retry = ue.RetryAfter // the budget says when (rule 18)
		}
	}
	if m.usable(rec.AccessExpiresAt) && rec.AccessToken != "" {
		return m.remember(rec, nil, m.now().Add(time.Second), watch{}), nil
	}
	return Token{}, &UnavailableError{Tenant: rec.ID, RetryAfter: retry, Err: cause}
}
