package ratelimit

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lsproxy/lsproxy/internal/testredis"
)

// TestBackendLeaseGrant: a lease books up to Want, at most half the room
// and an eighth of the budget, at least the cost; a budget that is only a
// block leases nothing.
func TestBackendLeaseGrant(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		d := mustTake(t, b, "t", Request{Now: t0, Cost: 1, Want: 5, Observe: bucketObs(t0, 0, 80, 1)})
		if !d.Allowed || d.Granted != 5 || d.Budget.Level != 5 {
			t.Fatalf("want 5 of an empty 80: %+v", d)
		}
		d = mustTake(t, b, "t", Request{Now: t0, Cost: 1, Want: 50})
		if d.Granted != 10 || d.Budget.Level != 15 {
			t.Fatalf("want 50: granted %v (level %v), want an eighth of 80 (10)", d.Granted, d.Budget.Level)
		}
		mustTake(t, b, "t", Request{Now: t0, Cost: 55})
		d = mustTake(t, b, "t", Request{Now: t0, Cost: 1, Want: 10})
		if d.Granted != 5 || d.Budget.Level != 75 {
			t.Fatalf("10 units of room left: granted %v (level %v), want half (5)", d.Granted, d.Budget.Level)
		}
		d = mustTake(t, b, "t", Request{Now: t0, Cost: 4, Want: 10})
		if !d.Allowed || d.Granted != 4 {
			t.Fatalf("5 left, cost 4: %+v, want exactly the cost", d)
		}
		d = mustTake(t, b, "t", Request{Now: t0, Cost: 2, Want: 10})
		if d.Allowed || d.Granted != 0 {
			t.Fatalf("full: %+v", d)
		}
		// Giving back makes room before the check.
		d = mustTake(t, b, "t", Request{Now: t0, Cost: 2, Return: 3})
		if !d.Allowed || d.Budget.Level != 78 {
			t.Fatalf("after giving back 3: %+v", d)
		}
		d = mustTake(t, b, "t", Request{Now: t0, Return: 1000})
		if d.Budget.Level != 0 {
			t.Fatalf("giving back more than booked: level %v, want 0", d.Budget.Level)
		}

		// Window units go back only to their own window.
		reset := t0.Add(time.Minute)
		wobs := &Observation{At: t0, WindowLimit: 100, WindowRemaining: 100, WindowReset: reset}
		d = mustTake(t, b, "w", Request{Now: t0, Cost: 1, Want: 30, Observe: wobs})
		if d.Granted != 12.5 || d.Budget.Used != 12.5 {
			t.Fatalf("window lease: %+v, want an eighth of 100", d)
		}
		d = mustTake(t, b, "w", Request{Now: t0, Return: 5, ReturnWindow: reset.Add(-time.Minute)})
		if d.Budget.Used != 12.5 {
			t.Fatalf("given back to another window: used %v", d.Budget.Used)
		}
		d = mustTake(t, b, "w", Request{Now: t0, Return: 5, ReturnWindow: reset})
		if d.Budget.Used != 7.5 {
			t.Fatalf("given back to its window: used %v, want 7.5", d.Budget.Used)
		}

		// Only a block known (a token host): no lease.
		blk := &Observation{At: t0, BlockUntil: t0.Add(time.Second)}
		mustTake(t, b, "token@h", Request{Now: t0, Observe: blk})
		d = mustTake(t, b, "token@h", Request{Now: t0.Add(2 * time.Second), Cost: 1, Want: 10})
		if !d.Allowed || d.Granted != 1 {
			t.Fatalf("block-only budget: %+v, want the cost only", d)
		}
	})
}

