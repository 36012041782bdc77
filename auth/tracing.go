package auth

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracer makes the refresh spans: lsproxy.refresh (from the first lock
// attempt to the answer) with children lsproxy.lock_wait (one per lock
// attempt), lsproxy.token_request and lsproxy.store_write.
// It is the global provider's (a no-op until tracing.Setup installs one).
// Attributes name the tenant only: never a token, code or secret.
func tracer() trace.Tracer { return otel.Tracer("github.com/lsproxy/lsproxy/auth") }

// span starts name for tenant and returns the context and its end, which
// records err (a nil err is success).
func span(ctx context.Context, name, tenant string, opts ...trace.SpanStartOption) (context.Context, func(err error)) {
	if tenant != "" {
		opts = append(opts, trace.WithAttributes(attribute.String("lsproxy.tenant", tenant)))
	}
	ctx, s := tracer().Start(ctx, name, opts...)
	return ctx, func(err error) {
		if err != nil {
			s.SetStatus(codes.Error, errorKind(err))
		}
		s.End()
	}
}

// errorKind is a fixed description of err for a span status: error strings
// may carry provider detail, never needed in a trace.
func errorKind(err error) string {
	var reauth *ReauthError
	var unavail *UnavailableError
	switch {
	case errors.As(err, &reauth):
		return "reauthorization_required"
	case errors.As(err, &unavail):
		return "token_unavailable"
	}
	return "failed"
}
