package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A lease is a batch of budget units this process booked in the shared
// store with one step and spends locally, one request at a time, without a
// store command (docs/design/25-governor-lease.md).
//
// Rules that keep the shared bucket's promise:
//   - The store books the whole batch at once, so every other replica sees
//     it as spent; it grants at most half the room left and an eighth of the
//     budget (lua/take.lua), so one replica never holds the rest hostage.
//   - A lease lives at most leaseTTL and never past the window it was
//     granted in; what is left then is given back (less what the bucket
//     drained meanwhile) with the next store step, or by Release.
//   - A dead replica's units need no giving back: booked units drain with
//     the bucket, or go with the window, like sent requests.
//   - An upstream answer that reports a fuller bucket (or fewer requests
//     left) than the lease assumed cuts the lease to what fits and is
//     written to the store at once; a 429 drops every lease of the tenant.
//     Answers written to the store count this process's unsent units as
//     used, so a report that wins the store's "larger level" merge keeps
//     them booked.
//
// Batch size adapts to the tenant's local rate: enough units for leaseTTL
// at the rate the previous lease was spent, growing at most leaseGrowth
// times per lease, at least the request's cost.
type lease struct {
	units float64   // unsent units left
	used  float64   // units spent from this lease, the first request's cost included
	want  float64   // what this lease asked for
	at    time.Time // when it was granted
	exp   time.Time // when it lapses
	wr    time.Time // the window it was granted in (zero: none)
	drip  float64   // the bucket's drip rate when granted (0: no bucket)
}

const (
	// leaseTTL is the longest a lease lives: it bounds what a replica can
	// still send after the bucket drained its batch while the upstream was
	// idle (drip × leaseTTL, at most the batch) and how long a lease runs on
	// after another replica's 429 (the holder's own next 429 drops it).
	leaseTTL = time.Second
	// leaseGrowth bounds how fast batches grow from one lease to the next.
	leaseGrowth = 4
)

// spend takes cost from key's lease when it holds enough and has not
// lapsed. ts.mu must be held.
func (ts *tenantState) spend(key string, cost float64, now time.Time) bool {
	l := ts.leases[key]
	if l == nil || l.units < cost || !now.Before(l.exp) {
		return false
	}
	l.units -= cost
	l.used += cost
	return true
}

// settle ends key's lease before a store step: it returns the units to ask
// for (want, at least cost) and the unsent units to give back, less what
// the bucket drained since the grant (those may already have come back by
// draining while the upstream was idle). ts.mu must be held.
func (ts *tenantState) settle(key string, cost float64, now time.Time) (want, ret float64, retWindow time.Time) {
	l := ts.leases[key]
	if l == nil {
		return cost, 0, time.Time{}
	}
	held := max(now.Sub(l.at), 0)
	want = min(l.used/max(held, time.Millisecond).Seconds()*leaseTTL.Seconds(), leaseGrowth*max(l.want, cost))
	want = max(want, cost)
	ret = max(l.units-l.drip*held.Seconds(), 0)
	retWindow = l.wr
	l.units = 0
	return want, ret, retWindow
}

// install keeps what a store step granted beyond cost as key's lease.
// ts.mu must be held.
func (ts *tenantState) install(key string, cost, want float64, d Decision, now time.Time) {
	extra := d.Granted - cost
	if ts.leases == nil {
		ts.leases = make(map[string]*lease)
	}
	l := ts.leases[key]
	if l == nil {
		l = &lease{}
		ts.leases[key] = l
	}
	exp := now.Add(leaseTTL)
	var wr time.Time
	if r := d.Budget.ResetAt; r != nil {
		wr = *r
		exp = minTime(exp, wr)
	}
	if extra <= 0 || d.Budget.BlockedUntil != nil {
		extra = 0
	}
	if l.units > 0 && now.Before(l.exp) {
		// A concurrent step granted a lease too: keep both, lapsing with
		// the earlier.
		l.units += extra
		l.exp = minTime(l.exp, exp)
	} else {
		l.units, l.exp = extra, exp
	}
	l.used, l.want, l.at, l.wr, l.drip = cost, want, now, wr, d.Budget.DripRate
}

