package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// The guard's state (GuardState, SPEC §3 rule 20) behaves alike in every
// backend: confGuard runs in runConformance; TestMemGuard runs the same on
// MemGuard, the in-process one fakes use.

func guardOf(t *testing.T, s Store) GuardState {
	t.Helper()
	g, ok := s.(GuardState)
	if !ok {
		t.Fatalf("%T does not keep the guard's state", s)
	}
	return g
}

func TestMemGuard(t *testing.T) {
	checkGuardRules(t, func() GuardState { return NewMemGuard() }, nil)
	checkGuardAcquittal(t, NewMemGuard())
}

// checkGuardAcquittal: an acquittal is as of the tenant's rejection (a
// grant during the trip proves the configuration) and lasts until the
// tenant's grant or flag, not one window: else three revoked tenants held
// by a trip count as new again once it is forgotten and trip the guard
// for ever (found by the simulation, auth/sim). Its own scope, so it
// shares nothing with checkGuardRules.
func checkGuardAcquittal(t *testing.T, g GuardState) {
	ctx := testCtx(t)
	p := GuardParams{Threshold: 3, Window: 5 * time.Minute, Scope: "acquittal"}
	t0 := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for i, id := range []string{"q1", "q2", "q3"} {
		if _, err := g.GuardReject(ctx, id, at(time.Duration(i)*time.Second), p); err != nil {
			t.Fatal(err)
		}
	}
	if st := mustStatus(t, g, "q1", at(3*time.Second), p); !st.Tripped || !st.Held {
		t.Fatalf("not tripped by 3 tenants: %+v", st)
	}
	// Cleared a window after the last new tenant; q4's grant came after
	// q1 and q2 were rejected: the configuration worked meanwhile.
	if st := mustStatus(t, g, "", at(2*time.Second+5*time.Minute), p); st.Tripped || st.Acquitted != 3 {
		t.Fatalf("not cleared with 3 acquitted: %+v", st)
	}
	if err := g.GuardGranted(ctx, "q4", at(2*time.Minute), p); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, g, "q1", at(6*time.Minute), p); st.Held {
		t.Fatalf("q1 held although a grant since its rejection proved the configuration: %+v", st)
	}
	// Two windows later, unproven acquittals are still there: rejected
	// again, q-tenants count as old news and trip nothing.
	p2 := p
	p2.Scope = "acquittal2"
	for i, id := range []string{"r1", "r2", "r3"} {
		if _, err := g.GuardReject(ctx, id, at(time.Duration(i)*time.Second), p2); err != nil {
			t.Fatal(err)
		}
	}
	mustStatus(t, g, "", at(2*time.Second+5*time.Minute), p2) // clears
	for i, id := range []string{"r1", "r2", "r3"} {
		v, err := g.GuardReject(ctx, id, at(15*time.Minute+time.Duration(i)*time.Second), p2)
		if err != nil {
			t.Fatal(err)
		}
		if v.Tripped || v.Flag || v.Tenants != 0 {
			t.Fatalf("acquitted %s rejected two windows after the clear: %+v (want held, not counted, no trip)", id, v)
		}
	}
	// A flag decides an acquittal: proven by a grant, r1 is flagged.
	if err := g.GuardGranted(ctx, "r4", at(16*time.Minute), p2); err != nil {
		t.Fatal(err)
	}
	v, err := g.GuardReject(ctx, "r1", at(17*time.Minute), p2)
	if err != nil || !v.Flag {
		t.Fatalf("proven r1's rejection: %+v, %v (want flag)", v, err)
	}
	if ok, err := g.GuardFlagged(ctx, "r1", at(17*time.Minute), v.Trips, p2); err != nil || !ok {
		t.Fatalf("GuardFlagged r1 = %v, %v", ok, err)
	}
	if st := mustStatus(t, g, "", at(17*time.Minute), p2); st.Acquitted != 2 {
		t.Fatalf("r1's acquittal kept after its flag: %+v", st)
	}
}

// confGuard: the rules on one backend; the state is shared with a peer
// (another client; for bolt the same process) and survives a reopen.
func confGuard(t *testing.T, h harness) {
	keys := mustKeyring(t, testKeys(t, 1)...)
	s := h.Open(t, keys)
	checkGuardRules(t, func() GuardState { return guardOf(t, s) }, func() GuardState { return guardOf(t, h.Peer(t, s)) })
	checkGuardAcquittal(t, guardOf(t, s))

	// A restart forgets nothing (a fresh namespace: the rules above used
	// their own tenants, but share the state, so use distinct ones).
	ctx := testCtx(t)
	p := GuardParams{Threshold: 2, Window: time.Hour}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // after every time the rules used
	g := guardOf(t, s)
	if _, err := g.GuardReject(ctx, "restart-a", now, p); err != nil {
		t.Fatal(err)
	}
	if ok, err := g.GuardFlagged(ctx, "restart-a", now, mustStatus(t, g, "", now, p).Trips, p); err != nil || !ok {
		t.Fatalf("GuardFlagged = %v, %v", ok, err)
	}
	mustClose(t, s)
	s = h.Open(t, keys)
	g = guardOf(t, s)
	v, err := g.GuardReject(ctx, "restart-b", now.Add(time.Second), p)
	if err != nil || !v.Tripped || !v.Changed {
		t.Fatalf("after a reopen the window forgot restart-a: %+v, %v", v, err)
	}
	st := mustStatus(t, g, "restart-a", now.Add(2*time.Second), p)
	if !st.Held || !st.Revert.Equal(now) {
		t.Fatalf("after a reopen: restart-a held=%v revert=%v, want held and its flag (%v) to revert", st.Held, st.Revert, now)
	}
}

