package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/testredis"
)

// Conformance of the Outbox methods, run by runConformance for every
// backend (also Redis Cluster: every script stays in one slot).

func openOutbox(t *testing.T, h harness) (Outbox, Outbox) {
	t.Helper()
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	ob, ok := s.(Outbox)
	if !ok {
		t.Fatalf("%T does not implement Outbox", s)
	}
	peer, ok := h.Peer(t, s).(Outbox)
	if !ok {
		t.Fatalf("peer does not implement Outbox")
	}
	return ob, peer
}

func obEvent(id, tenant string, at time.Time) OutboxEvent {
	return OutboxEvent{ID: id, Tenant: tenant, Type: "tenant.flagged", Payload: []byte(`{"id":"` + id + `"}`), CreatedAt: at}
}

func claimIDs(t *testing.T, ob Outbox, now time.Time, lease time.Duration, n int) ([]string, map[string]OutboxEvent) {
	t.Helper()
	evs, err := ob.OutboxClaim(testCtx(t), now, lease, n)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	ids := make([]string, 0, len(evs))
	m := make(map[string]OutboxEvent)
	for _, ev := range evs {
		if ev.Claim == "" {
			t.Errorf("claimed %s without a claim token", ev.ID)
		}
		ids = append(ids, ev.ID)
		m[ev.ID] = ev
	}
	slices.Sort(ids)
	return ids, m
}

