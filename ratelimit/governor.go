// Package ratelimit paces each tenant's requests to the budget its upstream
// reports, across every replica.
//
// The governor learns a tenant's budget from the upstream's answers (R-Series
// leaky bucket, X-Series window, any 429 with Retry-After; see Parse) and
// keeps it in a Backend that every replica shares. Before a request is
// forwarded it books the request's cost: a request that fits goes at once;
// one that does not waits, in arrival order per tenant, up to Wait, and is
// then refused with a RefusedError. A tenant whose upstream never reported a
// budget costs nothing: no store command, only a map lookup. A governed
// tenant's requests are booked in batches (a lease, lease.go): one store
// step books units for many requests, which this process then spends
// without a store command.
//
// Files: governor.go (Governor, booking and waiting), lease.go (batches of
// units booked at once), headers.go (Parse: budgets from upstream headers),
// backend.go (the Backend contract), memory.go and redis.go (the in-process
// and the shared Backend), transport.go (token-endpoint pacing), metrics.go
// (Prometheus metrics).
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ErrRateLimited is what a RefusedError matches with errors.Is.
var ErrRateLimited = errors.New("ratelimit: tenant budget exhausted")

// RefusedError: the request would not fit the tenant's budget within the
// allowed wait. RetryAfter is when it likely would (at least one second).
type RefusedError struct {
	Tenant     string
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string { return ErrRateLimited.Error() }

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRateLimited }

// RetryAfterSeconds is RetryAfter rounded up to whole seconds, at least 1.
func (e *RefusedError) RetryAfterSeconds() int {
	return max(1, int(math.Ceil(e.RetryAfter.Seconds())))
}

// Costs maps an HTTP method to the units a request spends; "*" is the
// default for methods not listed. A nil or empty Costs means DefaultCosts.
type Costs map[string]float64

// DefaultCosts is R-Series' documented pricing: reads 1, writes 10.
var DefaultCosts = Costs{"GET": 1, "HEAD": 1, "OPTIONS": 1, "*": 10}

// Of returns the cost of method.
func (c Costs) Of(method string) float64 {
	if len(c) == 0 {
		c = DefaultCosts
	}
	if v, ok := c[method]; ok {
		return v
	}
	if v, ok := c["*"]; ok {
		return v
	}
	return 1
}

// Governor paces requests per tenant. Set the fields before first use and
// do not change them afterwards; all methods are safe for concurrent use.
// At shutdown, once nothing is admitted any more, Release gives the unsent
// units of this process's leases back to the shared budget.
type Governor struct {
	// Backend holds the shared budgets. Required.
	Backend Backend
	// Wait is the longest a request waits for budget; 0 means never wait
	// (refuse at once).
	Wait time.Duration
	// Costs prices requests by method; nil means DefaultCosts.
	Costs Costs
	// KeyShare, between 0 and 1 exclusive, holds each caller key to that
	// fraction of a tenant's budget; 0 means no per-key limit.
	KeyShare float64
	// CallerKey names the caller of r (a client key id, never the key);
	// nil means callers are not told apart.
	CallerKey func(r *http.Request) string
	// MaxWaiting bounds the requests waiting per tenant in this process;
	// beyond it requests are refused at once. 0 means 1024.
	MaxWaiting int
	// Metrics; nil records nothing.
	Metrics *Metrics
	// OnError is told about store failures (the request is then sent
	// unpaced); nil ignores them.
	OnError func(tenant string, err error)
	// MaxBlock caps every block learned from one answer (Retry-After,
	// window reset, slow drip rate); 0 means DefaultMaxBlock.
	MaxBlock time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	tenants sync.Map // tenant → *tenantState, only for tenants that reported a budget
}

// tenantState is this process's view of one governed tenant.
type tenantState struct {
	mu      sync.Mutex
	pending *Observation // newest observation not yet merged into the store
	lastObs time.Time    // when the upstream last reported a budget
	since   time.Time    // when this process started governing the tenant
	queue   []*waiter    // FIFO; queue[0] is the one checking the budget
	hint    time.Duration
	leases  map[string]*lease // by caller key ("" without a key share); lease.go
	refill  chan struct{}     // not nil while a lease step runs; closed when it ends
}

type waiter struct{ turn chan struct{} }

func (g *Governor) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Admit decides whether r, for tenant, may be sent now, waiting up to Wait.
// It returns nil to send, a *RefusedError (errors.Is ErrRateLimited) to
// refuse, or the request context's error if the caller went away.
func (g *Governor) Admit(r *http.Request, tenant string) error {
	key := ""
	if g.KeyShare > 0 && g.CallerKey != nil {
		key = g.CallerKey(r)
	}
	return g.AdmitWait(r.Context(), tenant, g.Costs.Of(r.Method), key, g.Wait)
}

