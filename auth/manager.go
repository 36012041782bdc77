package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/store"
)

// Token is a tenant's current access token.
type Token struct {
	AccessToken string
	Expiry      time.Time
	Version     int64 // record version it was read from
	// DomainPrefix is the tenant's stored, validated x-series domain_prefix
	// ("" when it has none): it names the tenant's own upstream host.
	DomainPrefix string

	// authorization is "Bearer " + AccessToken when the cache built it,
	// with AccessToken a substring of it; "" otherwise.
	authorization string
}

const bearerPrefix = "Bearer "

// Authorization returns the Authorization header value that carries t:
// "Bearer " and the access token. A cached token's is built once, not per
// request.
func (t Token) Authorization() string {
	// The comparison is O(1) when AccessToken is authorization's own tail
	// (same memory); a token changed since costs a compare and gets its own.
	if len(t.authorization) == len(bearerPrefix)+len(t.AccessToken) && t.authorization[len(bearerPrefix):] == t.AccessToken {
		return t.authorization
	}
	return bearerPrefix + t.AccessToken
}

// withAuthorization returns t with its Authorization value built, sharing
// the token's memory.
func (t Token) withAuthorization() Token {
	if t.AccessToken == "" {
		return t
	}
	t.authorization = bearerPrefix + t.AccessToken
	t.AccessToken = t.authorization[len(bearerPrefix):]
	return t
}

