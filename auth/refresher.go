package auth

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/store"
)

// Defaults for BackgroundRefresher fields left zero; package config's
// defaults are these.
const (
	DefaultRefresherInterval    = 30 * time.Second
	DefaultRefresherConcurrency = 4
	DefaultRefreshIdleMargin    = 48 * time.Hour
	// DefaultSlowRefresh is SlowRefresh's default: several times a healthy
	// token endpoint's latency (Lightspeed: 100-300 ms).
	DefaultSlowRefresh = 2 * time.Second
)

// BackgroundRefresher keeps tenants alive without traffic: it refreshes
// access tokens of tenants in use before they expire, and every tenant's
// refresh token before its idle expiry. Every replica runs one; the store
// lock and the re-check under it keep a tenant from being refreshed twice.
type BackgroundRefresher struct {
	Manager *Manager
	Store   store.Store
	// Interval between scans; default 30s.
	Interval time.Duration
	// Concurrency bounds simultaneous refreshes; default 4. The refresher
	// adapts below it (AIMD, aimd.go): halved when the token endpoint
	// answers 429 or 5xx, does not answer, or is slower than SlowRefresh;
	// grown by one per Concurrency good refreshes.
	Concurrency int
	// SlowRefresh: a background refresh taking longer counts as the token
	// endpoint straining; default DefaultSlowRefresh.
	SlowRefresh time.Duration
	// IdleTTL is how long an unused refresh token lives when the provider
	// did not say (the preset's RefreshIdleTTL); 0 = no idle expiry.
	IdleTTL time.Duration
	// IdleMargin: refresh this long before the idle expiry; default 48h.
	IdleMargin time.Duration
	// Jitter spreads due refreshes over up to this long so that thousands of
	// tenants expiring together do not stampede the token endpoint; default
	// Interval/2.
	Jitter time.Duration
	// FullScanEvery is how often the tenants due for refresh-token idle
	// expiry (days away) are looked for; default 10m, at least Interval.
	// With a store.Lister store that reads only the due tenants (its due
	// index); otherwise every tenant.
	FullScanEvery time.Duration
	// ReadAllEvery is how often, with a store.Lister store, every tenant
	// is read anyway, in case a due-index update was lost (a crash
	// between the record write and the index write); default 24h, at
	// least FullScanEvery.
	ReadAllEvery time.Duration
	// Logger; nil = none.
	Logger *zap.Logger

	once  sync.Once
	limit *aimdLimit // set by defaults; kept across scans
}

// Limit returns the refresher's current adaptive concurrency (at most
// Concurrency).
func (b *BackgroundRefresher) Limit() int {
	b.defaults()
	return b.limit.Limit()
}

