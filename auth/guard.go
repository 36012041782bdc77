package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/store"
)

// grantGuard is the mass-invalid_grant guard (SPEC §3 rules 15 and 20).
// Many tenants rejected at once point at lsproxy's own configuration
// (client id, secret, environment, token URL), not at the merchants. An
// invalid_grant flags its tenant at once (a single revoked merchant is told
// on the first request), but when threshold distinct tenants were rejected
// within window, across the fleet, the guard trips: no tenant is flagged
// while it is tripped, the flags set within the window are reverted
// (flagging keeps the refresh token, so nothing is lost; a revert that
// fails is retried until done), and the held tenants keep their refresh
// tokens, answer token_unavailable and are not sent again while it is
// tripped. It clears when no new tenant was rejected for a window; the
// tenants it held stay held (one probe at a time) until a grant proves the
// configuration, and are flagged on their own rejection after that.
//
// The state lives in the store (store.GuardState), so every replica
// decides on the fleet's rejections and a restart forgets nothing; a store
// that keeps no guard state gets a process-local one. This process keeps
// a short-lived copy of the last status it saw (statusTTL) so that a
// refresh asks the store only while the guard is, or may be, tripped.
// All methods are safe for concurrent use.
type grantGuard struct {
	threshold int // < 0: off (every invalid_grant flags)
	window    time.Duration
	scope     string // the configuration blamed by a trip (GuardScope)
	state     store.GuardState

	mu     sync.Mutex
	last   store.GuardStatus // the last status seen
	seenAt time.Time         // when (monotonic); zero: never
	// unrecorded holds the rejections GuardReject could not record
	// (tenant → when, monotonic), recorded late by runGuard: a trip
	// that needed one of them still reverts the flags of its window.
	unrecorded map[string]time.Time
}

// maxUnrecorded bounds the rejections a process keeps to record late
// (more than a window's distinct tenants trip the guard anyway).
const maxUnrecorded = 1000

// keepUnrecorded remembers tenant's rejection that the store did not take.
func (g *grantGuard) keepUnrecorded(tenant string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.unrecorded == nil {
		g.unrecorded = map[string]time.Time{}
	}
	if _, ok := g.unrecorded[tenant]; ok || len(g.unrecorded) < maxUnrecorded {
		g.unrecorded[tenant] = time.Now()
	}
}

// takeUnrecorded returns the rejections to record late, dropping those a
// window old (they would count no longer).
func (g *grantGuard) takeUnrecorded() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for id, at := range g.unrecorded {
		if time.Since(at) >= g.window {
			delete(g.unrecorded, id)
			continue
		}
		out = append(out, id)
	}
	return out
}

func (g *grantGuard) recorded(tenant string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.unrecorded, tenant)
}

// statusTTL: a status younger than this that said "not tripped, nothing
// pending" answers without a store call.
const statusTTL = time.Second

// holdFor (defect.GuardRenewedByResend only): the old guard re-sent a
// held tenant after this long.
const holdFor = 10 * time.Second

func (g *grantGuard) params() store.GuardParams {
	return store.GuardParams{Threshold: g.threshold, Window: g.window, Scope: g.scope, Renew: defect.On(defect.GuardRenewedByResend)}
}

// GuardScope names the configuration the guard blames when it trips: a
// one-way fingerprint (64 bits of SHA-256) of the client id, the client
// secret and the token URL. A replica restarted with a fixed
// configuration, a right secret after a wrong one included, has another
// scope, so its guard starts untripped and sends the held tenants'
// refresh tokens again at once, while a grant of the right configuration
// proves nothing for the wrong one (store.GuardState). The secret cannot
// be recovered from the scope (it is high-entropy, and 64 bits of a hash
// of it are kept), so the scope may appear in store keys.
func GuardScope(clientID, clientSecret, tokenURL string) string {
	h := sha256.New()
	for _, part := range []string{"lsproxy guard scope v2", clientID, clientSecret, tokenURL} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func (g *grantGuard) off() bool { return g.threshold < 0 }

// note records a status seen.
func (g *grantGuard) note(s store.GuardStatus) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last, g.seenAt = s, time.Now()
}

// forget drops the status seen: the next caller asks the store.
func (g *grantGuard) forget() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seenAt = time.Time{}
}

