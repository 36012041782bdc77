package auth

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/store"
)

func audit3Reject(*store.Tenant) (*Grant, error) {
	return nil, &EndpointError{Status: 400, Code: "invalid_grant"}
}

// AUDIT3-F4 (rule 15): reliability.md says a revoked tenant hidden by the
// guard answers 503 "until the guard window passes". But a held-back tenant
// is sent again every holdFor (10 s) and each new rejection refreshes its
// entry in the guard's window (rejectedGrant: g.rejected[tenant] = now), so
// three revoked tenants that keep getting requests keep the guard tripped
// for ever: they never get their 401, no other tenant is ever flagged, and
// invalid_grant_guard.cleared never comes.
func TestAudit3GuardNeverClearsWhileHeldTenantsAreRetried(t *testing.T) {
	if audit3GuardNeverClears(t) {
		t.Errorf("the guard is still tripped 7 min after it tripped (window 5 min) because the held tenants are re-sent; r4 does not answer reauthorization_required")
	}
	t.Run("defect GuardRenewedByResend", func(t *testing.T) {
		defer defect.Enable(defect.GuardRenewedByResend)()
		if !audit3GuardNeverClears(t) {
			t.Error("with the defect switched on the guard cleared: the reproduction no longer reproduces it")
		}
	})
}

// audit3GuardNeverClears runs the schedule; it reports the failure.
func audit3GuardNeverClears(t *testing.T) bool {
	f := newFixture(t, func(o *ManagerOptions) { o.GuardThreshold = 3; o.GuardWindow = 5 * time.Minute })
	f.ref.next = audit3Reject // every grant rejected: these merchants revoked the app
	for _, id := range []string{"r1", "r2", "r3", "r4"} {
		f.put(t, id, -time.Second)
	}
	for _, id := range []string{"r1", "r2", "r3"} {
		_, err := f.m.Token(ctx, id)
		t.Logf("%s: %v", id, err)
	}
	if !f.m.GuardTripped() {
		t.Fatal("the guard did not trip")
	}
	trippedAt := f.clk.Now()
	// Their apps keep calling (the answer is 503 with Retry-After): one
	// request each every 11 s, for 7 minutes.
	for f.clk.Now().Sub(trippedAt) < 7*time.Minute {
		f.clk.Advance(11 * time.Second)
		for _, id := range []string{"r1", "r2", "r3"} {
			_, _ = f.m.Token(ctx, id)
		}
	}
	t.Logf("7 min after the trip: guard tripped=%v, token requests sent=%d", f.m.GuardTripped(), f.ref.count())
	// A fourth merchant revokes now, long after the window.
	_, err := f.m.Token(ctx, "r4")
	rec := f.get(t, "r4")
	t.Logf("r4 (revoked 7 min after the trip): err=%v, status=%s", err, rec.Status)
	return f.m.GuardTripped() || !errors.Is(err, ErrReauthorizationRequired)
}

// AUDIT3-F5 (rule 15): Retry on a flagged tenant while the guard is
// tripped. consultGuard says a retry "may always flag", but flaggedAt
// refuses any flag while the guard is tripped, so rejected() reverts the
// flag it has just written (unflag): the tenant whose stored refresh token
// the provider has just rejected again becomes "active", and Retry answers
// success (its still-valid access token) instead of 409
// reauthorization_required.
func TestAudit3RetryDuringTripUnflagsRejectedTenant(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.GuardThreshold = 3 })
	f.ref.next = audit3Reject
	for _, id := range []string{"c1", "c2", "c3"} {
		f.put(t, id, -time.Second)
		_, _ = f.m.Token(ctx, id)
	}
	if !f.m.GuardTripped() {
		t.Fatal("the guard did not trip")
	}
	// x was flagged earlier (by another replica, before the incident):
	// its merchant really revoked the app.
	x := f.put(t, "x", time.Hour)
	x.Flag("refresh token rejected by the provider (invalid_grant)", f.clk.Now().Add(-time.Hour))
	if _, err := f.store.Put(ctx, x, x.Version); err != nil {
		t.Fatal(err)
	}
	_, err := f.m.Retry(ctx, "x")
	rec := f.get(t, "x")
	t.Logf("Retry(x) = %v; stored status=%s reason=%q; provider calls=%d", err, rec.Status, rec.Reason, f.ref.count())
	if !errors.Is(err, ErrReauthorizationRequired) || rec.Status != store.StatusReauthorizationRequired {
		t.Errorf("the provider rejected x's refresh token again, yet Retry answered %v and left x %s", err, rec.Status)
	}
}