func confOutbox(t *testing.T, h harness) {
	ctx := testCtx(t)
	ob, peer := openOutbox(t, h)
	base := time.Now().Truncate(time.Millisecond)
	lease := 10 * time.Second

	if st, err := ob.OutboxStats(ctx); err != nil || st != (OutboxStats{}) {
		t.Fatalf("empty outbox stats = %+v, %v", st, err)
	}
	for i, ev := range []OutboxEvent{
		obEvent("a1", "acme", base), obEvent("b1", "bolt", base.Add(time.Millisecond)),
		obEvent("a2", "acme", base.Add(2*time.Millisecond)), obEvent("g1", "", base.Add(3*time.Millisecond)),
		obEvent("a3", "acme", base.Add(4*time.Millisecond)),
	} {
		if err := ob.OutboxAdd(ctx, ev); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	// A repeated add changes nothing.
	if err := ob.OutboxAdd(ctx, obEvent("a1", "acme", base.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	st, err := peer.OutboxStats(ctx)
	if err != nil || st.Queued != 5 || st.Dead != 0 || !st.Oldest.Equal(base) {
		t.Fatalf("stats = %+v, %v; want 5 queued, oldest %v", st, err, base)
	}
	queued, err := peer.OutboxList(ctx, false, 10)
	if err != nil || len(queued) != 5 || queued[0].ID != "a1" || queued[4].ID != "a3" || string(queued[0].Payload) != `{"id":"a1"}` {
		t.Fatalf("queued list = %+v, %v", queued, err)
	}

	// Only each tenant's first event is claimable, once.
	ids, claimed := claimIDs(t, ob, base.Add(time.Second), lease, 10)
	if want := []string{"a1", "b1", "g1"}; !slices.Equal(ids, want) {
		t.Fatalf("first claim = %v, want %v", ids, want)
	}
	if ev := claimed["a1"]; ev.Tenant != "acme" || ev.Type != "tenant.flagged" || !ev.CreatedAt.Equal(base) || ev.Attempts != 0 {
		t.Errorf("claimed a1 = %+v", ev)
	}
	if ids, _ := claimIDs(t, peer, base.Add(2*time.Second), lease, 10); len(ids) != 0 {
		t.Fatalf("claim while leased = %v, want none", ids)
	}

	// Delivered: the tenant's next event becomes due.
	if err := ob.OutboxDone(ctx, claimed["a1"]); err != nil {
		t.Fatal(err)
	}
	if err := ob.OutboxDone(ctx, claimed["a1"]); !errors.Is(err, ErrLockLost) {
		t.Errorf("second done = %v, want ErrLockLost", err)
	}
	recent, err := peer.OutboxRecent(ctx, "acme", 5)
	if err != nil || len(recent) != 1 || recent[0].ID != "a1" || recent[0].DeliveredAt.IsZero() || !recent[0].DeadAt.IsZero() ||
		recent[0].Attempts != 1 || recent[0].Type != "tenant.flagged" || !recent[0].CreatedAt.Equal(base) || recent[0].Tenant != "acme" {
		t.Fatalf("recent of acme = %+v, %v", recent, err)
	}
	if recent, err := peer.OutboxRecent(ctx, "bolt", 5); err != nil || len(recent) != 0 {
		t.Fatalf("recent of bolt = %+v, %v; want none", recent, err)
	}
	if ids, _ = claimIDs(t, peer, base.Add(3*time.Second), lease, 10); !slices.Equal(ids, []string{"a2"}) {
		t.Fatalf("after a1 delivered: claim = %v, want [a2]", ids)
	}

	// A lease that ends is taken over; the old claim is refused.
	ids, again := claimIDs(t, peer, base.Add(time.Second+lease+time.Millisecond), time.Hour, 10)
	if !slices.Contains(ids, "b1") || !slices.Contains(ids, "g1") {
		t.Fatalf("after the lease: claim = %v, want b1 and g1 again", ids)
	}
	if err := ob.OutboxDone(ctx, claimed["b1"]); !errors.Is(err, ErrLockLost) {
		t.Errorf("done with a lapsed claim = %v, want ErrLockLost", err)
	}
	if err := ob.OutboxRetry(ctx, claimed["g1"], base, "x"); !errors.Is(err, ErrLockLost) {
		t.Errorf("retry with a lapsed claim = %v, want ErrLockLost", err)
	}
	if err := ob.OutboxRetry(ctx, OutboxEvent{ID: "g1"}, base, "x"); !errors.Is(err, ErrLockLost) {
		t.Errorf("retry without a claim = %v, want ErrLockLost", err)
	}

	// A failed attempt waits for its next time.
	now := base.Add(time.Minute)
	if err := peer.OutboxRetry(ctx, again["b1"], now.Add(30*time.Second), "503 Service Unavailable"); err != nil {
		t.Fatal(err)
	}
	if ids, _ := claimIDs(t, ob, now.Add(29*time.Second), lease, 10); slices.Contains(ids, "b1") {
		t.Fatalf("b1 claimed before its next attempt: %v", ids)
	}
	ids, retried := claimIDs(t, ob, now.Add(31*time.Second), lease, 10)
	if !slices.Equal(ids, []string{"b1"}) {
		t.Fatalf("claim at b1's next attempt = %v", ids)
	}
	if ev := retried["b1"]; ev.Attempts != 1 || ev.LastError != "503 Service Unavailable" {
		t.Errorf("retried b1 = %+v", ev)
	}

	// Buried: a dead letter, and the tenant moves on.
	if err := ob.OutboxBury(ctx, again["g1"], now, "connection refused"); err != nil {
		t.Fatal(err)
	}
	dead, err := peer.OutboxList(ctx, true, 10)
	if err != nil || len(dead) != 1 || dead[0].ID != "g1" || dead[0].Attempts != 1 || dead[0].LastError != "connection refused" || !dead[0].DeadAt.Equal(now) {
		t.Fatalf("dead list = %+v, %v", dead, err)
	}
	st, err = ob.OutboxStats(ctx)
	if err != nil || st.Queued != 3 || st.Dead != 1 {
		t.Fatalf("stats after bury = %+v, %v; want 3 queued (a2 a3 b1), 1 dead", st, err)
	}
	if recent, err := ob.OutboxRecent(ctx, "", 5); err != nil || len(recent) != 1 || recent[0].ID != "g1" ||
		!recent[0].DeadAt.Equal(now) || recent[0].LastError != "connection refused" || recent[0].Attempts != 1 {
		t.Fatalf("recent of the tenant-less group = %+v, %v", recent, err)
	}
	if err := ob.OutboxAdd(ctx, obEvent("g1", "", now)); err != nil {
		t.Fatal(err)
	}
	if st2, _ := ob.OutboxStats(ctx); st2 != st {
		t.Errorf("re-adding a dead id changed the outbox: %+v, want %+v", st2, st)
	}
	if err := ob.OutboxAdd(ctx, obEvent("g2", "", now)); err != nil {
		t.Fatal(err)
	}
	if ids, _ := claimIDs(t, ob, now.Add(time.Second), lease, 10); !slices.Equal(ids, []string{"g2"}) {
		t.Fatalf("after g1 buried: claim = %v, want [g2]", ids)
	}

	// Redeliver: a dead letter goes back to the end of its queue.
	if _, err := ob.OutboxRedeliver(ctx, "nope", now); !errors.Is(err, ErrNotFound) {
		t.Errorf("redeliver unknown = %v, want ErrNotFound", err)
	}
	if n, err := peer.OutboxRedeliver(ctx, "g1", now.Add(2*time.Second)); err != nil || n != 1 {
		t.Fatalf("redeliver g1 = %d, %v", n, err)
	}
	if dead, _ := ob.OutboxList(ctx, true, 10); len(dead) != 0 {
		t.Errorf("dead after redeliver = %+v", dead)
	}
	// g2 is still leased: g1 waits behind it.
	if ids, _ := claimIDs(t, ob, now.Add(3*time.Second), lease, 10); slices.Contains(ids, "g1") {
		t.Fatalf("g1 claimed before g2 was delivered: %v", ids)
	}

	// Redeliver all: a waiting retry is due at once.
	if err := ob.OutboxRetry(ctx, retried["b1"], now.Add(time.Hour), "timeout"); err != nil {
		t.Fatal(err)
	}
	if n, err := ob.OutboxRedeliver(ctx, "", now.Add(4*time.Second)); err != nil || n != 1 {
		t.Fatalf("redeliver all = %d, %v; want 1 (b1)", n, err)
	}
	ids, _ = claimIDs(t, peer, now.Add(5*time.Second), lease, 10)
	if !slices.Contains(ids, "b1") {
		t.Fatalf("b1 not due after redeliver all: %v", ids)
	}
}

func confOutboxInvalid(t *testing.T, h harness) {
	ctx := testCtx(t)
	ob, _ := openOutbox(t, h)
	now := time.Now()
	for name, ev := range map[string]OutboxEvent{
		"no id":      {Type: "x", Payload: []byte("{}")},
		"no type":    {ID: "e", Payload: []byte("{}")},
		"no payload": {ID: "e", Type: "x"},
		"NUL id":     {ID: "e\x00", Type: "x", Payload: []byte("{}")},
		"long":       {ID: "e", Type: "x", Payload: make([]byte, OutboxMaxPayload+1)},
	} {
		if err := ob.OutboxAdd(ctx, ev); !errors.Is(err, ErrOutboxInvalid) {
			t.Errorf("%s: add = %v, want ErrOutboxInvalid", name, err)
		}
	}
	if _, err := ob.OutboxClaim(ctx, now, 0, 1); err == nil {
		t.Error("claim with lease 0: no error")
	}
	if _, err := ob.OutboxList(ctx, false, 0); err == nil {
		t.Error("list with limit 0: no error")
	}
	if _, err := ob.OutboxRecent(ctx, "acme", 0); err == nil {
		t.Error("recent with limit 0: no error")
	}
	if st, err := ob.OutboxStats(ctx); err != nil || st != (OutboxStats{}) {
		t.Errorf("after invalid calls: %+v, %v", st, err)
	}
}

// confOutboxConcurrentClaims: claimers racing on two stores claim every
// event exactly once, and per tenant in order.
func confOutboxConcurrentClaims(t *testing.T, h harness) {
	ctx := testCtx(t)
	ob, peer := openOutbox(t, h)
	base := time.Now().Truncate(time.Millisecond)
	const tenants, per = 12, 3
	for i := 0; i < per; i++ {
		for k := 0; k < tenants; k++ {
			if err := ob.OutboxAdd(ctx, obEvent(fmt.Sprintf("e-%02d-%d", k, i), fmt.Sprintf("t-%02d", k), base.Add(time.Duration(i)*time.Millisecond))); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mu sync.Mutex
	got := make(map[string][]string)
	var wg sync.WaitGroup
	deadline := time.Now().Add(waitMax)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			s := []Outbox{ob, peer}[w%2]
			for time.Now().Before(deadline) {
				mu.Lock()
				n := 0
				for _, v := range got {
					n += len(v)
				}
				mu.Unlock()
				if n >= tenants*per {
					return
				}
				evs, err := s.OutboxClaim(ctx, base.Add(time.Second), time.Minute, 3)
				if err != nil {
					t.Error(err)
					return
				}
				for _, ev := range evs {
					mu.Lock()
					got[ev.Tenant] = append(got[ev.Tenant], ev.ID)
					mu.Unlock()
					if err := s.OutboxDone(ctx, ev); err != nil {
						t.Errorf("done %s: %v", ev.ID, err)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	for k := 0; k < tenants; k++ {
		tenant := fmt.Sprintf("t-%02d", k)
		want := []string{fmt.Sprintf("e-%02d-0", k), fmt.Sprintf("e-%02d-1", k), fmt.Sprintf("e-%02d-2", k)}
		if !slices.Equal(got[tenant], want) {
			t.Errorf("tenant %s delivered %v, want %v (each once, in order)", tenant, got[tenant], want)
		}
	}
	if st, err := ob.OutboxStats(ctx); err != nil || st.Queued != 0 {
		t.Errorf("after draining: %+v, %v", st, err)
	}
}

// TestRedisOutboxAddWaitsForReplica: with replicas, an added event is on
// the replica when OutboxAdd returns (it survives a failover); a frozen
// replica makes the add report ErrNotAcked, and the retried add (same id)
// is then acknowledged without a second copy.
func TestRedisOutboxAddWaitsForReplica(t *testing.T) {
	master := testredis.Start(t, masterArgs...)
	rep := startReplica(t, master)
	ctx := testCtx(t)
	keys := mustKeyring(t, testKeys(t, 1)...)
	r := NewRedis(master.Client(), RedisOptions{Keys: keys, WaitReplicas: 1, WaitTimeout: 5 * time.Second})
	if info, err := r.DetectReplicas(ctx); err != nil || info.Wait != 1 {
		t.Fatalf("DetectReplicas = %+v, %v", info, err)
	}
	if err := r.OutboxAdd(ctx, obEvent("e1", "acme", time.Now())); err != nil {
		t.Fatal(err)
	}
	s := outboxShard("acme")
	if n, err := rep.Client().Exists(ctx, r.obEv(s, "e1")).Result(); err != nil || n != 1 {
		t.Fatalf("event on the replica after OutboxAdd: %d, %v", n, err)
	}
	short := NewRedis(master.Client(), RedisOptions{Keys: keys, WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond})
	rep.Freeze()
	err := short.OutboxAdd(ctx, obEvent("e2", "acme", time.Now()))
	rep.Thaw()
	if !errors.Is(err, ErrNotAcked) {
		t.Fatalf("add with a frozen replica = %v, want ErrNotAcked", err)
	}
	if err := r.OutboxAdd(ctx, obEvent("e2", "acme", time.Now())); err != nil {
		t.Fatalf("retried add: %v", err)
	}
	if st, err := r.OutboxStats(ctx); err != nil || st.Queued != 2 {
		t.Fatalf("stats = %+v, %v; want 2 queued", st, err)
	}
}
