package auth

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/store"
)

// The in-process token cache. A cached token is served without a store
// round trip while it is younger than CacheTTL; past that and for up to one
// more CacheTTL it is still served (stale-while-revalidate) while exactly
// one background re-read runs, as long as it is fresh (outside
// RefreshBefore of its expiry). Change notifications (Run) drop an entry at
// once, so a tenant written or flagged by any process is never served from
// a stale entry after its notification arrives; CacheTTL bounds how long a
// change whose notification was lost goes unseen.
//
// Entries are immutable once published in Manager.cache except for the
// atomic fields; a change replaces the entry. Manager.mu guards the map.

type cacheEntry struct {
	tok       Token
	fetchedAt time.Time // zero: must be read again before use
	retryAt   time.Time // after a transient refresh failure: keep serving until then
	reauth    *ReauthError

	usedAt       atomic.Int64 // unix ns of the last Token hit, for the background refresher
	revalidating atomic.Bool  // a background re-read of this entry runs or failed
}

// newEntry returns an entry whose usedAt is carried over from old.
func newEntry(old *cacheEntry, tok Token, fetchedAt, retryAt time.Time, re *ReauthError) *cacheEntry {
	e := &cacheEntry{tok: tok, fetchedAt: fetchedAt, retryAt: retryAt, reauth: re}
	if old != nil {
		e.usedAt.Store(old.usedAt.Load())
	}
	return e
}

