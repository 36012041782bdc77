package auth_test

import (
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/config"
)

// TestDefaultsMatchConfig: the manager's defaults and the configuration's
// are the same values (config does not import auth, so this pins them).
func TestDefaultsMatchConfig(t *testing.T) {
	c := config.Default()
	for _, d := range []struct {
		name        string
		auth, confg time.Duration
	}{
		{"lock_ttl", auth.DefaultLockTTL, c.EffectiveLockTTL()},
		{"lock_ttl constant", auth.DefaultLockTTL, config.DefaultLockTTL},
		{"token_timeout", auth.DefaultTokenTimeout, c.TokenTimeout},
		{"refresh_before", auth.DefaultRefreshBefore, c.RefreshBefore},
		{"cache_ttl", auth.DefaultCacheTTL, c.CacheTTL},
		{"breaker_open_for", auth.DefaultBreakerOpenFor, c.BreakerOpenFor},
		{"invalid_grant_guard_window", auth.DefaultGuardWindow, c.InvalidGrantGuardWindow},
	} {
		if d.auth != d.confg {
			t.Errorf("%s: auth %v, config %v", d.name, d.auth, d.confg)
		}
	}
	if auth.DefaultBreakerFailures != c.BreakerFailures || auth.DefaultGuardThreshold != c.InvalidGrantGuardThreshold {
		t.Errorf("breaker_failures %d/%d, guard threshold %d/%d", auth.DefaultBreakerFailures, c.BreakerFailures,
			auth.DefaultGuardThreshold, c.InvalidGrantGuardThreshold)
	}
	// Takeover after a dead holder within 15 s (SPEC §3 rule 11): the
	// lease covers a whole token request (rule 17), the grace follows.
	if got := auth.DefaultLockTTL + auth.DefaultTakeoverGrace; got > 13*time.Second {
		t.Errorf("default takeover bound %v leaves no margin under 15 s", got)
	}
}
