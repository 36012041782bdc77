package sim

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// The fakes must themselves be right, or the simulation proves nothing.

func testWorld() *world {
	o := defaultOptions()
	return newWorld(&schedule{seed: 1, replicas: 2, tenants: 1, skews: make([]time.Duration, 2), baseMix: calmMix}, o)
}

func TestFakeStoreFencesLocksAndFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := testWorld()
		p := newProc(w, 0, 1, 0)
		c := &conn{s: w.store, p: p}
		ctx := context.Background()
		rec := &store.Tenant{ID: "t0", RefreshToken: "rt.t0.1", Status: store.StatusActive}
		if _, err := c.Put(ctx, rec, 0); err != nil {
			t.Fatal(err)
		}
		stale := rec.Clone()
		stale.Version, stale.WriteID = rec.Version, rec.WriteID
		next := rec.Clone()
		next.Version, next.WriteID = rec.Version, rec.WriteID
		next.RefreshToken = "rt.t0.2"
		if _, err := c.Put(ctx, next, rec.Version); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, stale, stale.Version); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("stale put: %v, want ErrConflict", err)
		}
		// Locks expire on the store's clock.
		l, err := c.TryLock(ctx, "tenant:t0", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.TryLock(ctx, "tenant:t0", time.Second); !errors.Is(err, store.ErrLockHeld) {
			t.Fatalf("second lock: %v", err)
		}
		time.Sleep(1100 * time.Millisecond)
		if err := l.Refresh(ctx, time.Second); !errors.Is(err, store.ErrLockLost) {
			t.Fatalf("refresh after expiry: %v", err)
		}
		// A stalled replica misses writes; the failover loses them, and
		// PutAcked said so.
		w.store.stallReplication(true)
		cur, _ := c.Get(ctx, "t0")
		cur.RefreshToken = "rt.t0.3"
		if _, err := c.PutAcked(ctx, cur, cur.Version); !errors.Is(err, store.ErrNotAcked) {
			t.Fatalf("PutAcked while stalled: %v", err)
		}
		w.store.failover(nil)
		got, _ := c.Get(ctx, "t0")
		if got.RefreshToken != "rt.t0.2" || !w.store.lostWrites["rt.t0.3"] {
			t.Fatalf("after failover: %s, lost %v", got.RefreshToken, w.store.lostWrites)
		}
	})
}

func TestFakeStorePartitionAndDeath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := testWorld()
		p := newProc(w, 0, 1, 0)
		c := &conn{s: w.store, p: p}
		p.set(func() { p.part = faultHang })
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		if _, err := c.Get(ctx, "t0"); err == nil || time.Since(start) != time.Second {
			t.Fatalf("hung get: %v after %s", err, time.Since(start))
		}
		p.set(func() { p.part = faultNone })
		done := make(chan bool)
		go func() {
			defer close(done)
			p.set(func() { p.dead = true })
			_, _ = c.Get(context.Background(), "t0")
			t.Error("a dead process's call returned")
		}()
		<-done
	})
}

func TestFakeProviderRotatesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := testWorld()
		p := newProc(w, 0, 1, 0)
		rt, _ := w.prov.newChain("t0", time.Minute)
		cl := w.oauthClient(p)
		g, err := cl.Refresh(context.Background(), &store.Tenant{ID: "t0", RefreshToken: rt})
		if err != nil {
			t.Fatal(err)
		}
		if g.RefreshToken == rt || !w.prov.valid(g.RefreshToken) || w.prov.valid(rt) {
			t.Fatalf("rotation: %s → %s", rt, g.RefreshToken)
		}
		if _, err := cl.Refresh(context.Background(), &store.Tenant{ID: "t0", RefreshToken: rt}); err == nil {
			t.Fatal("a spent refresh token was accepted")
		}
		if len(w.prov.resends) != 1 || w.prov.resends[0].g != w.prov.grants[0] {
			t.Fatalf("resends %v", w.prov.resends)
		}
	})
}
