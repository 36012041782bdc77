package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// harness gives the conformance suite one fresh, empty namespace of a
// backend (a Redis prefix, a bolt directory).
type harness interface {
	// Open returns a Store on the namespace sealing with keys, closed at
	// cleanup. For bolt the previous Store must be closed first.
	Open(t *testing.T, keys *Keyring) Store
	// Peer returns a second Store on the namespace, open at the same time
	// as s: for Redis a new client, for bolt (one process per file) s.
	Peer(t *testing.T, s Store) Store
	// Raw returns every byte the backend holds for the namespace.
	Raw(t *testing.T) []byte
}

// Timing for expiry tests; the backends measure ttl themselves (Redis on
// the server), so these use real time.
const (
	shortTTL = 100 * time.Millisecond
	longTTL  = 30 * time.Second
	waitMax  = 5 * time.Second // bound for anything awaited
)

func testKeys(t *testing.T, n int) [][]byte {
	t.Helper()
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, KeySize)
		if _, err := rand.Read(out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func mustKeyring(t *testing.T, keys ...[]byte) *Keyring {
	t.Helper()
	kr, err := NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fullTenant has every field set, times in UTC without monotonic reading
// (as they come back from JSON).
func fullTenant(id string) *Tenant {
	at := func(s int) time.Time { return time.Date(2026, 11, 23, 13, 0, s, 123456789, time.UTC) }
	return &Tenant{
		ID:               id,
		Provider:         "k-series",
		AccessToken:      "AT-plaintext-" + id + "-9f8e7d",
		AccessExpiresAt:  at(1),
		RefreshToken:     "RT-plaintext-" + id + "-1a2b3c",
		RefreshExpiresAt: at(2),
		Scope:            "orders-api offline_access",
		Status:           StatusReauthorizationRequired,
		Reason:           "invalid_grant",
		FlaggedAt:        at(3),
		RefreshInFlight:  true,
		Extra:            map[string]string{"domain_prefix": "shop-1", "k": "v"},
		CreatedAt:        at(4),
		UpdatedAt:        at(5),
		LastRefreshAt:    at(6),
		RefreshCount:     7,
		FailureCount:     3,
		Version:          99, // ignored by Put
	}
}

func runConformance(t *testing.T, newHarness func(t *testing.T) harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h harness)
	}{
		{"RoundTrip", confRoundTrip},
		{"EmptyTokens", confEmptyTokens},
		{"Versions", confVersions},
		{"Conflict", confConflict},
		{"WriteIDFencesABA", confWriteIDFencesABA},
		{"PeekLock", confPeekLock},
		{"Delete", confDelete},
		{"ListSorted", confListSorted},
		{"ListPage", confListPage},
		{"ListDue", confListDue},
		{"InvalidArguments", confInvalidArguments},
		{"LockExclusive", confLockExclusive},
		{"LockExpiry", confLockExpiry},
		{"LockRefresh", confLockRefresh},
		{"Once", confOnce},
		{"OnceExpiry", confOnceExpiry},
		{"Sessions", confSessions},
		{"Subscribe", confSubscribe},
		{"SubscribeReportsLoss", confSubscribeReportsLoss},
		{"ConcurrentCAS", confConcurrentCAS},
		{"SealedAtRest", confSealedAtRest},
		{"KeyRotation", confKeyRotation},
		{"CanceledContext", confCanceledContext},
		{"Closed", confClosed},
		{"Locations", confLocations},
		{"Guard", confGuard},
		{"Outbox", confOutbox},
		{"OutboxInvalid", confOutboxInvalid},
		{"OutboxConcurrentClaims", confOutboxConcurrentClaims},
		{"Actions", confActions},
		{"Candidate", confCandidate},
		{"PlaceholderReadsPending", confPlaceholderReadsPending},
		{"Batch", confBatch},
		{"BatchLocks", confBatchLocks},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newHarness(t))
		})
	}
}

