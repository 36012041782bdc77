package auth

import (
	"context"
	"errors"
	"math/rand/v2"
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
	// Concurrency bounds simultaneous refreshes; default 4.
	Concurrency int
	// IdleTTL is how long an unused refresh token lives when the provider
	// did not say (the preset's RefreshIdleTTL); 0 = no idle expiry.
	IdleTTL time.Duration
	// IdleMargin: refresh this long before the idle expiry; default 48h.
	IdleMargin time.Duration
	// Jitter spreads due refreshes over up to this long so that thousands of
	// tenants expiring together do not stampede the token endpoint; default
	// Interval/2.
	Jitter time.Duration
	// FullScanEvery is how often every tenant is read from the store (for
	// idle expiry, which is days away); default 10m, at least Interval.
	FullScanEvery time.Duration
	// Logger; nil = none.
	Logger *zap.Logger
}

// Run refreshes until ctx ends. Every Interval it checks the tenants this
// replica serves, from its cache (no store read unless one is due); every
// FullScanEvery it reads every tenant for refresh-token idle expiry.
func (b *BackgroundRefresher) Run(ctx context.Context) {
	b.defaults()
	t := time.NewTicker(b.Interval)
	defer t.Stop()
	lastFull := time.Time{}
	for {
		if now := b.Manager.now(); now.Sub(lastFull) >= b.FullScanEvery {
			lastFull = now
			b.Scan(ctx)
		} else {
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
	if b.Logger == nil {
		b.Logger = zap.NewNop()
	}
}

// Scan reads every tenant once and refreshes the due ones, at most
// Concurrency at a time; it returns when they are done, with the number of
// refreshes attempted.
func (b *BackgroundRefresher) Scan(ctx context.Context) int {
	b.defaults()
	ids, err := b.Store.List(ctx)
	if err != nil {
		b.Logger.Warn("refresher: listing tenants", zap.Error(err))
		return 0
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

func (b *BackgroundRefresher) refreshDue(ctx context.Context, ids []string) int {
	sem := make(chan struct{}, b.Concurrency)
	done := make(chan struct{}, len(ids))
	started := 0
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		rec, err := b.Store.Get(ctx, id)
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				b.Logger.Warn("refresher: reading tenant", zap.String("tenant", id), zap.Error(err))
			}
			continue
		}
		why := b.due(rec)
		if why == "" {
			continue
		}
		started++
		go func(rec *store.Tenant, why string) {
			defer func() { done <- struct{}{} }()
			select { // spread the load
			case <-time.After(rand.N(b.Jitter)):
			case <-ctx.Done():
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			_, err := b.Manager.refreshIfUnchanged(ctx, rec)
			if err != nil {
				b.Logger.Warn("background refresh failed", zap.String("tenant", rec.ID), zap.String("why", why), zap.Error(err))
			} else {
				b.Logger.Debug("background refresh", zap.String("tenant", rec.ID), zap.String("why", why))
			}
		}(rec, why)
	}
	for i := 0; i < started; i++ {
		<-done
	}
	return started
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
