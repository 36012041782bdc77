package proxy

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strings"
	"time"

	"github.com/lsproxy/lsproxy/ratelimit"
)

// Pacer keeps each tenant within the budget its upstream reports.
// *ratelimit.Governor implements it; implementations must be safe for
// concurrent use.
type Pacer interface {
	// Admit waits until r may be sent for tenant. It returns nil to send, an
	// error matching ratelimit.ErrRateLimited to refuse (answered 429
	// rate_limited), or the request context's error.
	Admit(r *http.Request, tenant string) error
	// ObserveSent learns from the upstream's answer to a request for
	// tenant sent at sent.
	ObserveSent(tenant string, sent time.Time, status int, h http.Header)
}

var _ Pacer = (*ratelimit.Governor)(nil)

// pace runs the Pacer before a request is forwarded; nil Pacer sends at once.
func (h *Handler) pace(r *http.Request, tenant string) error {
	if h.Pacer == nil {
		return nil
	}
	err := h.Pacer.Admit(r, tenant)
	if err != nil && r.Context().Err() != nil {
		return context.Canceled
	}
	return err
}

// observe hands an upstream answer to the Pacer.
func (h *Handler) observe(tenant string, sent time.Time, resp *http.Response) {
	if h.Pacer != nil && resp != nil {
		h.Pacer.ObserveSent(tenant, sent, resp.StatusCode, resp.Header)
	}
}

// KeyID returns the id of the caller key of r ("" when none matches), for
// the governor's per-key share. It never returns the key itself.
func (a *CallerAuth) KeyID(r *http.Request) string {
	const prefix = "Bearer "
	h := r.Header.Get("Proxy-Authorization")
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return ""
	}
	if k, ok := a.byHash[sha256.Sum256([]byte(h[len(prefix):]))]; ok {
		return k.ID
	}
	return ""
}
