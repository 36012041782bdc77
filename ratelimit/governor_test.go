package ratelimit

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/testredis"
)

// countingBackend counts store steps.
type countingBackend struct {
	Backend
	n atomic.Int64
}

func (c *countingBackend) Take(ctx context.Context, tenant string, req Request) (Decision, error) {
	c.n.Add(1)
	return c.Backend.Take(ctx, tenant, req)
}

func bucketHeader(used, size, drip string) http.Header {
	h := http.Header{}
	h.Set("X-LS-API-Bucket-Level", used+"/"+size)
	h.Set("X-LS-API-Drip-Rate", drip)
	return h
}

func get(t *testing.T) *http.Request {
	r, err := http.NewRequest(http.MethodGet, "http://x/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestUngovernedTenantCostsNoStoreCommand(t *testing.T) {
	cb := &countingBackend{Backend: NewMemory()}
	g := &Governor{Backend: cb, Wait: time.Second}
	for range 100 {
		if err := g.Admit(get(t), "quiet"); err != nil {
			t.Fatal(err)
		}
		g.Observe("quiet", 200, http.Header{"Content-Type": {"application/json"}})
	}
	if n := cb.n.Load(); n != 0 || g.stateCount() != 0 {
		t.Fatalf("store steps = %d, states = %d; want 0, 0", n, g.stateCount())
	}
	// The first budget learned is written at once (one step per tenant and
	// process); after that a request takes a store step only when this
	// process's lease runs short, later answers riding along with it.
	g.Observe("quiet", 200, bucketHeader("1", "60", "1"))
	for range 5 {
		if err := g.Admit(get(t), "quiet"); err != nil {
			t.Fatal(err)
		}
		g.Observe("quiet", 200, bucketHeader("2", "60", "1"))
	}
	if n := cb.n.Load(); n < 1+1 || n >= 1+5 {
		t.Fatalf("store steps = %d, want 1 + fewer than one per request (2..5)", n)
	}
}

func TestRefusedAtOnceWithoutWait(t *testing.T) {
	g := &Governor{Backend: NewMemory()}
	g.Observe("t", 200, bucketHeader("20", "20", "0.25"))
	err := g.Admit(get(t), "t")
	var re *RefusedError
	if !errors.As(err, &re) || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("err = %v, want a RefusedError", err)
	}
	if re.RetryAfterSeconds() != 4 {
		t.Fatalf("Retry-After = %d, want 4 (one unit at 0.25/s)", re.RetryAfterSeconds())
	}
	if (&RefusedError{RetryAfter: 10 * time.Millisecond}).RetryAfterSeconds() != 1 {
		t.Fatal("Retry-After must be at least 1")
	}
}

func TestRefusedEarlyWhenTheWaitCannotSuffice(t *testing.T) {
	g := &Governor{Backend: NewMemory(), Wait: 200 * time.Millisecond}
	g.Observe("t", 200, bucketHeader("20", "20", "1"))
	start := time.Now()
	err := g.Admit(get(t), "t")
	if !errors.Is(err, ErrRateLimited) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 150*time.Millisecond {
		t.Fatalf("waited %v although the budget could not have room within Wait", time.Since(start))
	}
}

// TestArrivalOrder: requests that must wait are sent in the order they came.
func TestArrivalOrder(t *testing.T) {
	g := &Governor{Backend: NewMemory(), Wait: 20 * time.Second}
	g.Observe("t", 200, bucketHeader("1", "1", "20")) // one unit per 50 ms
	v, _ := g.tenants.Load("t")
	ts := v.(*tenantState)
	queued := func() int { ts.mu.Lock(); defer ts.mu.Unlock(); return len(ts.queue) }

	const n = 8
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.Admit(get(t), "t"); err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		}()
		// Start the next only once this one is queued (or already through).
		deadline := time.Now().Add(5 * time.Second)
		for queued()+len(snapshot(&mu, &order)) < i+1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	wg.Wait()
	for i, got := range order {
		if got != i {
			t.Fatalf("order = %v, want 0..%d", order, n-1)
		}
	}
}

func snapshot(mu *sync.Mutex, s *[]int) []int {
	mu.Lock()
	defer mu.Unlock()
	return append([]int(nil), (*s)...)
}

// TestBlockOnEveryReplica: an upstream 429 seen by one replica holds the
// tenant on another that shares the Redis store, until Retry-After; other
// tenants are not affected.
func TestBlockOnEveryReplica(t *testing.T) {
	srv := testredis.Start(t)
	a := &Governor{Backend: NewRedis(srv.Client(), "p:")}
	b := &Governor{Backend: NewRedis(srv.Client(), "p:")}
	for _, g := range []*Governor{a, b} {
		g.Observe("t", 200, bucketHeader("0", "20", "2"))
		g.Observe("other", 200, bucketHeader("0", "20", "2"))
	}
	h := http.Header{}
	h.Set("Retry-After", time.Now().Add(3*time.Second).UTC().Format(http.TimeFormat))
	a.Observe("t", http.StatusTooManyRequests, h)

	var re *RefusedError
	if err := b.Admit(get(t), "t"); !errors.As(err, &re) {
		t.Fatalf("replica b: err = %v, want refused", err)
	}
	if s := re.RetryAfterSeconds(); s < 1 || s > 4 {
		t.Fatalf("Retry-After = %d", s)
	}
	if err := b.Admit(get(t), "other"); err != nil {
		t.Fatalf("other tenant: %v", err)
	}
	bud, ok, err := b.Budget(context.Background(), "t")
	if err != nil || !ok || bud.BlockedUntil == nil {
		t.Fatalf("budget = %+v, %v, %v", bud, ok, err)
	}
}

