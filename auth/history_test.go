package auth

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// A refresh failure is recorded in fixed words: never an error's text,
// which could hold a URL or a provider's message.
func TestFailureReason(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{ErrBreakerOpen, "token endpoint circuit breaker open"},
		{&EndpointError{Status: 503}, "token endpoint answered 503"},
		{&EndpointError{Status: 400, Code: "invalid_client"}, "token endpoint answered 400 invalid_client"},
		{&EndpointError{Status: 400, Code: "<script>RT-SECRET"}, "token endpoint answered 400"},
		{fmt.Errorf("post https://user:RT-SECRET@host: %w", context.DeadlineExceeded), "token endpoint timed out"},
		{errors.New("dial tcp https://host?refresh_token=RT-SECRET: refused"), "token endpoint unreachable"},
	} {
		if got := failureReason(c.err); got != c.want {
			t.Errorf("%v: %q, want %q", c.err, got, c.want)
		}
	}
}
