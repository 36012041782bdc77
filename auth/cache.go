package auth

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/store"
)

// The in-process token cache. A cached token is served without a store
// round trip while it is younger than CacheTTL, and past that for as long
// as it is trusted: read while change notifications were live (Run) and
// with no change notified, and no notification lost, since the read began.
// Notifications (Run) drop an entry at once, so a tenant written or flagged
// by any process is never served from a stale entry after its notification
// arrives; a gap in notifications takes every entry's trust away. So with
// live notifications a tenant in use costs no store command until its
// token is due for a refresh or it changes.
//
// An entry without trust (read before notifications were live, or while a
// change was notified) is re-read once it is older than CacheTTL: for up
// to one more CacheTTL it is still served (stale-while-revalidate) while
// exactly one background re-read runs, as long as it is fresh (outside
// RefreshBefore of its expiry). CacheTTL bounds how long a change goes
// unseen when notifications are not known to work.
//
// A notification can also be lost without a gap being seen: a writer's
// publish that failed. Such a writer counts the loss in the store
// (store.NotifyLosses), and trust past CacheTTL holds only while that count
// was seen unchanged less than CacheTTL ago (read every CacheTTL/2 by Run;
// SPEC §3 rule 21): a grown count takes every entry's trust away, and a
// flagged entry is read again rather than served on a stale count.
//
// What trust still cannot cover is a writer that died between its write
// and its publish (nothing counted the loss). Then this process serves the
// tenant's previous token until that token is due for a refresh
// (RefreshBefore of its expiry) or the upstream answers 401, and both read
// the store again; a flagged tenant until its flag is read again.
//
// Entries are immutable once published in Manager.cache except for the
// atomic fields and slot; a change replaces the entry. Manager.mu guards
// the map and the bound (clock).
//
// The bound (ManagerOptions.CacheMaxBytes): every entry's estimated size
// (entrySize) is counted, and an insert that takes the total past the bound
// evicts with CLOCK (second chance). A hit sets the entry's reference bit
// (one atomic load, and a store only when it was clear: no lock, no
// allocation); the hand clears set bits as it passes and evicts the first
// entry whose bit is clear. A new entry starts with its bit clear and, once
// the cache is full, sits where the hand is (the eviction moved it there):
// a scan of one-off tenants evicts itself, while a tenant hit between two
// evictions gets a full turn of the hand. Eviction only forgets: the next
// request for that tenant reads the store (the slow path, with every
// protocol rule), and an evicted entry's background re-read finds it gone
// and does nothing.

type cacheEntry struct {
	tok       Token
	fetchedAt time.Time // zero: must be read again before use
	retryAt   time.Time // after a transient refresh failure: keep serving until then
	reauth    *ReauthError
	trusted   bool // served past CacheTTL: see the top of this file

	usedAt       atomic.Int64 // unix ns of the last Token hit, for the background refresher
	revalidating atomic.Bool  // a background re-read of this entry runs or failed
	ref          atomic.Bool  // CLOCK's reference bit: hit since the hand last passed

	size int64 // entrySize, set by put
	slot int   // index in clock.ring; under Manager.mu
}

// entryOverhead is what an entry costs besides its strings: the entry, the
// map slot, the ring slot and the string headers (about 300 bytes measured
// on amd64 by TestCacheSizeEstimate; rounded up).
const entryOverhead = 352

// entrySize estimates the heap an entry for tenant holds. The access token
// is counted once: AccessToken shares the Authorization value's memory.
func entrySize(tenant string, e *cacheEntry) int64 {
	n := entryOverhead + len(tenant) + len(e.tok.authorization) + len(e.tok.DomainPrefix)
	if e.tok.authorization == "" {
		n += len(e.tok.AccessToken)
	}
	if e.reauth != nil {
		n += 64 + len(e.reauth.Tenant) + len(e.reauth.Reason)
	}
	return int64(n)
}

// clock is the cache's bound; under Manager.mu.
type clock struct {
	max       int64    // <= 0: unbounded
	bytes     int64    // sum of the entries' sizes
	ring      []string // cached tenants; an entry's slot is its index
	hand      int
	evictions uint64
}

// CacheStats describe the token cache.
type CacheStats struct {
	Entries   int
	Bytes     int64 // estimated (entrySize)
	MaxBytes  int64 // <= 0: unbounded
	Evictions uint64
}

// CacheStats returns the cache's current size and evictions so far.
func (m *Manager) CacheStats() CacheStats {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return CacheStats{Entries: len(m.cache), Bytes: m.clock.bytes, MaxBytes: m.clock.max, Evictions: m.clock.evictions}
}

