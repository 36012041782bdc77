package auth

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/store"
)

// grantGuard is the mass-invalid_grant guard (SPEC §3 rule 15). Many
// tenants rejected at once point at lsproxy's own configuration (client id,
// secret, environment, token URL), not at the merchants. An invalid_grant
// flags its tenant at once (a single revoked merchant is told on the first
// request), but when threshold distinct tenants were rejected within
// window the guard trips: no tenant is flagged while it is tripped, and the
// tenants this process flagged within the window are unflagged again
// (flagging keeps the refresh token, so nothing is lost). A held-back
// tenant keeps its refresh token, answers token_unavailable and is not
// sent again for holdFor, so that a rejected token is not sent in a loop.
// All methods are safe for concurrent use.
type grantGuard struct {
	threshold int // < 0: off (every invalid_grant flags)
	window    time.Duration

	mu        sync.Mutex
	rejected  map[string]time.Time // tenant → last invalid_grant
	flagged   map[string]time.Time // tenant → when this process flagged it
	isTripped bool
	trips     uint64 // how often it tripped; see flaggedAt
}

// holdFor: a tenant whose invalid_grant was held back is not sent again
// for this long.
const holdFor = 10 * time.Second

// guardVerdict is what rejectedGrant decided.
type guardVerdict struct {
	flag    bool // flag the tenant now
	changed bool // the guard tripped or cleared with this call
	tripped bool
	tenants int // distinct tenants rejected within the window
	trips   uint64
	// unflag lists the tenants flagged within the window, when the guard
	// tripped with this call: they were rejected for the same cause.
	unflag map[string]time.Time
}

// rejectedGrant records an invalid_grant for tenant at now and decides.
func (g *grantGuard) rejectedGrant(tenant string, now time.Time) guardVerdict {
	if g.threshold < 0 {
		return guardVerdict{flag: true}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rejected == nil {
		g.rejected, g.flagged = map[string]time.Time{}, map[string]time.Time{}
	}
	g.pruneLocked(now)
	g.rejected[tenant] = now
	v := guardVerdict{tenants: len(g.rejected)}
	v.tripped = v.tenants >= g.threshold
	v.changed = v.tripped != g.isTripped
	g.isTripped = v.tripped
	v.flag = !v.tripped
	if v.tripped && v.changed {
		g.trips++
		v.unflag, g.flagged = g.flagged, map[string]time.Time{}
	}
	v.trips = g.trips
	return v
}

// tripCount returns how often the guard tripped so far (for flaggedAt).
func (g *grantGuard) tripCount() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.trips
}

// flaggedAt records that tenant was flagged at at, after a verdict that
// saw the guard's trip count trips. It returns false, recording nothing,
// when the guard tripped since: that trip's revert list was taken without
// this flag (it was being written), so the caller must revert it itself.
func (g *grantGuard) flaggedAt(tenant string, at time.Time, trips uint64) bool {
	if g.threshold < 0 {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.trips != trips || g.isTripped {
		return false
	}
	g.flagged[tenant] = at
	return true
}

// heldBack reports whether tenant's invalid_grant was held back less than
// holdFor ago.
func (g *grantGuard) heldBack(tenant string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	at, ok := g.rejected[tenant]
	return ok && g.isTripped && now.Sub(at) < holdFor
}

// granted records a successful grant for tenant.
func (g *grantGuard) granted(tenant string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.rejected, tenant)
	delete(g.flagged, tenant)
}

// tripped reports whether the guard holds back flagging at now.
func (g *grantGuard) tripped(now time.Time) bool {
	t, _ := g.check(now)
	return t
}

// check reports whether the guard is tripped at now, and whether that
// changed since it was last looked at.
func (g *grantGuard) check(now time.Time) (tripped, changed bool) {
	if g.threshold < 0 {
		return false, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pruneLocked(now)
	tripped = len(g.rejected) >= g.threshold
	changed = tripped != g.isTripped
	g.isTripped = tripped
	if tripped && changed {
		g.trips++ // not reached today: only rejectedGrant adds tenants
	}
	return tripped, changed
}

func (g *grantGuard) pruneLocked(now time.Time) {
	for id, at := range g.rejected {
		if now.Sub(at) >= g.window {
			delete(g.rejected, id)
		}
	}
	for id, at := range g.flagged {
		if now.Sub(at) >= g.window {
			delete(g.flagged, id)
		}
	}
}

// guardChanged reports a trip or clear of the mass-invalid_grant guard.
func (m *Manager) guardChanged(tripped bool, tenants int) {
	m.opts.Metrics.guard(tripped)
	if tripped {
		m.log.Error("mass invalid_grant: flagging stopped, refresh tokens kept; check LSPROXY_CLIENT_ID, LSPROXY_CLIENT_SECRET, LSPROXY_ENVIRONMENT and the token URL",
			zap.Int("rejected_tenants", tenants), zap.Duration("window", m.opts.GuardWindow))
	} else {
		m.log.Warn("mass invalid_grant guard cleared")
	}
	if m.opts.OnGuard != nil {
		go m.opts.OnGuard(tripped, tenants)
	}
}

// consultGuard records tenant's invalid_grant with the guard (rule 15)
// and reverts the flags a trip covers. It reports whether the tenant may
// be flagged and the trip count to give flaggedAt. A retry (an operator's
// request) is not counted and may always flag.
func (m *Manager) consultGuard(ctx context.Context, tenant string, retry bool, now time.Time) (flag bool, trips uint64) {
	if retry {
		return true, m.guard.tripCount()
	}
	v := m.guard.rejectedGrant(tenant, now)
	if v.changed {
		m.guardChanged(v.tripped, v.tenants)
	}
	for id, at := range v.unflag {
		m.unflag(ctx, id, at, true)
	}
	if !v.flag {
		m.opts.Metrics.refresh("held")
		m.opts.Metrics.held()
		m.log.Warn("invalid_grant not acted on: the refresh token is kept and the tenant not flagged",
			zap.String("tenant", tenant), zap.Bool("guard_tripped", v.tripped), zap.Int("rejected_tenants", v.tenants))
	}
	return v.flag, v.trips
}

// unflag reverts a flag this process set at at, when the guard decided
// that the rejection was the configuration's fault. A tenant flagged or
// re-authorized since is left alone. announced: OnFlag was called for the
// flag, so OnRecover is called for its revert. It returns the reverted
// record, nil when nothing was reverted.
func (m *Manager) unflag(ctx context.Context, tenant string, at time.Time, announced bool) *store.Tenant {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
	defer cancel()
	rec, err := store.Update(pctx, m.store, tenant, func(t *store.Tenant) error {
		if t.Status != store.StatusReauthorizationRequired || !t.FlaggedAt.Equal(at) {
			return store.ErrSkip
		}
		t.Unflag(m.now())
		return nil
	})
	switch {
	case err == nil:
		m.Invalidate(tenant)
		m.log.Warn("flag reverted: the invalid_grant was one of many (configuration)", zap.String("tenant", tenant))
		if announced && m.opts.OnRecover != nil {
			go m.opts.OnRecover(tenant)
		}
		return rec
	case !errors.Is(err, store.ErrSkip):
		m.log.Error("could not revert a flag", zap.String("tenant", tenant), zap.Error(err))
	}
	return nil
}

// noteGuard reports a guard that cleared since it was last looked at.
func (m *Manager) noteGuard() {
	if tripped, changed := m.guard.check(m.now()); changed {
		m.guardChanged(tripped, 0)
	}
}
