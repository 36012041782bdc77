package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// Unit tests of SPEC §3 rules 11-16 and the smaller defects of issue 10;
// the audit reproductions (audit_*_test.go) and the takeover timing
// (takeover_test.go) run against real Redis and the emulator.

// flakyStore fails Get, Put and lock calls while down is set: the store is
// unreachable.
type flakyStore struct {
	store.Store
	down  atomic.Bool
	gets  atomic.Int64
	fails atomic.Int64
}

var errDown = errors.New("flaky: connection refused")

func (s *flakyStore) Get(ctx context.Context, id string) (*store.Tenant, error) {
	s.gets.Add(1)
	if s.down.Load() {
		s.fails.Add(1)
		return nil, errDown
	}
	return s.Store.Get(ctx, id)
}

func (s *flakyStore) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	if s.down.Load() {
		s.fails.Add(1)
		return 0, errDown
	}
	return s.Store.Put(ctx, t, expect)
}

// Rule 11: a holder with a grant keeps retrying its write while the store
// is down, with no deadline, and the grant lands once it is back.
func TestRule11HolderRetriesWriteWithoutDeadline(t *testing.T) {
	f := newFixture(t)
	fs := &flakyStore{Store: f.store}
	f.m = NewManager(fs, f.ref, f.m.opts)
	f.put(t, "acme", -time.Second)
	f.ref.next = func(tn *store.Tenant) (*Grant, error) {
		fs.down.Store(true) // the store goes away while the answer is on its way
		return &Grant{AccessToken: "at-new", RefreshToken: "rt-new", Expiry: f.clk.Now().Add(time.Hour)}, nil
	}
	done := make(chan error, 1)
	go func() { _, err := f.m.Token(ctx, "acme"); done <- err }()
	// Far past any former write window (WaitFor 5s) on the manager's clock.
	deadline := time.Now().Add(10 * time.Second)
	for fs.fails.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatal("the holder stopped retrying")
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.clk.Advance(time.Hour)
	fs.down.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Token after the store came back: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("grant never written")
	}
	rec := f.get(t, "acme")
	if rec.RefreshToken != "rt-new" || rec.RefreshInFlight || f.ref.count() != 1 {
		t.Fatalf("stored %+v after %d refreshes", rec, f.ref.count())
	}
}

// Rule 11: a successor takes over a dead holder's mark only after it saw
// the store answer for the whole grace; time the store was down does not
// count.
func TestRule11GraceCountsOnlyWhileStoreAnswers(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.TakeoverGrace = 600 * time.Millisecond; o.WaitFor = 10 * time.Second })
	rec := f.put(t, "acme", -time.Second)
	rec.MarkRefresh(store.Mark{ID: "dead", StartedAt: f.clk.Now().Add(-time.Minute), Lease: 2 * time.Second, Grace: 600 * time.Millisecond})
	if _, err := f.store.Put(ctx, rec, rec.Version); err != nil {
		t.Fatal(err)
	}
	fs := &flakyStore{Store: f.store}
	f.m = NewManager(fs, f.ref, f.m.opts)
	// The store goes down shortly after the successor's first look, for
	// longer than the grace.
	go func() {
		for fs.gets.Load() < 3 {
			time.Sleep(time.Millisecond)
		}
		fs.down.Store(true)
		time.Sleep(time.Second)
		fs.down.Store(false)
	}()
	start := time.Now()
	_, err := f.m.Token(ctx, "acme")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	if took < time.Second+600*time.Millisecond {
		t.Fatalf("took over after %v: the outage (1s) counted towards the grace (0.6s)", took)
	}
	if f.ref.count() != 1 {
		t.Fatalf("refreshes = %d", f.ref.count())
	}
}