// TestHeldRequestRechecksTheBlock: a request waiting for room is not sent
// into a block that arrived while it waited.
func TestHeldRequestRechecksTheBlock(t *testing.T) {
	mem := NewMemory()
	g := &Governor{Backend: mem, Wait: 2 * time.Second}
	g.Observe("t", 200, bucketHeader("20", "20", "4")) // room in 250 ms
	errc := make(chan error, 1)
	go func() { errc <- g.Admit(get(t), "t") }()
	v, _ := g.tenants.Load("t")
	ts := v.(*tenantState)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ts.mu.Lock()
		n := len(ts.queue)
		ts.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// Another replica saw a 429 lasting well past the wait.
	other := &Governor{Backend: mem}
	h := http.Header{}
	h.Set("Retry-After", "30")
	other.Observe("t", http.StatusTooManyRequests, h)
	if err := <-errc; !errors.Is(err, ErrRateLimited) {
		t.Fatalf("held request: err = %v, want refused (block)", err)
	}
}

func TestWaitThenSend(t *testing.T) {
	m := NewMetrics(prometheusRegistry(t))
	g := &Governor{Backend: NewMemory(), Wait: 2 * time.Second, Metrics: m}
	g.Observe("t", 200, bucketHeader("20", "20", "10")) // room in 100 ms
	if err := g.Admit(get(t), "t"); err != nil {
		t.Fatalf("err = %v, want sent after a short wait", err)
	}
	if got := counterValue(t, m.delayedTotal); got != 1 {
		t.Fatalf("delayed = %v", got)
	}
}

func TestCallerGoneWhileWaiting(t *testing.T) {
	g := &Governor{Backend: NewMemory(), Wait: 10 * time.Second}
	g.Observe("t", 200, bucketHeader("20", "20", "0.1"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.AdmitWait(ctx, "t", 1, "", 10*time.Second); err == nil {
		t.Fatal("want an error for a gone caller")
	}
}

func TestKeyShareThroughGovernor(t *testing.T) {
	g := &Governor{Backend: NewMemory(), KeyShare: 0.25, CallerKey: func(r *http.Request) string { return r.Header.Get("K") }}
	g.Observe("t", 200, bucketHeader("0", "20", "1"))
	req := func(k string) *http.Request { r := get(t); r.Header.Set("K", k); return r }
	for range 5 {
		if err := g.Admit(req("a"), "t"); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Admit(req("a"), "t"); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("key a beyond its quarter: %v", err)
	}
	if err := g.Admit(req("b"), "t"); err != nil {
		t.Fatalf("key b: %v", err)
	}
}

func TestStoreDownFailsOpen(t *testing.T) {
	srv := testredis.Start(t)
	var reported atomic.Int64
	g := &Governor{Backend: NewRedis(srv.Client(), "p:"), OnError: func(string, error) { reported.Add(1) }}
	g.Observe("t", 200, bucketHeader("20", "20", "0.1"))
	srv.Kill()
	if err := g.Admit(get(t), "t"); err != nil {
		t.Fatalf("store down: %v, want the request sent", err)
	}
	if reported.Load() == 0 {
		t.Fatal("store failure not reported")
	}
}

func TestMergeKeepsTheLarger(t *testing.T) {
	a := Observation{At: t0, BucketUsed: 18, BucketSize: 20, DripRate: 2}
	b := Observation{At: t0.Add(time.Second), BucketUsed: 5, BucketSize: 20, DripRate: 2}
	if m := merge(a, b); m.BucketUsed != 16 {
		t.Fatalf("merged level = %v, want 16 (18 aged by 1 s at 2/s)", m.BucketUsed)
	}
	blk := Observation{At: t0, BlockUntil: t0.Add(time.Minute)}
	if m := merge(blk, b); !m.BlockUntil.Equal(t0.Add(time.Minute)) || m.BucketUsed != 5 {
		t.Fatalf("merged = %+v", m)
	}
	w1 := Observation{At: t0, WindowLimit: 10, WindowRemaining: 2, WindowReset: t0.Add(time.Minute)}
	w2 := Observation{At: t0, WindowLimit: 10, WindowRemaining: 6, WindowReset: t0.Add(time.Minute)}
	if m := merge(w1, w2); m.WindowRemaining != 2 {
		t.Fatalf("merged window = %+v", m)
	}
}

// TestExpiredBudgetIsForgotten: once the store has dropped an idle budget,
// the tenant costs no store command again until it next reports a limit.
func TestExpiredBudgetIsForgotten(t *testing.T) {
	now := t0
	cb := &countingBackend{Backend: NewMemory()}
	g := &Governor{Backend: cb, Now: func() time.Time { return now }}
	g.Observe("t", 200, bucketHeader("0", "20", "2"))
	if err := g.Admit(get(t), "t"); err != nil || !g.Governed("t") {
		t.Fatalf("err %v, governed %v", err, g.Governed("t"))
	}
	now = now.Add(idleTTL + time.Minute)
	if err := g.Admit(get(t), "t"); err != nil {
		t.Fatal(err)
	}
	if g.Governed("t") {
		t.Fatal("an expired budget is still governed")
	}
	before := cb.n.Load()
	_ = g.Admit(get(t), "t")
	if cb.n.Load() != before {
		t.Fatal("a forgotten tenant still costs store commands")
	}
}
