package audit3lease_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

var errCut = errors.New("audit3: store unreachable from this process")

// cutStore is one process's view of a shared store. While cut, every call
// fails at once (an asymmetric partition: this process cannot reach the
// store, the others can). While frozen, every call blocks until thawed and
// then fails (the process was paused: SIGSTOP, VM pause, swap storm); the
// store itself keeps running and expiring the lock.
type cutStore struct {
	store.Store
	cut atomic.Bool

	mu       sync.Mutex
	frozen   chan struct{} // non-nil while frozen; closed at thaw
	freezeAt func(t *store.Tenant) bool
	freezeD  time.Duration
	froze    atomic.Bool
	// markDelay: a write that sets an in-flight mark answers this much
	// later (as PutAcked's WAIT for a slow replica would); other calls are
	// not delayed.
	markDelay time.Duration
}

func (s *cutStore) gate(ctx context.Context) error {
	s.mu.Lock()
	fr := s.frozen
	s.mu.Unlock()
	if fr != nil {
		<-fr
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if s.cut.Load() {
		return errCut
	}
	return nil
}

func (s *cutStore) Get(ctx context.Context, id string) (*store.Tenant, error) {
	if err := s.gate(ctx); err != nil {
		return nil, err
	}
	return s.Store.Get(ctx, id)
}

func (s *cutStore) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	if err := s.gate(ctx); err != nil {
		return 0, err
	}
	v, err := s.Store.Put(ctx, t, expect)
	if err == nil && s.markDelay > 0 && t.RefreshInFlight && t.RefreshMark != "" {
		time.Sleep(s.markDelay)
	}
	if err == nil && s.freezeAt != nil && s.freezeAt(t) && s.froze.CompareAndSwap(false, true) {
		// Paused right after this write was applied, before the caller
		// saw the answer.
		ch := make(chan struct{})
		s.mu.Lock()
		s.frozen = ch
		s.mu.Unlock()
		time.Sleep(s.freezeD)
		s.mu.Lock()
		s.frozen = nil
		s.mu.Unlock()
		close(ch)
	}
	return v, err
}

func (s *cutStore) TryLock(ctx context.Context, name string, ttl time.Duration) (store.Lock, error) {
	if err := s.gate(ctx); err != nil {
		return nil, err
	}
	l, err := s.Store.TryLock(ctx, name, ttl)
	if err != nil {
		return nil, err
	}
	return &cutLock{Lock: l, s: s}, nil
}

func (s *cutStore) PeekLock(ctx context.Context, name string) (bool, error) {
	if err := s.gate(ctx); err != nil {
		return false, err
	}
	return s.Store.PeekLock(ctx, name)
}

type cutLock struct {
	store.Lock
	s *cutStore
}

func (l *cutLock) Refresh(ctx context.Context, ttl time.Duration) error {
	if err := l.s.gate(ctx); err != nil {
		return err
	}
	return l.Lock.Refresh(ctx, ttl)
}

func (l *cutLock) Release(ctx context.Context) error {
	if err := l.s.gate(ctx); err != nil {
		return err
	}
	return l.Lock.Release(ctx)
}