// Rule 11: while a successor waits out the grace, a mark that changes
// (the holder lives: it stored its grant) ends the wait without a send.
func TestRule11LiveHolderWriteWinsOverTakeover(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.TakeoverGrace = 2 * time.Second })
	rec := f.put(t, "acme", -time.Second)
	rec.MarkRefresh(store.Mark{ID: "alive", StartedAt: f.clk.Now().Add(-time.Minute), Lease: 2 * time.Second, Grace: 2 * time.Second})
	if _, err := f.store.Put(ctx, rec, rec.Version); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		next := rec.Clone()
		next.ApplyGrant(store.Tokens{Access: "at-holder", Refresh: "rt-holder", AccessExpiry: f.clk.Now().Add(time.Hour)}, f.clk.Now())
		if _, err := f.store.Put(ctx, next, rec.Version); err != nil {
			t.Error(err)
		}
	}()
	tok, err := f.m.Token(ctx, "acme")
	if err != nil || tok.AccessToken != "at-holder" || f.ref.count() != 0 {
		t.Fatalf("got %q %v after %d refreshes; want the holder's token and no send", tok.AccessToken, err, f.ref.count())
	}
}

// Rule 11: the grace is the holder's, stored in its mark: a successor with
// a shorter own setting still waits the holder's grace (rolling change).
func TestRule11SuccessorUsesTheMarksGrace(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.TakeoverGrace = 50 * time.Millisecond })
	rec := f.put(t, "acme", -time.Second)
	rec.MarkRefresh(store.Mark{ID: "dead", StartedAt: f.clk.Now().Add(-time.Minute), Lease: 2 * time.Second, Grace: 800 * time.Millisecond})
	if _, err := f.store.Put(ctx, rec, rec.Version); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 800*time.Millisecond {
		t.Fatalf("took over after %v, before the mark's grace 800ms", took)
	}
}

// Rule 11 / CAS-conflict path: a holder whose mark was replaced by a
// successor's never writes over it.
func TestRule11GrantNeverOverwritesSuccessorsMark(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", -time.Second)
	f.ref.next = func(tn *store.Tenant) (*Grant, error) {
		cur, _ := f.store.Get(ctx, "acme")
		succ := cur.Clone()
		succ.MarkRefresh(store.Mark{ID: "successor", StartedAt: f.clk.Now(), Lease: 2 * time.Second, Grace: time.Second})
		if _, err := f.store.Put(ctx, succ, cur.Version); err != nil {
			t.Error(err)
		}
		return &Grant{AccessToken: "at-late", RefreshToken: "rt-late", Expiry: f.clk.Now().Add(time.Hour)}, nil
	}
	if _, err := f.m.Token(ctx, "acme"); !errors.Is(err, ErrTokenUnavailable) {
		t.Fatalf("err = %v, want token_unavailable", err)
	}
	rec := f.get(t, "acme")
	if rec.RefreshMark != "successor" || rec.RefreshToken == "rt-late" {
		t.Fatalf("the successor's mark was overwritten: %+v", rec)
	}
}

// Rule 12: the fencing value is the write id: a record rewritten to the
// same version number by someone else does not take the grant.
func TestRule12GrantFencedByWriteID(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", -time.Second)
	f.ref.next = func(tn *store.Tenant) (*Grant, error) {
		// Failover: the record went back one version and was written
		// again (same version number, another write, no mark).
		cur, _ := f.store.Get(ctx, "acme")
		if err := f.store.Delete(ctx, "acme"); err != nil {
			t.Error(err)
		}
		other := &store.Tenant{ID: "acme", Status: store.StatusActive, AccessToken: "at-other", RefreshToken: "rt-other", AccessExpiresAt: f.clk.Now().Add(time.Hour)}
		for v := int64(0); v < cur.Version; v++ {
			if _, err := f.store.Put(ctx, other, v); err != nil {
				t.Error(err)
			}
		}
		return &Grant{AccessToken: "at-stale", RefreshToken: "rt-stale", Expiry: f.clk.Now().Add(time.Hour)}, nil
	}
	tok, err := f.m.Token(ctx, "acme")
	if err != nil || tok.AccessToken != "at-other" {
		t.Fatalf("got %q %v; want the record's own token", tok.AccessToken, err)
	}
	if rec := f.get(t, "acme"); rec.RefreshToken != "rt-other" {
		t.Fatalf("stale write won over a repeated version: %q", rec.RefreshToken)
	}
}

