package auth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// flagHoldStore holds the write that flags tenant id, once, after it is
// stored: reached is closed, then it waits for release.
type flagHoldStore struct {
	store.Store
	id               string
	reached, release chan struct{}
	once             sync.Once
}

func (s *flagHoldStore) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	v, err := s.Store.Put(ctx, t, expect)
	if err == nil && t.ID == s.id && t.Status == store.StatusReauthorizationRequired {
		s.once.Do(func() {
			close(s.reached)
			<-s.release
		})
	}
	return v, err
}

// TestGuardTripDuringFlagWrite: the guard trips while a tenant's flag is
// being written (so the trip's revert list does not have it yet). The
// writer reverts its own flag: no tenant stays flagged by a tripped guard,
// and the tenant answers token_unavailable with its refresh token kept.
func TestGuardTripDuringFlagWrite(t *testing.T) {
	var opts ManagerOptions
	f := newFixture(t, func(o *ManagerOptions) {
		o.GuardThreshold, o.GuardWindow = 3, time.Minute
		opts = *o
	})
	hs := &flagHoldStore{Store: f.store, id: "x", reached: make(chan struct{}), release: make(chan struct{})}
	f.m = NewManager(hs, f.ref, opts)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	for _, id := range []string{"x", "y", "z"} {
		f.put(t, id, -time.Second)
	}
	xErr := make(chan error, 1)
	go func() {
		_, err := f.m.Token(ctx, "x") // first rejection: flagged, write held
		xErr <- err
	}()
	select {
	case <-hs.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("x's flag was not written")
	}
	if _, err := f.m.Token(ctx, "y"); !errors.Is(err, ErrReauthorizationRequired) {
		t.Fatalf("y (second rejection, guard not tripped): %v, want reauthorization_required", err)
	}
	if _, err := f.m.Token(ctx, "z"); !errors.Is(err, ErrTokenUnavailable) {
		t.Fatalf("z (third rejection, trips the guard): %v, want token_unavailable", err)
	}
	close(hs.release)
	select {
	case err := <-xErr:
		if !errors.Is(err, ErrTokenUnavailable) {
			t.Fatalf("x after the trip: %v, want token_unavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("x's Token did not return")
	}
	for _, id := range []string{"x", "y", "z"} {
		if rec := f.get(t, id); rec.Status != store.StatusActive || rec.RefreshToken != "rt-"+id+"-0" {
			t.Errorf("%s: status %s reason %q: want active with its refresh token", id, rec.Status, rec.Reason)
		}
	}
}

// TestGuardFlaggedAtAfterTrip: flagRecorded refuses a flag whose verdict
// came before a trip (the trip's reverts were taken without it), and a
// retry's flag always stands.
func TestGuardFlaggedAtAfterTrip(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.GuardThreshold, o.GuardWindow = 2, time.Minute })
	now := f.clk.Now()
	flag, trips := f.m.consultGuard(ctx, "a", false, now)
	if !flag || !f.m.flagRecorded(ctx, "a", now, trips, false) {
		t.Fatal("first rejection: flag and record it")
	}
	if flag, _ := f.m.consultGuard(ctx, "b", false, now); flag { // the second tenant trips it
		t.Fatal("second tenant: the guard should trip")
	}
	g := newFixture(t, func(o *ManagerOptions) { o.GuardThreshold, o.GuardWindow = 2, time.Minute })
	_, cTrips := g.m.consultGuard(ctx, "c", false, now)
	g.m.consultGuard(ctx, "d", false, now) // trips while c's flag is written
	if g.m.flagRecorded(ctx, "c", now, cTrips, false) {
		t.Fatal("a flag from before the trip was recorded")
	}
	if flag, _ := g.m.consultGuard(ctx, "e", true, now); !flag || !g.m.flagRecorded(ctx, "e", now, 0, true) {
		t.Fatal("a retry may always flag, also while tripped")
	}
	off := newFixture(t) // GuardThreshold -1
	if flag, trips := off.m.consultGuard(ctx, "e", false, now); !flag || !off.m.flagRecorded(ctx, "e", now, trips, false) {
		t.Fatal("guard off: every flag stands")
	}
}