// ManagerOptions configure a Manager. Zero values take the defaults in
// defaults.go (the configuration's defaults are the same constants).
type ManagerOptions struct {
	// RefreshBefore: an access token closer than this to its expiry is
	// refreshed. Default DefaultRefreshBefore.
	RefreshBefore time.Duration
	// LockTTL is the lease of a refresh holder on the tenant lock, renewed
	// every LockTTL/3 while it works (waits, token request, write), and
	// right before a send to at least LockTTLFor(TokenTimeout), so that the
	// lock covers the whole token request plus the write retry (rule 17).
	// A holder that dies is replaced about LockTTL + TakeoverGrace later.
	// Default LockTTLFor(TokenTimeout).
	LockTTL time.Duration
	// TakeoverGrace is how long a successor must see the store answer with
	// an earlier holder's mark unchanged before it takes over (SPEC §3 rule
	// 11), on its own monotonic clock. It must exceed the holder's
	// write-retry interval (writeAttemptTimeout + writeRetryMax); it is
	// stored in each mark, so successors use the holder's value. Default
	// DefaultTakeoverGrace.
	TakeoverGrace time.Duration
	// TokenTimeout is the budget of one token request, counted from its
	// start and never shortened by lock waiting (rule 13). Default
	// DefaultTokenTimeout; the Refresher applies its own bound as well.
	TokenTimeout time.Duration
	// CacheTTL bounds how long a cached token is used without re-reading the
	// store, in case change notifications were lost. Default DefaultCacheTTL.
	CacheTTL time.Duration
	// CacheMaxBytes bounds the token cache's estimated size (cache.go):
	// past it, entries not hit lately are evicted (CLOCK). 0 means
	// DefaultCacheMaxBytes; negative means unbounded.
	CacheMaxBytes int64
	// WaitFor bounds how long an acquisition waits for another holder
	// (lock, takeover grace) and for the token endpoint's rate budget
	// before it answers token_unavailable. It does not bound the token
	// request or the write. Default LockTTL + TakeoverGrace + 5s.
	WaitFor time.Duration
	// BreakerFailures consecutive transient failures open the breaker.
	// Default DefaultBreakerFailures.
	BreakerFailures uint32
	// BreakerOpenFor is how long the open breaker rejects. Default
	// DefaultBreakerOpenFor.
	BreakerOpenFor time.Duration
	// GuardThreshold invalid_grant answers for distinct tenants within
	// GuardWindow trip the mass-invalid_grant guard (rule 15): no tenant is
	// flagged while it is tripped. Default DefaultGuardThreshold; negative
	// turns the guard off.
	GuardThreshold int
	// GuardWindow: see GuardThreshold. Default DefaultGuardWindow.
	GuardWindow time.Duration
	// GuardState keeps the guard's state for the fleet (rule 20). nil:
	// the store's own when it keeps one (store.GuardState: Redis, bolt),
	// else one in this process's memory.
	GuardState store.GuardState
	// GuardScope names the configuration a trip blames (see GuardScope).
	// "": GuardScope of the Refresher's client id and token URL when it
	// is an *OAuthClient, else "".
	GuardScope string
	// Logger; nil = no logging.
	Logger *zap.Logger
	// Metrics; nil = not recorded.
	Metrics *Metrics
	// OnFlag is called (in its own goroutine) after a tenant is flagged;
	// nil = nothing.
	OnFlag func(tenant, reason string)
	// OnRecover is called (in its own goroutine) after a flagged tenant's
	// refresh token worked again (Retry); nil = nothing.
	OnRecover func(tenant string)
	// OnGuard is called (in its own goroutine) when the mass-invalid_grant
	// guard trips (tripped true, tenants: how many were rejected within the
	// window) or clears; nil = nothing.
	OnGuard func(tripped bool, tenants int)
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

// Manager hands out access tokens, refreshing them so that a single-use
// refresh token is sent at most once: singleflight per tenant in a process,
// the store lock across processes, a re-check under the lock, and a write
// fenced by the record version. All methods are safe for concurrent use.
type Manager struct {
	store     store.Store
	refresher Refresher
	opts      ManagerOptions
	breakers  *breakers
	group     singleflight.Group
	guard     *grantGuard
	log       *zap.Logger
	now       func() time.Time

	mu    sync.RWMutex
	cache map[string]*cacheEntry // see cache.go
	clock clock                  // the cache's bound (cache.go)
	// notifying is true while Run's change subscription is live; changes
	// counts every invalidation and every change of notifying. Together
	// they say whether an entry may be trusted past CacheTTL (cache.go).
	notifying atomic.Bool
	changes   atomic.Uint64
	// losses is the store's count of lost notifications (nil: the store
	// reports losses as gaps); lossCount its last value when lossKnown,
	// lossCheckedAt when it was read (unix ns, m.now), lossChecking one
	// read runs (cache.go, rule 21).
	losses        store.NotifyLosses
	lossCount     atomic.Uint64
	lossKnown     atomic.Bool
	lossCheckedAt atomic.Int64
	lossChecking  atomic.Bool
	// revalidated, when set (tests), is called after each background
	// re-read has updated the cache; nil = nothing.
	revalidated func(tenant string)
	// notifyingLive, when set (tests), is called each time Run's
	// subscription becomes live; nil = nothing.
	notifyingLive func()
	closing       bool      // set by FinishRefreshes: no acquisition starts any more
	closeBy       time.Time // FinishRefreshes' deadline (zero: none); under mu
	// pacer is the Refresher's rate-budget wait, when it has one (rule 18).
	pacer Pacer
	// endpointObs, when set (the background refresher's adaptive limit),
	// hears every token request's outcome and latency, and every refusal
	// by the breaker or the pacer.
	endpointObs atomic.Pointer[func(err error, took time.Duration)]

	// inflight counts running acquisitions, awaited by FinishRefreshes at
	// shutdown. Add happens only under mu while !closing, so it never races
	// with FinishRefreshes and no refresh starts after it decided it is done.
	inflight sync.WaitGroup
}

// NewManager returns a Manager. Call Run to follow other replicas' changes.
func NewManager(s store.Store, r Refresher, opts ManagerOptions) *Manager {
	opts.withDefaults()
	m := &Manager{
		store:     s,
		refresher: r,
		opts:      opts,
		log:       opts.Logger,
		now:       opts.Now,
		cache:     make(map[string]*cacheEntry),
		clock:     clock{max: opts.CacheMaxBytes},
		guard:     &grantGuard{threshold: opts.GuardThreshold, window: opts.GuardWindow, scope: opts.GuardScope, state: opts.GuardState},
	}
	if oc, ok := r.(*OAuthClient); ok && m.guard.scope == "" {
		m.guard.scope = GuardScope(oc.ClientID, oc.ClientSecret, oc.TokenURL)
	}
	m.losses, _ = s.(store.NotifyLosses)
	if m.guard.state == nil {
		if gs, ok := s.(store.GuardState); ok {
			m.guard.state = gs // the fleet's (rule 20)
		} else {
			m.guard.state = store.NewMemGuard() // this process's alone
		}
	}
	if defect.On(defect.GuardInProcess) {
		m.guard.state = store.NewMemGuard() // the old guard: per process, forgotten on restart
	}
	if m.log == nil {
		m.log = zap.NewNop()
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.pacer, _ = r.(Pacer)
	m.breakers = newBreakers(gobreaker.Settings{
		MaxRequests: 1,
		Timeout:     opts.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= opts.BreakerFailures },
		// A rejected grant is a healthy endpoint's answer about one tenant.
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, ErrInvalidGrant) },
		// A paced refusal sent nothing: no breaker failure (rule 18).
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) || errors.Is(err, ErrPaced) },
	}, m.log, opts.Metrics) // one per token host (breakers.go)
	return m
}

