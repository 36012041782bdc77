package auth

import (
	"context"
	"errors"
	"fmt"
	"github.com/lsproxy/lsproxy/internal/testclock"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lsproxy/lsproxy/store"
)

// fakeRefresher is a hand-written Refresher: it rotates tokens, or fails as told.
type fakeRefresher struct {
	mu    sync.Mutex
	calls int
	seen  []string // refresh tokens presented
	// next, when set, answers instead of a normal rotation.
	next func(t *store.Tenant) (*Grant, error)
	// gate, when set, is waited on before answering.
	gate chan struct{}
	now  func() time.Time
}

func (f *fakeRefresher) Refresh(ctx context.Context, t *store.Tenant) (*Grant, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.seen = append(f.seen, t.RefreshToken)
	next := f.next
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if next != nil {
		return next(t)
	}
	return &Grant{AccessToken: fmt.Sprintf("at-%s-%d", t.ID, n), RefreshToken: fmt.Sprintf("rt-%s-%d", t.ID, n),
		Expiry: f.now().Add(time.Hour)}, nil
}

func (f *fakeRefresher) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func testKeys(t testing.TB) *store.Keyring {
	k, err := store.NewKeyring([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type fixture struct {
	store *store.Bolt
	ref   *fakeRefresher
	m     *Manager
	clk   *testclock.Clock
	logs  *observer.ObservedLogs
	flags chan string
}

func newFixture(t *testing.T, opts ...func(*ManagerOptions)) *fixture {
	t.Helper()
	s, err := store.OpenBolt(t.TempDir(), testKeys(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	clk := testclock.New(time.Now())
	ref := &fakeRefresher{now: clk.Now}
	core, logs := observer.New(zap.DebugLevel)
	f := &fixture{store: s, ref: ref, clk: clk, logs: logs, flags: make(chan string, 10)}
	// TakeoverGrace is measured on the real clock (it is this process's own
	// observation), the lease on the test clock; the guard is off here
	// (guard_test.go tests it).
	o := ManagerOptions{Now: clk.Now, Logger: zap.New(core), LockTTL: 2 * time.Second, WaitFor: 5 * time.Second,
		TakeoverGrace: 200 * time.Millisecond, GuardThreshold: -1,
		OnFlag: func(tenant, reason string) { f.flags <- tenant + ": " + reason }}
	for _, fn := range opts {
		fn(&o)
	}
	f.m = NewManager(s, ref, o)
	return f
}

// put stores a tenant whose access token expires after ttl.
func (f *fixture) put(t *testing.T, id string, ttl time.Duration) *store.Tenant {
	t.Helper()
	rec := &store.Tenant{ID: id, Status: store.StatusActive, AccessToken: "at-" + id + "-0", RefreshToken: "rt-" + id + "-0",
		AccessExpiresAt: f.clk.Now().Add(ttl), CreatedAt: f.clk.Now()}
	v, err := f.store.Put(context.Background(), rec, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec.Version = v
	return rec
}

func (f *fixture) get(t *testing.T, id string) *store.Tenant {
	t.Helper()
	rec, err := f.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

var ctx = context.Background()

func TestFreshTokenServedWithoutRefresh(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", time.Hour)
	for i := 0; i < 3; i++ {
		tok, err := f.m.Token(ctx, "acme")
		if err != nil || tok.AccessToken != "at-acme-0" {
			t.Fatalf("got %+v %v", tok, err)
		}
	}
	if f.ref.count() != 0 {
		t.Fatalf("refreshed %d times", f.ref.count())
	}
}

func TestExpiredTokenRefreshedOnceUnderConcurrency(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", 10*time.Second) // inside RefreshBefore (30s)
	f.ref.gate = make(chan struct{})
	var wg sync.WaitGroup
	results := make(chan string, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := f.m.Token(ctx, "acme")
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			results <- tok.AccessToken
		}()
	}
	close(f.ref.gate)
	wg.Wait()
	close(results)
	for r := range results {
		if r != "at-acme-1" {
			t.Fatalf("got %q", r)
		}
	}
	if f.ref.count() != 1 {
		t.Fatalf("refreshes = %d, want 1", f.ref.count())
	}
	rec := f.get(t, "acme")
	if rec.RefreshToken != "rt-acme-1" || rec.RefreshInFlight || rec.RefreshCount != 1 || rec.LastRefreshAt.IsZero() {
		t.Fatalf("stored %+v", rec)
	}
}

func TestInvalidGrantFlagsWhenTokenStillStored(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", -time.Minute)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	_, err := f.m.Token(ctx, "acme")
	var re *ReauthError
	if !errors.As(err, &re) || !errors.Is(err, ErrReauthorizationRequired) || !strings.Contains(re.Reason, "invalid_grant") {
		t.Fatalf("err = %v", err)
	}
	rec := f.get(t, "acme")
	if rec.Status != store.StatusReauthorizationRequired || rec.Reason == "" || rec.FlaggedAt.IsZero() || rec.RefreshInFlight {
		t.Fatalf("stored %+v", rec)
	}
	if got := <-f.flags; !strings.HasPrefix(got, "acme: ") {
		t.Fatalf("OnFlag %q", got)
	}
	// Flagged tenants answer at once, without another refresh.
	_, err = f.m.Token(ctx, "acme")
	if !errors.Is(err, ErrReauthorizationRequired) || f.ref.count() != 1 {
		t.Fatalf("second call: %v, refreshes %d", err, f.ref.count())
	}
}

func TestInvalidGrantAfterLostRaceDoesNotFlag(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", -time.Minute)
	// While our request is out, another replica rotates the token and
	// writes; then the provider rejects ours.
	f.ref.next = func(t0 *store.Tenant) (*Grant, error) {
		cur, _ := f.store.Get(ctx, "acme")
		won := cur.Clone()
		won.AccessToken, won.RefreshToken = "at-other", "rt-other"
		won.AccessExpiresAt = f.clk.Now().Add(time.Hour)
		won.RefreshInFlight = false
		if _, err := f.store.Put(ctx, won, cur.Version); err != nil {
			t.Error(err)
		}
		return nil, &EndpointError{Status: 400, Code: "invalid_grant"}
	}
	tok, err := f.m.Token(ctx, "acme")
	if err != nil || tok.AccessToken != "at-other" {
		t.Fatalf("got %+v %v", tok, err)
	}
	if rec := f.get(t, "acme"); rec.Status != store.StatusActive {
		t.Fatalf("flagged by mistake: %+v", rec)
	}
}

func TestTransientFailureNeverFlags(t *testing.T) {
	f := newFixture(t)
	f.put(t, "valid", 10*time.Second) // due for refresh, still valid
	f.put(t, "expired", -time.Second)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 503} }

	tok, err := f.m.Token(ctx, "valid")
	if err != nil || tok.AccessToken != "at-valid-0" {
		t.Fatalf("valid: %+v %v", tok, err)
	}
	_, err = f.m.Token(ctx, "expired")
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.RetryAfter <= 0 {
		t.Fatalf("expired: %v", err)
	}
	for _, id := range []string{"valid", "expired"} {
		rec := f.get(t, id)
		if rec.Status != store.StatusActive || rec.RefreshInFlight || rec.FailureCount != 1 {
			t.Fatalf("%s: %+v", id, rec)
		}
	}
	// Recovery: the next attempt after the retry pause succeeds.
	f.ref.next = nil
	f.clk.Advance(2 * time.Second)
	tok, err = f.m.Token(ctx, "expired")
	if err != nil || !strings.HasPrefix(tok.AccessToken, "at-expired-") {
		t.Fatalf("after recovery: %+v %v", tok, err)
	}
}

func TestLostResponseThenRejectionFlagsAsInterrupted(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.WaitFor = time.Second })
	f.put(t, "acme", -time.Second)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, fmt.Errorf("%w: timeout", ErrOutcomeUnknown) }
	if _, err := f.m.Token(ctx, "acme"); !errors.Is(err, ErrTokenUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if rec := f.get(t, "acme"); !rec.RefreshInFlight || rec.Status != store.StatusActive {
		t.Fatalf("in-flight mark not kept: %+v", rec)
	}
	// The next attempt tries the stored token once; the provider says it was used.
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	// The earlier holder gave its lock back; the successor waits out the
	// grace on its own monotonic clock (the holder's wall-clock mark time is
	// not compared with ours: rule 17), then sends the stored token once.
	start := time.Now()
	_, err := f.m.Token(ctx, "acme")
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("took over after %v, before the grace (200ms) passed", took)
	}
	var re *ReauthError
	if !errors.As(err, &re) || re.Reason != "refresh token consumed by an interrupted refresh" {
		t.Fatalf("err = %v", err)
	}
	if f.ref.count() != 2 {
		t.Fatalf("refreshes = %d, want 2 (no loop)", f.ref.count())
	}
}

func TestLostResponseThenSuccessClearsMark(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", -time.Second)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, fmt.Errorf("%w: reset", ErrOutcomeUnknown) }
	f.m.Token(ctx, "acme")
	f.ref.next = nil
	f.clk.Advance(3 * time.Second) // past the earlier holder's lease
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if rec := f.get(t, "acme"); rec.RefreshInFlight || rec.Status != store.StatusActive {
		t.Fatalf("%+v", rec)
	}
}

func TestBreakerOpensAndRecovers(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.BreakerFailures = 3; o.BreakerOpenFor = 100 * time.Millisecond })
	f.put(t, "acme", -time.Second)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 503} }
	for i := 0; i < 3; i++ {
		f.clk.Advance(2 * time.Second) // past the retry pause
		f.m.Token(ctx, "acme")
	}
	if !f.m.BreakerOpen() || f.ref.count() != 3 {
		t.Fatalf("open=%v calls=%d", f.m.BreakerOpen(), f.ref.count())
	}
	f.clk.Advance(2 * time.Second)
	_, err := f.m.Token(ctx, "acme")
	if !errors.Is(err, ErrTokenUnavailable) || !errors.Is(err, ErrBreakerOpen) || f.ref.count() != 3 {
		t.Fatalf("while open: %v, calls %d", err, f.ref.count())
	}
	f.ref.next = nil
	deadline := time.Now().Add(5 * time.Second)
	for f.m.BreakerOpen() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // the breaker's own timer; no signal to wait on
	}
	f.clk.Advance(2 * time.Second)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatalf("after open period: %v", err)
	}
	if rec := f.get(t, "acme"); rec.Status != store.StatusActive {
		t.Fatal("flagged")
	}
}