func (e *cacheEntry) used() time.Time {
	if ns := e.usedAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// touch records a hit. It writes at most once a second per entry so that
// concurrent hits on one tenant do not contend on the cache line.
func (e *cacheEntry) touch(now time.Time) {
	ns := now.UnixNano()
	if ns-e.usedAt.Load() >= int64(time.Second) {
		e.usedAt.Store(ns)
	}
}

// revalidateTimeout bounds one background re-read.
const revalidateTimeout = 5 * time.Second

// cached is Token's fast path: hit reports whether tok/err answer the call
// without the slow path. e is the entry found (nil if none), for the slow
// path's fallback.
func (m *Manager) cached(tenant string, now time.Time) (e *cacheEntry, tok Token, hit bool, err error) {
	m.mu.RLock()
	e = m.cache[tenant]
	m.mu.RUnlock()
	if e == nil {
		return nil, Token{}, false, nil
	}
	e.touch(now)
	if e.fetchedAt.IsZero() {
		return e, Token{}, false, nil
	}
	age := now.Sub(e.fetchedAt)
	if age < m.opts.CacheTTL {
		if e.reauth != nil {
			return e, Token{}, true, e.reauth
		}
		if m.fresh(e.tok.Expiry, now) || (now.Before(e.retryAt) && m.usable(e.tok.Expiry)) {
			return e, e.tok, true, nil
		}
		return e, Token{}, false, nil
	}
	if age < 2*m.opts.CacheTTL && e.reauth == nil && m.fresh(e.tok.Expiry, now) {
		m.revalidate(tenant, e)
		return e, e.tok, true, nil
	}
	return e, Token{}, false, nil
}

// revalidate re-reads tenant's record in the background, once per entry.
// The result replaces e only if e is still the cached entry: anything that
// replaced it meanwhile (a notification, a refresh) is at least as new. A
// failed read leaves e marked, so no second read starts; once e is older
// than 2×CacheTTL the request path reads (and falls back) itself.
func (m *Manager) revalidate(tenant string, e *cacheEntry) {
	if !e.revalidating.CompareAndSwap(false, true) {
		return
	}
	go func() {
		if m.revalidated != nil {
			defer m.revalidated(tenant)
		}
		ctx, cancel := context.WithTimeout(context.Background(), revalidateTimeout)
		defer cancel()
		rec, err := m.store.Get(ctx, tenant)
		now := m.now()
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.cache[tenant] != e {
			return
		}
		switch {
		case errors.Is(err, store.ErrNotFound):
			m.cache[tenant] = newEntry(e, Token{}, time.Time{}, time.Time{}, nil)
		case err != nil:
			m.log.Debug("cache re-read failed; serving the cached token", zap.String("tenant", tenant), zap.Error(err))
		case rec.Version < e.tok.Version:
			// An older replica answered (a Redis replica lagging): keep ours.
		case rec.Status == store.StatusReauthorizationRequired:
			re := &ReauthError{Tenant: rec.ID, Reason: rec.Reason, Since: rec.FlaggedAt}
			m.cache[tenant] = newEntry(e, Token{}, now, time.Time{}, re)
		case m.fresh(rec.AccessExpiresAt, now):
			tok := Token{AccessToken: rec.AccessToken, Expiry: rec.AccessExpiresAt, Version: rec.Version, DomainPrefix: rec.Extra["domain_prefix"]}
			m.cache[tenant] = newEntry(e, tok, now, time.Time{}, nil)
		default:
			// Due for a refresh: the next request takes the slow path.
			m.cache[tenant] = newEntry(e, Token{}, time.Time{}, time.Time{}, nil)
		}
	}()
}

// remember caches what rec says (re: the tenant is flagged; retryAt: keep
// serving a valid token until then after a transient failure) and returns
// rec's token.
func (m *Manager) remember(rec *store.Tenant, re *ReauthError, retryAt time.Time) Token {
	tok := Token{AccessToken: rec.AccessToken, Expiry: rec.AccessExpiresAt, Version: rec.Version, DomainPrefix: rec.Extra["domain_prefix"]}
	now := m.now()
	m.mu.Lock()
	m.cache[rec.ID] = newEntry(m.cache[rec.ID], tok, now, retryAt, re)
	m.mu.Unlock()
	return tok
}

// markUsed records that tenant was just served.
func (m *Manager) markUsed(tenant string, now time.Time) {
	m.mu.RLock()
	e := m.cache[tenant]
	m.mu.RUnlock()
	if e != nil {
		e.touch(now)
	}
}

// Invalidate drops the cached token of a tenant; the next Token call reads
// the store.
func (m *Manager) Invalidate(tenant string) {
	m.mu.Lock()
	if e := m.cache[tenant]; e != nil {
		m.cache[tenant] = newEntry(e, Token{}, time.Time{}, time.Time{}, nil) // keep only "in use"
	}
	m.mu.Unlock()
}

// distrustAll makes every cached entry be read again before it is served
// (the read's failure still falls back to a valid cached token): change
// notifications may have been missed.
func (m *Manager) distrustAll() {
	m.mu.Lock()
	for id, e := range m.cache {
		m.cache[id] = newEntry(e, e.tok, time.Time{}, time.Time{}, nil)
	}
	m.mu.Unlock()
}

// Resubscription backoff of Run.
const (
	resubscribeMin = 100 * time.Millisecond
	resubscribeMax = 30 * time.Second
)

// Run drops cached tokens when any process changes a tenant, until ctx is
// done; it always returns nil then. A failed or ended subscription is
// retried with exponential backoff (resubscribeMin to resubscribeMax);
// after such a gap every cached entry is read again before it is served,
// because notifications sent meanwhile are lost.
func (m *Manager) Run(ctx context.Context) error {
	backoff := resubscribeMin
	gap := false
	for ctx.Err() == nil {
		ch, err := m.store.Subscribe(ctx)
		if err != nil {
			m.log.Warn("change notifications unavailable; retrying", zap.Duration("in", backoff), zap.Error(err))
			gap = true
		} else {
			if gap {
				m.distrustAll()
				m.log.Info("change notifications resumed")
			}
			gap = false
			since := time.Now()
			for id := range ch {
				if id == "" { // the store lost ids: anything may have changed
					m.distrustAll()
					continue
				}
				m.Invalidate(id)
			}
			if ctx.Err() != nil {
				break
			}
			gap = true
			m.distrustAll()
			m.log.Warn("change notifications interrupted; resubscribing", zap.Duration("in", backoff))
			if time.Since(since) > resubscribeMax {
				backoff = resubscribeMin // it had been working: start over
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, resubscribeMax)
	}
	return nil
}

// inUseWindow: a tenant requested within this long counts as in use.
const inUseWindow = time.Hour

// inUse reports whether this process served tenant recently.
func (m *Manager) inUse(tenant string) bool {
	m.mu.RLock()
	e := m.cache[tenant]
	m.mu.RUnlock()
	if e == nil {
		return false
	}
	u := e.used()
	return !u.IsZero() && m.now().Sub(u) < inUseWindow
}

// expiringInUse lists tenants served recently whose cached token (if any)
// expires within d: the background refresher's candidates.
func (m *Manager) expiringInUse(d time.Duration) []string {
	now := m.now()
	m.mu.RLock()
	defer m.mu.RUnlock()
	var ids []string
	for id, e := range m.cache {
		u := e.used()
		if e.reauth == nil && !u.IsZero() && now.Sub(u) < inUseWindow && e.tok.Expiry.Sub(now) < d {
			ids = append(ids, id)
		}
	}
	return ids
}