// AdmitWait is Admit with explicit cost, caller key and longest wait.
func (g *Governor) AdmitWait(ctx context.Context, tenant string, cost float64, key string, wait time.Duration) error {
	v, ok := g.tenants.Load(tenant)
	if !ok {
		return nil // no budget ever reported: nothing to pace, no store command
	}
	ts := v.(*tenantState)
	start := g.now()
	ts.mu.Lock()
	queued := len(ts.queue) > 0
	if !queued && ts.spend(key, cost, start) {
		ts.mu.Unlock()
		g.Metrics.leaseAdmitted()
		return nil // the common case of a busy tenant: no store command
	}
	ts.mu.Unlock()
	if !queued {
		d, leased, err := g.acquire(ctx, tenant, ts, cost, key, start)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && !leased && d.Allowed && !d.Budget.Known() {
			g.forget(tenant, ts, start) // the budget expired: back to zero store commands
		}
		if err != nil || d.Allowed {
			return nil
		}
		if wait <= 0 || d.RetryIn > wait {
			return g.refuse(tenant, d.RetryIn)
		}
	} else if wait <= 0 {
		return g.refuse(tenant, ts.lastHint())
	}

	deadline := start.Add(wait)
	w := &waiter{turn: make(chan struct{})}
	ts.mu.Lock()
	limit := g.MaxWaiting
	if limit <= 0 {
		limit = 1024
	}
	if len(ts.queue) >= limit {
		ts.mu.Unlock()
		return g.refuse(tenant, ts.lastHint())
	}
	ts.queue = append(ts.queue, w)
	if len(ts.queue) == 1 {
		close(w.turn)
	}
	ts.mu.Unlock()
	defer ts.leave(w)
	g.Metrics.delayed()
	defer func() { g.Metrics.waited(g.now().Sub(start)) }()

	timer := time.NewTimer(max(deadline.Sub(g.now()), 0))
	defer timer.Stop()
	select {
	case <-w.turn:
	case <-timer.C:
		return g.refuse(tenant, ts.lastHint())
	case <-ctx.Done():
		return ctx.Err()
	}
	// This request is the head: check, sleep until the store says it fits,
	// check again, atomically each time (a block may have arrived meanwhile).
	for range 1000 {
		now := g.now()
		d, _, err := g.acquire(ctx, tenant, ts, cost, key, now)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil || d.Allowed {
			return nil
		}
		left := deadline.Sub(now)
		if d.RetryIn > left {
			return g.refuse(tenant, d.RetryIn)
		}
		timer.Reset(max(d.RetryIn, time.Millisecond))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.refuse(tenant, ts.lastHint())
}

// step runs one Backend step for req with this process's pending
// observation. On a store failure it reports, and the caller sends the
// request unpaced.
func (g *Governor) step(ctx context.Context, tenant string, ts *tenantState, req Request) (Decision, error) {
	ts.mu.Lock()
	req.Observe = ts.pending
	ts.pending = nil
	ts.mu.Unlock()
	g.Metrics.storeStep()
	d, err := g.Backend.Take(ctx, tenant, req)
	if err != nil {
		g.Metrics.storeError()
		if g.OnError != nil {
			g.OnError(tenant, err)
		}
		return d, err
	}
	if !d.Allowed {
		ts.mu.Lock()
		ts.hint = d.RetryIn
		ts.mu.Unlock()
	}
	return d, nil
}

// forget drops tenant's local state when the store no longer knows its
// budget (idle past idleTTL), nothing waits and nothing is pending: it is
// ungoverned again until the upstream next reports a limit.
func (g *Governor) forget(tenant string, ts *tenantState, now time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.queue) == 0 && ts.pending == nil && now.Sub(ts.lastObs) > idleTTL {
		g.tenants.CompareAndDelete(tenant, ts)
	}
}

func (g *Governor) refuse(tenant string, retryIn time.Duration) error {
	g.Metrics.refused()
	return &RefusedError{Tenant: tenant, RetryAfter: retryIn}
}

func (ts *tenantState) lastHint() time.Duration {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.hint
}

// leave removes w from the queue and, if w was the head, hands the turn on.
func (ts *tenantState) leave(w *waiter) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for i, q := range ts.queue {
		if q == w {
			ts.queue = append(ts.queue[:i], ts.queue[i+1:]...)
			if i == 0 && len(ts.queue) > 0 {
				close(ts.queue[0].turn)
			}
			return
		}
	}
}

// Observe learns from an upstream answer for tenant. An answer without
// budget headers costs a few map lookups. A 429 is written to the store at
// once, so every replica holds the tenant; other observations ride along
// with this process's next request for the tenant (one round trip in all).
func (g *Governor) Observe(tenant string, status int, h http.Header) {
	g.ObserveSent(tenant, time.Time{}, status, h)
}

// ObserveSent is Observe for an answer to a request sent at sent (zero:
// unknown). Knowing it lets the store account for requests booked while
// one sent before the budget was known was on its way.
func (g *Governor) ObserveSent(tenant string, sent time.Time, status int, h http.Header) {
	if status == http.StatusTooManyRequests {
		g.Metrics.upstream429()
	}
	if obs, ok := ParseCapped(status, h, g.now(), g.MaxBlock); ok {
		obs.SentAt = sent
		g.learn(tenant, obs)
	}
}

