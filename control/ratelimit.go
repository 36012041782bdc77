package control

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/ratelimit"
)

// RateLimits is what the admin API needs from the rate-limit governor.
// *ratelimit.Governor implements it; implementations must be safe for
// concurrent use.
type RateLimits interface {
	// Budget returns the tenant's last known budget; ok is false when none
	// is known.
	Budget(ctx context.Context, tenant string) (b ratelimit.Budget, ok bool, err error)
	// Forget clears everything learned about the tenant's budget (a block
	// too), in the shared store. Errors wrap ratelimit.ErrStore.
	Forget(ctx context.Context, tenant string) error
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

// resetRateLimit is DELETE /admin/tenants/{id}/rate-limit: it clears the
// tenant's learned upstream budget (a block a hostile or mistaken header
// taught, say), so its requests go unpaced until the upstream reports a
// budget again. 204 also when nothing was learned or the governor is off;
// 404 for an unknown tenant; 503 when the store does not answer.
func (s *Server) resetRateLimit(w http.ResponseWriter, r *http.Request) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	if _, err := s.Store.Get(r.Context(), id); err != nil {
		adminError(w, id, err)
		return
	}
	if s.RateLimits != nil {
		if err := s.RateLimits.Forget(r.Context(), id); err != nil {
			adminError(w, id, err)
			return
		}
		s.Logger.Info("learned rate-limit budget cleared by an admin", zap.String("tenant", id))
	}
	w.WriteHeader(http.StatusNoContent)
}

// The audit log's action name for the route (adminActions, admin.go).
func init() { adminActions["DELETE /admin/tenants/{id}/rate-limit"] = "reset_rate_limit" }