// Rule 13: the token request gets a full TokenTimeout however long the
// lock wait took (here the acquisition's WaitFor is nearly used up).
func TestRule13FullTokenTimeoutAfterLockWait(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.WaitFor = 1200 * time.Millisecond; o.TokenTimeout = 3 * time.Second })
	f.put(t, "acme", -time.Second)
	if _, err := f.store.TryLock(ctx, "tenant:acme", time.Second); err != nil { // another holder, for most of WaitFor
		t.Fatal(err)
	}
	var budget atomic.Int64
	slow := make(chan struct{})
	f.ref.next = func(tn *store.Tenant) (*Grant, error) {
		<-slow
		return &Grant{AccessToken: "at-slow", RefreshToken: "rt-slow", Expiry: f.clk.Now().Add(time.Hour)}, nil
	}
	f.ref.gate = make(chan struct{})
	close(f.ref.gate)
	f.m.refresher = refresherFunc(func(c context.Context, tn *store.Tenant) (*Grant, error) {
		if d, ok := c.Deadline(); ok {
			budget.Store(int64(time.Until(d)))
		}
		time.AfterFunc(1500*time.Millisecond, func() { close(slow) }) // past WaitFor, within TokenTimeout
		return f.ref.Refresh(c, tn)
	})
	tok, err := f.m.Token(ctx, "acme")
	if err != nil || tok.AccessToken != "at-slow" {
		t.Fatalf("got %q %v", tok.AccessToken, err)
	}
	if b := time.Duration(budget.Load()); b < 2900*time.Millisecond {
		t.Fatalf("token request budget %v after the lock wait, want the full 3s", b)
	}
}

type refresherFunc func(context.Context, *store.Tenant) (*Grant, error)

func (f refresherFunc) Refresh(c context.Context, t *store.Tenant) (*Grant, error) { return f(c, t) }

// 502/504 from the token endpoint: the origin may have rotated, so the
// mark is kept (outcome unknown) and the token is not resent at once.
func TestGatewayErrorKeepsMark(t *testing.T) {
	for _, status := range []int{502, 504} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			f := newFixture(t)
			f.put(t, "acme", -time.Second)
			f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: status} }
			if _, err := f.m.Token(ctx, "acme"); !errors.Is(err, ErrTokenUnavailable) || !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("err = %v", err)
			}
			if rec := f.get(t, "acme"); !rec.RefreshInFlight || rec.FailureCount != 0 {
				t.Fatalf("mark not kept: %+v", rec)
			}
		})
	}
	if errors.Is(&EndpointError{Status: 503}, ErrOutcomeUnknown) || errors.Is(&EndpointError{Status: 502, Code: "invalid_grant"}, ErrOutcomeUnknown) {
		t.Fatal("503 or a coded error counted as outcome unknown")
	}
}

// POST /admin/tenants/{id}/refresh really refreshes, even while a 401
// recovery of the same tenant is in flight (no shared singleflight key).
func TestForceRefreshDoesNotShareRecover(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", time.Hour)
	f.ref.gate = make(chan struct{})
	recovered := make(chan error, 1)
	go func() { _, err := f.m.Recover(ctx, "acme", "at-acme-0"); recovered <- err }()
	for f.ref.count() < 1 {
		time.Sleep(time.Millisecond)
	}
	forced := make(chan Token, 1)
	go func() { tok, _ := f.m.ForceRefresh(ctx, "acme"); forced <- tok }()
	time.Sleep(50 * time.Millisecond)
	close(f.ref.gate)
	if err := <-recovered; err != nil {
		t.Fatal(err)
	}
	tok := <-forced
	if tok.AccessToken == "at-acme-0" || tok.AccessToken == "" {
		t.Fatalf("ForceRefresh returned %q: not a refreshed token", tok.AccessToken)
	}
}