// Run refreshes until ctx ends. Every Interval it checks the tenants this
// replica serves, from its cache (no store read unless one is due); every
// FullScanEvery it also looks for refresh-token idle expiry: in the due
// index (ScanDue) when the store has one, else by reading every tenant
// (Scan), which it also does every ReadAllEvery.
func (b *BackgroundRefresher) Run(ctx context.Context) {
	b.defaults()
	t := time.NewTicker(b.Interval)
	defer t.Stop()
	var lastDue, lastAll time.Time
	_, indexed := b.Store.(store.Lister)
	for {
		now := b.Manager.now()
		switch {
		case indexed && now.Sub(lastAll) >= b.ReadAllEvery && !b.readAllClaimed(ctx):
			// Another replica read every tenant within ReadAllEvery: the
			// due index is enough now.
			lastAll, lastDue = now, now
			b.ScanDue(ctx)
		case now.Sub(lastAll) >= b.ReadAllEvery || (!indexed && now.Sub(lastDue) >= b.FullScanEvery):
			lastAll, lastDue = now, now
			b.Scan(ctx)
		case indexed && now.Sub(lastDue) >= b.FullScanEvery:
			lastDue = now
			b.ScanDue(ctx)
		default:
			b.ScanInUse(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *BackgroundRefresher) defaults() {
	if b.Interval <= 0 {
		b.Interval = DefaultRefresherInterval
	}
	if b.Concurrency <= 0 {
		b.Concurrency = DefaultRefresherConcurrency
	}
	if b.IdleMargin <= 0 {
		b.IdleMargin = DefaultRefreshIdleMargin
	}
	if b.Jitter <= 0 {
		b.Jitter = b.Interval / 2
	}
	if b.FullScanEvery < b.Interval {
		b.FullScanEvery = max(10*time.Minute, b.Interval)
	}
	if b.ReadAllEvery < b.FullScanEvery {
		b.ReadAllEvery = max(24*time.Hour, b.FullScanEvery)
	}
	if b.Logger == nil {
		b.Logger = zap.NewNop()
	}
	if b.SlowRefresh <= 0 {
		b.SlowRefresh = DefaultSlowRefresh
	}
	b.once.Do(func() {
		b.limit = newAIMD(b.Concurrency, b.SlowRefresh, time.Now)
		met := b.Manager.opts.Metrics
		b.limit.onChange = met.refresherLimit
		met.refresherLimit(b.Concurrency)
		obs := b.limit.observe
		b.Manager.endpointObs.Store(&obs)
	})
}

// Scan reads every tenant once and refreshes the due ones, at most
// Concurrency at a time; it returns when they are done, with the number of
// refreshes attempted.
func (b *BackgroundRefresher) Scan(ctx context.Context) int {
	b.defaults()
	ids, err := b.allIDs(ctx)
	if err != nil {
		b.Logger.Warn("refresher: listing tenants", zap.Error(err))
		return 0
	}
	return b.refreshDue(ctx, ids)
}

// allIDs lists every tenant: page by page from a store.Lister (one
// pipeline of a million EXISTS would outlast Redis read timeouts), else
// with List.
func (b *BackgroundRefresher) allIDs(ctx context.Context) ([]string, error) {
	l, ok := b.Store.(store.Lister)
	if !ok {
		return b.Store.List(ctx)
	}
	var ids []string
	for cursor := ""; ; {
		page, next, err := l.ListPage(ctx, cursor, store.MaxPageLimit)
		if err != nil {
			return nil, err
		}
		ids = append(ids, page...)
		if next == "" {
			return ids, nil
		}
		cursor = next
	}
}

// ScanDue is Scan for the tenants the store's due index names (refresh
// token expiring or idle within IdleMargin) and the tenants ScanInUse
// checks: its cost is proportional to what is due, not to the number of
// tenants. Without a store.Lister store it is Scan.
func (b *BackgroundRefresher) ScanDue(ctx context.Context) int {
	b.defaults()
	l, ok := b.Store.(store.Lister)
	if !ok {
		return b.Scan(ctx)
	}
	now := b.Manager.now()
	var idleBy time.Time
	if b.IdleTTL > 0 {
		idleBy = now.Add(b.IdleMargin - b.IdleTTL)
	}
	ids, err := l.ListDue(ctx, now.Add(b.IdleMargin), idleBy)
	if err != nil {
		b.Logger.Warn("refresher: listing due tenants", zap.Error(err))
		return b.ScanInUse(ctx)
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
	}
	for _, id := range b.Manager.expiringInUse(b.horizon()) {
		if !seen[id] {
			ids = append(ids, id)
		}
	}
	return b.refreshDue(ctx, ids)
}

// ScanInUse is Scan for the tenants this replica served recently whose
// cached access token expires before the next check: it reads only those.
func (b *BackgroundRefresher) ScanInUse(ctx context.Context) int {
	b.defaults()
	return b.refreshDue(ctx, b.Manager.expiringInUse(b.horizon()))
}

func (b *BackgroundRefresher) horizon() time.Duration {
	return b.Manager.opts.RefreshBefore + b.Interval + b.Jitter
}

// claimName is the background refresher's claim on a due tenant: the
// replica that takes it refreshes the tenant, the others skip it, so R
// replicas share a due list without duplicate work. It only avoids work:
// the tenant's lock still makes the refresh itself one (SPEC §3).
func claimName(tenant string) string { return "refresh-claim:" + tenant }

// readAllClaim names the fleet's claim on the read of every tenant.
const readAllClaim = "refresher-read-all"

// readAllClaimed claims, for the fleet, the read of every tenant for
// ReadAllEvery: the claim is kept until it expires, so one replica reads
// every tenant per ReadAllEvery and a replica that starts does not read a
// million records again (at 1M tenants that read cost about 10 s of
// store commands and minutes of reads, on every start). A replica that
// dies while reading leaves the claim: the next read waits a ReadAllEvery.
// It reports false when another replica holds it; true when the store did
// not answer (the read is tried, as before claims, and fails alike).
func (b *BackgroundRefresher) readAllClaimed(ctx context.Context) bool {
	_, err := b.Store.TryLock(ctx, readAllClaim, b.ReadAllEvery)
	if err != nil && !errors.Is(err, store.ErrLockHeld) {
		b.Logger.Warn("refresher: claiming the read of every tenant", zap.Error(err))
	}
	return !errors.Is(err, store.ErrLockHeld)
}

// claimTTL is how long a claim keeps other replicas off a tenant: past it
// (the claimant died, or its refresh failed) the next scan of any replica
// tries again.
func (b *BackgroundRefresher) claimTTL() time.Duration {
	return max(b.Interval, 2*b.Manager.opts.LockTTL)
}

// refreshDue refreshes the due tenants among ids with Concurrency workers,
// at most the adaptive limit of them at once. The ids are handed out
// spread over Jitter (a few due tenants do not all start at once; a storm
// is paced by the limit). Per tenant a worker reads it and, if it is due,
// claims it (one SET NX; a tenant claimed by another replica is skipped)
// and refreshes it. It returns the number of refreshes attempted.
func (b *BackgroundRefresher) refreshDue(ctx context.Context, ids []string) int {
	b.defaults()
	if len(ids) == 0 {
		return 0
	}
	var started atomic.Int64
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(b.Concurrency, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				if b.refreshOne(ctx, id) {
					started.Add(1)
				}
			}
		}()
	}
	gap := b.Jitter / time.Duration(len(ids))
	offset := time.Duration(0)
	if gap > 0 {
		offset = rand.N(gap) // where in its first gap the first id starts
	}
feed:
	for i, id := range ids {
		if i > 0 || offset > 0 {
			wait := gap
			if i == 0 {
				wait = offset
			}
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					break feed
				}
			}
		}
		select {
		case work <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return int(started.Load())
}

// refreshOne reads tenant id and, if it is due and this replica claims it,
// refreshes it within the adaptive limit; it reports whether a refresh was
// attempted.
func (b *BackgroundRefresher) refreshOne(ctx context.Context, id string) bool {
	rec, err := b.Store.Get(ctx, id)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			b.Logger.Warn("refresher: reading tenant", zap.String("tenant", id), zap.Error(err))
		}
		return false
	}
	why := b.due(rec)
	if why == "" {
		return false
	}
	claim, err := b.Store.TryLock(ctx, claimName(id), b.claimTTL())
	if err != nil {
		if !errors.Is(err, store.ErrLockHeld) {
			b.Logger.Warn("refresher: claiming tenant", zap.String("tenant", id), zap.Error(err))
		}
		return false // ErrLockHeld: another replica refreshes it
	}
	if !b.limit.acquire(ctx) {
		return false
	}
	_, err = b.Manager.refreshIfUnchanged(ctx, rec)
	b.limit.release()
	// Given back either way: refreshed, the tenant is no longer due; failed,
	// the next scan of any replica tries again, as before claims. The TTL
	// only covers a replica that dies holding one.
	_ = claim.Release(context.WithoutCancel(ctx))
	if err != nil {
		b.Logger.Warn("background refresh failed", zap.String("tenant", rec.ID), zap.String("why", why), zap.Error(err))
	} else {
		b.Logger.Debug("background refresh", zap.String("tenant", rec.ID), zap.String("why", why))
	}
	return true
}

