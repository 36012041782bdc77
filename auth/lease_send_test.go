package auth

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/store"
)

// renewStore records the TTL of every lock renewal and, while lose is set,
// answers renewals with ErrLockLost (the lock expired or was taken over
// between the mark and the send).
type renewStore struct {
	store.Store
	mu   sync.Mutex
	ttls []time.Duration
	lose bool
}

func (s *renewStore) TryLock(ctx context.Context, name string, ttl time.Duration) (store.Lock, error) {
	l, err := s.Store.TryLock(ctx, name, ttl)
	if err != nil {
		return nil, err
	}
	return &renewLock{Lock: l, s: s}, nil
}

func (s *renewStore) renewals() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.ttls...)
}

type renewLock struct {
	store.Lock
	s *renewStore
}

func (l *renewLock) Refresh(ctx context.Context, ttl time.Duration) error {
	l.s.mu.Lock()
	l.s.ttls = append(l.s.ttls, ttl)
	lose := l.s.lose
	l.s.mu.Unlock()
	if lose {
		return store.ErrLockLost
	}
	return l.Lock.Refresh(ctx, ttl)
}

// TestRule17RenewalBeforeSendCoversTheRequest: right before the refresh
// token leaves, the holder renews its lock synchronously to cover the whole
// token request plus the write retry, even with a lock TTL far below it.
// With defect 2 (TakeoverIgnoresSend) the renewal covers only the lock TTL
// again, which a successor could outwait while the request is out.
func TestRule17RenewalBeforeSendCoversTheRequest(t *testing.T) {
	for _, on := range []bool{false, true} {
		f := newFixture(t, func(o *ManagerOptions) { o.LockTTL = time.Second; o.TokenTimeout = 5 * time.Second })
		rs := &renewStore{Store: f.store}
		f.m = NewManager(rs, f.ref, f.m.opts)
		f.put(t, "acme", -time.Second)
		if on {
			restore := defect.Enable(defect.TakeoverIgnoresSend)
			_, _ = f.m.Token(ctx, "acme")
			restore()
		} else if _, err := f.m.Token(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		got := rs.renewals()
		want := 5*time.Second + SendMargin
		if on {
			want = time.Second
		}
		if len(got) == 0 || got[0] != want {
			t.Errorf("defect %v: renewals %v, want the first (before the send) = %v", on, got, want)
		}
	}
}

// TestRule17NoSendWithoutFreshLease: a holder whose lock was lost between
// its mark and its send (paused, cut off, taken over) sends nothing, undoes
// its mark and answers 503. With defect 3 (NoLeaseCheckBeforeSend) it sends
// the refresh token anyway.
func TestRule17NoSendWithoutFreshLease(t *testing.T) {
	f := newFixture(t)
	rs := &renewStore{Store: f.store, lose: true}
	f.m = NewManager(rs, f.ref, f.m.opts)
	f.put(t, "acme", -time.Second)
	_, err := f.m.Token(ctx, "acme")
	var ue *UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, store.ErrLockLost) || f.ref.count() != 0 {
		t.Fatalf("lease lost before the send: err %v, token requests %d; want 503 and none", err, f.ref.count())
	}
	if rec := f.get(t, "acme"); rec.RefreshInFlight || rec.RefreshMark != "" || rec.FailureCount != 0 {
		t.Fatalf("mark not undone (or counted as a failure): %+v", rec)
	}

	defer defect.Enable(defect.NoLeaseCheckBeforeSend)()
	f.put(t, "beta", -time.Second)
	_, _ = f.m.Token(ctx, "beta")
	if f.ref.count() != 1 {
		t.Fatalf("with the defect on: token requests %d, want 1 (sent without a lease)", f.ref.count())
	}
}