// recent returns the last status seen when it is younger than statusTTL.
func (g *grantGuard) recent() (store.GuardStatus, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last, !g.seenAt.IsZero() && time.Since(g.seenAt) < statusTTL
}

// guardCtx bounds one guard store call.
func guardCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
}

// guardStatus reads the fleet's guard status (tenant: also whether it is
// held and its pending revert), reporting a clear it caused. ok is false
// when the store did not answer.
func (m *Manager) guardStatus(ctx context.Context, tenant string) (store.GuardStatus, bool) {
	return m.guardStatusProbe(ctx, tenant, false)
}

// guardStatusProbe is guardStatus; probe: the caller sends tenant's
// refresh token unless it is held (it may take the fleet's probe slot).
func (m *Manager) guardStatusProbe(ctx context.Context, tenant string, probe bool) (store.GuardStatus, bool) {
	gctx, cancel := guardCtx(ctx)
	defer cancel()
	p := m.guard.params()
	p.Probe = probe
	s, err := m.guard.state.GuardStatus(gctx, tenant, m.now(), p)
	if err != nil {
		m.log.Warn("mass invalid_grant guard state unavailable", zap.Error(err))
		return s, false
	}
	m.guard.note(s)
	m.opts.Metrics.guard(s.Tripped)
	if s.Changed {
		m.guardChanged(false, 0)
	}
	return s, true
}

