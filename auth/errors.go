package auth

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Sentinel errors returned (wrapped) by the token manager and the OAuth
// client. Callers test them with errors.Is.
var (
	// ErrUnknownTenant: no record for the tenant.
	ErrUnknownTenant = errors.New("auth: unknown tenant")
	// ErrReauthorizationRequired: the tenant is flagged; see *ReauthError.
	ErrReauthorizationRequired = errors.New("auth: reauthorization required")
	// ErrTokenUnavailable: the access token expired and cannot be refreshed
	// right now; see *UnavailableError.
	ErrTokenUnavailable = errors.New("auth: token unavailable")
	// ErrInvalidGrant: the token endpoint rejected the grant (RFC 6749
	// invalid_grant). Terminal for a refresh token, but only acted upon after
	// a re-read shows the rejected token is still the stored one.
	ErrInvalidGrant = errors.New("auth: invalid_grant")
	// ErrOutcomeUnknown: a token request was sent but no answer came back, so
	// the provider may have consumed the refresh token.
	ErrOutcomeUnknown = errors.New("auth: token request sent but no answer received")
	// ErrBreakerOpen: the circuit breaker around the token endpoint is open.
	ErrBreakerOpen = errors.New("auth: token endpoint circuit breaker open")
	// ErrPaced: the token endpoint's rate budget did not allow the request
	// within its wait; nothing was sent (SPEC §3 rule 18). Not a breaker
	// failure.
	ErrPaced = errors.New("auth: token endpoint rate budget exhausted; refresh not sent")
)

// ReauthError says a tenant must be re-authorized by the merchant.
type ReauthError struct {
	Tenant string
	Reason string
	Since  time.Time
}

func (e *ReauthError) Error() string {
	return fmt.Sprintf("auth: tenant %q requires reauthorization: %s", e.Tenant, e.Reason)
}

// Is makes errors.Is(err, ErrReauthorizationRequired) true.
func (e *ReauthError) Is(target error) bool { return target == ErrReauthorizationRequired }

// UnavailableError says no usable token could be had now; retry later.
type UnavailableError struct {
	Tenant     string
	RetryAfter time.Duration
	Err        error // the cause, never carrying token values
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("auth: token for tenant %q unavailable: %v", e.Tenant, e.Err)
}

// Is makes errors.Is(err, ErrTokenUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrTokenUnavailable }

func (e *UnavailableError) Unwrap() error { return e.Err }

// EndpointError is a failed answer from the token endpoint. It carries the
// HTTP status and the RFC 6749 error code, never the response body (which
// could echo a secret).
type EndpointError struct {
	Status int
	Code   string // e.g. "invalid_grant", "invalid_client"; may be empty
}

func (e *EndpointError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("auth: token endpoint answered %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("auth: token endpoint answered %d", e.Status)
}

// Is makes errors.Is(err, ErrInvalidGrant) true for invalid_grant answers,
// and errors.Is(err, ErrOutcomeUnknown) true for 502 and 504: a gateway
// answered, and the origin behind it may have rotated the refresh token.
func (e *EndpointError) Is(target error) bool {
	switch target {
	case ErrInvalidGrant:
		return e.Code == "invalid_grant"
	case ErrOutcomeUnknown:
		return e.Code == "" && (e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout)
	}
	return false
}
