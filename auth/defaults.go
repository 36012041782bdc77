package auth

import (
	"fmt"
	"time"
)

// Defaults of the token manager. The configuration (config.Default) uses
// these same constants, so each default is stated once.
const (
	DefaultRefreshBefore = 30 * time.Second
	DefaultTokenTimeout  = 10 * time.Second
	// SendMargin is what a holder's lock must cover beyond the token
	// request itself when the refresh token leaves (SPEC §3 rule 17): the
	// write-retry interval (writeAttemptTimeout + writeRetryMax) and the
	// longest the renewal right before the send may take (sendRenewFresh).
	SendMargin = writeAttemptTimeout + writeRetryMax + sendRenewFresh
	// DefaultLockTTL is LockTTLFor(DefaultTokenTimeout) = 11.25 s: the
	// lease covers the whole token request plus the write-retry interval.
	DefaultLockTTL = DefaultTokenTimeout + SendMargin
	// DefaultTakeoverGrace is twice the holder's write-retry interval
	// (0.75 s); with DefaultLockTTL a tenant whose holder was SIGKILLed
	// mid-request is taken over within about 13 s (SPEC §3 rule 11 asks
	// for 15 s).
	DefaultTakeoverGrace = 1500 * time.Millisecond
	DefaultCacheTTL      = 60 * time.Second
	// DefaultCacheMaxBytes bounds the token cache when nothing else does
	// (the configuration sizes it from the container's memory limit when
	// it knows one): about 170,000 tenants with K-Series-sized tokens.
	DefaultCacheMaxBytes   = 256 << 20
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

// LockTTLFor is the default lock TTL for a token timeout: the shortest
// lease that covers a whole token request plus the write-retry interval
// (rule 17). Whatever lock TTL is configured, the holder extends its lock
// to at least this right before a refresh token leaves.
func LockTTLFor(tokenTimeout time.Duration) time.Duration {
	if tokenTimeout <= 0 {
		tokenTimeout = DefaultTokenTimeout
	}
	return tokenTimeout + SendMargin
}

// CheckLease reports, with the arithmetic, a lock TTL that does not outlast
// the token request (SPEC §2: a value above the token timeout stays valid;
// SPEC §3 rule 17). Such a lease would be shorter than the send it has to
// cover, so only the extension right before the send would keep a
// successor out: a configuration mistake, refused. A lock TTL above the
// token timeout is extended by the manager to LockTTLFor before each send.
// Zero values mean the defaults (a zero lockTTL is derived and always
// passes).
func CheckLease(tokenTimeout, lockTTL time.Duration) error {
	if tokenTimeout <= 0 {
		tokenTimeout = DefaultTokenTimeout
	}
	if lockTTL <= 0 || lockTTL > tokenTimeout {
		return nil
	}
	return fmt.Errorf("%s does not outlast token_timeout %s: a successor takes the lock over once it expires, so the lease must cover the whole token request; before each send the holder extends it to token_timeout %s + write retry %s + renewal before the send %s = %s (set lock_ttl above %s, or leave it unset to derive it)",
		lockTTL, tokenTimeout, tokenTimeout, writeAttemptTimeout+writeRetryMax, sendRenewFresh, LockTTLFor(tokenTimeout), tokenTimeout)
}

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
	if o.TokenTimeout <= 0 {
		o.TokenTimeout = DefaultTokenTimeout
	}
	if o.LockTTL <= 0 {
		o.LockTTL = LockTTLFor(o.TokenTimeout)
	}
	if o.TakeoverGrace <= 0 {
		o.TakeoverGrace = DefaultTakeoverGrace
	}
	if o.CacheMaxBytes == 0 {
		o.CacheMaxBytes = DefaultCacheMaxBytes
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