// TestBackendLeaseKeyShare: a caller key's lease fits its share too.
func TestBackendLeaseKeyShare(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		d := mustTake(t, b, "t", Request{Now: t0, Cost: 1, Want: 50, Key: "k", Share: 0.5, Observe: bucketObs(t0, 0, 160, 1)})
		if d.Granted != 10 {
			t.Fatalf("granted %v, want an eighth of the key's 80 (10)", d.Granted)
		}
		d = mustTake(t, b, "t", Request{Now: t0, Key: "k", Share: 0.5, Cost: 70})
		if !d.Allowed {
			t.Fatalf("70 more fit the key's 80: %+v", d)
		}
		d = mustTake(t, b, "t", Request{Now: t0, Key: "k", Share: 0.5, Return: 10})
		d = mustTake(t, b, "t", Request{Now: t0, Key: "k", Share: 0.5, Cost: 10})
		if !d.Allowed {
			t.Fatalf("units given back to the key's share too: %+v", d)
		}
	})
}

// fixedClock is a settable clock for governors.
type fixedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fixedClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fixedClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func leaseOf(g *Governor, tenant string) float64 {
	v, ok := g.tenants.Load(tenant)
	if !ok {
		return 0
	}
	return v.(*tenantState).leaseUnits("")
}

func level(t *testing.T, g *Governor, tenant string) float64 {
	t.Helper()
	b, ok, err := g.Budget(context.Background(), tenant)
	if err != nil || !ok {
		t.Fatalf("budget: %+v %v %v", b, ok, err)
	}
	return b.Level
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// TestLeaseServesRequestsWithoutTheStore: a busy tenant's requests are
// booked in batches; the store's level is always what was sent plus this
// process's unsent units, and Release gives those back.
func TestLeaseServesRequestsWithoutTheStore(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		clk := &fixedClock{t: t0} // stands still: nothing drains
		cb := &countingBackend{Backend: b}
		m := NewMetrics(prometheusRegistry(t))
		g := &Governor{Backend: cb, Now: clk.now, Metrics: m}
		g.Observe("t", 200, bucketHeader("0", "3600", "1"))
		const n = 1000
		for i := range n {
			if err := g.Admit(get(t), "t"); err != nil {
				t.Fatal(err)
			}
			if i%100 == 0 {
				g.Observe("t", 200, bucketHeader("1", "3600", "1")) // never cuts
			}
		}
		steps := cb.n.Load() - 1
		if steps*10 > n {
			t.Fatalf("%d store steps for %d requests, want fewer than one per 10", steps, n)
		}
		if got := counterValue(t, m.leaseAdmits) + counterValue(t, m.leaseGrants); got < n-float64(steps) {
			t.Fatalf("lease metrics: admitted+grants = %v", got)
		}
		// What the store holds: the n sent plus the unsent lease; after
		// Release only what was sent.
		if lv, u := level(t, g, "t"), leaseOf(g, "t"); !near(lv, n+u) || u <= 0 {
			t.Fatalf("level %v with %v units leased, want %v", lv, u, n+u)
		}
		if err := g.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
		if lv := level(t, g, "t"); !near(lv, n) || leaseOf(g, "t") != 0 {
			t.Fatalf("after Release: level %v, lease %v; want %v, 0", lv, leaseOf(g, "t"), n)
		}
	})
}

// TestLeaseGivenBackWhenIdle: a lease that lapsed unspent is given back
// with the next store step (less what the bucket drained meanwhile).
func TestLeaseGivenBackWhenIdle(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		clk := &fixedClock{t: t0}
		g := &Governor{Backend: b, Now: clk.now}
		g.Observe("t", 200, bucketHeader("0", "1000", "0.5"))
		for range 20 {
			if err := g.Admit(get(t), "t"); err != nil {
				t.Fatal(err)
			}
		}
		u := leaseOf(g, "t")
		if u < 1 {
			t.Fatalf("lease after 20 requests: %v units", u)
		}
		clk.add(2 * leaseTTL) // idle: the lease lapses
		if err := g.Admit(get(t), "t"); err != nil {
			t.Fatal(err)
		}
		// The drain of the idle spell is charged to the unsent units: the
		// store holds the 21 sent and the new lease.
		if lv, nu := level(t, g, "t"), leaseOf(g, "t"); !near(lv, 21+nu) {
			t.Fatalf("level %v with a new lease of %v, want %v (the lapsed %v given back)", lv, nu, 21+nu, u)
		}
	})
}