func TestInvalidGrantDoesNotTripBreaker(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.BreakerFailures = 2 })
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	for i := 0; i < 4; i++ {
		id := fmt.Sprintf("t%d", i)
		f.put(t, id, -time.Second)
		f.m.Token(ctx, id)
	}
	if f.m.BreakerOpen() {
		t.Fatal("invalid_grant answers opened the breaker")
	}
}

func TestRecover(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", time.Hour)
	// A 401 on an old token: the stored one differs, no refresh.
	tok, err := f.m.Recover(ctx, "acme", "at-old")
	if err != nil || tok.AccessToken != "at-acme-0" || f.ref.count() != 0 {
		t.Fatalf("got %+v %v calls %d", tok, err, f.ref.count())
	}
	// A 401 on the current token forces one refresh.
	tok, err = f.m.Recover(ctx, "acme", "at-acme-0")
	if err != nil || tok.AccessToken != "at-acme-1" || f.ref.count() != 1 {
		t.Fatalf("got %+v %v calls %d", tok, err, f.ref.count())
	}
	// Another 401 on the just-refreshed token does not churn.
	tok, err = f.m.Recover(ctx, "acme", "at-acme-1")
	if err != nil || tok.AccessToken != "at-acme-1" || f.ref.count() != 1 {
		t.Fatalf("got %+v %v calls %d", tok, err, f.ref.count())
	}
	if rec := f.get(t, "acme"); rec.Status != store.StatusActive {
		t.Fatal("flagged")
	}
}

