package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"

	"github.com/lsproxy/lsproxy/auth"
)

// Error codes of SPEC §2. They are the "error" field of lsproxy's own JSON
// errors and the X-Lsproxy-Error header.
const (
	CodeMissingTenant           = "missing_tenant"
	CodeInvalidTenant           = "invalid_tenant"
	CodeProxyAuthRequired       = "proxy_auth_required"
	CodeTenantNotAllowed        = "tenant_not_allowed"
	CodeUnknownTenant           = "unknown_tenant"
	CodeReauthorizationRequired = "reauthorization_required"
	CodeTokenUnavailable        = "token_unavailable"
	CodeUpstreamUnavailable     = "upstream_unavailable"
	CodeUpstreamTimeout         = "upstream_timeout"
	// CodeMethodNotAllowed (405) answers TRACE and CONNECT, which are
	// never forwarded.
	CodeMethodNotAllowed = "method_not_allowed"
)

// Sentinel errors of the request path, mapped to responses by errorResponse.
var (
	ErrMissingTenant     = errors.New("proxy: missing tenant header")
	ErrInvalidTenant     = errors.New("proxy: invalid tenant id")
	ErrProxyAuthRequired = errors.New("proxy: caller authentication required")
	ErrTenantNotAllowed  = errors.New("proxy: caller may not use this tenant")
	ErrMethodNotAllowed  = errors.New("proxy: method not forwarded")
)

// errorBody is the JSON of every error lsproxy itself answers.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Tenant  string `json:"tenant,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// RequestID is the request's X-Request-Id, to quote in a support request.
	RequestID string `json:"request_id,omitempty"`
}

// errorResponse is the one place that maps an error to a status, code and
// message. Messages are fixed texts: they never carry an error's string,
// which could hold a URL or upstream detail.
func errorResponse(err error) (status int, body errorBody, retryAfter int) {
	var reauth *auth.ReauthError
	var unavail *auth.UnavailableError
	switch {
	case errors.Is(err, ErrMissingTenant):
		return http.StatusBadRequest, errorBody{Error: CodeMissingTenant, Message: "the tenant header is missing"}, 0
	case errors.Is(err, ErrInvalidTenant):
		return http.StatusBadRequest, errorBody{Error: CodeInvalidTenant, Message: "the tenant id must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"}, 0
	case errors.Is(err, ErrMethodNotAllowed):
		return http.StatusMethodNotAllowed, errorBody{Error: CodeMethodNotAllowed, Message: "TRACE and CONNECT are not forwarded"}, 0
	case errors.Is(err, ErrProxyAuthRequired):
		return http.StatusUnauthorized, errorBody{Error: CodeProxyAuthRequired, Message: "a valid client key is required in Proxy-Authorization: Bearer <key>"}, 0
	case errors.Is(err, ErrTenantNotAllowed):
		return http.StatusForbidden, errorBody{Error: CodeTenantNotAllowed, Message: "this client key may not use this tenant"}, 0
	case errors.Is(err, auth.ErrUnknownTenant):
		return http.StatusNotFound, errorBody{Error: CodeUnknownTenant, Message: "no such tenant; onboard it through the admin API"}, 0
	case errors.As(err, &reauth):
		return http.StatusUnauthorized, errorBody{Error: CodeReauthorizationRequired,
			Message: "the merchant must re-authorize this tenant; an admin gets a new link from POST /admin/tenants/{id}/authorize",
			Reason:  reauth.Reason}, 0
	case errors.As(err, &unavail):
		ra := int(unavail.RetryAfter.Seconds() + 0.999)
		if ra < 1 {
			ra = 1
		}
		return http.StatusServiceUnavailable, errorBody{Error: CodeTokenUnavailable, Message: "the access token expired and cannot be refreshed right now; retry later"}, ra
	case isTimeout(err):
		return http.StatusGatewayTimeout, errorBody{Error: CodeUpstreamTimeout, Message: "the upstream did not answer in time"}, 0
	default:
		return http.StatusBadGateway, errorBody{Error: CodeUpstreamUnavailable, Message: "the upstream could not be reached"}, 0
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// writeError answers err as lsproxy's JSON error and returns its code.
func writeError(w http.ResponseWriter, tenant, requestID string, err error) string {
	status, body, retryAfter := errorResponse(err)
	body.Tenant, body.RequestID = tenant, requestID
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Lsproxy-Error", body.Error)
	h.Set("Cache-Control", "no-store")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
	return body.Error
}