// TestLeaseOfADeadReplicaComesBack: a replica that dies holding a lease
// never gives it back, yet its units are not lost: they drain with the
// bucket like sent requests.
func TestLeaseOfADeadReplicaComesBack(t *testing.T) {
	srv := testredis.Start(t)
	clk := &fixedClock{t: t0}
	dead := &Governor{Backend: NewRedis(srv.Client(), "p:"), Now: clk.now}
	live := &Governor{Backend: NewRedis(srv.Client(), "p:"), Now: clk.now}
	for _, g := range []*Governor{dead, live} {
		g.Observe("t", 200, bucketHeader("0", "80", "8"))
	}
	for range 30 {
		if err := dead.Admit(get(t), "t"); err != nil {
			t.Fatal(err)
		}
	}
	held := leaseOf(dead, "t")
	if held <= 0 {
		t.Fatal("no lease taken")
	}
	lv := level(t, live, "t")
	if !near(lv, 30+held) {
		t.Fatalf("level %v, want 30 sent + %v leased", lv, held)
	}
	// dead is gone (no Release). Once the bucket drained, live has it all.
	clk.add(time.Duration(lv/8*float64(time.Second)) + time.Millisecond)
	if got := level(t, live, "t"); got != 0 {
		t.Fatalf("level %v after the drain, want 0", got)
	}
	sent := 0
	for range 100 {
		if live.Admit(get(t), "t") == nil {
			sent++
		}
	}
	if sent != 80 {
		t.Fatalf("live replica sent %d of a full bucket of 80", sent)
	}
}

// TestLeaseCutByTheUpstream: an answer reporting a fuller bucket than the
// lease assumed cuts it to what fits and is written at once; a 429 drops it.
func TestLeaseCutByTheUpstream(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		clk := &fixedClock{t: t0}
		m := NewMetrics(prometheusRegistry(t))
		cb := &countingBackend{Backend: b}
		g := &Governor{Backend: cb, Now: clk.now, Metrics: m}
		g.Observe("t", 200, bucketHeader("0", "800", "1"))
		for range 50 {
			if err := g.Admit(get(t), "t"); err != nil {
				t.Fatal(err)
			}
		}
		u := leaseOf(g, "t")
		if u < 5 {
			t.Fatalf("lease %v, want a few units", u)
		}
		// Something else spent the budget: the upstream says 797 of 800.
		before := cb.n.Load()
		g.Observe("t", 200, bucketHeader("797", "800", "1"))
		if got := leaseOf(g, "t"); got != 3 {
			t.Fatalf("lease after the report: %v, want cut to the 3 that fit", got)
		}
		if cb.n.Load() != before+1 || counterValue(t, m.leaseCuts) != 1 {
			t.Fatalf("the correction was not written at once (%d steps, %v cuts)", cb.n.Load()-before, counterValue(t, m.leaseCuts))
		}
		if lv := level(t, g, "t"); !near(lv, 800) {
			t.Fatalf("store level %v, want 797 reported + 3 still leased", lv)
		}
		h := http.Header{}
		h.Set("Retry-After", "1")
		g.Observe("t", http.StatusTooManyRequests, h)
		if got := leaseOf(g, "t"); got != 0 {
			t.Fatalf("lease after a 429: %v", got)
		}
		if err := g.Admit(get(t), "t"); !errors.Is(err, ErrRateLimited) {
			t.Fatalf("after a 429: %v", err)
		}
	})
}