// Rule 15: a flagged tenant's stored refresh token is tried once more by
// Retry; it recovers (OnRecover) without re-authorization.
func TestRule15RetryRecoversFlaggedTenant(t *testing.T) {
	recovered := make(chan string, 1)
	f := newFixture(t, func(o *ManagerOptions) { o.OnRecover = func(id string) { recovered <- id } })
	rec := f.put(t, "acme", -time.Second)
	rec.Flag("refresh token rejected by the provider (invalid_grant)", f.clk.Now())
	if _, err := f.store.Put(ctx, rec, rec.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Token(ctx, "acme"); !errors.Is(err, ErrReauthorizationRequired) || f.ref.count() != 0 {
		t.Fatalf("flagged tenant: %v, %d refreshes", err, f.ref.count())
	}
	tok, err := f.m.Retry(ctx, "acme")
	if err != nil || tok.AccessToken != "at-acme-1" {
		t.Fatalf("Retry = %q %v", tok.AccessToken, err)
	}
	if got := <-recovered; got != "acme" {
		t.Fatalf("OnRecover(%q)", got)
	}
	if rec := f.get(t, "acme"); rec.Status != store.StatusActive || rec.Reason != "" || !rec.FlaggedAt.IsZero() {
		t.Fatalf("after Retry: %+v", rec)
	}
	if tok, err := f.m.Token(ctx, "acme"); err != nil || tok.AccessToken != "at-acme-1" {
		t.Fatalf("Token after Retry: %q %v", tok.AccessToken, err)
	}
	// Still rejected: stays flagged, refresh token kept.
	f.put(t, "dead", -time.Second)
	dead := f.get(t, "dead")
	dead.Flag("x", f.clk.Now())
	f.store.Put(ctx, dead, dead.Version)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	if _, err := f.m.Retry(ctx, "dead"); !errors.Is(err, ErrReauthorizationRequired) {
		t.Fatalf("Retry of a dead token: %v", err)
	}
	if rec := f.get(t, "dead"); rec.Status != store.StatusReauthorizationRequired || rec.RefreshToken != "rt-dead-0" {
		t.Fatalf("after a failed Retry: %+v", rec)
	}
}

// Rule 15: many tenants rejected at once trip the guard: nothing more is
// flagged, the flags set within the window are reverted, every refresh
// token is kept, metric/log/hook report it; once the configuration is
// fixed every tenant refreshes without re-authorization.
func TestRule15MassInvalidGrantGuard(t *testing.T) {
	guard := make(chan bool, 4)
	f := newFixture(t, func(o *ManagerOptions) {
		o.GuardThreshold = 3
		o.GuardWindow = time.Minute
		o.OnGuard = func(tripped bool, _ int) { guard <- tripped }
	})
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	var ids []string
	for i := range 8 {
		id := fmt.Sprintf("t%d", i)
		ids = append(ids, id)
		f.put(t, id, -time.Second)
		_, err := f.m.Token(ctx, id)
		if i >= 2 && !errors.Is(err, ErrTokenUnavailable) {
			t.Fatalf("%s after the guard tripped: %v, want token_unavailable", id, err)
		}
	}
	if got := <-guard; !got {
		t.Fatal("OnGuard(false) first")
	}
	if !f.m.GuardTripped() {
		t.Fatal("guard not tripped")
	}
	for _, id := range ids {
		rec := f.get(t, id)
		if rec.Status != store.StatusActive || rec.RefreshToken != "rt-"+id+"-0" || rec.RefreshInFlight {
			t.Errorf("%s: status %s reason %q in_flight %v: want active with its refresh token", id, rec.Status, rec.Reason, rec.RefreshInFlight)
		}
	}
	if f.logs.FilterMessageSnippet("mass invalid_grant").Len() == 0 {
		t.Error("no log line")
	}
	// A held-back tenant is not sent again at once.
	n := f.ref.count()
	if _, err := f.m.Token(ctx, "t5"); !errors.Is(err, ErrTokenUnavailable) || f.ref.count() != n {
		t.Fatalf("held-back tenant resent at once: %v, %d -> %d", err, n, f.ref.count())
	}
	// The configuration is fixed: every tenant refreshes, none re-authorized.
	f.ref.next = nil
	f.clk.Advance(2 * time.Minute)
	for _, id := range ids {
		if _, err := f.m.Token(ctx, id); err != nil {
			t.Errorf("%s after the fix: %v", id, err)
		}
	}
	if f.m.GuardTripped() {
		t.Error("guard still tripped after the window")
	}
	if strings.Contains(fmt.Sprint(f.logs.All()), "rt-t") {
		t.Error("a refresh token in the logs")
	}
}

// A rejection is stored with retries: the store failing when the
// invalid_grant arrives must not leave the mark behind (the next takeover
// would send the rejected token again; found by the simulation, auth/sim).
func TestRejectionFlagRetriedWhileStoreDown(t *testing.T) {
	f := newFixture(t)
	fs := &flakyStore{Store: f.store}
	f.m = NewManager(fs, f.ref, f.m.opts)
	f.put(t, "acme", -time.Second)
	f.ref.next = func(*store.Tenant) (*Grant, error) {
		fs.down.Store(true) // the store goes away while the answer is on its way
		return nil, &EndpointError{Status: 400, Code: "invalid_grant"}
	}
	done := make(chan error, 1)
	go func() { _, err := f.m.Token(ctx, "acme"); done <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for fs.fails.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling a counter: no signal to wait on
	}
	if fs.fails.Load() < 3 {
		t.Fatalf("store calls failed %d times: the flag write was not retried", fs.fails.Load())
	}
	fs.down.Store(false)
	var re *ReauthError
	if err := <-done; !errors.As(err, &re) {
		t.Fatalf("err = %v, want the tenant flagged once the store is back", err)
	}
	if rec := f.get(t, "acme"); rec.Status != store.StatusReauthorizationRequired || rec.RefreshInFlight {
		t.Fatalf("%+v: want flagged, no mark", rec)
	}
	if f.ref.count() != 1 {
		t.Fatalf("refreshes = %d, want 1", f.ref.count())
	}
}

// flagFailGuard is a guard state whose GuardFlagged fails, taking the
// store down with it (the store went away right after the flag's write).
type flagFailGuard struct {
	*store.MemGuard
	fs *flakyStore
}

func (g flagFailGuard) GuardFlagged(context.Context, string, time.Time, uint64, store.GuardParams) (bool, error) {
	g.fs.down.Store(true)
	return false, errDown
}

// A flag the guard's state could not record is reverted by its own caller
// only, so that revert is retried while the store is down (bounded by
// WaitFor): else the tenant stays flagged for a rejection the guard never
// counted (found by the simulation, auth/sim).
func TestUnrecordedFlagRevertRetried(t *testing.T) {
	f := newFixture(t)
	fs := &flakyStore{Store: f.store}
	o := f.m.opts
	o.GuardThreshold = 3
	o.GuardState = flagFailGuard{MemGuard: store.NewMemGuard(), fs: fs}
	f.m = NewManager(fs, f.ref, o)
	f.put(t, "acme", -time.Second)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	done := make(chan error, 1)
	go func() { _, err := f.m.Token(ctx, "acme"); done <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for fs.fails.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling a counter: no signal to wait on
	}
	if fs.fails.Load() < 3 {
		t.Fatalf("store calls failed %d times: the revert was not retried", fs.fails.Load())
	}
	fs.down.Store(false)
	if err := <-done; errors.Is(err, ErrReauthorizationRequired) {
		t.Fatalf("err = %v: flagged although the guard never recorded the flag", err)
	}
	if rec := f.get(t, "acme"); rec.Status != store.StatusActive {
		t.Fatalf("%+v: want the unrecorded flag reverted", rec)
	}
}