// AUDIT3-F11 (rule 15, promise 2): the guard lives in each process's memory
// and reverts only flags this process set, and only when this process
// itself trips. A configuration mistake that makes a process see fewer
// than threshold (3) distinct rejections before it is fixed, which for a
// configuration mistake means a restart with the corrected configuration,
// leaves the tenants it flagged flagged for ever, although their refresh
// tokens are good: with K replicas up to K*(threshold-1) tenants.
// reliability.md calls this "for a moment (before the guard trips)".
func TestAudit3ConfigMistakeFlagsSurviveRestart(t *testing.T) {
	if still := audit3ConfigMistake(t); still != 0 {
		t.Errorf("a configuration mistake left %d tenants with good refresh tokens flagged reauthorization_required after it was fixed", still)
	}
	t.Run("defect GuardInProcess", func(t *testing.T) {
		defer defect.Enable(defect.GuardInProcess)()
		if still := audit3ConfigMistake(t); still == 0 {
			t.Error("with the defect switched on no tenant stayed flagged: the reproduction no longer reproduces it")
		}
	})
}

// audit3ConfigMistake runs the schedule; it returns how many tenants
// stayed flagged.
func audit3ConfigMistake(t *testing.T) int {
	f := newFixture(t, func(o *ManagerOptions) { o.GuardThreshold = 3 })
	f.ref.next = audit3Reject // wrong client id / trial token URL: every grant rejected
	// Three replicas with the bad configuration, each refreshing two
	// distinct tenants before the operator notices.
	var replicas []*Manager
	for i := 0; i < 3; i++ {
		replicas = append(replicas, NewManager(f.store, f.ref, f.m.opts))
	}
	for i, m := range replicas {
		for j := 0; j < 2; j++ {
			id := fmt.Sprintf("t%d%d", i, j)
			f.put(t, id, -time.Second)
			_, err := m.Token(ctx, id)
			t.Logf("replica %d, %s: %v (guard tripped: %v)", i, id, err, m.GuardTripped())
		}
	}
	// Fixed: every replica restarted with the right configuration.
	good := &fakeRefresher{now: f.clk.Now}
	fixed := NewManager(f.store, good, f.m.opts)
	still := 0
	for i := 0; i < 3; i++ {
		for j := 0; j < 2; j++ {
			id := fmt.Sprintf("t%d%d", i, j)
			if _, err := fixed.Token(ctx, id); errors.Is(err, ErrReauthorizationRequired) {
				still++
			}
		}
	}
	t.Logf("after the fix: %d of 6 tenants still flagged; token requests with the good configuration: %d", still, good.count())
	return still
}

// AUDIT3-F12 (rule 15, promise 2): when the guard trips, each flag it must
// revert gets one attempt (unflag: one store.Update under a 1 s bound); a
// failure is logged ("could not revert a flag") and never retried, so that
// tenant stays flagged although its refresh token is good.
func TestAudit3GuardRevertNotRetried(t *testing.T) {
	if flagged := audit3RevertNotRetried(t); len(flagged) != 0 {
		t.Errorf("one failed revert write left %v flagged for good", flagged)
	}
	t.Run("defect GuardRevertOnce", func(t *testing.T) {
		defer defect.Enable(defect.GuardRevertOnce)()
		if flagged := audit3RevertNotRetried(t); len(flagged) == 0 {
			t.Error("with the defect switched on the failed revert was retried: the reproduction no longer reproduces it")
		}
	})
}

// audit3RevertNotRetried runs the schedule; it returns the tenants still
// flagged after the fix.
func audit3RevertNotRetried(t *testing.T) []string {
	f := newFixture(t, func(o *ManagerOptions) { o.GuardThreshold = 3 })
	fs := &audit3FailUnflag{Store: f.store}
	f.m = NewManager(fs, f.ref, f.m.opts)
	f.ref.next = audit3Reject
	for _, id := range []string{"u1", "u2", "u3"} {
		f.put(t, id, -time.Second)
		_, _ = f.m.Token(ctx, id)
	}
	f.ref.mu.Lock()
	f.ref.next = nil // configuration fixed (the process keeps running)
	f.ref.mu.Unlock()
	f.clk.Advance(6 * time.Minute) // the guard's window has passed
	var flagged []string
	for _, id := range []string{"u1", "u2", "u3"} {
		if _, err := f.m.Token(ctx, id); errors.Is(err, ErrReauthorizationRequired) {
			flagged = append(flagged, id)
		}
	}
	t.Logf("unflag writes failed: %d; still flagged after the fix: %v", fs.failed.Load(), flagged)
	return flagged
}

// audit3FailUnflag fails the first write that reverts a flag (a store
// hiccup at the wrong moment).
type audit3FailUnflag struct {
	store.Store
	failed atomic.Int64
}

func (s *audit3FailUnflag) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	if n := len(t.History); n > 0 && t.History[n-1].Kind == store.EventUnflagged && s.failed.CompareAndSwap(0, 1) {
		return 0, errors.New("audit3: i/o timeout")
	}
	return s.Store.Put(ctx, t, expect)
}
