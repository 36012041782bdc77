package config

import (
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/ratelimit"
	"github.com/lsproxy/lsproxy/store"
)

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		Listen:                     "127.0.0.1:8080",
		ControlListen:              "127.0.0.1:8081",
		Provider:                   "k-series",
		Environment:                "production",
		RedisKeyPrefix:             store.DefaultRedisPrefix,
		DataDir:                    "./data",
		TenantHeader:               "X-Tenant",
		LocationHeader:             "X-Location",
		RefreshBefore:              auth.DefaultRefreshBefore,
		LogLevel:                   "info",
		LogFormat:                  "json",
		UpstreamTimeout:            30 * time.Second,
		TokenTimeout:               auth.DefaultTokenTimeout,
		ReadHeaderTimeout:          10 * time.Second,
		BodyReadTimeout:            60 * time.Second,
		IdleTimeout:                120 * time.Second,
		ShutdownTimeout:            25 * time.Second,
		MaxReplayBodyBytes:         1 << 20,
		MaxHeaderBytes:             64 << 10,
		BreakerFailures:            auth.DefaultBreakerFailures,
		BreakerOpenFor:             auth.DefaultBreakerOpenFor,
		LockTTL:                    0, // derived from TokenTimeout
		RedisWaitReplicas:          1,
		RedisWaitTimeout:           time.Second,
		InvalidGrantGuardThreshold: auth.DefaultGuardThreshold,
		InvalidGrantGuardWindow:    auth.DefaultGuardWindow,
		CacheTTL:                   auth.DefaultCacheTTL,
		StateTTL:                   onboard.DefaultStateTTL,
		AuthorizeLinkTTL:           onboard.DefaultLinkTTL,
		Identify:                   true,
		IdentifyRetry:              onboard.DefaultIdentifyRetry,
		ConsoleSessionIdle:         15 * time.Minute, // control.DefaultConsoleIdle (config may not import control)
		RefresherInterval:          auth.DefaultRefresherInterval,
		RefresherConcurrency:       auth.DefaultRefresherConcurrency,
		RefreshIdleMargin:          auth.DefaultRefreshIdleMargin,
		RateLimitWait:              time.Second,
		RateLimitMaxBlock:          ratelimit.DefaultMaxBlock,
		WebhookTimeout:             onboard.DefaultWebhookTimeout,
		WebhookLease:               onboard.DefaultWebhookLease,
		WebhookPollInterval:        onboard.DefaultWebhookPoll,
	}
}

// DefaultLockTTL is lock_ttl's default with the default token_timeout: the
// manager's.
const DefaultLockTTL = auth.DefaultLockTTL

// EffectiveLockTTL returns LockTTL, or, when it is 0, the lock TTL derived
// from TokenTimeout (auth.LockTTLFor): a lease that covers the whole token
// request plus the write retry.
func (c Config) EffectiveLockTTL() time.Duration {
	if c.LockTTL > 0 {
		return c.LockTTL
	}
	return auth.LockTTLFor(c.TokenTimeout)
}

// autoCacheMaxBytes is the token cache's bound for a container memory limit
// (0: none known): a quarter of it, at least MinCacheMaxBytes, else
// auth.DefaultCacheMaxBytes.
func autoCacheMaxBytes(limit int64) int64 {
	if limit <= 0 {
		return auth.DefaultCacheMaxBytes
	}
	return max(limit/CacheMemoryShare, MinCacheMaxBytes)
}