// AUDIT3-F2a (SPEC §3 rules 11 and 17, promise 1): the successor's
// takeover was timed from the holder's last lock renewal (lock TTL) plus
// the grace; it did not depend on when the holder sent its token request
// nor on the holder's token_timeout. A holder that loses the store
// (asymmetric partition) right after sending its refresh request cannot
// renew or heartbeat; the successor took the mark over and sent the same
// refresh token while the holder's request was still unanswered (and
// within its token_timeout). The provider sees the token twice: reuse,
// grant revoked.
//
// Rule 17: the holder renews right before the send so that the lock covers
// the whole token request plus the write retry. Here the holder is cut off
// from the store while its request is out and reaches it again when its
// answer arrives (the black-box check of issue 21): it stores its grant, the
// successor is served with it, no token is sent twice. The "cut_for_good"
// case keeps the holder cut off: its grant is lost (the one failure mode
// that remains), and the successor may send the spent token only after the
// holder's request was answered and its write-retry interval passed; the
// tenant then ends flagged "interrupted".
//
// The provider answers well within token_timeout.
func TestAudit3TakeoverWhileHolderRequestOutstanding(t *testing.T) {
	for _, tc := range []struct {
		name         string
		lockTTL      time.Duration
		tokenTimeout time.Duration
		hold         time.Duration // provider: rotate at once, answer after hold
		markDelay    time.Duration
		cutForGood   bool // A never reaches the store again
	}{
		{"lock_ttl_1s", time.Second, 10 * time.Second, 7 * time.Second, 0, false},
		{"token_timeout_20s", 0, 20 * time.Second, 12 * time.Second, 0, false},
		// All defaults; the mark's acknowledgement took 0.9 s (WAIT on a
		// slow replica, bound 1 s) and the provider answers in 9.6 s.
		{"defaults_ack_0.9s", 0, 0, 9600 * time.Millisecond, 900 * time.Millisecond, false},
		{"lock_ttl_1s_cut_for_good", time.Second, 10 * time.Second, 7 * time.Second, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
			srv := httptest.NewServer(emu)
			defer srv.Close()
			shared := boltStore(t)
			putTenant(t, shared, emu, "acme")
			log := newEventLog()
			ctx := context.Background()
			opts := auth.ManagerOptions{LockTTL: tc.lockTTL, TokenTimeout: tc.tokenTimeout, GuardThreshold: -1}

			aStore := &cutStore{Store: shared, markDelay: tc.markDelay}
			// As cmd/lsproxy/serve.go builds it: the transport's response
			// header timeout is token_timeout.
			hc := &http.Client{Transport: auth.NewTokenTransport(tc.tokenTimeout)}
			aRef := &recRefresher{Refresher: oauthClient(emu, srv.URL, tc.tokenTimeout, hc), name: "A", log: log,
				before: func(*store.Tenant) {
					emu.SetTokenHold(tc.hold)
					aStore.cut.Store(true) // A loses Redis just as its request leaves
				},
				after: func() {
					if !tc.cutForGood {
						aStore.cut.Store(false) // and reaches it again with its answer
					}
				}}
			mA := auth.NewManager(aStore, aRef, opts)
			bRef := &recRefresher{Refresher: oauthClient(emu, srv.URL, tc.tokenTimeout, hc), name: "B", log: log,
				before: func(*store.Tenant) { emu.SetTokenHold(0) }}
			mB := auth.NewManager(shared, bRef, opts)

			aDone := make(chan error, 1)
			go func() { _, err := mA.Token(ctx, "acme"); log.add("A returned"); aDone <- err }()
			for emu.Stats().RefreshGrants == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			log.add("A's request processed by the provider (answer held)")
			var errB error
			for i := 0; i < 3; i++ { // B's clients keep asking
				_, errB = mB.Token(ctx, "acme")
				if errB == nil || errors.Is(errB, auth.ErrReauthorizationRequired) {
					break
				}
			}
			log.add("B returned")
			for aRef.answered.Load() == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			var errA error
			select {
			case errA = <-aDone:
			default:
				errA = errors.New("(A's caller still waiting)")
			}
			log.dump(t)
			st := emu.Stats()
			rec, _ := shared.Get(ctx, "acme")
			t.Logf("A err=%v; B err=%v; emulator grants=%d reuse=%d; stored status=%s reason=%q", errA, errB, st.RefreshGrants, st.ReuseDetected, rec.Status, rec.Reason)
			tt := tc.tokenTimeout
			if tt == 0 {
				tt = auth.DefaultTokenTimeout
			}
			if sent := bRef.sentAt.Load(); sent != 0 {
				gap := time.Duration(sent - aRef.answeredAt.Load())
				t.Logf("B sent the token %v after A's request was answered", gap.Round(time.Millisecond))
				if gap < 0 {
					t.Errorf("B sent the refresh token %v before A's request (token_timeout %v, answered %v after it was sent) was answered", (-gap).Round(time.Millisecond), tt, tc.hold)
				}
			}
			if !tc.cutForGood {
				if st.ReuseDetected != 0 || rec.Status != store.StatusActive || errB != nil {
					t.Errorf("the same refresh token was sent twice (reuse %d, tenant %s, B: %v): A's request (token_timeout %v, answered %v after it was sent) was not covered by its lease", st.ReuseDetected, rec.Status, errB, tt, tc.hold)
				}
				return
			}
			// Cut for good: A's grant is lost; at most the one reuse
			// the lost answer made inevitable, and the tenant flagged.
			if st.ReuseDetected > 1 || (st.ReuseDetected == 1 && rec.Reason != auth.ReasonInterrupted) {
				t.Errorf("reuse %d, tenant %s %q: want at most one reuse, after A's answer, flagged %q", st.ReuseDetected, rec.Status, rec.Reason, auth.ReasonInterrupted)
			}
		})
	}
}