func TestForceRefresh(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", time.Hour)
	if _, err := f.m.ForceRefresh(ctx, "acme"); err != nil || f.ref.count() != 1 {
		t.Fatalf("%v calls %d", err, f.ref.count())
	}
	if _, err := f.m.ForceRefresh(ctx, "nobody"); !errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("unknown: %v", err)
	}
}

func TestUnknownTenant(t *testing.T) {
	f := newFixture(t)
	if _, err := f.m.Token(ctx, "nobody"); !errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("err = %v", err)
	}
}

func TestWaitsForOtherHolderInsteadOfRefreshing(t *testing.T) {
	f := newFixture(t)
	rec := f.put(t, "acme", -time.Second)
	lock, err := f.store.TryLock(ctx, "tenant:acme", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Token, 1)
	go func() {
		tok, err := f.m.Token(ctx, "acme")
		if err != nil {
			t.Error(err)
		}
		done <- tok
	}()
	// The "other replica" writes its refresh result, then releases.
	next := rec.Clone()
	next.AccessToken, next.RefreshToken = "at-other", "rt-other"
	next.AccessExpiresAt = f.clk.Now().Add(time.Hour)
	if _, err := f.store.Put(ctx, next, rec.Version); err != nil {
		t.Fatal(err)
	}
	lock.Release(ctx)
	select {
	case tok := <-done:
		if tok.AccessToken != "at-other" {
			t.Fatalf("got %q", tok.AccessToken)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter did not finish")
	}
	if f.ref.count() != 0 {
		t.Fatalf("refreshed %d times while another held the lock", f.ref.count())
	}
}

func TestCallerCancelDoesNotAbandonRefresh(t *testing.T) {
	f := newFixture(t)
	f.put(t, "acme", -time.Second)
	f.ref.gate = make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := f.m.Token(cctx, "acme"); errc <- err }()
	// Wait until the refresh is in flight (marked in the store).
	deadline := time.Now().Add(5 * time.Second)
	for !f.get(t, "acme").RefreshInFlight {
		if time.Now().After(deadline) {
			t.Fatal("refresh never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("caller err = %v", err)
	}
	close(f.ref.gate)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := f.m.FinishRefreshes(wctx); err != nil {
		t.Fatal(err)
	}
	if rec := f.get(t, "acme"); rec.RefreshToken != "rt-acme-1" || rec.RefreshInFlight {
		t.Fatalf("refresh result lost: %+v", rec)
	}
}

func TestStoreDownServesCachedValidToken(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.CacheTTL = time.Second })
	f.put(t, "acme", time.Hour)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	f.store.Close()
	f.clk.Advance(2 * time.Second) // cache entry past CacheTTL: a store read is attempted and fails
	tok, err := f.m.Token(ctx, "acme")
	if err != nil || tok.AccessToken != "at-acme-0" {
		t.Fatalf("got %+v %v", tok, err)
	}
}

