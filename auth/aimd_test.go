package auth

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lsproxy/lsproxy/store"
)

func TestAIMDHalvesOnStrainAndGrowsBack(t *testing.T) {
	now := time.Unix(1000, 0)
	a := newAIMD(8, time.Second, func() time.Time { return now })
	if a.Limit() != 8 {
		t.Fatalf("starts at %d, want the maximum 8", a.Limit())
	}
	take := func() {
		t.Helper()
		if !a.acquire(context.Background()) {
			t.Fatal("acquire failed")
		}
	}
	for _, c := range []struct {
		name string
		err  error
		took time.Duration
		want int
	}{
		{"429", &EndpointError{Status: http.StatusTooManyRequests}, 0, 4},
		{"a second strain within the cooldown", &EndpointError{Status: 503}, 0, 4},
	} {
		take()
		a.release()
		a.observe(c.err, c.took)
		if got := a.Limit(); got != c.want {
			t.Fatalf("%s: limit %d, want %d", c.name, got, c.want)
		}
	}
	for _, err := range []error{&UnavailableError{Err: &EndpointError{Status: 502}}, ErrPaced, ErrBreakerOpen, ErrOutcomeUnknown, nil} {
		now = now.Add(2 * time.Second)
		take()
		took := time.Duration(0)
		if err == nil {
			took = 3 * time.Second // slower than slow
		}
		a.release()
		a.observe(err, took)
	}
	if got := a.Limit(); got != 1 {
		t.Fatalf("after five strains: limit %d, want the floor 1", got)
	}
	// A tenant's own problem (invalid_grant) neither cuts nor grows.
	take()
	a.release()
	a.observe(&EndpointError{Status: 400, Code: "invalid_grant"}, 0)
	if got := a.Limit(); got != 1 {
		t.Fatalf("invalid_grant moved the limit to %d", got)
	}
	// Additive increase: one per limit's worth of good refreshes, up to max.
	good := 0
	for a.Limit() < 8 && good < 1000 {
		take()
		a.release()
		a.observe(nil, 10*time.Millisecond)
		good++
	}
	if a.Limit() != 8 || good < 20 || good > 40 {
		t.Fatalf("grew to %d after %d good refreshes; want 8 after about 1+2+...+7 = 28", a.Limit(), good)
	}
	for range 50 {
		take()
		a.release()
		a.observe(nil, 0)
	}
	if a.Limit() != 8 {
		t.Fatalf("limit %d above the maximum", a.Limit())
	}
}

func TestAIMDAcquireBoundedByLimit(t *testing.T) {
	a := newAIMD(2, time.Second, time.Now)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if !a.acquire(ctx) || !a.acquire(ctx) {
		t.Fatal("two slots expected")
	}
	got := make(chan bool)
	go func() { got <- a.acquire(context.Background()) }()
	select {
	case <-got:
		t.Fatal("a third refresh started past the limit")
	case <-ctx.Done():
	}
	a.release()
	a.observe(nil, 0)
	if !<-got {
		t.Fatal("waiting acquire did not get the freed slot")
	}
	if ok := a.acquire(ctx); ok {
		t.Fatal("acquire with an ended context succeeded past the limit")
	}
}

// Under 429s the refresher's concurrency is cut (to 1 after three of them
// from 8), so the endpoint sees fewer refreshes at once; then it grows
// back and every tenant is refreshed.
func TestRefresherBacksOffOn429(t *testing.T) {
	met := NewMetrics(prometheus.NewRegistry())
	f := newFixture(t, func(o *ManagerOptions) { o.Metrics = met })
	const n = 24
	for i := range n {
		rec := f.put(t, fmt.Sprintf("s%02d", i), time.Hour)
		old := rec.Clone()
		old.LastRefreshAt = f.clk.Now().Add(-13 * 24 * time.Hour)
		old.CreatedAt = old.LastRefreshAt
		if _, err := f.store.Put(ctx, old, rec.Version); err != nil {
			t.Fatal(err)
		}
	}
	b := &BackgroundRefresher{Manager: f.m, Store: f.store, Concurrency: 8, IdleTTL: 14 * 24 * time.Hour, Jitter: time.Millisecond, SlowRefresh: time.Hour}
	b.defaults()
	b.limit.cooldown = 0 // every strain cuts, for a deterministic count
	var throttled, minLimit atomic.Int32
	minLimit.Store(100)
	var mu sync.Mutex
	f.ref.next = func(t0 *store.Tenant) (*Grant, error) {
		mu.Lock() // one at a time: the 429s come first, in order
		defer mu.Unlock()
		if l := int32(b.Limit()); l < minLimit.Load() {
			minLimit.Store(l)
		}
		if throttled.Add(1) <= 3 {
			return nil, &EndpointError{Status: http.StatusTooManyRequests}
		}
		return &Grant{AccessToken: "at-" + t0.ID + "-new", RefreshToken: "rt-" + t0.ID + "-new", Expiry: f.clk.Now().Add(time.Hour)}, nil
	}
	b.Scan(ctx)
	if got := metricValue(t, met.refresherConc); got != float64(b.Limit()) {
		t.Errorf("lsproxy_refresher_concurrency = %v, want the limit %d", got, b.Limit())
	}
	if m := minLimit.Load(); m != 1 {
		t.Fatalf("lowest limit seen %d, want 1 after three 429s from 8", m)
	}
	if got := b.Limit(); got <= 1 {
		t.Fatalf("limit %d after 21 good refreshes, want it grown back", got)
	}
	if f.ref.count() != n {
		t.Fatalf("%d token requests, want %d", f.ref.count(), n)
	}
}

