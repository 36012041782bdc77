package auth

import "time"

// Defaults of the token manager. The configuration (config.Default) uses
// these same constants, so each default is stated once.
const (
	DefaultRefreshBefore = 30 * time.Second
	// DefaultLockTTL with renewal every third of it: a dead holder's lease
	// runs out within 6 s.
	DefaultLockTTL = 6 * time.Second
	// DefaultTakeoverGrace exceeds the holder's write-retry interval
	// (writeRetryMax + storeCallTimeout = 2 s) with margin; with
	// DefaultLockTTL a tenant whose holder was SIGKILLed is taken over
	// within about 10.5 s (SPEC §3 rule 11 asks for 15 s).
	DefaultTakeoverGrace   = 4 * time.Second
	DefaultTokenTimeout    = 10 * time.Second
	DefaultCacheTTL        = 60 * time.Second
	DefaultBreakerFailures = 5
	DefaultBreakerOpenFor  = 5 * time.Second
	// DefaultGuardThreshold distinct tenants rejected with invalid_grant
	// within DefaultGuardWindow point at lsproxy's configuration.
	DefaultGuardThreshold = 3
	DefaultGuardWindow    = 5 * time.Minute
	// DefaultRefreshWriteBudget is the time ShutdownBudget allows for
	// storing a grant after its token request.
	DefaultRefreshWriteBudget = 10 * time.Second
)

// ShutdownBudget is how long a process should give refreshes that already
// started to finish and store their result at shutdown, after (not shared
// with) the HTTP drain: a full token request plus the write (SPEC §3 rule
// 16).
func ShutdownBudget(tokenTimeout time.Duration) time.Duration {
	if tokenTimeout <= 0 {
		tokenTimeout = DefaultTokenTimeout
	}
	return tokenTimeout + DefaultRefreshWriteBudget
}

func (o *ManagerOptions) withDefaults() {
	if o.RefreshBefore <= 0 {
		o.RefreshBefore = DefaultRefreshBefore
	}
	if o.LockTTL <= 0 {
		o.LockTTL = DefaultLockTTL
	}
	if o.TakeoverGrace <= 0 {
		o.TakeoverGrace = DefaultTakeoverGrace
	}
	if o.TokenTimeout <= 0 {
		o.TokenTimeout = DefaultTokenTimeout
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.WaitFor <= 0 {
		o.WaitFor = o.LockTTL + o.TakeoverGrace + 5*time.Second
	}
	if o.BreakerFailures == 0 {
		o.BreakerFailures = DefaultBreakerFailures
	}
	if o.BreakerOpenFor <= 0 {
		o.BreakerOpenFor = DefaultBreakerOpenFor
	}
	if o.GuardThreshold == 0 {
		o.GuardThreshold = DefaultGuardThreshold
	}
	if o.GuardWindow <= 0 {
		o.GuardWindow = DefaultGuardWindow
	}
}