// FinishRefreshes blocks until running token acquisitions (refresh and
// write) finish or ctx ends; call it at shutdown after the servers stopped,
// with a budget of its own (ShutdownBudget). From the call on, a token that
// needs an acquisition is refused with *UnavailableError (cached tokens
// keep being served), so no refresh starts that the exiting process could
// abandon. An acquisition already running marks and sends only while
// ctx's deadline leaves a full token_timeout plus the write-retry interval
// (rule 16); otherwise it answers *UnavailableError without sending. It
// returns ctx's error if acquisitions were still running.
func (m *Manager) FinishRefreshes(ctx context.Context) error {
	m.mu.Lock()
	m.closing = true
	if dl, ok := ctx.Deadline(); ok {
		m.closeBy = dl
	}
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// observeEndpoint tells endpointObs about a token request (or its refusal).
func (m *Manager) observeEndpoint(err error, took time.Duration) {
	if f := m.endpointObs.Load(); f != nil {
		(*f)(err, took)
	}
}

// BreakerOpen reports whether some token host's breaker rejects requests.
func (m *Manager) BreakerOpen() bool { return m.breakers.anyOpen() }

// Token returns a valid access token for tenant.
//
// Errors: ErrUnknownTenant, *ReauthError (ErrReauthorizationRequired),
// *UnavailableError (ErrTokenUnavailable), or ctx's error.
func (m *Manager) Token(ctx context.Context, tenant string) (Token, error) {
	now := m.now()
	e, tok, hit, err := m.cached(tenant, now)
	if hit {
		m.opts.Metrics.cacheLookup(true)
		return tok, err
	}
	m.opts.Metrics.cacheLookup(false)
	tok, err = m.shared(ctx, "get:"+tenant, tenant, func(ctx context.Context) (Token, error) {
		return m.acquire(ctx, tenant, want{})
	})
	if err != nil && e != nil && e.reauth == nil && m.usable(e.tok.Expiry) && errors.Is(err, ErrTokenUnavailable) {
		// Store or endpoint trouble: a still-valid token keeps serving.
		return e.tok, nil
	}
	if err == nil {
		m.markUsed(tenant, now)
	}
	return tok, err
}

// Recover is called after the upstream rejected used with 401 (SPEC §3
// rule 8). If the stored token differs, it is returned; otherwise the
// tenant is refreshed once (shared by the concurrent 401s of this tenant).
// Errors as for Token.
func (m *Manager) Recover(ctx context.Context, tenant, used string) (Token, error) {
	m.Invalidate(tenant)
	return m.shared(ctx, "401:"+tenant, tenant, func(ctx context.Context) (Token, error) {
		return m.acquire(ctx, tenant, want{force: true, used: used, minAge: recoverMinAge})
	})
}

// recoverMinAge: a 401 on a token refreshed less than this ago does not
// force another refresh, so an endpoint that answers 401 for its own
// reasons cannot make lsproxy churn refresh tokens.
const recoverMinAge = 10 * time.Second

// ForceRefresh refreshes tenant now, whatever its token's expiry (POST
// /admin/tenants/{id}/refresh). It shares no work with other callers: it
// returns only after a refresh of the token it read, by this call or by
// another holder that replaced it meanwhile. Errors as for Token.
func (m *Manager) ForceRefresh(ctx context.Context, tenant string) (Token, error) {
	rec, err := m.store.Get(ctx, tenant)
	if err != nil {
		return Token{}, m.storeErr(tenant, err)
	}
	m.Invalidate(tenant)
	return m.shared(ctx, "", tenant, func(ctx context.Context) (Token, error) {
		return m.acquire(ctx, tenant, want{force: true, used: rec.AccessToken})
	})
}

// Retry sends a flagged tenant's stored refresh token once more (POST
// /admin/tenants/{id}/retry, SPEC §3 rule 15): after a configuration
// mistake was fixed, a tenant flagged by it recovers without
// re-authorization. A tenant that is not flagged is refreshed as by
// ForceRefresh. Errors as for Token; *ReauthError when the provider still
// rejects the token.
func (m *Manager) Retry(ctx context.Context, tenant string) (Token, error) {
	rec, err := m.store.Get(ctx, tenant)
	if err != nil {
		return Token{}, m.storeErr(tenant, err)
	}
	m.Invalidate(tenant)
	return m.shared(ctx, "", tenant, func(ctx context.Context) (Token, error) {
		return m.acquire(ctx, tenant, want{force: true, retry: true, used: rec.AccessToken})
	})
}

// expirySafety: a token this close to its expiry is not sent at all; the
// provider's clock may run ahead of ours and reject it in flight.
const expirySafety = 2 * time.Second

// usable reports whether a token that could not be refreshed may still be
// served.
func (m *Manager) usable(expiry time.Time) bool {
	return expiry.Sub(m.now()) > expirySafety
}

func (m *Manager) fresh(expiry, now time.Time) bool {
	return expiry.Sub(now) > m.opts.RefreshBefore
}
func (m *Manager) storeErr(tenant string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownTenant, tenant)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		return err
	}
	return &UnavailableError{Tenant: tenant, RetryAfter: time.Second, Err: fmt.Errorf("store: %w", err)}
}

// errShuttingDown: FinishRefreshes was called; no acquisition starts.
var errShuttingDown = errors.New("auth: shutting down")

// begin counts a new acquisition, or reports false once FinishRefreshes
// was called.
func (m *Manager) begin() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return false
	}
	m.inflight.Add(1)
	return true
}
