// Package httperr is lsproxy's one vocabulary for the answers its listeners
// make themselves: every error code with its status and message (this
// file, httperr.go), the one JSON writer (json.go), the request id
// (requestid.go), the one status-recording
// ResponseWriter (statuswriter.go) and safe descriptions of transport
// errors (neterr.go). The data plane (proxy), the control listener
// (control) and the onboarding pages (onboard) all answer through it, so a
// code means the same everywhere and is defined once.
//
// Adding a code is one line in the table below. Messages are fixed texts:
// they never carry an error's string, which could hold a URL, an upstream
// detail or a secret.
package httperr

import (
	"net/http"
	"strconv"
	"time"
)

// Kind is one entry of the error table: what lsproxy answers for one kind
// of failure. Kinds are compared by pointer; treat them as constants.
type Kind struct {
	// Code is the "error" field of the JSON body and the X-Lsproxy-Error
	// header (SPEC §2).
	Code string
	// Status is the HTTP status.
	Status int
	// Message is the fixed text of the "message" field (JSON answers only;
	// the onboarding pages carry their own texts for people).
	Message string
	// RetryAfter: the answer carries Retry-After in whole seconds, rounded
	// up and at least 1 (see RetryAfterSeconds).
	RetryAfter bool
}

// The table. Proxied traffic (SPEC §2) first, then the control listener's
// admin API, then the onboarding flow (whose HTML pages take their status
// and X-Lsproxy-Error from here).
var (
	// Proxied traffic (LSPROXY_LISTEN).
	MissingTenant           = &Kind{Code: "missing_tenant", Status: http.StatusBadRequest, Message: "the tenant header is missing"}
	InvalidTenant           = &Kind{Code: "invalid_tenant", Status: http.StatusBadRequest, Message: "the tenant id must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"}
	MethodNotAllowed        = &Kind{Code: "method_not_allowed", Status: http.StatusMethodNotAllowed, Message: "TRACE and CONNECT are not forwarded"}
	ProxyAuthRequired       = &Kind{Code: "proxy_auth_required", Status: http.StatusUnauthorized, Message: "a valid client key is required in Proxy-Authorization: Bearer <key>"}
	TenantNotAllowed        = &Kind{Code: "tenant_not_allowed", Status: http.StatusForbidden, Message: "this client key may not use this tenant"}
	UnknownTenant           = &Kind{Code: "unknown_tenant", Status: http.StatusNotFound, Message: "no such tenant; onboard it through the admin API"}
	ReauthorizationRequired = &Kind{Code: "reauthorization_required", Status: http.StatusUnauthorized, Message: "the merchant must re-authorize this tenant; an admin gets a new link from POST /admin/tenants/{id}/authorize"}
	TokenUnavailable        = &Kind{Code: "token_unavailable", Status: http.StatusServiceUnavailable, Message: "the access token expired and cannot be refreshed right now; retry later", RetryAfter: true}
	UpstreamUnavailable     = &Kind{Code: "upstream_unavailable", Status: http.StatusBadGateway, Message: "the upstream could not be reached"}
	UpstreamTimeout         = &Kind{Code: "upstream_timeout", Status: http.StatusGatewayTimeout, Message: "the upstream did not answer in time"}
	// RateLimited (SPEC §8): the tenant's upstream budget had no room
	// within LSPROXY_RATE_LIMIT_WAIT; package ratelimit decides.
	RateLimited = &Kind{Code: "rate_limited", Status: http.StatusTooManyRequests, Message: "this tenant's Lightspeed rate limit is used up; retry after the Retry-After delay", RetryAfter: true}
	// SPEC §8: an x-series tenant without a valid domain_prefix has no
	// upstream host (never another store's); a location header naming no
	// location an active grant covers.
	NoUpstreamHost  = &Kind{Code: "upstream_unavailable", Status: http.StatusBadGateway, Message: "this tenant has no valid domain_prefix naming its upstream host; re-authorize it"}
	UnknownLocation = &Kind{Code: "unknown_location", Status: http.StatusNotFound, Message: "no active tenant's grant covers this business location"}
	// AmbiguousLocation: two tenants the caller may use cover the location
	// and none is configured as its preferred tenant.
	AmbiguousLocation = &Kind{Code: "ambiguous_location", Status: http.StatusConflict, Message: "several tenants this caller may use cover this business location; send the tenant header"}

	// Control listener (LSPROXY_CONTROL_LISTEN): the admin API. An admin
	// asking to refresh a flagged tenant gets 409 (the tenant's state
	// conflicts with the request), not the data plane's 401, which would
	// read as a wrong admin token.
	AdminDisabled         = &Kind{Code: "admin_disabled", Status: http.StatusNotFound, Message: "the admin API is disabled: set LSPROXY_ADMIN_TOKEN"}
	AdminUnauthorized     = &Kind{Code: "unauthorized", Status: http.StatusUnauthorized, Message: "a valid admin token is required in Authorization: Bearer <token>"}
	BadRequest            = &Kind{Code: "bad_request", Status: http.StatusBadRequest, Message: "the body must be a JSON object with refresh_token, optional access_token and expires_in"}
	BadQuery              = &Kind{Code: "bad_request", Status: http.StatusBadRequest, Message: "a query parameter is invalid"}
	AdminReauthorization  = &Kind{Code: "reauthorization_required", Status: http.StatusConflict, Message: "the merchant must re-authorize; POST /admin/tenants/{id}/authorize for a link"}
	AdminTokenUnavailable = &Kind{Code: "token_unavailable", Status: http.StatusServiceUnavailable, Message: "the token endpoint or the store is unavailable; retry later", RetryAfter: true}
	Conflict              = &Kind{Code: "conflict", Status: http.StatusConflict, Message: "the tenant changed concurrently; retry"}
	// An import (PUT /admin/tenants/{id}, a line of POST /admin/import)
	// never races a refresh nor replaces a live refresh token unasked
	// (SPEC §3 rule 19).
	RefreshInFlight         = &Kind{Code: "refresh_in_flight", Status: http.StatusConflict, Message: "a refresh of this tenant is in flight (its outcome is not yet stored); nothing changed, retry later", RetryAfter: true}
	RefreshTokenDiffers     = &Kind{Code: "refresh_token_differs", Status: http.StatusConflict, Message: "the tenant holds another refresh token (refreshed since it was exported?); nothing changed: delete it first or repeat with ?overwrite=true"}
	NoCandidate             = &Kind{Code: "no_candidate", Status: http.StatusConflict, Message: "the tenant has no re-authorization grant awaiting verification"}
	DecryptFailed           = &Kind{Code: "decrypt_failed", Status: http.StatusInternalServerError, Message: "the tenant record cannot be decrypted with the configured keys"}
	StoreUnavailable        = &Kind{Code: "store_unavailable", Status: http.StatusServiceUnavailable, Message: "the store did not answer; retry later"}
	OnboardingDisabled      = &Kind{Code: "onboarding_disabled", Status: http.StatusServiceUnavailable, Message: "onboarding is not configured: set LSPROXY_REDIRECT_URL"}
	OnboardingMisconfigured = &Kind{Code: "onboarding_misconfigured", Status: http.StatusServiceUnavailable, Message: "onboarding is misconfigured; see the server log"}
	// Bounded input and throttling (control listener): a request refused
	// whole before it is decoded; a client that sent too many wrong admin
	// tokens.
	TooLarge        = &Kind{Code: "too_large", Status: http.StatusRequestEntityTooLarge, Message: "the request is larger than allowed; send smaller batches"}
	TooManyAttempts = &Kind{Code: "too_many_attempts", Status: http.StatusTooManyRequests, Message: "too many wrong admin tokens from this client; retry after the Retry-After delay", RetryAfter: true}
	// The operator console's JSON feed (its pages are HTML for people).
	UnknownEvent     = &Kind{Code: "unknown_event", Status: http.StatusNotFound, Message: "no queued or dead webhook event has this id"}
	ConsoleSignedOut = &Kind{Code: "console_signed_out", Status: http.StatusUnauthorized, Message: "sign in to the console at /console/signin"}

	// Onboarding (/oauth/start, /oauth/callback): HTML pages for the
	// merchant's browser; the page texts live in package onboard. A
	// failure to store answers StoreUnavailable, a misconfiguration
	// OnboardingMisconfigured.
	LinkInvalid        = &Kind{Code: "link_invalid", Status: http.StatusBadRequest, Message: "the authorize link is malformed or its signature is wrong"}
	LinkExpired        = &Kind{Code: "link_expired", Status: http.StatusGone, Message: "the authorize link has expired"}
	LinkUsed           = &Kind{Code: "link_used", Status: http.StatusGone, Message: "the authorize link was already used"}
	LinkRevoked        = &Kind{Code: "link_revoked", Status: http.StatusGone, Message: "the authorize link was revoked (POST /admin/tenants/{id}/revoke-links) or the tenant was created again"}
	TenantGone         = &Kind{Code: "tenant_gone", Status: http.StatusGone, Message: "the tenant was deleted"}
	StateInvalid       = &Kind{Code: "state_invalid", Status: http.StatusBadRequest, Message: "the state is missing, unknown, used or expired"}
	CallbackIncomplete = &Kind{Code: "callback_incomplete", Status: http.StatusBadRequest, Message: "the callback lacks a code or a required parameter"}
	AccessDenied       = &Kind{Code: "access_denied", Status: http.StatusForbidden, Message: "the merchant declined the authorization"}
	ProviderError      = &Kind{Code: "provider_error", Status: http.StatusBadRequest, Message: "the provider answered an error instead of an authorization"}
	OtherAccount       = &Kind{Code: "other_account", Status: http.StatusConflict, Message: "the merchant connected another account than the tenant's"}
	IdentifyFailed     = &Kind{Code: "identify_failed", Status: http.StatusBadGateway, Message: "the provider did not say which merchant account the grant belongs to"}
	CodeRejected       = &Kind{Code: "code_rejected", Status: http.StatusBadRequest, Message: "the token endpoint rejected the authorization code"}
	ClientRejected     = &Kind{Code: "client_rejected", Status: http.StatusBadRequest, Message: "the token endpoint rejected the client credentials"}
	ProviderDown       = &Kind{Code: "provider_unavailable", Status: http.StatusBadGateway, Message: "the token endpoint did not answer"}
	OnlyGet            = &Kind{Code: "method_not_allowed", Status: http.StatusMethodNotAllowed, Message: "only GET is allowed here"}
)