// put publishes e as tenant's entry and evicts past the bound. Call with
// m.mu held for writing.
func (m *Manager) put(tenant string, e *cacheEntry) {
	e.size = entrySize(tenant, e)
	if old := m.cache[tenant]; old != nil {
		e.slot = old.slot
		m.clock.bytes += e.size - old.size
	} else {
		e.slot = len(m.clock.ring)
		m.clock.ring = append(m.clock.ring, tenant)
		m.clock.bytes += e.size
	}
	m.cache[tenant] = e
	if m.clock.max > 0 && m.clock.bytes > m.clock.max {
		m.evict(tenant)
	}
	m.opts.Metrics.cacheSize(len(m.cache), m.clock.bytes)
}

// evict runs the hand until the cache fits its bound, sparing keep (the
// entry just put) and entries hit since the hand last passed them. Each
// victim is found within two turns of the hand (the first clears every
// bit), so the loop is bounded.
func (m *Manager) evict(keep string) {
	c := &m.clock
	for steps := 2*len(c.ring) + 2; c.bytes > c.max && len(c.ring) > 1 && steps > 0; steps-- {
		if c.hand >= len(c.ring) {
			c.hand = 0
		}
		id := c.ring[c.hand]
		e := m.cache[id]
		if id == keep || e.ref.Swap(false) {
			c.hand++
			continue
		}
		m.remove(id, e)
		c.evictions++
		m.opts.Metrics.cacheEvicted()
		steps = 2*len(c.ring) + 2 // the next victim gets its own bound
	}
}

// remove drops tenant's entry e (the one in m.cache) and its ring slot:
// the ring's last tenant moves into the slot. Call with m.mu held.
func (m *Manager) remove(tenant string, e *cacheEntry) {
	c := &m.clock
	last := len(c.ring) - 1
	if e.slot != last {
		moved := c.ring[last]
		c.ring[e.slot] = moved
		m.cache[moved].slot = e.slot
	}
	c.ring[last] = ""
	c.ring = c.ring[:last]
	c.bytes -= e.size
	delete(m.cache, tenant)
}

// newEntry returns an entry whose usedAt is carried over from old.
func newEntry(old *cacheEntry, tok Token, fetchedAt, retryAt time.Time, re *ReauthError) *cacheEntry {
	e := &cacheEntry{tok: tok.withAuthorization(), fetchedAt: fetchedAt, retryAt: retryAt, reauth: re}
	if old != nil {
		e.usedAt.Store(old.usedAt.Load())
		e.ref.Store(old.ref.Load())
	}
	return e
}

// watch is taken before the store reads an entry is built from: trust
// requires notifications live then and no change counted since.
type watch struct {
	changes uint64
	live    bool
}

// watchChanges returns the watch for reads that begin now.
func (m *Manager) watchChanges() watch {
	live := m.notifying.Load() // before changes: Run bumps changes before setting it
	return watch{changes: m.changes.Load(), live: live}
}

// trusts reports whether an entry read under w may be served past CacheTTL.
// Call with m.mu held, so that no invalidation slips in before the entry is
// published.
func (m *Manager) trusts(w watch) bool {
	return w.live && m.notifying.Load() && m.changes.Load() == w.changes
}

// trustedEntry is newEntry for a token read under w.
func (m *Manager) trustedEntry(old *cacheEntry, tok Token, fetchedAt, retryAt time.Time, re *ReauthError, w watch) *cacheEntry {
	e := newEntry(old, tok, fetchedAt, retryAt, re)
	e.trusted = m.trusts(w)
	return e
}

func (e *cacheEntry) used() time.Time {
	if ns := e.usedAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// touch records a use. It writes at most once a second per entry so that
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
	if !e.ref.Load() { // a store only when clear: no contention on hot tenants
		e.ref.Store(true)
	}
	if e.fetchedAt.IsZero() {
		return e, Token{}, false, nil
	}
	age := now.Sub(e.fetchedAt)
	if age < m.opts.CacheTTL || e.trusted && m.trustHolds(e, now) {
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

// trustHolds reports whether a trusted entry older than CacheTTL may still
// be served (SPEC §3 rule 21): only while the store's count of lost
// notifications was seen unchanged less than CacheTTL ago. Otherwise a
// check starts in the background; meanwhile a flagged answer is read again
// (the slow path) and a fresh token is served (the check takes every
// entry's trust away if a notification was lost).
func (m *Manager) trustHolds(e *cacheEntry, now time.Time) bool {
	if m.losses == nil {
		return true // the store reports every loss as a gap (Subscribe)
	}
	if checked := m.lossCheckedAt.Load(); checked != 0 && now.Sub(time.Unix(0, checked)) < m.opts.CacheTTL {
		return true
	}
	m.checkLosses()
	if e.reauth != nil && defect.On(defect.TrustFlaggedForever) {
		return true // the old cache: a flagged entry trusted without bound
	}
	return e.reauth == nil
}

// lossCheckTimeout bounds one read of the lost-notification count.
const lossCheckTimeout = time.Second

// checkLosses reads the store's count of lost notifications in the
// background (one read at a time): grown since the last read, every
// entry's trust is taken away; either way the time of the read is kept.
func (m *Manager) checkLosses() {
	if m.losses == nil || !m.lossChecking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer m.lossChecking.Store(false)
		m.readLosses(context.Background())
	}()
}

// readLosses reads the count of lost notifications now. The first read
// (and the first after a failed one) takes every entry's trust away: a
// loss before it could not be compared.
func (m *Manager) readLosses(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, lossCheckTimeout)
	defer cancel()
	n, err := m.losses.LostNotifications(ctx)
	if err != nil {
		m.lossKnown.Store(false)
		m.log.Debug("lost change notifications unknown (store)", zap.Error(err))
		return
	}
	if !m.lossKnown.Load() || m.lossCount.Load() != n {
		if m.lossKnown.Load() {
			m.log.Warn("a change notification was lost (a writer's publish failed): every cached entry is read again")
		}
		m.distrustAll()
		m.lossCount.Store(n)
		m.lossKnown.Store(true)
	}
	m.lossCheckedAt.Store(m.now().UnixNano())
}

