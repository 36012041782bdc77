package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/testredis"
)

// backends runs fn against the embedded and the Redis backend (a real
// redis-server): both must follow the same rules.
func backends(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Run("memory", func(t *testing.T) { fn(t, NewMemory()) })
	t.Run("redis", func(t *testing.T) {
		srv := testredis.Start(t)
		fn(t, NewRedis(srv.Client(), "test:"))
	})
}

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func bucketObs(at time.Time, used, size, drip float64) *Observation {
	return &Observation{At: at, BucketUsed: used, BucketSize: size, DripRate: drip}
}

func mustTake(t *testing.T, b Backend, tenant string, req Request) Decision {
	t.Helper()
	d, err := b.Take(context.Background(), tenant, req)
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	return d
}

func TestBackendUnknownTenantIsAllowed(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		d := mustTake(t, b, "t1", Request{Now: t0, Cost: 10})
		if !d.Allowed || d.Budget.Known() {
			t.Fatalf("unknown tenant: %+v", d)
		}
		if r, ok := b.(*Redis); ok {
			if n := r.client.Exists(context.Background(), r.key("t1")).Val(); n != 0 {
				t.Fatalf("a Take for an unknown tenant wrote a key")
			}
		}
	})
}

func TestBackendBucket(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		// Learned: 10 of 20 used, 2/s.
		d := mustTake(t, b, "t", Request{Now: t0, Cost: 10, Observe: bucketObs(t0, 10, 20, 2)})
		if !d.Allowed || d.Budget.Kind != "bucket" || d.Budget.Level != 20 || d.Budget.Size != 20 {
			t.Fatalf("first take: %+v", d)
		}
		d = mustTake(t, b, "t", Request{Now: t0, Cost: 1})
		if d.Allowed || d.RetryIn != 500*time.Millisecond {
			t.Fatalf("full bucket: %+v", d)
		}
		d = mustTake(t, b, "t", Request{Now: t0.Add(499 * time.Millisecond), Cost: 1})
		if d.Allowed {
			t.Fatalf("one unit needs 500ms at 2/s: %+v", d)
		}
		d = mustTake(t, b, "t", Request{Now: t0.Add(500 * time.Millisecond), Cost: 1})
		if !d.Allowed {
			t.Fatalf("after 500ms: %+v", d)
		}
		// A write costs 10: it needs 5 s of drip.
		d = mustTake(t, b, "t", Request{Now: t0.Add(500 * time.Millisecond), Cost: 10})
		if d.Allowed || d.RetryIn != 5*time.Second {
			t.Fatalf("write into a full bucket: %+v", d)
		}
	})
}

func TestBackendResyncTakesTheLarger(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		mustTake(t, b, "t", Request{Now: t0, Cost: 15, Observe: bucketObs(t0, 0, 20, 1)})
		// The upstream reports less than lsproxy booked (requests in flight):
		// the own estimate stays.
		d := mustTake(t, b, "t", Request{Now: t0, Observe: bucketObs(t0, 5, 20, 1)})
		if d.Budget.Level != 15 {
			t.Fatalf("level = %v, want the own 15", d.Budget.Level)
		}
		// Another integration spent the bucket: the reported level wins.
		d = mustTake(t, b, "t", Request{Now: t0, Observe: bucketObs(t0, 19, 20, 1)})
		if d.Budget.Level != 19 {
			t.Fatalf("level = %v, want the reported 19", d.Budget.Level)
		}
		// An old report is aged by the drip before it is compared.
		d = mustTake(t, b, "t", Request{Now: t0.Add(4 * time.Second), Observe: bucketObs(t0, 20, 20, 1)})
		if d.Budget.Level != 16 {
			t.Fatalf("level = %v, want 16", d.Budget.Level)
		}
	})
}

func TestBackendBlock(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		until := t0.Add(3 * time.Second)
		mustTake(t, b, "t", Request{Now: t0, Observe: &Observation{At: t0, BlockUntil: until}})
		d := mustTake(t, b, "t", Request{Now: t0.Add(time.Second), Cost: 1})
		if d.Allowed || d.RetryIn != 2*time.Second || d.Budget.BlockedUntil == nil || !d.Budget.BlockedUntil.Equal(until) {
			t.Fatalf("blocked: %+v", d)
		}
		if d = mustTake(t, b, "t", Request{Now: until, Cost: 1}); !d.Allowed {
			t.Fatalf("after the block: %+v", d)
		}
		// A shorter block never shortens a longer one.
		mustTake(t, b, "t", Request{Now: until, Observe: &Observation{At: until, BlockUntil: until.Add(10 * time.Second)}})
		mustTake(t, b, "t", Request{Now: until, Observe: &Observation{At: until, BlockUntil: until.Add(time.Second)}})
		if d = mustTake(t, b, "t", Request{Now: until.Add(5 * time.Second), Cost: 1}); d.Allowed {
			t.Fatalf("the longer block must hold: %+v", d)
		}
	})
}