// Two replicas scanning the same due tenants together attempt each one
// once in all: a replica skips a tenant another has claimed.
func TestReplicasShareDueListWithoutDuplicateWork(t *testing.T) {
	f := newFixture(t)
	const n = 40
	for i := range n {
		rec := f.put(t, fmt.Sprintf("d%02d", i), time.Hour)
		old := rec.Clone()
		old.LastRefreshAt = f.clk.Now().Add(-13 * 24 * time.Hour)
		old.CreatedAt = old.LastRefreshAt
		if _, err := f.store.Put(ctx, old, rec.Version); err != nil {
			t.Fatal(err)
		}
	}
	f.ref.next = func(t0 *store.Tenant) (*Grant, error) {
		time.Sleep(5 * time.Millisecond)
		return &Grant{AccessToken: "at-" + t0.ID + "-new", RefreshToken: "rt-" + t0.ID + "-new", Expiry: f.clk.Now().Add(time.Hour)}, nil
	}
	m2 := NewManager(f.store, f.ref, ManagerOptions{Now: f.clk.Now, LockTTL: 2 * time.Second})
	var started [2]int
	var wg sync.WaitGroup
	for i, m := range []*Manager{f.m, m2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := &BackgroundRefresher{Manager: m, Store: f.store, Concurrency: 4, IdleTTL: 14 * 24 * time.Hour, Jitter: time.Millisecond}
			started[i] = b.Scan(ctx)
		}()
	}
	wg.Wait()
	if f.ref.count() != n {
		t.Fatalf("token requests = %d, want %d", f.ref.count(), n)
	}
	if started[0]+started[1] != n {
		t.Fatalf("refreshes attempted %d + %d, want %d in all (no tenant attempted by both)", started[0], started[1], n)
	}
	// A failed refresh gives its claim back: the next scan tries again.
	rec := f.put(t, "fails", time.Hour)
	old := rec.Clone()
	old.LastRefreshAt = f.clk.Now().Add(-13 * 24 * time.Hour)
	old.CreatedAt = old.LastRefreshAt
	if _, err := f.store.Put(ctx, old, rec.Version); err != nil {
		t.Fatal(err)
	}
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 503} }
	b := &BackgroundRefresher{Manager: m2, Store: f.store, IdleTTL: 14 * 24 * time.Hour, Jitter: time.Millisecond}
	if got := b.refreshDue(ctx, []string{"fails"}); got != 1 {
		t.Fatalf("first attempt: %d", got)
	}
	before := f.ref.count()
	if got := b.refreshDue(ctx, []string{"fails"}); got != 1 || f.ref.count() != before+1 {
		t.Fatalf("failed tenant not retried by the next scan: %d (token requests %d → %d)", got, before, f.ref.count())
	}
	// A claim held (by a replica refreshing it now) makes the others skip it.
	claim, err := f.store.TryLock(ctx, claimName("fails"), time.Minute)
	if err != nil {
		t.Fatalf("claim after a failure: %v, want it given back", err)
	}
	defer claim.Release(ctx)
	if got := b.refreshDue(ctx, []string{"fails"}); got != 0 || f.ref.count() != before+1 {
		t.Fatalf("claimed tenant attempted: %d", got)
	}
}