// runLossChecks reads the count of lost notifications every CacheTTL/2
// until ctx ends, so that trusted entries stay trusted without re-reads.
func (m *Manager) runLossChecks(ctx context.Context) {
	if m.losses == nil {
		return
	}
	t := time.NewTicker(max(m.opts.CacheTTL/2, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if m.lossChecking.CompareAndSwap(false, true) {
				m.readLosses(ctx)
				m.lossChecking.Store(false)
			}
		}
	}
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
		w := m.watchChanges()
		rec, err := m.store.Get(ctx, tenant)
		now := m.now()
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.cache[tenant] != e {
			return
		}
		switch {
		case errors.Is(err, store.ErrNotFound):
			m.put(tenant, newEntry(e, Token{}, time.Time{}, time.Time{}, nil))
		case err != nil:
			m.log.Debug("cache re-read failed; serving the cached token", zap.String("tenant", tenant), zap.Error(err))
		case rec.Version < e.tok.Version:
			// An older replica answered (a Redis replica lagging): keep ours.
		case rec.Status != store.StatusActive: // flagged or pending
			re := &ReauthError{Tenant: rec.ID, Reason: rec.Reason, Since: rec.FlaggedAt}
			m.put(tenant, m.trustedEntry(e, Token{}, now, time.Time{}, re, w))
		case m.fresh(rec.AccessExpiresAt, now):
			tok := Token{AccessToken: rec.AccessToken, Expiry: rec.AccessExpiresAt, Version: rec.Version, DomainPrefix: rec.Extra["domain_prefix"]}
			m.put(tenant, m.trustedEntry(e, tok, now, time.Time{}, nil, w))
		default:
			// Due for a refresh: the next request takes the slow path.
			m.put(tenant, newEntry(e, Token{}, time.Time{}, time.Time{}, nil))
		}
	}()
}

// remember caches what rec says (re: the tenant is flagged; retryAt: keep
// serving a valid token until then after a transient failure) and returns
// rec's token. w is the watch taken before rec was read; the zero watch
// never trusts.
func (m *Manager) remember(rec *store.Tenant, re *ReauthError, retryAt time.Time, w watch) Token {
	tok := Token{AccessToken: rec.AccessToken, Expiry: rec.AccessExpiresAt, Version: rec.Version, DomainPrefix: rec.Extra["domain_prefix"]}
	now := m.now()
	m.mu.Lock()
	m.put(rec.ID, m.trustedEntry(m.cache[rec.ID], tok, now, retryAt, re, w))
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
	m.changes.Add(1)
	if e := m.cache[tenant]; e != nil {
		m.put(tenant, newEntry(e, Token{}, time.Time{}, time.Time{}, nil)) // keep only "in use"
	}
	m.mu.Unlock()
}

// distrustAll makes every cached entry be read again before it is served
// (the read's failure still falls back to a valid cached token): change
// notifications may have been missed.
func (m *Manager) distrustAll() {
	m.mu.Lock()
	m.changes.Add(1)
	for id, e := range m.cache {
		m.put(id, newEntry(e, e.tok, time.Time{}, time.Time{}, nil)) // same size: evicts nothing
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
	go m.runGuard(ctx)      // the fleet guard's pending reverts (guard.go)
	go m.runLossChecks(ctx) // lost notifications (rule 21)
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
			if m.losses != nil && m.lossChecking.CompareAndSwap(false, true) {
				m.readLosses(ctx) // the baseline for losses from here on
				m.lossChecking.Store(false)
			}
			// From here every change is delivered: reads that begin now
			// may be trusted (changes first: see watchChanges).
			m.changes.Add(1)
			m.notifying.Store(true)
			if m.notifyingLive != nil {
				m.notifyingLive()
			}
			since := time.Now()
			for id := range ch {
				if id == "" { // the store lost ids: anything may have changed
					m.distrustAll()
					continue
				}
				m.Invalidate(id)
			}
			m.notifying.Store(false)
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
