package proxy

import (
	"errors"
	"net/http"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/ratelimit"
)

// Sentinel errors of the request path, mapped to answers by errorFor.
var (
	ErrMissingTenant     = errors.New("proxy: missing tenant header")
	ErrInvalidTenant     = errors.New("proxy: invalid tenant id")
	ErrProxyAuthRequired = errors.New("proxy: caller authentication required")
	ErrTenantNotAllowed  = errors.New("proxy: caller may not use this tenant")
	// ErrMethodNotAllowed answers TRACE and CONNECT, which are never
	// forwarded.
	ErrMethodNotAllowed = errors.New("proxy: method not forwarded")
)

// errorFor is the one place that maps a request-path error to its entry
// of the error table (package httperr). What is neither lsproxy's own nor
// a timeout is an unreachable upstream.
func errorFor(tenant string, err error) httperr.Error {
	e := httperr.Error{Kind: httperr.UpstreamUnavailable, Tenant: tenant}
	var reauth *auth.ReauthError
	var unavail *auth.UnavailableError
	var refused *ratelimit.RefusedError
	switch {
	case errors.Is(err, ErrMissingTenant):
		e.Kind = httperr.MissingTenant
	case errors.Is(err, ErrInvalidTenant):
		e.Kind = httperr.InvalidTenant
	case errors.Is(err, ErrMethodNotAllowed):
		e.Kind = httperr.MethodNotAllowed
	case errors.Is(err, ErrProxyAuthRequired):
		e.Kind = httperr.ProxyAuthRequired
	case errors.Is(err, ErrTenantNotAllowed):
		e.Kind = httperr.TenantNotAllowed
	case errors.Is(err, auth.ErrUnknownTenant):
		e.Kind = httperr.UnknownTenant
	case errors.As(err, &reauth):
		e.Kind, e.Reason = httperr.ReauthorizationRequired, reauth.Reason
	case errors.As(err, &refused):
		e.Kind, e.RetryAfter = httperr.RateLimited, refused.RetryAfter
	case errors.As(err, &unavail):
		e.Kind, e.RetryAfter = httperr.TokenUnavailable, unavail.RetryAfter
	case errors.Is(err, ErrUnknownLocation):
		e.Kind = httperr.UnknownLocation
	case errors.Is(err, ErrAmbiguousLocation):
		e.Kind = httperr.AmbiguousLocation
	case errors.Is(err, ErrNoUpstreamHost), errors.Is(err, auth.ErrNoTokenHost):
		e.Kind = httperr.NoUpstreamHost
	case httperr.IsTimeout(err):
		e.Kind = httperr.UpstreamTimeout
	}
	return e
}

// writeError answers err as lsproxy's JSON error and returns its code.
func writeError(w http.ResponseWriter, tenant string, err error) string {
	return httperr.Write(w, errorFor(tenant, err))
}