// TestRule16NoSendLateInShutdownBudget: an acquisition that got the lock
// after FinishRefreshes began sends only if the remaining budget covers a
// token request and its write; otherwise it answers 503 without sending and
// FinishRefreshes returns in time. With defect 5 (ShutdownLateSend) it
// sends late in the budget.
func TestRule16NoSendLateInShutdownBudget(t *testing.T) {
	for _, on := range []bool{false, true} {
		f := newFixture(t, func(o *ManagerOptions) { o.TokenTimeout = 2 * time.Second })
		f.put(t, "acme", -time.Second)
		other, err := f.store.TryLock(ctx, "tenant:acme", time.Minute) // another replica holds it
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := f.m.Token(ctx, "acme"); done <- err }()
		time.Sleep(50 * time.Millisecond) // (the acquisition waits for the lock)
		fctx, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
		fin := make(chan error, 1)
		var restore func()
		if on {
			restore = defect.Enable(defect.ShutdownLateSend)
		}
		go func() { fin <- f.m.FinishRefreshes(fctx) }()
		time.Sleep(700 * time.Millisecond) // 1.8 s of the budget left: less than 2 s + the write
		_ = other.Release(ctx)
		err = <-done
		ferr := <-fin
		cancel()
		if restore != nil {
			restore()
		}
		if on {
			if f.ref.count() != 1 {
				t.Errorf("defect on: token requests %d, want 1 (the late send)", f.ref.count())
			}
			continue
		}
		if !errors.Is(err, ErrTokenUnavailable) || f.ref.count() != 0 || ferr != nil {
			t.Errorf("late in the shutdown budget: Token %v, token requests %d, FinishRefreshes %v; want 503, none, nil", err, f.ref.count(), ferr)
		}
		if rec := f.get(t, "acme"); rec.RefreshInFlight {
			t.Errorf("a mark was left: %+v", rec)
		}
	}
}

// pacedRefresher is a Refresher whose token endpoint's budget refuses every
// request (a Pacer that says no).
type pacedRefresher struct {
	*fakeRefresher
	waits []time.Duration
}

type refusal struct{}

func (refusal) Error() string          { return "ratelimit: tenant budget exhausted" }
func (refusal) RetryAfterSeconds() int { return 7 }

func (p *pacedRefresher) Pace(ctx context.Context, _ *store.Tenant, wait time.Duration) (context.Context, error) {
	p.waits = append(p.waits, wait)
	return ctx, refusal{}
}

// TestRule18PacedRefusalSendsNothing: a refresh the token endpoint's rate
// budget refuses (after waiting at most what is left of WaitFor, before
// anything is marked) sends nothing, answers 503 with the budget's
// Retry-After, is logged as the governor's refusal and never opens the
// breaker, however often it happens.
func TestRule18PacedRefusalSendsNothing(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.BreakerFailures = 2 })
	pr := &pacedRefresher{fakeRefresher: f.ref}
	f.m = NewManager(f.store, pr, f.m.opts)
	f.put(t, "acme", -time.Second)
	for i := 0; i < 4; i++ {
		_, err := f.m.Token(ctx, "acme")
		var ue *UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, ErrPaced) || ue.RetryAfter != 7*time.Second {
			t.Fatalf("attempt %d: %v; want 503 paced with Retry-After 7s", i, err)
		}
	}
	if f.ref.count() != 0 || f.m.BreakerOpen() {
		t.Fatalf("token requests %d, breaker open %v; want none and closed", f.ref.count(), f.m.BreakerOpen())
	}
	if rec := f.get(t, "acme"); rec.RefreshInFlight || rec.FailureCount != 0 {
		t.Fatalf("a paced refusal marked or counted: %+v", rec)
	}
	if len(pr.waits) == 0 || pr.waits[0] <= 0 || pr.waits[0] > f.m.opts.WaitFor {
		t.Fatalf("pacing waits %v, want within WaitFor %v", pr.waits, f.m.opts.WaitFor)
	}
	if n := f.logs.FilterMessageSnippet("the rate-limit governor refused it").Len(); n != 4 {
		t.Fatalf("%d governor refusals logged, want 4", n)
	}
}

// lostReplyStore applies the first grant write but answers it with a
// timeout (the reply was lost), as a write attempt bounded by 0.5 s can.
type lostReplyStore struct {
	store.Store
	lost bool
}

func (s *lostReplyStore) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	v, err := s.Store.Put(ctx, t, expect)
	if err == nil && !s.lost && !t.RefreshInFlight && t.RefreshCount > 0 {
		s.lost = true
		return 0, context.DeadlineExceeded
	}
	return v, err
}

// TestGrantWriteWithLostReplyIsNotDiscarded: a grant write that landed but
// whose reply was lost conflicts on the retry; the holder recognises its own
// tokens in the record and reports success, not "discarded".
func TestGrantWriteWithLostReplyIsNotDiscarded(t *testing.T) {
	f := newFixture(t)
	f.m = NewManager(&lostReplyStore{Store: f.store}, f.ref, f.m.opts)
	f.put(t, "acme", -time.Second)
	tok, err := f.m.Token(ctx, "acme")
	if err != nil || tok.AccessToken != "at-acme-1" {
		t.Fatalf("Token = %+v, %v", tok, err)
	}
	if n := f.logs.FilterMessageSnippet("refresh result discarded").Len(); n != 0 {
		t.Fatalf("the holder's own landed write was reported discarded (%d)", n)
	}
	if rec := f.get(t, "acme"); rec.RefreshToken != "rt-acme-1" || rec.RefreshInFlight {
		t.Fatalf("stored: %+v", rec)
	}
}