// due says why rec needs a refresh now, or "".
func (b *BackgroundRefresher) due(rec *store.Tenant) string {
	if rec.Status != store.StatusActive || rec.RefreshToken == "" {
		return ""
	}
	m := b.Manager
	now := m.now()
	// Access token about to expire (before the next scan) on a tenant this
	// process serves: refresh ahead so no request waits for it.
	if m.inUse(rec.ID) && rec.AccessExpiresAt.Sub(now) < b.horizon() {
		return "access token expiring"
	}
	// Refresh token idle expiry.
	idleExpiry := rec.RefreshExpiresAt
	if idleExpiry.IsZero() && b.IdleTTL > 0 {
		last := latest(rec.LastRefreshAt, rec.AuthorizedAt, rec.CreatedAt)
		if !last.IsZero() {
			idleExpiry = last.Add(b.IdleTTL)
		}
	}
	if !idleExpiry.IsZero() && idleExpiry.Sub(now) < b.IdleMargin {
		return "refresh token idle expiry"
	}
	return ""
}

func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// refreshIfUnchanged refreshes rec's tenant unless another process already
// replaced the access token seen in rec (background refresher).
func (m *Manager) refreshIfUnchanged(ctx context.Context, rec *store.Tenant) (Token, error) {
	return m.shared(ctx, "background:"+rec.ID, rec.ID, func(ctx context.Context) (Token, error) {
		return m.acquire(ctx, rec.ID, want{force: true, used: rec.AccessToken})
	})
}