func confRoundTrip(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	in := fullTenant("shop-1")
	before := in.Clone()
	v, err := s.Put(ctx, in, 0)
	if err != nil || v != 1 {
		t.Fatalf("Put = %d, %v; want 1, nil", v, err)
	}
	if in.Version != 1 || in.WriteID == "" {
		t.Fatalf("Put set version %d, write id %q; want 1 and an id", in.Version, in.WriteID)
	}
	fenced := in.Clone()
	fenced.Version, fenced.WriteID = before.Version, before.WriteID
	if !reflect.DeepEqual(fenced, before) {
		t.Fatal("Put modified its argument beyond Version and WriteID")
	}
	got, err := s.Get(ctx, "shop-1")
	if err != nil {
		t.Fatal(err)
	}
	want := before.Clone()
	want.Version, want.WriteID = 1, in.WriteID
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Get =\n%+v\nwant\n%+v", got, want)
	}
	// The result is the caller's: changing it changes nothing stored.
	got.Extra["k"] = "changed"
	got.AccessToken = "changed"
	again, err := s.Get(ctx, "shop-1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, want) {
		t.Fatal("Get result aliases stored state")
	}
	if _, err := s.Get(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: %v, want ErrNotFound", err)
	}
}

func confEmptyTokens(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	in := &Tenant{ID: "bare", Status: StatusActive}
	if _, err := s.Put(ctx, in, 0); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "bare")
	if err != nil {
		t.Fatal(err)
	}
	want := in.Clone() // Put set Version and WriteID
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Get = %+v, want %+v", got, want)
	}
}

func confVersions(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	tn := fullTenant("v")
	for want := int64(1); want <= 4; want++ {
		tn.RefreshCount = want
		v, err := s.Put(ctx, tn, want-1)
		if err != nil || v != want {
			t.Fatalf("Put #%d = %d, %v", want, v, err)
		}
		got, err := s.Get(ctx, "v")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != want || got.RefreshCount != want {
			t.Fatalf("Get after Put #%d: version %d, refresh count %d", want, got.Version, got.RefreshCount)
		}
	}
}

func confConflict(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	tn := fullTenant("c")
	if _, err := s.Put(ctx, tn, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, tn, 1); err != nil {
		t.Fatal(err)
	}
	other := tn.Clone()
	other.AccessToken = "loser"
	for _, expect := range []int64{0, 1, 3} {
		v, err := s.Put(ctx, other, expect)
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("Put expect %d = %d, %v; want ErrConflict", expect, v, err)
		}
		if strings.Contains(err.Error(), "loser") || strings.Contains(err.Error(), tn.RefreshToken) {
			t.Fatalf("error leaks a token: %v", err)
		}
	}
	got, err := s.Get(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 || got.AccessToken != tn.AccessToken {
		t.Fatalf("conflicting Put changed the record: version %d", got.Version)
	}
	if _, err := s.Put(ctx, fullTenant("missing"), 1); !errors.Is(err, ErrConflict) {
		t.Fatalf("update of missing tenant: %v, want ErrConflict", err)
	}
	if _, err := s.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed update created the tenant: %v", err)
	}
}

// confWriteIDFencesABA: a version number that repeats (here: the tenant
// deleted and created again; after a failover: writes lost) must not let a
// write derived from the old record win (SPEC §3 rule 12).
func confWriteIDFencesABA(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	if _, err := s.Put(ctx, fullTenant("aba"), 0); err != nil {
		t.Fatal(err)
	}
	stale, err := s.Get(ctx, "aba") // version 1, write id W1
	if err != nil {
		t.Fatal(err)
	}
	if stale.WriteID == "" {
		t.Fatal("Get returned no write id")
	}
	if err := s.Delete(ctx, "aba"); err != nil {
		t.Fatal(err)
	}
	fresh := fullTenant("aba")
	fresh.AccessToken = "successor"
	if v, err := s.Put(ctx, fresh, 0); err != nil || v != stale.Version {
		t.Fatalf("re-create = %d, %v; want version %d again", v, err, stale.Version)
	}
	next := stale.Clone()
	next.AccessToken = "stale-holder"
	if v, err := s.Put(ctx, next, stale.Version); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale write over a repeated version = %d, %v; want ErrConflict", v, err)
	}
	if next.WriteID != stale.WriteID {
		t.Fatal("failed Put changed its argument's write id")
	}
	got, err := s.Get(ctx, "aba")
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "successor" || got.WriteID != fresh.WriteID {
		t.Fatalf("stale write landed: %q", got.AccessToken)
	}
	// The current write id wins; an empty one compares the version only.
	cur := got.Clone()
	if _, err := s.Put(ctx, cur, got.Version); err != nil {
		t.Fatalf("write with the current fencing value: %v", err)
	}
	blind := cur.Clone()
	blind.WriteID = ""
	if _, err := s.Put(ctx, blind, cur.Version); err != nil {
		t.Fatalf("write fenced by version only: %v", err)
	}
}

