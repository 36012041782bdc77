package auth

import (
	"context"
	"errors"
	"net"
	"strconv"
)

// failureReason names a refresh failure that did not consume the grant in
// fixed words for the tenant's history (an error's text could carry a URL
// or a provider's message; a reason never does).
func failureReason(err error) string {
	var ee *EndpointError
	var ne net.Error
	switch {
	case errors.Is(err, errGuardHeld):
		return "held back: many tenants were rejected at once (invalid_grant guard)"
	case errors.Is(err, ErrBreakerOpen):
		return "token endpoint circuit breaker open"
	case errors.As(err, &ee) && plainCode(ee.Code):
		return "token endpoint answered " + strconv.Itoa(ee.Status) + " " + ee.Code
	case errors.As(err, &ee):
		return "token endpoint answered " + strconv.Itoa(ee.Status)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "token endpoint timed out"
	case errors.Is(err, context.Canceled):
		return "refresh canceled"
	}
	return "token endpoint unreachable"
}

// plainCode reports whether an RFC 6749 error code is a short
// [a-z_] word (a provider could send anything there).
func plainCode(c string) bool {
	if c == "" || len(c) > 40 {
		return false
	}
	for i := 0; i < len(c); i++ {
		if (c[i] < 'a' || c[i] > 'z') && c[i] != '_' {
			return false
		}
	}
	return true
}