// Error is one error answer: a Kind plus the details of this request.
type Error struct {
	Kind *Kind
	// Tenant is the "tenant" field; "" omits it. Only a validated tenant
	// id belongs here.
	Tenant string
	// Reason is the "reason" field of reauthorization_required; "" omits it.
	Reason string
	// Detail, when set, is appended to the message after ": ". It must be
	// a fixed or sanitized text (never an error's string from outside).
	Detail string
	// RetryAfter is the wait behind Retry-After when Kind.RetryAfter.
	RetryAfter time.Duration
}

// Body is the JSON of every error lsproxy answers itself:
// {"error": CODE, "message": TEXT, "tenant": ID, "reason": ...}.
type Body struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Tenant  string `json:"tenant,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// RequestID is the response's X-Request-Id (Write fills it in), for a
	// caller to quote.
	RequestID string `json:"request_id,omitempty"`
}

// Body returns e's JSON body.
func (e Error) Body() Body {
	msg := e.Kind.Message
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return Body{Error: e.Kind.Code, Message: msg, Tenant: e.Tenant, Reason: e.Reason}
}

// SetHeaders sets X-Lsproxy-Error, Cache-Control: no-store and (when the
// Kind says so) Retry-After on h.
func (e Error) SetHeaders(h http.Header) {
	h.Set("X-Lsproxy-Error", e.Kind.Code)
	h.Set("Cache-Control", "no-store")
	if e.Kind.RetryAfter {
		h.Set("Retry-After", strconv.Itoa(RetryAfterSeconds(e.RetryAfter)))
	}
}

// Write answers e as JSON and returns its code (for metrics and logs).
func Write(w http.ResponseWriter, e Error) string {
	e.SetHeaders(w.Header())
	b := e.Body()
	b.RequestID = w.Header().Get(RequestIDHeader)
	WriteJSON(w, e.Kind.Status, b)
	return e.Kind.Code
}

// RetryAfterSeconds is the one rounding of a wait into Retry-After: whole
// seconds rounded up, at least 1 (a client must never be told 0).
func RetryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