func confPeekLock(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	if held, err := s.PeekLock(ctx, "p"); err != nil || held {
		t.Fatalf("PeekLock free = %v, %v", held, err)
	}
	l, err := s.TryLock(ctx, "p", longTTL)
	if err != nil {
		t.Fatal(err)
	}
	if held, err := h.Peer(t, s).PeekLock(ctx, "p"); err != nil || !held {
		t.Fatalf("PeekLock held (peer) = %v, %v", held, err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if held, err := s.PeekLock(ctx, "p"); err != nil || held {
		t.Fatalf("PeekLock after release = %v, %v", held, err)
	}
	if _, err := s.TryLock(ctx, "short", shortTTL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitMax)
	for {
		held, err := s.PeekLock(ctx, "short")
		if err != nil {
			t.Fatal(err)
		}
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("expired lock still reported held")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func confDelete(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	if _, err := s.Put(ctx, fullTenant("d"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "d"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if err := s.Delete(ctx, "d"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	if ids, err := s.List(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("List after Delete = %v, %v", ids, err)
	}
	// Recreating starts over at version 1.
	if v, err := s.Put(ctx, fullTenant("d"), 0); err != nil || v != 1 {
		t.Fatalf("recreate = %d, %v", v, err)
	}
}

func confListSorted(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	ids, err := s.List(ctx)
	if err != nil || len(ids) != 0 {
		t.Fatalf("List of empty store = %v, %v", ids, err)
	}
	for _, id := range []string{"m", "b", "z", "a1", "a"} {
		if _, err := s.Put(ctx, fullTenant(id), 0); err != nil {
			t.Fatal(err)
		}
	}
	ids, err = s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "a1", "b", "m", "z"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("List = %v, want %v", ids, want)
	}
}

func confInvalidArguments(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	checks := map[string]error{}
	_, checks["Put nil"] = s.Put(ctx, nil, 0)
	_, checks["Put empty id"] = s.Put(ctx, &Tenant{}, 0)
	_, checks["Put negative expect"] = s.Put(ctx, fullTenant("x"), -1)
	_, checks["Get empty id"] = s.Get(ctx, "")
	checks["Delete empty id"] = s.Delete(ctx, "")
	_, checks["TryLock empty name"] = s.TryLock(ctx, "", time.Second)
	_, checks["TryLock zero ttl"] = s.TryLock(ctx, "l", 0)
	checks["PutOnce empty key"] = s.PutOnce(ctx, "", []byte("v"), time.Second)
	checks["PutOnce zero ttl"] = s.PutOnce(ctx, "k", []byte("v"), 0)
	_, checks["TakeOnce empty key"] = s.TakeOnce(ctx, "")
	for name, err := range checks {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "store: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
	}
	l, err := s.TryLock(ctx, "l", longTTL)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx, 0); err == nil {
		t.Error("Refresh with zero ttl: no error")
	}
}

func confLockExclusive(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	peer := h.Peer(t, s)
	l, err := s.TryLock(ctx, "tenant-a", longTTL)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []Store{s, peer} {
		if _, err := st.TryLock(ctx, "tenant-a", longTTL); !errors.Is(err, ErrLockHeld) {
			t.Fatalf("second TryLock: %v, want ErrLockHeld", err)
		}
	}
	other, err := peer.TryLock(ctx, "tenant-b", longTTL)
	if err != nil {
		t.Fatalf("other name: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("double Release: %v, want ErrLockLost", err)
	}
	l2, err := peer.TryLock(ctx, "tenant-a", longTTL)
	if err != nil {
		t.Fatalf("TryLock after Release: %v", err)
	}
	for _, x := range []Lock{l2, other} {
		if err := x.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// waitLock polls TryLock until it succeeds, bounded by waitMax.
func waitLock(t *testing.T, s Store, name string, ttl time.Duration) Lock {
	t.Helper()
	ctx := testCtx(t)
	deadline := time.Now().Add(waitMax)
	for {
		l, err := s.TryLock(ctx, name, ttl)
		if err == nil {
			return l
		}
		if !errors.Is(err, ErrLockHeld) {
			t.Fatalf("TryLock: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock %q still held after %v", name, waitMax)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func confLockExpiry(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	peer := h.Peer(t, s)
	start := time.Now()
	old, err := s.TryLock(ctx, "exp", shortTTL)
	if err != nil {
		t.Fatal(err)
	}
	next := waitLock(t, peer, "exp", longTTL)
	if el := time.Since(start); el < shortTTL-5*time.Millisecond {
		t.Fatalf("lock taken over after %v, before its ttl %v", el, shortTTL)
	}
	// The stale owner can neither renew nor free the new owner's lock.
	if err := old.Refresh(ctx, longTTL); !errors.Is(err, ErrLockLost) {
		t.Fatalf("stale Refresh: %v, want ErrLockLost", err)
	}
	if err := old.Release(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("stale Release: %v, want ErrLockLost", err)
	}
	if _, err := s.TryLock(ctx, "exp", longTTL); !errors.Is(err, ErrLockHeld) {
		t.Fatalf("stale Release freed the new owner's lock: %v", err)
	}
	if err := next.Release(ctx); err != nil {
		t.Fatalf("new owner's Release: %v", err)
	}
	// An expired lock nobody took over is lost too.
	lone, err := s.TryLock(ctx, "lone", shortTTL)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(shortTTL + 50*time.Millisecond) // waiting for the ttl itself
	if err := lone.Release(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Release after expiry: %v, want ErrLockLost", err)
	}
}

func confLockRefresh(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	l, err := s.TryLock(ctx, "ref", shortTTL)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx, longTTL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(shortTTL + 100*time.Millisecond) // past the original ttl
	if _, err := h.Peer(t, s).TryLock(ctx, "ref", longTTL); !errors.Is(err, ErrLockHeld) {
		t.Fatalf("TryLock after Refresh: %v, want ErrLockHeld", err)
	}
	// Refresh can also shorten.
	if err := l.Refresh(ctx, shortTTL); err != nil {
		t.Fatal(err)
	}
	waitLock(t, s, "ref", longTTL)
}

func confOnce(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	peer := h.Peer(t, s)
	val := []byte("state\x00with binary \xff bytes")
	if err := s.PutOnce(ctx, "st-1", val, longTTL); err != nil {
		t.Fatal(err)
	}
	if err := peer.PutOnce(ctx, "st-1", []byte("other"), longTTL); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate PutOnce: %v, want ErrConflict", err)
	}
	got, err := peer.TakeOnce(ctx, "st-1")
	if err != nil || !bytes.Equal(got, val) {
		t.Fatalf("TakeOnce = %q, %v", got, err)
	}
	if _, err := s.TakeOnce(ctx, "st-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second TakeOnce: %v, want ErrNotFound", err)
	}
	if _, err := s.TakeOnce(ctx, "never"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TakeOnce missing: %v, want ErrNotFound", err)
	}
	if err := s.PutOnce(ctx, "empty", nil, longTTL); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TakeOnce(ctx, "empty"); err != nil || len(got) != 0 {
		t.Fatalf("TakeOnce empty = %q, %v", got, err)
	}

	// Concurrent takers: exactly one gets the value.
	if err := s.PutOnce(ctx, "race", val, longTTL); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = peer
			}
			_, err := st.TakeOnce(ctx, "race")
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, ErrNotFound) {
				t.Errorf("TakeOnce: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d takers got the value, want 1", wins)
	}
}

func confOnceExpiry(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	if err := s.PutOnce(ctx, "gone", []byte("v"), shortTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.PutOnce(ctx, "reuse", []byte("old"), shortTTL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(shortTTL + 50*time.Millisecond) // waiting for the ttl itself
	if _, err := s.TakeOnce(ctx, "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TakeOnce after expiry: %v, want ErrNotFound", err)
	}
	// An expired key can be used again.
	if err := s.PutOnce(ctx, "reuse", []byte("new"), longTTL); err != nil {
		t.Fatalf("PutOnce over an expired value: %v", err)
	}
	if got, err := s.TakeOnce(ctx, "reuse"); err != nil || string(got) != "new" {
		t.Fatalf("TakeOnce = %q, %v; want new", got, err)
	}
}

// receive waits for one id from ch, bounded by waitMax.
func receive(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case id, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return id
	case <-time.After(waitMax):
		t.Fatal("no notification")
	}
	return ""
}

// waitClosed waits until ch is closed (draining it), bounded by waitMax.
func waitClosed(t *testing.T, ch <-chan string) {
	t.Helper()
	timeout := time.After(waitMax)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("subscription channel not closed")
		}
	}
}

func confSubscribe(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	peer := h.Peer(t, s)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := peer.Subscribe(subCtx)
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := peer.Subscribe(ctx) // ended by Close below
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, fullTenant("sub-1"), 0); err != nil {
		t.Fatal(err)
	}
	if id := receive(t, ch); id != "sub-1" {
		t.Fatalf("got %q after Put, want sub-1", id)
	}
	if id := receive(t, ch2); id != "sub-1" {
		t.Fatalf("second subscriber got %q after Put, want sub-1", id)
	}
	// Failed writes notify nobody: the next id seen is the Delete's.
	if _, err := s.Put(ctx, fullTenant("sub-1"), 0); !errors.Is(err, ErrConflict) {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "never"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "sub-1"); err != nil {
		t.Fatal(err)
	}
	if id := receive(t, ch); id != "sub-1" {
		t.Fatalf("got %q after Delete, want sub-1", id)
	}
	cancel()
	waitClosed(t, ch)
	if err := peer.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch2)
}

func confConcurrentCAS(t *testing.T, h harness) {
	const workers, rounds = 20, 5
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	peer := h.Peer(t, s)
	if _, err := s.Put(ctx, fullTenant("cas"), 0); err != nil {
		t.Fatal(err)
	}
	for round := int64(1); round <= rounds; round++ {
		start := make(chan struct{})
		var wg sync.WaitGroup
		results := make([]error, workers)
		versions := make([]int64, workers)
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := s
				if i%2 == 1 {
					st = peer
				}
				tn := fullTenant("cas")
				tn.AccessToken = fmt.Sprintf("AT-round%d-worker%d", round, i)
				<-start
				versions[i], results[i] = st.Put(ctx, tn, round)
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range results {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: workers %d and %d both won", round, winner, i)
				}
				winner = i
				if versions[i] != round+1 {
					t.Fatalf("round %d: winner got version %d", round, versions[i])
				}
			case !errors.Is(err, ErrConflict):
				t.Fatalf("round %d worker %d: %v", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no winner", round)
		}
		got, err := s.Get(ctx, "cas")
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("AT-round%d-worker%d", round, winner); got.Version != round+1 || got.AccessToken != want {
			t.Fatalf("round %d: stored version %d token %q, want %d %q", round, got.Version, got.AccessToken, round+1, want)
		}
	}
}

func confSealedAtRest(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	tn := fullTenant("sealed-tenant")
	if _, err := s.Put(ctx, tn, 0); err != nil {
		t.Fatal(err)
	}
	tn.AccessToken, tn.RefreshToken = "AT-second-write-55aa", "RT-second-write-66bb"
	if _, err := s.Put(ctx, tn, 1); err != nil {
		t.Fatal(err)
	}
	raw := h.Raw(t)
	if !bytes.Contains(raw, []byte("sealed-tenant")) || !bytes.Contains(raw, []byte("orders-api")) {
		t.Fatal("raw dump does not hold the record at all; the test reads the wrong bytes")
	}
	first := fullTenant("sealed-tenant")
	for _, secret := range []string{first.AccessToken, first.RefreshToken, tn.AccessToken, tn.RefreshToken, "plaintext"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatalf("backend holds %q in plaintext", secret)
		}
	}
}

func confKeyRotation(t *testing.T, h harness) {
	ctx := testCtx(t)
	k := testKeys(t, 2)
	a, b := k[0], k[1]
	open := func(keys ...[]byte) Store { return h.Open(t, mustKeyring(t, keys...)) }

	s := open(a)
	tn := fullTenant("rot")
	if _, err := s.Put(ctx, tn, 0); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)

	s = open(b)
	_, err := s.Get(ctx, "rot")
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("Get with only key B: %v, want ErrDecrypt", err)
	}
	if strings.Contains(err.Error(), tn.AccessToken) {
		t.Fatal("error leaks the token")
	}
	if ids, err := s.List(ctx); err != nil || len(ids) != 1 {
		t.Fatalf("List without the key = %v, %v", ids, err)
	}
	mustClose(t, s)

	s = open(b, a) // B seals, A still opens
	got, err := s.Get(ctx, "rot")
	if err != nil {
		t.Fatalf("Get with [B, A]: %v", err)
	}
	if got.AccessToken != tn.AccessToken || got.RefreshToken != tn.RefreshToken {
		t.Fatal("tokens differ after rotation")
	}
	if _, err := s.Put(ctx, got, got.Version); err != nil { // rewrite: sealed with B
		t.Fatal(err)
	}
	mustClose(t, s)

	s = open(b)
	if got, err := s.Get(ctx, "rot"); err != nil || got.RefreshToken != tn.RefreshToken {
		t.Fatalf("Get with only B after rewrite: %v", err)
	}
	mustClose(t, s)

	s = open(a)
	if _, err := s.Get(ctx, "rot"); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("Get with only the retired key A: %v, want ErrDecrypt", err)
	}
}