// learn records obs for tenant (a separate function so that Observe's
// common no-budget path does not allocate).
func (g *Governor) learn(tenant string, obs Observation) {
	v, ok := g.tenants.Load(tenant)
	obs.Unpaced = !obs.SentAt.IsZero() && (!ok || obs.SentAt.Before(v.(*tenantState).since))
	if !ok {
		// The first budget this process learns for tenant is written
		// before the tenant counts as governed here: no request of this
		// process may book against a store that does not know the budget
		// (it would be sent unbooked), and other replicas learn at once
		// of the requests this one sent unpaced. Once per tenant and
		// process.
		g.write(tenant, obs)
		g.tenants.LoadOrStore(tenant, &tenantState{lastObs: obs.At, since: g.now()})
		return
	}
	ts := v.(*tenantState)
	ts.mu.Lock()
	cut := ts.correct(&obs)
	if p := ts.pending; p != nil {
		obs = merge(*p, obs)
	}
	ts.pending = &obs
	ts.lastObs = obs.At
	ts.mu.Unlock()
	if cut {
		g.Metrics.leaseCut()
	}
	if !obs.BlockUntil.IsZero() || cut {
		// A 429 holds every replica at once; a bucket fuller than a
		// lease assumed is told to every replica at once too.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = g.step(ctx, tenant, ts, Request{Now: obs.At})
	}
}

// write merges obs into the store at once.
func (g *Governor) write(tenant string, obs Observation) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	g.Metrics.storeStep()
	if _, err := g.Backend.Take(ctx, tenant, Request{Now: obs.At, Observe: &obs}); err != nil {
		g.Metrics.storeError()
		if g.OnError != nil {
			g.OnError(tenant, err)
		}
	}
}

// merge combines two observations not yet sent to the store: the larger
// bucket level (aged to the newer one's time), the fuller window, the later
// block. Answers arrive out of order; the store keeps the larger anyway.
func merge(old, cur Observation) Observation {
	if old.BucketSize > 0 {
		aged := old.BucketUsed - old.DripRate*cur.At.Sub(old.At).Seconds()
		if cur.BucketSize <= 0 {
			cur.BucketSize, cur.DripRate, cur.BucketUsed = old.BucketSize, old.DripRate, max(aged, 0)
		} else if aged > cur.BucketUsed {
			cur.BucketUsed = aged
		}
	}
	if old.WindowLimit > 0 {
		if cur.WindowLimit <= 0 {
			cur.WindowLimit, cur.WindowRemaining, cur.WindowReset = old.WindowLimit, old.WindowRemaining, old.WindowReset
		} else if old.WindowReset.Equal(cur.WindowReset) && old.WindowRemaining < cur.WindowRemaining {
			cur.WindowRemaining = old.WindowRemaining
		}
	}
	if old.BlockUntil.After(cur.BlockUntil) {
		cur.BlockUntil = old.BlockUntil
	}
	if old.Unpaced && (!cur.Unpaced || old.SentAt.Before(cur.SentAt)) {
		cur.Unpaced, cur.SentAt = true, old.SentAt
	}
	return cur
}

// Forget clears tenant's learned budget in the shared store and in this
// process (DELETE /admin/tenants/{id}/rate-limit): its requests go
// unpaced until the upstream reports a budget again. Other replicas drop
// their local state at their next store step for the tenant (within a
// lease's life, leaseTTL). Errors wrap ErrStore.
func (g *Governor) Forget(ctx context.Context, tenant string) error {
	if v, ok := g.tenants.Load(tenant); ok {
		ts := v.(*tenantState)
		ts.mu.Lock()
		ts.pending = nil
		ts.hint = 0
		ts.dropLeases()
		ts.mu.Unlock()
	}
	if err := g.Backend.Clear(ctx, tenant); err != nil {
		return err
	}
	return nil
}

// Governed reports whether tenant has reported a budget to this process.
func (g *Governor) Governed(tenant string) bool {
	_, ok := g.tenants.Load(tenant)
	return ok
}

// Budget returns tenant's last known budget from the shared store; ok is
// false when nothing is known. Errors wrap ErrStore.
func (g *Governor) Budget(ctx context.Context, tenant string) (b Budget, ok bool, err error) {
	d, err := g.Backend.Take(ctx, tenant, Request{Now: g.now()})
	if err != nil {
		return Budget{}, false, err
	}
	return d.Budget, d.Budget.Known(), nil
}

// stateCount is for tests: how many tenants this process governs.
func (g *Governor) stateCount() int {
	n := 0
	g.tenants.Range(func(any, any) bool { n++; return true })
	return n
}

// ParseCosts reads "GET=1,HEAD=1,*=10" (methods upper-case, "*" for the
// rest; costs ≥ 0). An empty string gives nil (the preset's costs).
func ParseCosts(s string) (Costs, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	c := Costs{}
	for _, part := range strings.Split(s, ",") {
		m, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		m = strings.TrimSpace(m)
		n, err := parseNumber(v)
		if !ok || m == "" || err != nil || n < 0 || (m != "*" && strings.ToUpper(m) != m) {
			return nil, fmt.Errorf("ratelimit: cost %q: want METHOD=units (e.g. GET=1,*=10)", part)
		}
		c[m] = n
	}
	return c, nil
}