// TestGuardFixedConfigurationResendsAtOnce (rule 20): a trip blames the
// configuration it happened under. A replica restarted with a fixed one
// (another GuardScope) sends the held tenants' refresh tokens again at
// once, while one still running the old configuration keeps holding them;
// the tripped guard survives a restart with the same configuration.
func TestGuardFixedConfigurationResendsAtOnce(t *testing.T) {
	var opts ManagerOptions
	f := newFixture(t, func(o *ManagerOptions) {
		o.GuardThreshold, o.GuardWindow, o.GuardScope = 3, 5*time.Minute, "wrong-client"
		opts = *o
	})
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	for _, id := range []string{"a", "b", "c"} {
		f.put(t, id, -time.Second)
		_, _ = f.m.Token(ctx, id)
	}
	if !f.m.GuardTripped() {
		t.Fatal("the guard did not trip")
	}
	sent := f.ref.count()
	// Restarted with the same (wrong) configuration: still tripped, the
	// held tenants are not sent again.
	same := NewManager(f.store, f.ref, opts)
	if _, err := same.Token(ctx, "a"); !errors.Is(err, ErrTokenUnavailable) || !same.GuardTripped() || f.ref.count() != sent {
		t.Fatalf("after a restart with the same configuration: %v, tripped %v, sent %d more", err, same.GuardTripped(), f.ref.count()-sent)
	}
	// Restarted with the fixed configuration: served at once.
	fixedOpts := opts
	fixedOpts.GuardScope = "right-client"
	good := &fakeRefresher{now: f.clk.Now}
	fixed := NewManager(f.store, good, fixedOpts)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := fixed.Token(ctx, id); err != nil {
			t.Errorf("%s with the fixed configuration: %v", id, err)
		}
	}
	if fixed.GuardTripped() || !same.GuardTripped() {
		t.Errorf("tripped: fixed configuration %v (want false), old configuration %v (want true)", fixed.GuardTripped(), same.GuardTripped())
	}
	if GuardScope("id", "s", "https://a/token") == GuardScope("id", "s", "https://b/token") || GuardScope("id", "s", "u") == GuardScope("id2", "s", "u") ||
		GuardScope("id", "s", "u") == GuardScope("id", "wrong", "u") {
		t.Error("GuardScope does not tell configurations apart")
	}
	if sc := GuardScope("id", "the-client-secret", "u"); strings.Contains(sc, "the-client-secret") || len(sc) != 16 {
		t.Errorf("GuardScope = %q: want 16 hex digits that do not hold the secret", sc)
	}
}

// TestGuardClearedProbesBeforeFlagging (rule 20): after the guard clears,
// the tenants it held are not flagged on the configuration's word: the
// fleet sends one of them at a time (a probe every store.GuardProbeEvery)
// until a grant proves the configuration; then they are sent again, and
// only a rejection after that flags. A configuration still wrong flags
// nobody.
func TestGuardClearedProbesBeforeFlagging(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.GuardThreshold, o.GuardWindow = 3, 5*time.Minute })
	reject := func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	f.ref.next = reject
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		f.put(t, id, -time.Second)
		_, _ = f.m.Token(ctx, id)
	}
	if !f.m.GuardTripped() {
		t.Fatal("the guard did not trip")
	}
	f.clk.Advance(6 * time.Minute) // cleared: no new tenant for a window
	if f.m.GuardTripped() {
		t.Fatal("the guard did not clear")
	}
	// Still the wrong configuration: the probe is rejected, nobody flagged,
	// the others held without a send.
	sent := f.ref.count()
	for _, id := range ids {
		if _, err := f.m.Token(ctx, id); !errors.Is(err, ErrTokenUnavailable) {
			t.Errorf("%s after the clear, configuration still wrong: %v, want token_unavailable", id, err)
		}
	}
	if n := f.ref.count() - sent; n != 1 {
		t.Errorf("%d refresh tokens sent after the clear, want 1 (one probe)", n)
	}
	for _, id := range ids {
		if rec := f.get(t, id); rec.Status != store.StatusActive {
			t.Errorf("%s flagged on the configuration's word: %s", id, rec.Reason)
		}
	}
	// Fixed (same configuration name): the next probe succeeds, then the
	// others are sent and served.
	f.ref.mu.Lock()
	f.ref.next = nil
	f.ref.mu.Unlock()
	f.clk.Advance(store.GuardProbeEvery)
	for _, id := range ids {
		if _, err := f.m.Token(ctx, id); err != nil {
			t.Errorf("%s after the fix: %v", id, err)
		}
	}
}

// TestGuardHeldTenantAuthorizedAgainIsSent (rule 20): the guard holds a
// tenant for a rejection of its old grant; once the merchant authorized
// again, the new grant (which nobody rejected) is refreshed while the
// trip lasts, and the other held tenants stay held (found by the
// simulation, auth/sim: a re-authorized tenant answered
// token_unavailable until the trip cleared).
func TestGuardHeldTenantAuthorizedAgainIsSent(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.GuardThreshold = 3 })
	f.ref.next = audit3Reject
	for _, id := range []string{"h1", "h2", "h3"} {
		f.put(t, id, -time.Second)
	}
	for _, id := range []string{"h1", "h2", "h3"} {
		_, _ = f.m.Token(ctx, id)
	}
	if !f.m.GuardTripped() {
		t.Fatal("the guard did not trip")
	}
	f.clk.Advance(time.Second)
	rec := f.get(t, "h1")
	rec.Authorize(store.Tokens{Access: "at-h1-new", AccessExpiry: f.clk.Now().Add(-time.Second), Refresh: "rt-h1-new"}, f.clk.Now())
	if _, err := f.store.Put(ctx, rec, rec.Version); err != nil {
		t.Fatal(err)
	}
	f.m.Invalidate("h1")
	f.ref.mu.Lock()
	f.ref.next = func(t *store.Tenant) (*Grant, error) {
		if t.RefreshToken == "rt-h1-new" {
			return &Grant{AccessToken: "at-h1-2", RefreshToken: "rt-h1-2", Expiry: f.clk.Now().Add(time.Hour)}, nil
		}
		return audit3Reject(t)
	}
	f.ref.mu.Unlock()
	sent := f.ref.count()
	tok, err := f.m.Token(ctx, "h1")
	if err != nil || tok.AccessToken != "at-h1-2" {
		t.Fatalf("re-authorized h1 while the guard is tripped: %+v, %v (want the refreshed token)", tok, err)
	}
	if _, err := f.m.Token(ctx, "h2"); err == nil || f.ref.count() != sent+1 {
		t.Fatalf("held h2: err %v, token requests %d (want held, 1 request: h1's)", err, f.ref.count()-sent)
	}
}