// heldBack reports whether rec's refresh token is held back by the
// tripped guard (rule 20: not sent again while it is tripped). When the
// guard's state cannot be read the token is not held back: the guard
// then decides at the rejection, if any. A tenant authorized again since
// its rejection has another grant, which nobody rejected: not held.
func (m *Manager) heldBack(ctx context.Context, rec *store.Tenant) bool {
	tenant := rec.ID
	if m.guard.off() {
		return false
	}
	if last, ok := m.guard.recent(); ok && !last.Tripped && last.Acquitted == 0 {
		return false
	}
	s, ok := m.guardStatusProbe(ctx, tenant, true)
	if !ok || !s.Held || rec.AuthorizedAt.After(s.HeldSince) {
		return false
	}
	if defect.On(defect.GuardRenewedByResend) {
		return m.now().Sub(s.HeldSince) < holdFor // the old guard re-sent it
	}
	return true
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

// consultGuard records tenant's invalid_grant with the fleet's guard
// (rules 15, 20) and reverts the flags a trip covers. It reports whether
// the tenant may be flagged and the trip count to give flagRecorded. A
// retry (an operator's request) is not counted and may always flag.
// When the guard's state cannot be read or written the tenant is not
// flagged (its refresh token is kept; the next attempt decides).
func (m *Manager) consultGuard(ctx context.Context, tenant string, retry bool, now time.Time) (flag bool, trips uint64) {
	if retry || m.guard.off() {
		return true, 0
	}
	v, err := m.guardReject(ctx, tenant, now)
	b := newBackoff(50*time.Millisecond, writeRetryMax)
	for n := 1; err != nil && n < guardRejectAttempts && b.wait(ctx) == nil; n++ {
		v, err = m.guardReject(ctx, tenant, now)
	}
	if err != nil {
		// Kept to be recorded late (runGuard): a trip that needs this
		// rejection must still revert the flags of its window.
		m.guard.keepUnrecorded(tenant)
		m.log.Warn("invalid_grant not acted on: the guard's state is unavailable; the refresh token is kept",
			zap.String("tenant", tenant), zap.Error(err))
		m.opts.Metrics.refresh("held")
		m.opts.Metrics.held()
		return false, 0
	}
	m.guard.recorded(tenant)
	if !v.Flag {
		m.opts.Metrics.refresh("held")
		m.opts.Metrics.held()
		m.log.Warn("invalid_grant not acted on: the refresh token is kept and the tenant not flagged",
			zap.String("tenant", tenant), zap.Bool("guard_tripped", v.Tripped), zap.Int("rejected_tenants", v.Tenants))
	}
	return v.Flag, v.Trips
}

// flagRecorded records tenant's flag at at as revertible by a trip. It
// returns false when the guard tripped since the verdict (trips): the
// caller must revert the flag itself. A retry's flag is not revertible: the
// operator asked for this tenant, the provider rejected it again.
func (m *Manager) flagRecorded(ctx context.Context, tenant string, at time.Time, trips uint64, retry bool) bool {
	if retry || m.guard.off() {
		return true
	}
	gctx, cancel := guardCtx(ctx)
	defer cancel()
	ok, err := m.guard.state.GuardFlagged(gctx, tenant, at, trips, m.guard.params())
	if err != nil {
		// Not recorded, so no trip could revert it: revert it now.
		m.log.Warn("flag not recorded with the guard's state; reverting it", zap.String("tenant", tenant), zap.Error(err))
		return false
	}
	return ok
}

// guardGranted tells the guard's state that tenant's refresh token
// worked. always: ask even when the guard looked quiet (a recovered
// tenant: Retry).
func (m *Manager) guardGranted(ctx context.Context, tenant string, always bool) {
	if m.guard.off() {
		return
	}
	if last, ok := m.guard.recent(); ok && !always && !last.Tripped && last.Tenants == 0 && last.Pending == 0 && last.Acquitted == 0 {
		return // nobody rejected within the window: nothing to forget
	}
	gctx, cancel := guardCtx(ctx)
	defer cancel()
	if err := m.guard.state.GuardGranted(gctx, tenant, m.now(), m.guard.params()); err != nil {
		m.log.Warn("mass invalid_grant guard state not updated after a grant", zap.String("tenant", tenant), zap.Error(err))
	}
}

// settleReverts performs the pending reverts of the fleet's guard (at most
// store.MaxGuardReverts per call) and reports a clear. A revert that
// fails stays pending and is tried again by the next call (Run calls this
// every guardSettleEvery; rule 20: retried until done).
func (m *Manager) settleReverts(ctx context.Context) {
	if m.guard.off() {
		return
	}
	s, ok := m.guardStatus(ctx, "")
	if !ok {
		return
	}
	for _, r := range s.Reverts {
		m.revert(ctx, r)
	}
}

// revert reverts one pending flag and acknowledges it when done or moot.
func (m *Manager) revert(ctx context.Context, r store.GuardRevert) {
	_, err := m.unflag(ctx, r.Tenant, r.FlaggedAt, true)
	if err != nil && !defect.On(defect.GuardRevertOnce) {
		return // stays pending: tried again
	}
	gctx, cancel := guardCtx(ctx)
	defer cancel()
	if err := m.guard.state.GuardReverted(gctx, r.Tenant, r.FlaggedAt); err != nil {
		m.log.Warn("flag reverted, but the guard's state not told; it is tried again", zap.String("tenant", r.Tenant), zap.Error(err))
	}
}

// revertOwn reverts the flag this call set at at, which the guard
// refused to record (it tripped meanwhile: the flag is pending there) and
// acknowledges it; a failed revert stays pending and is retried
// (settleReverts). It returns the reverted record, nil when nothing was
// reverted.
func (m *Manager) revertOwn(ctx context.Context, tenant string, at time.Time) *store.Tenant {
	// When the guard's state never recorded the flag (GuardFlagged
	// failed), nobody else would revert it: try again, bounded by WaitFor
	// (found by the simulation, auth/sim).
	rctx, cancel := context.WithTimeout(ctx, m.opts.WaitFor)
	defer cancel()
	b := newBackoff(50*time.Millisecond, writeRetryMax)
	rec, err := m.unflag(rctx, tenant, at, false)
	for err != nil && b.wait(rctx) == nil {
		rec, err = m.unflag(rctx, tenant, at, false)
	}
	if err != nil {
		return nil
	}
	gctx, cancel := guardCtx(ctx)
	defer cancel()
	if err := m.guard.state.GuardReverted(gctx, tenant, at); err != nil {
		m.log.Warn("flag reverted, but the guard's state not told; it is tried again", zap.String("tenant", tenant), zap.Error(err))
	}
	return rec
}

// revertPending reverts rec's flag now when the guard has it pending (a
// revert that failed earlier, or one another replica has not done yet).
// It returns the record to answer from.
func (m *Manager) revertPending(ctx context.Context, rec *store.Tenant) *store.Tenant {
	if m.guard.off() {
		return rec
	}
	if last, ok := m.guard.recent(); ok && last.Pending == 0 {
		return rec
	}
	s, ok := m.guardStatus(ctx, rec.ID)
	if !ok || s.Revert.IsZero() {
		return rec
	}
	m.revert(ctx, store.GuardRevert{Tenant: rec.ID, FlaggedAt: s.Revert})
	cur, err := m.store.Get(ctx, rec.ID)
	if err != nil {
		return rec
	}
	return cur
}

// guardReject records tenant's rejection with the fleet's guard and
// reports a trip or clear it caused (a trip's reverts are done at once).
func (m *Manager) guardReject(ctx context.Context, tenant string, now time.Time) (store.GuardVerdict, error) {
	gctx, cancel := guardCtx(ctx)
	v, err := m.guard.state.GuardReject(gctx, tenant, now, m.guard.params())
	cancel()
	if err != nil {
		return v, err
	}
	m.guard.forget() // the next caller asks the store again
	m.opts.Metrics.guard(v.Tripped)
	if v.Changed {
		m.guardChanged(v.Tripped, v.Tenants)
	}
	if v.Tripped && v.Changed {
		m.settleReverts(ctx)
	}
	return v, nil
}

// guardRejectAttempts bounds the attempts to record a rejection before it
// is left to runGuard.
const guardRejectAttempts = 3

// recordUnrecorded records, as of now, the rejections GuardReject could not
// take when they happened. Their tenants were not flagged (their tokens
// kept), so the verdict's Flag is not acted on; a trip they cause reverts
// the flags of its window as any trip does.
func (m *Manager) recordUnrecorded(ctx context.Context) {
	for _, tenant := range m.guard.takeUnrecorded() {
		if _, err := m.guardReject(ctx, tenant, m.now()); err != nil {
			return // the store is still away: next tick
		}
		m.guard.recorded(tenant)
	}
}

// guardSettleEvery: how often Run performs pending reverts and looks for
// a clear of the fleet's guard; unrecordedEvery: how often it tries to
// record the rejections the store did not take (a no-op when there are
// none), often, so that a short store outage loses none of them.
const (
	guardSettleEvery = 5 * time.Second
	unrecordedEvery  = time.Second
)

// runGuard performs pending reverts every guardSettleEvery until ctx ends.
func (m *Manager) runGuard(ctx context.Context) {
	if m.guard.off() {
		return
	}
	t := time.NewTicker(guardSettleEvery)
	defer t.Stop()
	late := time.NewTicker(unrecordedEvery)
	defer late.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-late.C:
			m.recordUnrecorded(ctx)
		case <-t.C:
			m.settleReverts(ctx)
		}
	}
}