func TestBackendWindow(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		reset := t0.Add(5 * time.Second)
		obs := &Observation{At: t0, WindowLimit: 10, WindowRemaining: 2, WindowReset: reset}
		d := mustTake(t, b, "t", Request{Now: t0, Cost: 1, Observe: obs})
		if !d.Allowed || d.Budget.Kind != "window" || d.Budget.Used != 9 {
			t.Fatalf("first: %+v", d)
		}
		mustTake(t, b, "t", Request{Now: t0, Cost: 1})
		d = mustTake(t, b, "t", Request{Now: t0.Add(time.Second), Cost: 1})
		if d.Allowed || d.RetryIn != 4*time.Second {
			t.Fatalf("exhausted window: %+v", d)
		}
		if d = mustTake(t, b, "t", Request{Now: reset, Cost: 1}); !d.Allowed {
			t.Fatalf("after the reset: %+v", d)
		}
	})
}

func TestBackendKeyShare(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		mustTake(t, b, "t", Request{Now: t0, Observe: bucketObs(t0, 0, 20, 2)})
		for i := range 10 {
			if d := mustTake(t, b, "t", Request{Now: t0, Cost: 1, Key: "app-a", Share: 0.5}); !d.Allowed {
				t.Fatalf("app-a request %d refused: %+v", i, d)
			}
		}
		d := mustTake(t, b, "t", Request{Now: t0, Cost: 1, Key: "app-a", Share: 0.5})
		if d.Allowed || d.RetryIn != time.Second {
			t.Fatalf("app-a over its half: %+v", d)
		}
		if d := mustTake(t, b, "t", Request{Now: t0, Cost: 1, Key: "app-b", Share: 0.5}); !d.Allowed {
			t.Fatalf("app-b must still be served: %+v", d)
		}
	})
}

func TestRedisExpiresIdleBudgets(t *testing.T) {
	srv := testredis.Start(t)
	r := NewRedis(srv.Client(), "test:")
	mustTake(t, r, "t", Request{Now: t0, Cost: 1, Observe: bucketObs(t0, 0, 20, 2)})
	ttl := r.client.PTTL(context.Background(), r.key("t")).Val()
	if ttl <= 0 || ttl > idleTTL+time.Second {
		t.Fatalf("TTL = %v, want about %v", ttl, idleTTL)
	}
}

func TestRedisStoreDown(t *testing.T) {
	srv := testredis.Start(t)
	r := NewRedis(srv.Client(), "test:")
	srv.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d, err := r.Take(ctx, "t", Request{Now: t0, Cost: 1})
	if !errors.Is(err, ErrStore) || !d.Allowed {
		t.Fatalf("store down: %+v, %v (want ErrStore and fail open)", d, err)
	}
	if err := r.Clear(ctx, "t"); !errors.Is(err, ErrStore) {
		t.Fatalf("Clear with the store down: %v, want ErrStore", err)
	}
}

// TestBackendStartupAnswersCountLaterBookings: an answer to a request sent
// unpaced cannot include what was booked while it was on its way; that is
// added to its report. Answers to paced requests merge as usual.
func TestBackendStartupAnswersCountLaterBookings(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		early := t0.Add(-100 * time.Millisecond)
		first := bucketObs(t0, 2, 20, 2)
		first.SentAt, first.Unpaced = early, true
		mustTake(t, b, "t", Request{Now: t0, Observe: first})
		for range 5 {
			mustTake(t, b, "t", Request{Now: t0, Cost: 1})
		}
		late := bucketObs(t0, 6, 20, 2) // another replica's unpaced request
		late.SentAt, late.Unpaced = early, true
		if d := mustTake(t, b, "t", Request{Now: t0, Observe: late}); d.Budget.Level != 11 {
			t.Fatalf("level = %v, want 6 reported + 5 booked since", d.Budget.Level)
		}
		normal := bucketObs(t0, 9, 20, 2)
		normal.SentAt = t0
		if d := mustTake(t, b, "t", Request{Now: t0, Observe: normal}); d.Budget.Level != 11 {
			t.Fatalf("level = %v, want the own 11 (9 reported)", d.Budget.Level)
		}
	})
}

// TestBackendClearForgetsTheBudget: Clear (DELETE /admin/tenants/{id}/rate-limit)
// drops a learned block for that tenant only; clearing an unknown tenant is
// no error.
func TestBackendClearForgetsTheBudget(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		block := &Observation{At: t0, BlockUntil: t0.Add(time.Hour)}
		mustTake(t, b, "t", Request{Now: t0, Observe: block})
		mustTake(t, b, "u", Request{Now: t0, Observe: block})
		if err := b.Clear(context.Background(), "t"); err != nil {
			t.Fatal(err)
		}
		if d := mustTake(t, b, "t", Request{Now: t0.Add(time.Second), Cost: 1}); !d.Allowed || d.Budget.Known() {
			t.Fatalf("after Clear: %+v", d)
		}
		if d := mustTake(t, b, "u", Request{Now: t0.Add(time.Second), Cost: 1}); d.Allowed {
			t.Fatalf("Clear of t released u: %+v", d)
		}
		if err := b.Clear(context.Background(), "never-seen"); err != nil {
			t.Fatal(err)
		}
	})
}
