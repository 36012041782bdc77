package onboard

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/store"
)

// Defaults of the Verifier's timing; package config's defaults are these.
const (
	DefaultIdentifyRetry    = 5 * time.Second  // first retry after a failed identification
	DefaultIdentifyRetryMax = 10 * time.Minute // longest wait between retries
	DefaultIdentifySweep    = 10 * time.Minute // how often every record is scanned
)

// Verifier finishes identifications that could not be completed at the
// callback (SPEC §8, amended): for a tenant whose grant is served while
// its account is unknown it learns the account; for a tenant with a
// candidate grant it promotes the candidate when it belongs to the
// tenant's account and drops it (OnDropped) when it does not. Attempts
// back off exponentially from Retry to RetryMax.
//
// Every replica may run one: attempts are scheduled in process (Kick,
// after the callback's write) and by a periodic sweep of every record
// (after a restart, or for a write another replica made); writes are
// compare-and-set on the record read, so two replicas verifying the same
// tenant write once. A write never replaces tokens while a refresh is in
// flight (SPEC §3 rule 19): the attempt is retried shortly.
//
// Set the fields, then call Run once; Kick and Attempt are safe for
// concurrent use.
type Verifier struct {
	Store      store.Store
	Identifier *auth.Identifier
	// Token returns a valid access token of the served grant (the
	// Manager's Token), for a tenant without a candidate.
	Token func(ctx context.Context, tenant string) (auth.Token, error)
	// Locations is the location index; nil = Store's when it has one.
	Locations store.LocationIndex
	// Retry, RetryMax: the backoff; 0 = the defaults.
	Retry, RetryMax time.Duration
	// Sweep is how often every record is scanned for pending
	// identifications; 0 = DefaultIdentifySweep, < 0 = only at start.
	Sweep time.Duration
	// Invalidate drops the handling replica's cached token after a write
	// that changed the served grant; nil = nothing.
	Invalidate func(tenant string)
	// OnPromoted is called after a candidate grant became the served one;
	// OnDropped after a candidate was discarded because it belongs to
	// account, not the tenant's. They must not block; nil = nothing.
	OnPromoted func(tenant string)
	OnDropped  func(tenant string, account store.Account)
	// Logger; nil = none. Now: the clock; nil = time.Now.
	Logger *zap.Logger
	Now    func() time.Time

	once sync.Once
	log  *zap.Logger
	kick chan string
}

func (v *Verifier) init() {
	v.once.Do(func() {
		v.log = v.Logger
		if v.log == nil {
			v.log = zap.NewNop()
		}
		v.kick = make(chan string, 256)
	})
}

