package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/lsproxy/lsproxy/store"
)

// Token is a tenant's current access token.
type Token struct {
	AccessToken string
	Expiry      time.Time
	Version     int64 // record version it was read from
}

// ManagerOptions configure a Manager. Zero values take the documented defaults.
type ManagerOptions struct {
	// RefreshBefore: an access token closer than this to its expiry is
	// refreshed. Default 30s.
	RefreshBefore time.Duration
	// LockTTL must exceed the refresher's hard timeout so a live holder never
	// loses the lock mid-request. Default 25s.
	LockTTL time.Duration
	// CacheTTL bounds how long a cached token is used without re-reading the
	// store, in case change notifications were lost. Default 60s.
	CacheTTL time.Duration
	// WaitFor bounds how long one token acquisition (lock wait + refresh +
	// write) may take, independent of the caller. Default LockTTL + 5s.
	WaitFor time.Duration
	// BreakerFailures consecutive transient failures open the breaker.
	// Default 5.
	BreakerFailures uint32
	// BreakerOpenFor is how long the open breaker rejects. Default 5s.
	BreakerOpenFor time.Duration
	// Logger; nil = no logging.
	Logger *zap.Logger
	// Metrics; nil = not recorded.
	Metrics *Metrics
	// OnFlag is called (in its own goroutine) after a tenant is flagged;
	// nil = nothing.
	OnFlag func(tenant, reason string)
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

// Manager hands out access tokens, refreshing them so that a single-use
// refresh token is sent at most once: singleflight per tenant in a process,
// the store lock across processes, a re-check under the lock, and a write
// fenced by the record version. All methods are safe for concurrent use.
type Manager struct {
	store     store.Store
	refresher Refresher
	opts      ManagerOptions
	breaker   *gobreaker.CircuitBreaker[*Grant]
	group     singleflight.Group
	log       *zap.Logger
	now       func() time.Time

	mu      sync.Mutex
	cache   map[string]*cacheEntry
	closing bool // set by Wait: no acquisition starts any more

	// inflight counts running acquisitions, awaited by Wait at shutdown.
	// Add happens only under mu while !closing, so it never races with
	// Wait and no refresh starts after Wait decided it is done.
	inflight sync.WaitGroup
}

type cacheEntry struct {
	tok       Token
	fetchedAt time.Time
	usedAt    time.Time // last Token hit, for the background refresher
	retryAt   time.Time // after a transient refresh failure: keep serving until then
	reauth    *ReauthError
}

// NewManager returns a Manager. Call Run to follow other replicas' changes.
func NewManager(s store.Store, r Refresher, opts ManagerOptions) *Manager {
	if opts.RefreshBefore <= 0 {
		opts.RefreshBefore = 30 * time.Second
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = 25 * time.Second
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 60 * time.Second
	}
	if opts.WaitFor <= 0 {
		opts.WaitFor = opts.LockTTL + 5*time.Second
	}
	if opts.BreakerFailures == 0 {
		opts.BreakerFailures = 5
	}
	if opts.BreakerOpenFor <= 0 {
		opts.BreakerOpenFor = 5 * time.Second
	}
	m := &Manager{
		store:     s,
		refresher: r,
		opts:      opts,
		log:       opts.Logger,
		now:       opts.Now,
		cache:     make(map[string]*cacheEntry),
	}
	if m.log == nil {
		m.log = zap.NewNop()
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.breaker = gobreaker.NewCircuitBreaker[*Grant](gobreaker.Settings{
		Name:        "token-endpoint",
		MaxRequests: 1,
		Timeout:     opts.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= opts.BreakerFailures },
		// A rejected grant is a healthy endpoint's answer about one tenant.
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, ErrInvalidGrant) },
		IsExcluded:   func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			m.log.Warn("token endpoint breaker", zap.String("from", from.String()), zap.String("to", to.String()))
			opts.Metrics.breakerState(to)
		},
	})
	return m
}

