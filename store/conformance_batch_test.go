package store

import (
	"errors"
	"slices"
	"testing"
)

// GetMany and PutMany give each item the result Get and Put would, write,
// index and notify like Put, and one item's failure leaves the others.
func confBatch(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	if _, ok := s.(Batcher); !ok {
		t.Fatalf("%T does not implement Batcher", s)
	}
	sub, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := fullTenant("batch-a")
	if _, err := s.Put(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	if id := receive(t, sub); id != "batch-a" {
		t.Fatalf("got %q, want batch-a", id)
	}
	b := fullTenant("batch-b")
	b.Status, b.RefreshInFlight = StatusActive, false
	a2 := a.Clone()
	a2.AccessToken = "AT-second"
	stale := a.Clone() // fenced on a's first write id: a2 wins, so stale loses
	stale.AccessToken = "AT-stale"
	missing := fullTenant("batch-missing")
	vers, errs := PutMany(ctx, s, []*Tenant{b, a2, missing}, []int64{0, 1, 4})
	if errs[0] != nil || vers[0] != 1 || b.Version != 1 || b.WriteID == "" {
		t.Fatalf("create: %d, %v (tenant at %d, write id %q)", vers[0], errs[0], b.Version, b.WriteID)
	}
	if errs[1] != nil || vers[1] != 2 || a2.Version != 2 {
		t.Fatalf("update: %d, %v", vers[1], errs[1])
	}
	if !errors.Is(errs[2], ErrConflict) || vers[2] != 0 {
		t.Fatalf("update of a missing tenant: %d, %v; want ErrConflict", vers[2], errs[2])
	}
	got := map[string]bool{receive(t, sub): true, receive(t, sub): true}
	if !got["batch-a"] || !got["batch-b"] {
		t.Fatalf("notified %v, want batch-a and batch-b", got)
	}
	_, errs = PutMany(ctx, s, []*Tenant{stale}, []int64{2})
	if !errors.Is(errs[0], ErrConflict) {
		t.Fatalf("write fenced on a replaced write id: %v, want ErrConflict", errs[0])
	}
	_, errs = PutMany(ctx, s, []*Tenant{fullTenant("batch-neg")}, []int64{-1})
	if errs[0] == nil {
		t.Fatal("negative expected version accepted")
	}

	recs, errs := GetMany(ctx, s, []string{"batch-a", "batch-b", "batch-none"})
	for i, id := range []string{"batch-a", "batch-b"} {
		one, err := s.Get(ctx, id)
		if err != nil || errs[i] != nil {
			t.Fatalf("%s: Get %v, GetMany %v", id, err, errs[i])
		}
		if recs[i].Version != one.Version || recs[i].AccessToken != one.AccessToken || recs[i].RefreshToken != one.RefreshToken ||
			recs[i].WriteID != one.WriteID || recs[i].Status != one.Status {
			t.Fatalf("%s: GetMany %+v, Get %+v", id, recs[i], one)
		}
	}
	if recs[0].AccessToken != "AT-second" {
		t.Fatalf("batch-a holds %q, want the batch's write", recs[0].AccessToken)
	}
	if !errors.Is(errs[2], ErrNotFound) || recs[2] != nil {
		t.Fatalf("missing tenant: %v, %v; want ErrNotFound", recs[2], errs[2])
	}
	ids, err := s.List(ctx)
	if err != nil || !slices.Contains(ids, "batch-b") || slices.Contains(ids, "batch-missing") {
		t.Fatalf("List = %v, %v; want batch-b and not batch-missing", ids, err)
	}
}

// TryLockMany and ReleaseMany behave as TryLock and Release per name.
func confBatchLocks(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	locks, errs := TryLockMany(ctx, s, []string{"bl-x", "bl-y"}, longTTL)
	if errs[0] != nil || errs[1] != nil || locks[0] == nil || locks[1] == nil {
		t.Fatalf("TryLockMany: %v", errs)
	}
	if _, err := s.TryLock(ctx, "bl-x", longTTL); !errors.Is(err, ErrLockHeld) {
		t.Fatalf("TryLock of a batch-held lock: %v, want ErrLockHeld", err)
	}
	more, errs := TryLockMany(ctx, s, []string{"bl-x", "bl-z", ""}, longTTL)
	if !errors.Is(errs[0], ErrLockHeld) || more[0] != nil || errs[1] != nil || more[1] == nil || errs[2] == nil {
		t.Fatalf("second TryLockMany: %v", errs)
	}
	for i, err := range ReleaseMany(ctx, s, append(locks, more...)) {
		if err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	for _, name := range []string{"bl-x", "bl-y", "bl-z"} {
		l, err := s.TryLock(ctx, name, longTTL)
		if err != nil {
			t.Fatalf("%s after ReleaseMany: %v", name, err)
		}
		_ = l.Release(ctx)
	}
	// A lock that was lost (expired and taken) reports ErrLockLost.
	locks, errs = TryLockMany(ctx, s, []string{"bl-short"}, shortTTL)
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	other := waitLock(t, s, "bl-short", longTTL)
	if errs := ReleaseMany(ctx, s, locks); !errors.Is(errs[0], ErrLockLost) {
		t.Fatalf("release of a lost lock: %v, want ErrLockLost", errs[0])
	}
	_ = other.Release(ctx)
}