func (v *Verifier) now() time.Time {
	if v != nil && v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// delay is the wait before attempt n (1 = the first retry). A nil
// Verifier uses the defaults.
func (v *Verifier) delay(n int) time.Duration {
	lo, hi := DefaultIdentifyRetry, DefaultIdentifyRetryMax
	if v != nil && v.Retry > 0 {
		lo = v.Retry
	}
	if v != nil && v.RetryMax > 0 {
		hi = v.RetryMax
	}
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// Kick schedules tenant's next attempt at the time its record says. It
// never blocks (a full queue is caught up by the sweep).
func (v *Verifier) Kick(tenant string) {
	v.init()
	select {
	case v.kick <- tenant:
	default:
	}
}

// Run schedules and makes attempts until ctx ends.
func (v *Verifier) Run(ctx context.Context) {
	v.init()
	if v.Identifier == nil || !v.Identifier.Identity.Known() {
		<-ctx.Done()
		return
	}
	due := map[string]time.Time{}
	sweep := v.Sweep
	if sweep == 0 {
		sweep = DefaultIdentifySweep
	}
	nextSweep := v.now() // at start
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := v.now()
		if !nextSweep.IsZero() && !now.Before(nextSweep) {
			v.sweep(ctx, due)
			nextSweep = time.Time{}
			if sweep > 0 {
				nextSweep = v.now().Add(sweep)
			}
		}
		for id, at := range due {
			if ctx.Err() != nil {
				return
			}
			if !v.now().Before(at) {
				delete(due, id)
				if next, ok := v.Attempt(ctx, id); ok {
					due[id] = next
				}
			}
		}
		wake := nextSweep
		for _, at := range due {
			if wake.IsZero() || at.Before(wake) {
				wake = at
			}
		}
		wait := time.Hour
		if !wake.IsZero() {
			wait = max(wake.Sub(v.now()), 10*time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case id := <-v.kick:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			if rec, err := v.Store.Get(ctx, id); err == nil && rec.Identify != nil {
				due[id] = rec.Identify.NextAt
			}
		case <-timer.C:
		}
	}
}

// sweep schedules every tenant whose record has a pending identification.
func (v *Verifier) sweep(ctx context.Context, due map[string]time.Time) {
	list := v.Store.List // every record (the embedded store: one process, small)
	if il, ok := v.Store.(store.IdentifyLister); ok {
		list = il.ListIdentifyPending // Redis: from the index
	}
	ids, err := list(ctx)
	if err != nil {
		v.log.Warn("identification sweep: tenants not listed", zap.Error(err))
		return
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		rec, err := v.Store.Get(ctx, id)
		if err == nil && rec.Identify != nil {
			due[id] = rec.Identify.NextAt
		}
	}
}

// errBusy: a refresh is in flight; the attempt is retried shortly.
var errBusy = errors.New("onboard: a refresh of the tenant is in flight")

// Attempt makes one identification attempt for tenant now (whatever its
// record's next_at) and reports when the next is due (ok = false: none
// is, the identification is finished or the tenant gone).
func (v *Verifier) Attempt(ctx context.Context, tenant string) (next time.Time, ok bool) {
	v.init()
	log := v.log.With(zap.String("tenant", tenant))
	rec, err := v.Store.Get(ctx, tenant)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			log.Warn("identification: tenant not readable; retried", zap.Error(err))
			return v.now().Add(v.delay(1)), true
		}
		return time.Time{}, false
	}
	if rec.Identify == nil {
		return time.Time{}, false
	}
	cand := rec.Candidate
	var token string
	extra := rec.Extra
	switch {
	case cand != nil && !v.now().Before(cand.AccessExpiresAt):
		err = errors.New("the candidate grant's access token expired before the account could be verified: accept it (accept-candidate) or send a new link")
	case cand != nil:
		token = cand.AccessToken
		extra = mergeExtra(rec.Extra, cand.Extra)
	default:
		var tok auth.Token
		if tok, err = v.Token(ctx, tenant); err == nil {
			token = tok.AccessToken
		}
	}
	var ident *auth.Identified
	if err == nil {
		ident, err = v.Identifier.Identify(ctx, token, extra)
		forbiddenHint(log, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	var outcome string
	var dropped store.Account
	written, werr := store.Update(ctx, v.Store, tenant, func(t *store.Tenant) error {
		now := v.now()
		if t.Identify == nil || !sameCandidate(t.Candidate, cand) {
			return store.ErrSkip // finished meanwhile (another replica, an operator, a new authorization)
		}
		switch {
		case err != nil:
			t.IdentifyFailed(identifyError(err), now.Add(v.delay(t.Identify.Attempts+1)), now)
			outcome = "failed"
		case ident == nil:
			t.Identify = nil
			outcome = "nothing to identify"
		case cand == nil:
			t.Identified(ident.Account, ident.Locations, now)
			outcome = "identified"
		case t.RefreshInFlight:
			return errBusy
		case t.Account == nil || t.Account.ID == ident.Account.ID:
			_ = t.PromoteCandidate(&ident.Account, ident.Locations, "identified as the tenant's account", now)
			outcome = "promoted"
		default:
			dropped = ident.Account
			t.DropCandidate("the new grant belongs to another merchant account", now)
			outcome = "dropped"
		}
		return nil
	})
	switch {
	case errors.Is(werr, store.ErrSkip), errors.Is(werr, store.ErrNotFound):
		return time.Time{}, false
	case errors.Is(werr, errBusy):
		return v.now().Add(time.Second), true
	case werr != nil:
		log.Warn("identification: result not stored; retried", zap.Error(werr))
		return v.now().Add(v.delay(1)), true
	}
	switch outcome {
	case "failed":
		log.Info("identification failed; retried", zap.Error(err), zap.Time("next_at", written.Identify.NextAt), zap.Int("attempts", written.Identify.Attempts))
		return written.Identify.NextAt, true
	case "identified":
		log.Info("merchant account identified", zap.String("account", written.Account.ID))
	case "promoted":
		log.Info("candidate grant verified and promoted", zap.String("account", written.Account.ID))
		if v.Invalidate != nil {
			v.Invalidate(tenant)
		}
		if v.OnPromoted != nil {
			v.OnPromoted(tenant)
		}
	case "dropped":
		log.Warn("candidate grant dropped: it belongs to another merchant account; the served grant stays",
			zap.String("expected", rec.Account.ID), zap.String("signed_in", dropped.ID))
		if v.OnDropped != nil {
			v.OnDropped(tenant, dropped)
		}
		return time.Time{}, false
	}
	indexLocations(ctx, log, v.Locations, v.Store, rec, written)
	return time.Time{}, false
}

// sameCandidate: a and b are the same candidate grant (or both none).
func sameCandidate(a, b *store.Candidate) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.AccessToken == b.AccessToken && a.ReceivedAt.Equal(b.ReceivedAt)
}

// AcceptCandidate promotes tenant's candidate grant by hand (an operator
// vouches for the account): it is served from now on, the account stays
// what it was. Errors: store.ErrNoCandidate, store.ErrNotFound,
// store.ErrConflict (a refresh is in flight, or the record kept
// changing), the store's.
func AcceptCandidate(ctx context.Context, s store.Store, tenant string, now time.Time) (*store.Tenant, error) {
	return store.Update(ctx, s, tenant, func(t *store.Tenant) error {
		if t.Candidate != nil && t.RefreshInFlight {
			return store.ErrConflict
		}
		return t.PromoteCandidate(nil, nil, "accepted by an operator", now)
	})
}