// Run drops cached tokens when any process changes a tenant, until ctx is
// done. It returns the store's Subscribe error, or nil at ctx end.
func (m *Manager) Run(ctx context.Context) error {
	ch, err := m.store.Subscribe(ctx)
	if err != nil {
		return err
	}
	for id := range ch {
		m.Invalidate(id)
	}
	return nil
}

// Invalidate drops the cached token of a tenant.
func (m *Manager) Invalidate(tenant string) {
	m.mu.Lock()
	if e := m.cache[tenant]; e != nil {
		m.cache[tenant] = &cacheEntry{usedAt: e.usedAt} // keep only "in use"
	}
	m.mu.Unlock()
}

// Wait blocks until running token acquisitions (refresh and write) finish
// or ctx ends; call it at shutdown after the servers stopped. From the
// call on, a token that needs an acquisition is refused with
// *UnavailableError (cached tokens keep being served), so no refresh starts
// that the exiting process could abandon. It returns ctx's error if
// acquisitions were still running.
func (m *Manager) Wait(ctx context.Context) error {
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// BreakerOpen reports whether the token endpoint breaker rejects requests.
func (m *Manager) BreakerOpen() bool { return m.breaker.State() == gobreaker.StateOpen }

// Token returns a valid access token for tenant.
//
// Errors: ErrUnknownTenant, *ReauthError (ErrReauthorizationRequired),
// *UnavailableError (ErrTokenUnavailable), or ctx's error.
func (m *Manager) Token(ctx context.Context, tenant string) (Token, error) {
	now := m.now()
	m.mu.Lock()
	e := m.cache[tenant]
	if e != nil {
		e.usedAt = now
	}
	m.mu.Unlock()
	if e != nil && now.Sub(e.fetchedAt) < m.opts.CacheTTL {
		if e.reauth != nil {
			return Token{}, e.reauth
		}
		if m.fresh(e.tok.Expiry, now) || (now.Before(e.retryAt) && m.usable(e.tok.Expiry)) {
			m.opts.Metrics.cacheLookup(true)
			return e.tok, nil
		}
	}
	m.opts.Metrics.cacheLookup(false)
	tok, err := m.shared(ctx, "get", tenant, func(ctx context.Context) (Token, error) {
		return m.acquire(ctx, tenant, want{})
	})
	if err != nil && e != nil && e.reauth == nil && m.usable(e.tok.Expiry) && errors.Is(err, ErrTokenUnavailable) {
		// Store or endpoint trouble: a still-valid token keeps serving.
		return e.tok, nil
	}
	if err == nil {
		m.mu.Lock()
		if e := m.cache[tenant]; e != nil {
			e.usedAt = now
		}
		m.mu.Unlock()
	}
	return tok, err
}

// Recover is called after the upstream rejected used with 401. If the stored
// token differs, it is returned; otherwise the tenant is refreshed once
// (shared by concurrent callers). Errors as for Token.
func (m *Manager) Recover(ctx context.Context, tenant, used string) (Token, error) {
	m.Invalidate(tenant)
	return m.shared(ctx, "recover", tenant, func(ctx context.Context) (Token, error) {
		return m.acquire(ctx, tenant, want{force: true, used: used, minAge: recoverMinAge})
	})
}

// recoverMinAge: a 401 on a token refreshed less than this ago does not
// force another refresh, so an endpoint that answers 401 for its own
// reasons cannot make lsproxy churn refresh tokens.
const recoverMinAge = 10 * time.Second

// ForceRefresh refreshes tenant now, whatever its token's expiry. Errors as
// for Token.
func (m *Manager) ForceRefresh(ctx context.Context, tenant string) (Token, error) {
	rec, err := m.store.Get(ctx, tenant)
	if err != nil {
		return Token{}, m.storeErr(tenant, err)
	}
	m.Invalidate(tenant)
	return m.shared(ctx, "recover", tenant, func(ctx context.Context) (Token, error) {
		return m.acquire(ctx, tenant, want{force: true, used: rec.AccessToken})
	})
}

// shared runs fn once per kind and tenant at a time in this process. fn
// runs on a context detached from the caller's (bounded by WaitFor) so that
// one caller giving up never abandons a refresh between the token response
// and its write; the caller itself stops waiting when its ctx ends. Once
// Wait was called, fn does not run and *UnavailableError is returned.
func (m *Manager) shared(ctx context.Context, kind, tenant string, fn func(context.Context) (Token, error)) (Token, error) {
	ch := m.group.DoChan(kind+":"+tenant, func() (any, error) {
		if !m.begin() {
			return nil, &UnavailableError{Tenant: tenant, RetryAfter: time.Second, Err: errShuttingDown}
		}
		defer m.inflight.Done()
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.WaitFor)
		defer cancel()
		return fn(c)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// errShuttingDown: Wait was called; no acquisition starts any more.
var errShuttingDown = errors.New("auth: shutting down")

// begin counts a new acquisition, or reports false once Wait was called.
func (m *Manager) begin() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return false
	}
	m.inflight.Add(1)
	return true
}

// clockSkew is the clock difference tolerated between replicas when one
// judges another's in-flight mark.
const clockSkew = 2 * time.Second

// expirySafety: a token this close to its expiry is not sent at all; the
// provider's clock may run ahead of ours and reject it in flight.
const expirySafety = 2 * time.Second

// usable reports whether a token that could not be refreshed may still be
// served.
func (m *Manager) usable(expiry time.Time) bool {
	return expiry.Sub(m.now()) > expirySafety
}

func (m *Manager) fresh(expiry, now time.Time) bool {
	return expiry.Sub(now) > m.opts.RefreshBefore
}

// want says what a caller needs from acquire.
type want struct {
	force  bool          // refresh even a fresh token, unless the stored one differs from used
	used   string        // the access token the caller already has
	minAge time.Duration // with force: no refresh if the last one is younger than this
}

// acquire is the slow path: read, and when needed refresh under the lock.
func (m *Manager) acquire(ctx context.Context, tenant string, w want) (Token, error) {
	rec, err := m.store.Get(ctx, tenant)
	if err != nil {
		return Token{}, m.storeErr(tenant, err)
	}
	for attempt := 0; ; attempt++ {
		if res, done, err := m.settled(rec, w); done {
			return res, err
		}
		lockStart := m.now()
		lock, err := m.store.TryLock(ctx, "tenant:"+tenant, m.opts.LockTTL)
		switch {
		case errors.Is(err, store.ErrLockHeld):
			// Another process refreshes: wait for its write.
			rec, err = m.waitForChange(ctx, tenant, rec.Version)
			if err != nil {
				return Token{}, err
			}
			continue
		case err != nil:
			return Token{}, m.storeErr(tenant, err)
		}
		m.opts.Metrics.lockWait(m.now().Sub(lockStart))
		stopRenew := m.renew(ctx, tenant, lock)
		tok, err := m.refreshLocked(ctx, tenant, w)
		stopRenew()
		if rerr := lock.Release(context.WithoutCancel(ctx)); rerr != nil {
			m.log.Warn("lock release", zap.String("tenant", tenant), zap.Error(rerr))
		}
		return tok, err
	}
}

// renew extends the lock every LockTTL/3 while the holder works, so a slow
// token endpoint or a store outage during the write never lets a second
// process refresh with the same refresh token. The returned func stops it.
func (m *Manager) renew(ctx context.Context, tenant string, lock store.Lock) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(m.opts.LockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := lock.Refresh(context.WithoutCancel(ctx), m.opts.LockTTL); err != nil {
					m.log.Warn("lock renewal failed", zap.String("tenant", tenant), zap.Error(err))
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// settled decides without refreshing when possible.
func (m *Manager) settled(rec *store.Tenant, w want) (Token, bool, error) {
	if rec.Status == store.StatusReauthorizationRequired {
		re := &ReauthError{Tenant: rec.ID, Reason: rec.Reason, Since: rec.FlaggedAt}
		m.remember(rec, re, time.Time{})
		return Token{}, true, re
	}
	now := m.now()
	if w.force && rec.AccessToken == w.used && !rec.LastRefreshAt.IsZero() && now.Sub(rec.LastRefreshAt) < w.minAge {
		return m.remember(rec, nil, time.Time{}), true, nil
	}
	if w.force && rec.AccessToken == w.used {
		return Token{}, false, nil
	}
	if w.force && now.Before(rec.AccessExpiresAt) {
		return m.remember(rec, nil, time.Time{}), true, nil // someone already replaced the used token
	}
	if m.fresh(rec.AccessExpiresAt, now) {
		return m.remember(rec, nil, time.Time{}), true, nil
	}
	return Token{}, false, nil
}

func (m *Manager) remember(rec *store.Tenant, re *ReauthError, retryAt time.Time) Token {
	tok := Token{AccessToken: rec.AccessToken, Expiry: rec.AccessExpiresAt, Version: rec.Version}
	now := m.now()
	m.mu.Lock()
	var usedAt time.Time
	if old := m.cache[rec.ID]; old != nil {
		usedAt = old.usedAt
	}
	m.cache[rec.ID] = &cacheEntry{tok: tok, fetchedAt: now, usedAt: usedAt, retryAt: retryAt, reauth: re}
	m.mu.Unlock()
	return tok
}

// inUseWindow: a tenant requested within this long counts as in use.
const inUseWindow = time.Hour

// inUse reports whether this process served tenant recently.
func (m *Manager) inUse(tenant string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.cache[tenant]
	return e != nil && !e.usedAt.IsZero() && m.now().Sub(e.usedAt) < inUseWindow
}

// expiringInUse lists tenants served recently whose cached token (if any)
// expires within d: the background refresher's candidates.
func (m *Manager) expiringInUse(d time.Duration) []string {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id, e := range m.cache {
		if e.reauth == nil && !e.usedAt.IsZero() && now.Sub(e.usedAt) < inUseWindow && e.tok.Expiry.Sub(now) < d {
			ids = append(ids, id)
		}
	}
	return ids
}

// refreshIfUnchanged refreshes rec's tenant unless another process already
// replaced the access token seen in rec (background refresher).
func (m *Manager) refreshIfUnchanged(ctx context.Context, rec *store.Tenant) (Token, error) {
	return m.shared(ctx, "recover", rec.ID, func(ctx context.Context) (Token, error) {
		return m.acquire(ctx, rec.ID, want{force: true, used: rec.AccessToken})
	})
}

// waitForChange polls the record until its version passes seen, the lock
// is free (holder died), or ctx ends.
func (m *Manager) waitForChange(ctx context.Context, tenant string, seen int64) (*store.Tenant, error) {
	delay := 10 * time.Millisecond
	for {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, &UnavailableError{Tenant: tenant, RetryAfter: time.Second, Err: errors.New("timed out waiting for another replica's refresh")}
		case <-t.C:
		}
		rec, err := m.store.Get(ctx, tenant)
		if err != nil {
			return nil, m.storeErr(tenant, err)
		}
		if rec.Version > seen {
			return rec, nil
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
		// Also return when the lock is free so the caller can take it.
		if l, err := m.store.TryLock(ctx, "tenant:"+tenant, time.Millisecond); err == nil {
			_ = l.Release(ctx)
			return rec, nil
		}
	}
}

// refreshLocked runs with the tenant lock held.
func (m *Manager) refreshLocked(ctx context.Context, tenant string, w want) (Token, error) {
	cur, err := m.store.Get(ctx, tenant) // re-check under the lock
	if err != nil {
		return Token{}, m.storeErr(tenant, err)
	}
	if res, done, err := m.settled(cur, w); done {
		return res, err
	}
	if m.BreakerOpen() {
		return m.unavailable(cur, ErrBreakerOpen)
	}
	interrupted := cur.RefreshInFlight
	if interrupted && m.now().Before(cur.RefreshStartedAt.Add(m.opts.WaitFor+clockSkew)) {
		// An earlier holder may still be writing its result (its lock can
		// expire while the store is unreachable): sending the same refresh
		// token now could burn the grant it is about to store.
		return m.unavailable(cur, errors.New("an earlier refresh may still complete"))
	}

	// Record that a refresh is in flight before sending it: if this process
	// dies or the answer is lost, the next holder knows the stored refresh
	// token may already be spent.
	marked := cur.Clone()
	marked.RefreshInFlight = true
	marked.RefreshStartedAt = m.now()
	v, err := m.store.Put(ctx, marked, cur.Version)
	if err != nil {
		return Token{}, m.storeErr(tenant, err)
	}
	marked.Version = v

	start := m.now()
	grant, err := m.breaker.Execute(func() (*Grant, error) { return m.refresher.Refresh(ctx, cur) })
	m.opts.Metrics.refreshLatency(m.now().Sub(start))
	switch {
	case err == nil:
		return m.writeGrant(ctx, marked, grant)
	case errors.Is(err, ErrInvalidGrant):
		return m.rejected(ctx, marked, interrupted)
	case errors.Is(err, ErrOutcomeUnknown):
		// Leave the in-flight mark: the refresh token may be spent.
		m.opts.Metrics.refresh("unknown")
		m.log.Warn("refresh outcome unknown", zap.String("tenant", tenant), zap.Error(err))
		return m.unavailable(marked, err)
	default:
		// The request failed before or without consuming the token: undo the mark.
		m.opts.Metrics.refresh("transient")
		m.log.Warn("refresh failed", zap.String("tenant", tenant), zap.Error(err))
		undo := marked.Clone()
		undo.RefreshInFlight = interrupted
		undo.RefreshStartedAt = time.Time{} // the earlier holder's window is over
		undo.FailureCount++
		if nv, perr := m.store.Put(context.WithoutCancel(ctx), undo, marked.Version); perr == nil {
			undo.Version = nv
			marked = undo
		}
		return m.unavailable(marked, err)
	}
}

// writeGrant stores a new grant, fenced on the marked version. The new
// refresh token is the only valid one now, so the write is retried while
// the store is unreachable.
func (m *Manager) writeGrant(ctx context.Context, marked *store.Tenant, g *Grant) (Token, error) {
	now := m.now()
	next := marked.Clone()
	next.AccessToken = g.AccessToken
	next.AccessExpiresAt = g.Expiry
	if g.RefreshToken != "" {
		next.RefreshToken = g.RefreshToken
	}
	next.RefreshExpiresAt = g.RefreshExpiry
	if g.Scope != "" {
		next.Scope = g.Scope
	}
	next.RefreshInFlight = false
	next.RefreshStartedAt = time.Time{}
	next.LastRefreshAt = now
	next.UpdatedAt = now
	next.RefreshCount++
	next.FailureCount = 0

	ctx = context.WithoutCancel(ctx)
	delay := 50 * time.Millisecond
	// A successor acts on our in-flight mark only after this deadline (plus
	// clockSkew), so writing until then can never race its refresh.
	deadline := marked.RefreshStartedAt.Add(m.opts.WaitFor)
	for {
		pctx, cancel := context.WithTimeout(ctx, max(deadline.Sub(m.now()), 100*time.Millisecond))
		v, err := m.store.Put(pctx, next, marked.Version)
		cancel()
		if err == nil {
			next.Version = v
			m.opts.Metrics.refresh("ok")
			m.log.Info("token refreshed", zap.String("tenant", next.ID), zap.Int64("version", v),
				zap.Time("expires_at", next.AccessExpiresAt))
			return m.remember(next, nil, time.Time{}), nil
		}
		if errors.Is(err, store.ErrConflict) {
			// Someone wrote meanwhile (an admin). Keep their status changes
			// but not a refresh token they did not change.
			cur, gerr := m.store.Get(ctx, next.ID)
			if gerr != nil {
				err = gerr
			} else if cur.RefreshToken == marked.RefreshToken {
				next.Status, next.Reason, next.FlaggedAt = cur.Status, cur.Reason, cur.FlaggedAt
				marked = cur
				continue
			} else {
				m.opts.Metrics.refresh("discarded")
				m.log.Error("refresh result discarded: tenant record replaced meanwhile", zap.String("tenant", next.ID))
				return m.remember(cur, nil, time.Time{}), nil
			}
		}
		if m.now().After(deadline) {
			m.opts.Metrics.refresh("write_failed")
			m.log.Error("refresh result could not be stored", zap.String("tenant", next.ID), zap.Error(err))
			return Token{}, m.storeErr(next.ID, err)
		}
		time.Sleep(delay) // store outage: retry the only copy of the new refresh token
		if delay < time.Second {
			delay *= 2
		}
	}
}

// rejected handles invalid_grant: flag only if the rejected refresh token is
// still the stored one; otherwise another process won the race.
func (m *Manager) rejected(ctx context.Context, marked *store.Tenant, interrupted bool) (Token, error) {
	ctx = context.WithoutCancel(ctx)
	cur, err := m.store.Get(ctx, marked.ID)
	if err != nil {
		return Token{}, m.storeErr(marked.ID, err)
	}
	if cur.RefreshToken != marked.RefreshToken {
		m.opts.Metrics.refresh("lost_race")
		if res, done, err := m.settled(cur, want{}); done {
			return res, err
		}
		return m.unavailable(cur, errors.New("refresh raced with another writer"))
	}
	reason := "refresh token rejected by the provider (invalid_grant)"
	if interrupted {
		reason = "refresh token consumed by an interrupted refresh"
	}
	now := m.now()
	flagged := cur.Clone()
	flagged.Status = store.StatusReauthorizationRequired
	flagged.Reason = reason
	flagged.FlaggedAt = now
	flagged.UpdatedAt = now
	flagged.RefreshInFlight = false
	flagged.RefreshStartedAt = time.Time{}
	flagged.FailureCount++
	v, err := m.store.Put(ctx, flagged, cur.Version)
	if err != nil {
		return Token{}, m.storeErr(marked.ID, err)
	}
	flagged.Version = v
	m.opts.Metrics.refresh("invalid_grant")
	m.opts.Metrics.flagged()
	m.log.Warn("tenant flagged for reauthorization", zap.String("tenant", cur.ID), zap.String("reason", reason))
	if m.opts.OnFlag != nil {
		go m.opts.OnFlag(cur.ID, reason)
	}
	re := &ReauthError{Tenant: cur.ID, Reason: reason, Since: now}
	m.remember(flagged, re, time.Time{})
	return Token{}, re
}

// unavailable serves a still-valid token after a transient failure (and
// remembers not to retry for a moment), or reports 503-worthy unavailability.
func (m *Manager) unavailable(rec *store.Tenant, cause error) (Token, error) {
	retry := m.opts.BreakerOpenFor
	if retry > 5*time.Second {
		retry = 5 * time.Second
	}
	now := m.now()
	if m.usable(rec.AccessExpiresAt) && rec.AccessToken != "" {
		return m.remember(rec, nil, now.Add(time.Second)), nil
	}
	return Token{}, &UnavailableError{Tenant: rec.ID, RetryAfter: retry, Err: cause}
}

func (m *Manager) storeErr(tenant string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownTenant, tenant)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &UnavailableError{Tenant: tenant, RetryAfter: time.Second, Err: fmt.Errorf("store: %w", err)}
}