func mustClose(t *testing.T, s Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func confCanceledContext(t *testing.T, h harness) {
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs := map[string]error{}
	_, errs["Get"] = s.Get(ctx, "x")
	_, errs["Put"] = s.Put(ctx, fullTenant("x"), 0)
	_, errs["List"] = s.List(ctx)
	errs["Delete"] = s.Delete(ctx, "x")
	_, errs["TryLock"] = s.TryLock(ctx, "x", time.Second)
	errs["PutOnce"] = s.PutOnce(ctx, "x", nil, time.Second)
	_, errs["TakeOnce"] = s.TakeOnce(ctx, "x")
	_, errs["Subscribe"] = s.Subscribe(ctx)
	errs["Ping"] = s.Ping(ctx)
	for name, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with canceled context: %v, want context.Canceled", name, err)
		}
	}
	// Nothing was written.
	if _, err := s.Get(context.Background(), "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get: %v, want ErrNotFound", err)
	}
}

func confClosed(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	mustClose(t, s) // idempotent
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping after Close: no error")
	}
	if _, err := s.Get(ctx, "x"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Close: %v, want a backend error", err)
	}
	if _, err := s.Subscribe(ctx); err == nil {
		t.Fatal("Subscribe after Close: no error")
	}
}

// confSessions: a session is read many times, replaced, expires after its
// ttl, and is gone once deleted; it shares nothing with one-time values.
func confSessions(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	ss, ok := s.(Sessions)
	if !ok {
		t.Fatalf("%T does not implement Sessions", s)
	}
	if _, err := ss.GetSession(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetSession of a missing key: %v, want ErrNotFound", err)
	}
	if err := ss.PutSession(ctx, "a", []byte("v1"), longTTL); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got, err := ss.GetSession(ctx, "a"); err != nil || string(got) != "v1" {
			t.Fatalf("GetSession = %q, %v; want v1", got, err)
		}
	}
	if err := ss.PutSession(ctx, "a", []byte("v2"), longTTL); err != nil {
		t.Fatal(err)
	}
	if got, err := ss.GetSession(ctx, "a"); err != nil || string(got) != "v2" {
		t.Fatalf("GetSession after a replace = %q, %v; want v2", got, err)
	}
	if _, err := s.TakeOnce(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TakeOnce of a session key: %v, want ErrNotFound (separate namespaces)", err)
	}
	if err := ss.DeleteSession(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.GetSession(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetSession after DeleteSession: %v, want ErrNotFound", err)
	}
	if err := ss.DeleteSession(ctx, "a"); err != nil {
		t.Fatalf("DeleteSession of a missing key: %v", err)
	}
	if err := ss.PutSession(ctx, "short", []byte("v"), shortTTL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(shortTTL + 50*time.Millisecond) // waiting for the ttl itself
	if _, err := ss.GetSession(ctx, "short"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetSession after its ttl: %v, want ErrNotFound", err)
	}
	if err := ss.PutSession(ctx, "", []byte("v"), longTTL); err == nil {
		t.Fatal("PutSession with an empty key: no error")
	}
	if err := ss.PutSession(ctx, "b", []byte("v"), 0); err == nil {
		t.Fatal("PutSession with ttl 0: no error")
	}
}
