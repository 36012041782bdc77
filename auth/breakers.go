package auth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/store"
)

// ErrNoTokenHost: the token URL is a template (x-series
// https://{domain_prefix}.retail.lightspeed.app/...) and the tenant has no
// valid domain_prefix, so it has no token endpoint at all. No request is
// sent and no breaker counts it (SPEC §8: 502 upstream_unavailable).
var ErrNoTokenHost = errors.New("auth: the tenant has no valid domain_prefix naming its token host")

// TokenHoster is implemented by a Refresher whose token endpoint depends
// on the tenant (OAuthClient with a {domain_prefix} token URL). The
// manager keeps one circuit breaker per token host, so one X-Series
// store's outage never stops another store's refreshes.
type TokenHoster interface {
	// TokenHost returns the host t's refresh grant is sent to, or an error
	// wrapping ErrNoTokenHost.
	TokenHost(t *store.Tenant) (string, error)
}

var _ TokenHoster = (*OAuthClient)(nil)

// TokenHost implements TokenHoster.
func (c *OAuthClient) TokenHost(t *store.Tenant) (string, error) {
	raw := c.TokenURL
	if strings.Contains(raw, "{domain_prefix}") {
		dp := ""
		if t != nil {
			dp = t.Extra["domain_prefix"]
		}
		if !ValidDomainPrefix(dp) {
			return "", ErrNoTokenHost
		}
		raw = strings.ReplaceAll(raw, "{domain_prefix}", dp)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("auth: token URL: %w", err)
	}
	return strings.ToLower(u.Host), nil
}

// breakers is the manager's circuit breakers, one per token host (one in
// all for a fixed token URL). Safe for concurrent use.
type breakers struct {
	settings gobreaker.Settings
	log      *zap.Logger
	metrics  *Metrics

	mu    sync.Mutex
	by    map[string]*gobreaker.CircuitBreaker[*Grant]
	state map[string]gobreaker.State
}

// maxBreakers bounds the per-host map (hosts are validated domain
// prefixes of stored tenants; beyond it, hosts share one overflow breaker).
const maxBreakers = 100_000

func newBreakers(s gobreaker.Settings, log *zap.Logger, metrics *Metrics) *breakers {
	return &breakers{settings: s, log: log, metrics: metrics, by: map[string]*gobreaker.CircuitBreaker[*Grant]{}, state: map[string]gobreaker.State{}}
}

// forHost returns host's breaker, creating it.
func (b *breakers) forHost(host string) *gobreaker.CircuitBreaker[*Grant] {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cb, ok := b.by[host]; ok {
		return cb
	}
	if len(b.by) >= maxBreakers {
		host = "(overflow)"
		if cb, ok := b.by[host]; ok {
			return cb
		}
	}
	s := b.settings
	s.Name = "token-endpoint " + host
	s.OnStateChange = func(_ string, from, to gobreaker.State) {
		b.log.Warn("token endpoint breaker", zap.String("host", host), zap.String("from", from.String()), zap.String("to", to.String()))
		b.mu.Lock()
		if to == gobreaker.StateClosed {
			delete(b.state, host)
		} else {
			b.state[host] = to
		}
		worst := gobreaker.StateClosed
		for _, st := range b.state {
			if st == gobreaker.StateOpen || st == gobreaker.StateHalfOpen && worst == gobreaker.StateClosed {
				worst = st
			}
		}
		b.mu.Unlock()
		b.metrics.breakerState(worst) // the gauge shows the worst host's state
	}
	cb := gobreaker.NewCircuitBreaker[*Grant](s)
	b.by[host] = cb
	return cb
}

// anyOpen reports whether some host's breaker is open.
func (b *breakers) anyOpen() bool {
	b.mu.Lock()
	var cbs []*gobreaker.CircuitBreaker[*Grant]
	for host := range b.state {
		cbs = append(cbs, b.by[host])
	}
	b.mu.Unlock()
	for _, cb := range cbs { // State outside b.mu: it may move to half-open and call OnStateChange
		if cb != nil && cb.State() == gobreaker.StateOpen {
			return true
		}
	}
	return false
}

// breakerFor returns the breaker of t's token host, or ErrNoTokenHost.
func (m *Manager) breakerFor(t *store.Tenant) (*gobreaker.CircuitBreaker[*Grant], error) {
	host := ""
	if th, ok := m.refresher.(TokenHoster); ok {
		h, err := th.TokenHost(t)
		if err != nil {
			return nil, err
		}
		host = h
	}
	return m.breakers.forHost(host), nil
}

// breakerOpenFor reports whether t's token host's breaker is open, or
// ErrNoTokenHost.
func (m *Manager) breakerOpenFor(t *store.Tenant) (bool, error) {
	cb, err := m.breakerFor(t)
	if err != nil {
		return false, err
	}
	return cb.State() == gobreaker.StateOpen, nil
}

// execute sends fn through t's token host's breaker.
func (m *Manager) execute(_ context.Context, t *store.Tenant, fn func() (*Grant, error)) (*Grant, error) {
	cb, err := m.breakerFor(t)
	if err != nil {
		return nil, err
	}
	return cb.Execute(fn)
}