// unflag reverts a flag set at at, when the guard decided that the
// rejection was the configuration's fault. A tenant flagged or
// re-authorized since is left alone (moot: nil record, nil error).
// announced: OnFlag was called for the flag, so OnRecover is called for
// its revert. It returns the reverted record; an error when the revert
// could not be written.
func (m *Manager) unflag(ctx context.Context, tenant string, at time.Time, announced bool) (*store.Tenant, error) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*storeCallTimeout)
	defer cancel()
	var s store.Store = m.store
	if a, ok := m.store.(store.AckedPutter); ok {
		// A revert the replicas did not acknowledge may be lost with a
		// failover, bringing the flag back after the guard was told it is
		// done: it stays pending until acknowledged (found by the
		// simulation, auth/sim).
		s = ackedPuts{Store: m.store, acked: a}
	}
	rec, err := store.Update(pctx, s, tenant, func(t *store.Tenant) error {
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
		return rec, nil
	case errors.Is(err, store.ErrSkip), errors.Is(err, store.ErrNotFound):
		return nil, nil
	}
	m.log.Error("could not revert a flag; it is tried again", zap.String("tenant", tenant), zap.Error(err))
	return nil, err
}

// ackedPuts is a store whose Put waits for the replicas' acknowledgement
// (store.AckedPutter); an unacknowledged write answers store.ErrNotAcked.
type ackedPuts struct {
	store.Store
	acked store.AckedPutter
}

func (s ackedPuts) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	return s.acked.PutAcked(ctx, t, expect)
}

// GuardTripped reports whether the fleet's mass-invalid_grant guard holds
// back flagging now (the last known state when the store does not answer).
func (m *Manager) GuardTripped() bool {
	if m.guard.off() {
		return false
	}
	s, ok := m.guardStatus(context.Background(), "")
	if !ok {
		m.guard.mu.Lock()
		defer m.guard.mu.Unlock()
		return m.guard.last.Tripped
	}
	return s.Tripped
}