func TestInvalidateOnChangeNotification(t *testing.T) {
	f := newFixture(t)
	rec := f.put(t, "acme", time.Hour)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go f.m.Run(rctx)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// Another writer replaces the token; the notification drops the cache.
	next := rec.Clone()
	next.AccessToken = "at-new"
	var seen atomic.Bool
	deadline := time.Now().Add(5 * time.Second)
	if _, err := f.store.Put(ctx, next, rec.Version); err != nil {
		t.Fatal(err)
	}
	for time.Now().Before(deadline) {
		tok, _ := f.m.Token(ctx, "acme")
		if tok.AccessToken == "at-new" {
			seen.Store(true)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !seen.Load() {
		t.Fatal("cached token never invalidated")
	}
}

func TestLogsNeverHoldTokens(t *testing.T) {
	f := newFixture(t)
	f.put(t, "a", -time.Second)
	f.put(t, "b", -time.Second)
	f.m.Token(ctx, "a")
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	f.m.Token(ctx, "b")
	all := fmt.Sprint(f.logs.All())
	for _, s := range []string{"at-a-", "rt-a-", "at-b-", "rt-b-"} {
		if strings.Contains(all, s) {
			t.Errorf("log holds %q", s)
		}
	}
	if f.logs.FilterMessage("token refreshed").Len() != 1 || f.logs.FilterMessage("tenant flagged for reauthorization").Len() != 1 {
		t.Errorf("missing token events: %v", all)
	}
}

func TestLockRenewedWhileTokenEndpointIsSlow(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.LockTTL = 150 * time.Millisecond; o.WaitFor = 10 * time.Second })
	f.put(t, "acme", -time.Second)
	f.ref.gate = make(chan struct{})
	done := make(chan error, 1)
	go func() { _, err := f.m.Token(ctx, "acme"); done <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for !f.get(t, "acme").RefreshInFlight {
		if time.Now().After(deadline) {
			t.Fatal("refresh never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Well past the TTL, the holder still holds the lock: another replica
	// cannot take it and send the same refresh token.
	time.Sleep(500 * time.Millisecond) // > 3 TTLs: the lease must have been renewed
	if l, err := f.store.TryLock(ctx, "tenant:acme", time.Second); !errors.Is(err, store.ErrLockHeld) {
		if l != nil {
			l.Release(ctx)
		}
		t.Fatalf("lock free during a slow refresh: %v", err)
	}
	close(f.ref.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.ref.count() != 1 {
		t.Fatalf("refreshes = %d", f.ref.count())
	}
}

// An interrupted refresh's flag (the takeover's send after a lost answer
// was rejected while the guard was quiet) is explained by that lost
// answer: a later trip does not revert it, else the tenant is left active
// on a spent token that every probe sends again (invariant (a) of the
// simulation, auth/sim; found there).
func TestInterruptedFlagIsNotRevertedByALaterTrip(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.WaitFor, o.GuardThreshold = time.Second, 3 })
	f.put(t, "acme", -time.Second)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, fmt.Errorf("%w: timeout", ErrOutcomeUnknown) }
	if _, err := f.m.Token(ctx, "acme"); !errors.Is(err, ErrTokenUnavailable) {
		t.Fatalf("lost answer: err = %v", err)
	}
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	var re *ReauthError
	if _, err := f.m.Token(ctx, "acme"); !errors.As(err, &re) || re.Reason != ReasonInterrupted {
		t.Fatalf("takeover's rejection: err = %v, want flagged %q", err, ReasonInterrupted)
	}
	// Three more tenants rejected within the window: the guard trips and
	// reverts the flags it may.
	for i := range 3 {
		id := fmt.Sprintf("t%d", i)
		f.put(t, id, -time.Second)
		f.m.Token(ctx, id)
	}
	if !f.m.GuardTripped() {
		t.Fatal("guard not tripped after 4 rejections")
	}
	f.m.settleReverts(ctx)
	if rec := f.get(t, "acme"); rec.Status != store.StatusReauthorizationRequired || rec.Reason != ReasonInterrupted {
		t.Fatalf("after the trip's reverts: %+v", rec)
	}
	if rec := f.get(t, "t0"); rec.Status != store.StatusActive {
		t.Fatalf("t0's flag (a plain invalid_grant) not reverted by the trip: %+v", rec)
	}
}

// While the guard is tripped, an interrupted refresh's rejection is still
// flagged (not held): held, its spent token would be sent again by every
// probe after the clear.
func TestInterruptedFlagWhileGuardTripped(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.WaitFor, o.GuardThreshold = time.Second, 3 })
	f.put(t, "acme", -time.Second)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, fmt.Errorf("%w: timeout", ErrOutcomeUnknown) }
	if _, err := f.m.Token(ctx, "acme"); !errors.Is(err, ErrTokenUnavailable) {
		t.Fatalf("lost answer: err = %v", err)
	}
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	for i := range 3 {
		id := fmt.Sprintf("t%d", i)
		f.put(t, id, -time.Second)
		f.m.Token(ctx, id)
	}
	if !f.m.GuardTripped() {
		t.Fatal("guard not tripped after 3 rejections")
	}
	sends := f.ref.count()
	var re *ReauthError
	if _, err := f.m.Token(ctx, "acme"); !errors.As(err, &re) || re.Reason != ReasonInterrupted {
		t.Fatalf("takeover's rejection while tripped: err = %v, want flagged %q", err, ReasonInterrupted)
	}
	if f.ref.count() != sends+1 {
		t.Fatalf("sends = %d, want one more than %d", f.ref.count(), sends)
	}
	f.m.settleReverts(ctx)
	if rec := f.get(t, "acme"); rec.Status != store.StatusReauthorizationRequired || rec.Reason != ReasonInterrupted {
		t.Fatalf("after the guard's reverts: %+v", rec)
	}
}
