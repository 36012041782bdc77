package control

import (
	"context"
	"time"

	"github.com/lsproxy/lsproxy/ratelimit"
)

// RateLimits is what the admin API needs from the rate-limit governor.
// *ratelimit.Governor implements it; implementations must be safe for
// concurrent use.
type RateLimits interface {
	// Budget returns the tenant's last known budget; ok is false when none
	// is known.
	Budget(ctx context.Context, tenant string) (b ratelimit.Budget, ok bool, err error)
}

var _ RateLimits = (*ratelimit.Governor)(nil)

// rateLimit is the tenant's budget for its admin view, or nil: unknown,
// governor off, or the store did not answer within a short bound (the
// view is still served).
func (s *Server) rateLimit(ctx context.Context, tenant string) *ratelimit.Budget {
	if s.RateLimits == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	b, ok, err := s.RateLimits.Budget(ctx, tenant)
	if err != nil || !ok {
		return nil
	}
	return &b
}