// failingGuard is a store.GuardState whose GuardReject fails while fail
// is set.
type failingGuard struct {
	store.GuardState
	fail atomic.Bool
}

func (g *failingGuard) GuardReject(ctx context.Context, tenant string, now time.Time, p store.GuardParams) (store.GuardVerdict, error) {
	if g.fail.Load() {
		return store.GuardVerdict{}, errors.New("guard state unavailable")
	}
	return g.GuardState.GuardReject(ctx, tenant, now, p)
}

// TestGuardRejectionRecordedLate (rule 20): a rejection the guard's state
// could not take is not flagged and not forgotten either: recorded once
// the store answers again, it trips the guard, whose trip reverts the
// flags set before it (found by the simulation, auth/sim: the trip never
// came and the first tenants stayed flagged).
func TestGuardRejectionRecordedLate(t *testing.T) {
	gs := &failingGuard{GuardState: store.NewMemGuard()}
	f := newFixture(t, func(o *ManagerOptions) { o.GuardThreshold = 3; o.GuardState = gs })
	f.ref.next = audit3Reject
	for _, id := range []string{"l1", "l2", "l3"} {
		f.put(t, id, -time.Second)
	}
	for _, id := range []string{"l1", "l2"} {
		if _, err := f.m.Token(ctx, id); !errors.Is(err, ErrReauthorizationRequired) {
			t.Fatalf("%s: %v (want flagged: below the threshold)", id, err)
		}
	}
	gs.fail.Store(true)
	if _, err := f.m.Token(ctx, "l3"); errors.Is(err, ErrReauthorizationRequired) || err == nil {
		t.Fatalf("l3 with the guard's state unavailable: %v (want unavailable, not flagged)", err)
	}
	if f.get(t, "l3").Status != store.StatusActive || f.m.GuardTripped() {
		t.Fatal("l3 flagged, or the guard tripped without its state")
	}
	gs.fail.Store(false)
	f.m.recordUnrecorded(ctx)
	if !f.m.GuardTripped() {
		t.Fatal("the late rejection did not trip the guard")
	}
	f.m.settleReverts(ctx)
	for _, id := range []string{"l1", "l2", "l3"} {
		if rec := f.get(t, id); rec.Status != store.StatusActive {
			t.Errorf("%s is %s after the late trip (want active: reverted or never flagged)", id, rec.Status)
		}
	}
	f.m.recordUnrecorded(ctx) // nothing left: no second record
	if n := len(f.m.guard.takeUnrecorded()); n != 0 {
		t.Errorf("%d rejections still kept after they were recorded", n)
	}
}

// notAckedStore is a store whose PutAcked applies the write but, while
// notAcked is set, answers store.ErrNotAcked (no replica acknowledged).
type notAckedStore struct {
	*store.Bolt
	notAcked atomic.Bool
}

func (s *notAckedStore) PutAcked(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	v, err := s.Put(ctx, t, expect)
	if err == nil && s.notAcked.Load() {
		return v, store.ErrNotAcked
	}
	return v, err
}

// TestGuardRevertNeedsAcknowledgement (rule 20): a revert the replicas did
// not acknowledge is reported as failed, so it stays pending (a failover
// may lose it and bring the flag back); once the write is known, the
// revert is moot.
func TestGuardRevertNeedsAcknowledgement(t *testing.T) {
	f := newFixture(t)
	s := &notAckedStore{Bolt: f.store}
	m := NewManager(s, f.ref, ManagerOptions{Now: f.clk.Now, GuardThreshold: 3, WaitFor: time.Second})
	f.put(t, "n1", time.Hour)
	at := f.clk.Now()
	if _, err := store.Update(ctx, f.store, "n1", func(r *store.Tenant) error { r.Flag("test", at); return nil }); err != nil {
		t.Fatal(err)
	}
	s.notAcked.Store(true)
	if _, err := m.unflag(ctx, "n1", at, false); !errors.Is(err, store.ErrNotAcked) {
		t.Fatalf("unacknowledged revert: %v (want store.ErrNotAcked: it stays pending)", err)
	}
	s.notAcked.Store(false)
	if rec, err := m.unflag(ctx, "n1", at, false); err != nil || rec != nil {
		t.Fatalf("retried revert of a write that landed: %+v, %v (want moot)", rec, err)
	}
	if st := f.get(t, "n1").Status; st != store.StatusActive {
		t.Fatalf("n1 is %s, want active", st)
	}
}