// TestLeaseConcurrentReplicas: three governors on one store, many
// goroutines each, a clock that stands still: they never admit more than
// the bucket holds, and once they give their leases back the store holds
// exactly what they admitted (no unit spent twice, none lost).
func TestLeaseConcurrentReplicas(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		clk := &fixedClock{t: t0}
		var gs []*Governor
		for range 3 {
			be := b
			if r, ok := b.(*Redis); ok {
				be = NewRedis(redisClientLike(t, r), "test:") // its own client
			}
			g := &Governor{Backend: be, Now: clk.now}
			g.Observe("t", 200, bucketHeader("0", "300", "0.1"))
			gs = append(gs, g)
		}
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for _, g := range gs {
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 60 {
						if err := g.Admit(get(t), "t"); err == nil {
							admitted.Add(1)
						} else if !errors.Is(err, ErrRateLimited) {
							t.Error(err)
							return
						}
					}
				}()
			}
		}
		wg.Wait()
		n := float64(admitted.Load())
		if n > 300 {
			t.Fatalf("admitted %v of a bucket of 300 (1440 tried)", n)
		}
		// 1440 tries fill the bucket (to less than a unit): what is not
		// admitted is still leased.
		leased := 0.0
		for _, g := range gs {
			leased += leaseOf(g, "t")
		}
		if lv := level(t, gs[0], "t"); !near(lv, n+leased) || lv <= 299 {
			t.Fatalf("store level %v, admitted %v, leased %v: want admitted + leased, over 299", lv, n, leased)
		}
		for _, g := range gs {
			if err := g.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if lv := level(t, gs[0], "t"); !near(lv, n) {
			t.Fatalf("store level %v after Release, want the %v admitted", lv, n)
		}
	})
}

// redisClientLike opens another client on r's server, closed at cleanup.
func redisClientLike(t *testing.T, r *Redis) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.client.(*redis.Client).Options().Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// bucketUpstream is an API that enforces a leaky bucket like R-Series:
// every answer reports the level and drip rate; a request that does not
// fit is answered 429 with Retry-After.
type bucketUpstream struct {
	size, drip float64
	mu         sync.Mutex
	lvl        float64
	t          time.Time
	served     atomic.Int64
	throttled  atomic.Int64
}

func (u *bucketUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	now := time.Now()
	if !u.t.IsZero() {
		u.lvl = max(0, u.lvl-u.drip*now.Sub(u.t).Seconds())
	}
	u.t = now
	cost := DefaultCosts.Of(r.Method)
	full := u.lvl+cost > u.size
	if !full {
		u.lvl += cost
	}
	lvl := u.lvl
	u.mu.Unlock()
	h := w.Header()
	h.Set(HeaderBucketLevel, strconv.FormatFloat(lvl, 'f', 3, 64)+"/"+strconv.FormatFloat(u.size, 'f', -1, 64))
	h.Set(HeaderDripRate, strconv.FormatFloat(u.drip, 'f', -1, 64))
	if full {
		u.throttled.Add(1)
		h.Set(HeaderRetryAfter, strconv.FormatFloat((lvl+cost-u.size)/u.drip, 'f', 3, 64))
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	u.served.Add(1)
	w.WriteHeader(http.StatusOK)
}

// TestLeaseThreeReplicasKeepTheBucket: three replicas with their own Redis
// clients hammer one tenant of an upstream that enforces its bucket; the
// upstream's 429s stay within 5% of what it is sent. The small bucket is
// R-Series' shape (leases of a few units, most requests held); the large
// one is mostly spent on leases before it fills.
func TestLeaseThreeReplicasKeepTheBucket(t *testing.T) {
	t.Run("small", func(t *testing.T) { hammer(t, 30, 150, 40) })
	t.Run("large", func(t *testing.T) { hammer(t, 400, 300, 60) })
}

func hammer(t *testing.T, size, drip float64, each int) {
	srv := testredis.Start(t)
	up := &bucketUpstream{size: size, drip: drip}
	ts := httptest.NewServer(up)
	defer ts.Close()
	client := ts.Client()

	const replicas, workers = 3, 4
	var steps [replicas]*countingBackend
	var ms [replicas]*Metrics
	for i := range ms {
		ms[i] = NewMetrics(prometheusRegistry(t))
	}
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range replicas {
		steps[i] = &countingBackend{Backend: NewRedis(srv.Client(), "p:")}
		g := &Governor{Backend: steps[i], Wait: 2 * time.Second, Metrics: ms[i]}
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					req, _ := http.NewRequest(http.MethodGet, ts.URL+"/API/Account/1/Item.json", nil)
					if err := g.Admit(req, "t"); err != nil {
						if !errors.Is(err, ErrRateLimited) {
							t.Error(err)
							return
						}
						refused.Add(1)
						continue
					}
					admitted.Add(1)
					sent := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					_ = resp.Body.Close()
					g.ObserveSent("t", sent, resp.StatusCode, resp.Header)
				}
			}()
		}
	}
	wg.Wait()
	total := int64(replicas * workers * each)
	if admitted.Load()+refused.Load() != total {
		t.Fatalf("admitted %d + refused %d != %d", admitted.Load(), refused.Load(), total)
	}
	sentUp := up.served.Load() + up.throttled.Load()
	if sentUp != admitted.Load() {
		t.Fatalf("upstream saw %d, admitted %d", sentUp, admitted.Load())
	}
	var n int64
	var cuts, grants, leased, delayed float64
	for i, s := range steps {
		n += s.n.Load()
		cuts += counterValue(t, ms[i].leaseCuts)
		grants += counterValue(t, ms[i].leaseGrants)
		leased += counterValue(t, ms[i].leaseAdmits)
		delayed += counterValue(t, ms[i].delayedTotal)
	}
	t.Logf("leases: %v granted, %v requests from a lease, %v cut; %v delayed", grants, leased, cuts, delayed)
	t.Logf("upstream: %d served, %d throttled (%.2f%%); lsproxy refused %d; store steps %d (%.2f per request)",
		up.served.Load(), up.throttled.Load(), 100*float64(up.throttled.Load())/float64(sentUp), refused.Load(), n, float64(n)/float64(total))
	if up.throttled.Load()*20 > sentUp {
		t.Fatalf("upstream 429s: %d of %d (more than 5%%)", up.throttled.Load(), sentUp)
	}
}