// slowRenewStore's lock renewals succeed, but only after delay (a slow
// store right before the send).
type slowRenewStore struct {
	store.Store
	delay time.Duration
}

func (s *slowRenewStore) TryLock(ctx context.Context, name string, ttl time.Duration) (store.Lock, error) {
	l, err := s.Store.TryLock(ctx, name, ttl)
	if err != nil {
		return nil, err
	}
	return &slowLock{Lock: l, delay: s.delay}, nil
}

type slowLock struct {
	store.Lock
	delay time.Duration
}

func (l *slowLock) Refresh(ctx context.Context, ttl time.Duration) error {
	time.Sleep(l.delay) // ignores ctx: it answers, just late
	return l.Lock.Refresh(context.WithoutCancel(ctx), ttl)
}

// TestRule17StaleRenewalSendsNothing: a renewal that succeeded but took
// longer than the freshness bound no longer proves the cover: nothing is
// sent, the mark is undone, 503.
func TestRule17StaleRenewalSendsNothing(t *testing.T) {
	f := newFixture(t)
	f.m = NewManager(&slowRenewStore{Store: f.store, delay: sendRenewFresh + 100*time.Millisecond}, f.ref, f.m.opts)
	f.put(t, "acme", -time.Second)
	_, err := f.m.Token(ctx, "acme")
	if !errors.Is(err, errLeaseStale) || !errors.Is(err, ErrTokenUnavailable) || f.ref.count() != 0 {
		t.Fatalf("stale renewal: %v, token requests %d; want 503 (stale lease) and none", err, f.ref.count())
	}
	if rec := f.get(t, "acme"); rec.RefreshInFlight {
		t.Fatalf("mark not undone: %+v", rec)
	}
}

// pacerTransport is an http.RoundTripper and a TokenPacer that records the
// hosts it was asked to pace and refuses those in refuse.
type pacerTransport struct {
	hosts  []string
	refuse bool
}

func (p *pacerTransport) PaceToken(ctx context.Context, host string, _ time.Duration) (context.Context, error) {
	p.hosts = append(p.hosts, host)
	if p.refuse {
		return ctx, refusal{}
	}
	return ctx, nil
}

func (p *pacerTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, refusal{} }

// TestOAuthClientPace: the OAuthClient paces on its transport when that is
// a TokenPacer, for the host of the tenant's own token URL (X-Series: the
// store's domain), and not at all otherwise; a refusal by the transport
// itself (an unpaced request to a blocked host) is ErrPaced, not a failure
// that could open the breaker; a paced refusal fails Exchange before its
// timeout starts.
func TestOAuthClientPace(t *testing.T) {
	pt := &pacerTransport{}
	c := &OAuthClient{TokenURL: "https://{domain_prefix}.retail.lightspeed.app/api/1.0/token", AuthStyle: oauth2.AuthStyleInParams,
		HTTPClient: &http.Client{Transport: pt}}
	ten := &store.Tenant{ID: "s1", RefreshToken: "rt", Extra: map[string]string{"domain_prefix": "store1"}}
	if _, err := c.Pace(ctx, ten, time.Second); err != nil {
		t.Fatal(err)
	}
	if len(pt.hosts) != 1 || pt.hosts[0] != "store1.retail.lightspeed.app" {
		t.Fatalf("paced hosts %v, want the store's token host", pt.hosts)
	}
	if _, err := (&OAuthClient{TokenURL: "https://a/token", AuthStyle: oauth2.AuthStyleInParams}).Pace(ctx, ten, time.Second); err != nil {
		t.Fatalf("no pacer: %v", err)
	}
	if _, err := c.Refresh(ctx, ten); !errors.Is(err, ErrPaced) {
		t.Fatalf("a transport refusal: %v, want ErrPaced", err)
	}
	pt.refuse = true
	if _, err := c.Exchange(ctx, ten, "code", "", "https://cb"); !errors.Is(err, ErrPaced) {
		t.Fatalf("Exchange refused by the pacer: %v, want ErrPaced", err)
	}
}