// correct fits this process's leases for the tenant to an upstream answer
// and adds their unsent units to obs (they are booked, not yet sent, so
// the upstream could not count them). It reports whether a lease was cut.
// ts.mu must be held.
func (ts *tenantState) correct(obs *Observation) (cut bool) {
	mine := 0.0
	for _, l := range ts.leases {
		if !obs.At.Before(l.exp) {
			l.units = 0 // lapsed: forfeit, it drains with the bucket
		}
		mine += l.units
	}
	if mine <= 0 {
		return false
	}
	excess := 0.0
	if !obs.BlockUntil.IsZero() {
		excess = mine // a 429: nothing more is sent on a lease
	}
	if obs.BucketSize > 0 {
		excess = max(excess, obs.BucketUsed+mine-obs.BucketSize)
	}
	if obs.WindowLimit > 0 {
		excess = max(excess, mine-obs.WindowRemaining)
	}
	if excess > 0 {
		cut = true
		left := excess
		for _, l := range ts.leases {
			take := min(l.units, left)
			l.units -= take
			left -= take
		}
		mine = max(mine-excess, 0)
	}
	if obs.BucketSize > 0 {
		obs.BucketUsed += mine
	}
	if obs.WindowLimit > 0 {
		obs.WindowRemaining = max(obs.WindowRemaining-mine, 0)
	}
	return cut
}

// dropLeases forgets every lease of the tenant (nothing is given back).
// ts.mu must be held.
func (ts *tenantState) dropLeases() {
	for _, l := range ts.leases {
		l.units = 0
	}
}

// leaseUnits is for tests: the unsent units of key's lease.
func (ts *tenantState) leaseUnits(key string) float64 {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if l := ts.leases[key]; l != nil {
		return l.units
	}
	return 0
}

// acquire books cost for key: from the local lease when it holds enough,
// else with one store step that gives back what is left of the old lease
// and asks for a new one. One step per tenant at a time: a request that
// finds one under way waits for it and tries the lease again (a few times,
// then it runs its own). leased reports an admission from the lease (d
// then says nothing about the budget). err is a store failure (the request
// is sent unpaced) or ctx's error.
func (g *Governor) acquire(ctx context.Context, tenant string, ts *tenantState, cost float64, key string, now time.Time) (d Decision, leased bool, err error) {
	for attempt := 0; ; attempt++ {
		ts.mu.Lock()
		if ts.spend(key, cost, now) {
			ts.mu.Unlock()
			g.Metrics.leaseAdmitted()
			return Decision{Allowed: true}, true, nil
		}
		if ts.refill == nil || attempt >= 3 {
			break
		}
		ch := ts.refill
		ts.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Decision{}, false, ctx.Err()
		}
		now = g.now()
	}
	// ts.mu is held here.
	mine := ts.refill == nil
	if mine {
		ts.refill = make(chan struct{})
	}
	want, ret, retWindow := ts.settle(key, cost, now)
	ts.mu.Unlock()
	d, err = g.step(ctx, tenant, ts, Request{Now: now, Cost: cost, Key: key, Share: g.KeyShare, Want: want, Return: ret, ReturnWindow: retWindow})
	ts.mu.Lock()
	if mine {
		close(ts.refill)
		ts.refill = nil
	}
	if err == nil && d.Allowed && cost > 0 {
		ts.install(key, cost, want, d, now)
		if d.Granted > cost {
			g.Metrics.leaseGranted()
		}
	}
	ts.mu.Unlock()
	return d, false, err
}

// Release gives every unsent lease unit back to the store (at shutdown;
// a replica that dies without it loses nothing either: booked units drain
// with the bucket). Later requests lease again. Errors wrap ErrStore.
func (g *Governor) Release(ctx context.Context) error {
	var errs []error
	now := g.now()
	g.tenants.Range(func(k, v any) bool {
		tenant, ts := k.(string), v.(*tenantState)
		ts.mu.Lock()
		type back struct {
			key string
			ret float64
			wr  time.Time
		}
		var backs []back
		for key, l := range ts.leases {
			if l.units <= 0 {
				continue
			}
			_, ret, wr := ts.settle(key, 0, now)
			if ret > 0 {
				backs = append(backs, back{key, ret, wr})
			}
		}
		ts.mu.Unlock()
		for _, b := range backs {
			if _, err := g.step(ctx, tenant, ts, Request{Now: now, Key: b.key, Share: g.KeyShare, Return: b.ret, ReturnWindow: b.wr}); err != nil {
				errs = append(errs, err)
			}
		}
		return true
	})
	if len(errs) > 0 {
		return fmt.Errorf("ratelimit: giving back leases: %w", errors.Join(errs...))
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