// AUDIT3-F2b (SPEC §3 rule 11, promise 1): a holder paused between writing
// its mark and sending (SIGSTOP, VM pause, long stall) for longer than
// lock_ttl + grace is taken over: the successor sends the refresh token,
// gets a new grant and stores it. When the paused holder resumes it sends
// the old refresh token anyway: nothing checks that its lease is still
// valid before the token leaves. The provider sees reuse and revokes the
// grant, including the successor's freshly stored refresh token. Defaults
// throughout.
func TestAudit3PausedHolderSendsAfterTakeover(t *testing.T) {
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	shared := boltStore(t)
	g := putTenant(t, shared, emu, "acme")
	log := newEventLog()
	ctx := context.Background()
	opts := auth.ManagerOptions{GuardThreshold: -1} // defaults: lock_ttl 11.25s, grace 1.5s, token_timeout 10s

	// Paused longer than the default lease and grace: B takes over.
	aStore := &cutStore{Store: shared, freezeD: auth.DefaultLockTTL + auth.DefaultTakeoverGrace + 2*time.Second,
		freezeAt: func(t *store.Tenant) bool { return t.RefreshInFlight && t.RefreshMark != "" }}
	mA := auth.NewManager(aStore, &recRefresher{Refresher: oauthClient(emu, srv.URL, 0, nil), name: "A", log: log}, opts)
	mB := auth.NewManager(shared, &recRefresher{Refresher: oauthClient(emu, srv.URL, 0, nil), name: "B", log: log}, opts)

	aDone := make(chan error, 1)
	go func() { _, err := mA.Token(ctx, "acme"); log.add("A returned"); aDone <- err }()
	for !aStore.froze.Load() {
		time.Sleep(5 * time.Millisecond)
	}
	log.add("A paused right after its mark was written")
	_, errB := mB.Token(ctx, "acme")
	log.add("B returned")
	errA := <-aDone
	log.dump(t)
	st := emu.Stats()
	rec, _ := shared.Get(ctx, "acme")
	t.Logf("A err=%v; B err=%v; emulator grants=%d reuse=%d active grants=%d; stored status=%s rotated=%v",
		errA, errB, st.RefreshGrants, st.ReuseDetected, emu.ActiveGrants("acme"), rec.Status, rec.RefreshToken != g.RefreshToken)
	if st.ReuseDetected != 0 || emu.ActiveGrants("acme") != 1 {
		t.Errorf("the resumed holder sent the refresh token the successor had already used: reuse %d, live grants %d (the stored tenant looks %s but its grant is revoked)",
			st.ReuseDetected, emu.ActiveGrants("acme"), rec.Status)
	}
}