func mustStatus(t *testing.T, g GuardState, tenant string, now time.Time, p GuardParams) GuardStatus {
	t.Helper()
	s, err := g.GuardStatus(testCtx(t), tenant, now, p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkGuardRules checks GuardState's rules. peer, when not nil, returns
// another handle on the same state (another replica).
func checkGuardRules(t *testing.T, open, peer func() GuardState) {
	ctx := testCtx(t)
	a := open()
	b := a
	if peer != nil {
		b = peer()
	}
	p := GuardParams{Threshold: 3, Window: 5 * time.Minute}
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 123456789, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	reject := func(g GuardState, id string, d time.Duration) GuardVerdict {
		t.Helper()
		v, err := g.GuardReject(ctx, id, at(d), p)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// Two rejections on two replicas: both flagged, recorded as revertible.
	v1 := reject(a, "g1", 0)
	if !v1.Flag || v1.Tripped || v1.Tenants != 1 {
		t.Fatalf("first rejection: %+v", v1)
	}
	if ok, err := a.GuardFlagged(ctx, "g1", at(0), v1.Trips, p); err != nil || !ok {
		t.Fatalf("GuardFlagged g1 = %v, %v", ok, err)
	}
	v2 := reject(b, "g2", time.Second)
	if !v2.Flag || v2.Tenants != 2 {
		t.Fatalf("second rejection (other replica): %+v", v2)
	}
	if ok, _ := b.GuardFlagged(ctx, "g2", at(time.Second), v2.Trips, p); !ok {
		t.Fatal("GuardFlagged g2 refused")
	}
	// The same tenant again counts once.
	if v := reject(a, "g1", 2*time.Second); v.Tenants != 2 || v.Tripped {
		t.Fatalf("a tenant rejected twice counted twice: %+v", v)
	}
	// The third distinct tenant, on replica b: the fleet's guard trips and
	// both flags are to be reverted.
	v3 := reject(b, "g3", 3*time.Second)
	if v3.Flag || !v3.Tripped || !v3.Changed || v3.Trips != v1.Trips+1 {
		t.Fatalf("third distinct tenant: %+v", v3)
	}
	st := mustStatus(t, a, "g1", at(4*time.Second), p)
	if !st.Tripped || st.Changed || !st.Held || st.Pending != 2 || !st.Revert.Equal(at(0)) || len(st.Reverts) != 2 {
		t.Fatalf("status after the trip, seen by a: %+v", st)
	}
	for _, r := range st.Reverts {
		want := map[string]time.Time{"g1": at(0), "g2": at(time.Second)}[r.Tenant]
		if !r.FlaggedAt.Equal(want) {
			t.Errorf("revert %s at %v, want %v (flag times must come back exact)", r.Tenant, r.FlaggedAt, want)
		}
	}
	// A flag after the trip is not recorded as revertible but as a pending
	// revert (its writer reverts it at once and acknowledges it).
	if ok, _ := a.GuardFlagged(ctx, "late", at(4*time.Second), v1.Trips, p); ok {
		t.Fatal("GuardFlagged accepted a flag from before the trip while tripped")
	}
	if st := mustStatus(t, b, "late", at(4*time.Second), p); st.Pending != 3 || !st.Revert.Equal(at(4*time.Second)) {
		t.Fatalf("a refused flag is not pending: %+v", st)
	}
	if err := a.GuardReverted(ctx, "late", at(4*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Reverts stay until acknowledged; another flag time is left alone.
	if err := a.GuardReverted(ctx, "g1", at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, b, "", at(5*time.Second), p); st.Pending != 2 {
		t.Fatalf("a revert of another flag time was acknowledged: %+v", st)
	}
	if err := a.GuardReverted(ctx, "g1", at(0)); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, b, "g1", at(5*time.Second), p); st.Pending != 1 || !st.Revert.IsZero() {
		t.Fatalf("after acknowledging g1's revert: %+v", st)
	}

	// A held tenant rejected again (a re-send) does not renew the window:
	// the guard clears 5 min after the last new tenant (g3 at 3 s).
	reject(a, "g1", 4*time.Minute)
	if st := mustStatus(t, a, "", at(3*time.Second+5*time.Minute-time.Millisecond), p); !st.Tripped {
		t.Fatalf("cleared before the window passed: %+v", st)
	}
	st = mustStatus(t, b, "g2", at(3*time.Second+5*time.Minute), p)
	if st.Tripped || !st.Changed || st.Tenants != 0 || st.Acquitted != 3 {
		t.Fatalf("not cleared a window after the last new tenant (re-sends renewed it?): %+v", st)
	}
	if st := mustStatus(t, a, "", at(3*time.Second+5*time.Minute), p); st.Changed {
		t.Fatalf("cleared twice: %+v", st)
	}
	// The held tenants are acquitted: still held until a grant proves the
	// configuration, except one probe every GuardProbeEvery; their
	// rejection does not count towards a new trip and flags them only once
	// proven.
	if !st.Held {
		t.Fatalf("an acquitted tenant is not held before any grant: %+v", st)
	}
	probe := p
	probe.Probe = true
	if st := mustStatus(t, a, "g1", at(5*time.Minute+4*time.Second), probe); st.Held {
		t.Fatalf("the first probe was refused: %+v", st)
	}
	if st := mustStatus(t, b, "g3", at(5*time.Minute+5*time.Second), probe); !st.Held {
		t.Fatalf("a second probe within GuardProbeEvery: %+v", st)
	}
	if st := mustStatus(t, b, "g3", at(5*time.Minute+4*time.Second+GuardProbeEvery), probe); st.Held {
		t.Fatalf("no probe after GuardProbeEvery: %+v", st)
	}
	for _, id := range []string{"g1", "g3"} {
		if v := reject(b, id, 5*time.Minute+20*time.Second); v.Flag || v.Tripped || v.Tenants != 0 {
			t.Fatalf("acquitted %s rejected before any grant: %+v (want held, not counted)", id, v)
		}
	}
	if err := a.GuardGranted(ctx, "other", at(5*time.Minute+30*time.Second), p); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, b, "g2", at(5*time.Minute+31*time.Second), p); st.Held {
		t.Fatalf("an acquitted tenant held after a grant proved the configuration: %+v", st)
	}
	for _, id := range []string{"g1", "g2", "g3"} {
		if v := reject(b, id, 6*time.Minute); !v.Flag || v.Tripped || v.Tenants != 0 {
			t.Fatalf("acquitted %s rejected after a grant: %+v (want flagged, not counted)", id, v)
		}
	}
	// A new tenant counts from one again.
	if v := reject(a, "g4", 6*time.Minute); !v.Flag || v.Tenants != 1 {
		t.Fatalf("a new tenant after the clear: %+v", v)
	}
	// Untripped, the window forgets: g4 is gone 5 min later.
	if st := mustStatus(t, a, "", at(11*time.Minute), p); st.Tenants != 0 {
		t.Fatalf("window kept a tenant rejected 5 min ago: %+v", st)
	}

	// A grant removes the tenant from the window and its revert.
	for i := range 3 {
		reject(a, fmt.Sprintf("h%d", i), 20*time.Minute+time.Duration(i)*time.Second)
	}
	if st := mustStatus(t, a, "h0", at(20*time.Minute+3*time.Second), p); !st.Held {
		t.Fatalf("h0 not held after the second trip: %+v", st)
	}
	if err := b.GuardGranted(ctx, "h0", at(20*time.Minute+3*time.Second), p); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, a, "h0", at(20*time.Minute+4*time.Second), p); st.Held || st.Tenants != 2 || !st.Tripped {
		t.Fatalf("after h0's grant: %+v", st)
	}

	// Another scope (a fixed configuration) has its own, untripped guard
	// and sends the held tenants again; the reverts are every scope's.
	fixed := p
	fixed.Scope = "fixed-config"
	if st := mustStatus(t, b, "h1", at(20*time.Minute+5*time.Second), fixed); st.Tripped || st.Held || st.Tenants != 0 || st.Pending != mustStatus(t, a, "", at(20*time.Minute+5*time.Second), p).Pending {
		t.Fatalf("another scope: %+v", st)
	}
	if v := reject(b, "h1", 20*time.Minute+6*time.Second); !v.Tripped {
		t.Fatalf("a rejection in another scope changed this one: %+v", v)
	}
	if _, err := b.GuardStatus(ctx, "", at(0), GuardParams{Threshold: 3, Window: time.Minute, Scope: "no spaces"}); err == nil {
		t.Error("an invalid scope was accepted")
	}

	// Renew (the old defect, tests only): a re-send renews the window.
	pr := p
	pr.Renew = true
	if _, err := a.GuardReject(ctx, "h1", at(24*time.Minute), pr); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, a, "", at(26*time.Minute), p); !st.Tripped {
		t.Fatalf("Renew did not renew the window: %+v", st)
	}

	// A canceled context fails every call.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.GuardReject(cctx, "x", at(30*time.Minute), p); !errors.Is(err, context.Canceled) {
		t.Errorf("GuardReject on a canceled context: %v", err)
	}
}