// TestLeaseEndsWithTheWindow: an X-Series lease is not spent past the
// window it was granted in.
func TestLeaseEndsWithTheWindow(t *testing.T) {
	backends(t, func(t *testing.T, b Backend) {
		clk := &fixedClock{t: t0}
		cb := &countingBackend{Backend: b}
		g := &Governor{Backend: cb, Now: clk.now}
		h := http.Header{}
		h.Set(HeaderLimit, "400")
		h.Set(HeaderRemaining, "400")
		h.Set(HeaderReset, "0.5") // seconds from now
		g.Observe("t", 200, h)
		for range 20 {
			if err := g.Admit(get(t), "t"); err != nil {
				t.Fatal(err)
			}
		}
		if leaseOf(g, "t") <= 0 {
			t.Fatal("no lease in the window")
		}
		clk.add(600 * time.Millisecond) // the window ended, the lease with it
		before := cb.n.Load()
		if err := g.Admit(get(t), "t"); err != nil {
			t.Fatal(err)
		}
		if cb.n.Load() != before+1 {
			t.Fatalf("a request after the window's end was admitted from its lease (%d store steps)", cb.n.Load()-before)
		}
	})
}

// TestReleaseReportsAStoreFailure: a lease that cannot be given back is an
// ErrStore error (its units drain with the bucket all the same).
func TestReleaseReportsAStoreFailure(t *testing.T) {
	srv := testredis.Start(t)
	clk := &fixedClock{t: t0}
	g := &Governor{Backend: NewRedis(srv.Client(), "p:"), Now: clk.now}
	g.Observe("t", 200, bucketHeader("0", "800", "1"))
	for range 20 {
		if err := g.Admit(get(t), "t"); err != nil {
			t.Fatal(err)
		}
	}
	if leaseOf(g, "t") <= 0 {
		t.Fatal("no lease")
	}
	srv.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Release(ctx); !errors.Is(err, ErrStore) {
		t.Fatalf("Release with the store down: %v, want ErrStore", err)
	}
	if err := g.Release(ctx); err != nil {
		t.Fatalf("second Release: %v, want nothing left to give back", err)
	}
}
