package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/internal/tracing"
)

// startTracing installs OpenTelemetry tracing when the OTEL_* variables ask
// for it (internal/tracing); the returned stop flushes pending spans.
func startTracing(ctx context.Context, log *zap.Logger) (stop func(), err error) {
	shutdown, on, err := tracing.Setup(ctx, currentBuild().Version)
	if err != nil {
		return nil, fmt.Errorf("tracing (OTEL_EXPORTER_OTLP_*): %w", err)
	}
	if on {
		log.Info("tracing on: OTLP/HTTP export per the OTEL_* environment variables")
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("flushing traces", zap.Error(err))
		}
	}, nil
}

// tracingOn reports whether the OTEL_* variables turn tracing on.
func tracingOn() bool { return tracing.Enabled(os.Environ()) }

// traced wraps an outgoing transport in client spans when tracing is on.
func traced(rt http.RoundTripper, name string) http.RoundTripper {
	if !tracingOn() {
		return rt
	}
	return tracing.Transport(rt, name)
}

// tracedControl wraps the control listener's handler in server spans when
// tracing is on.
func tracedControl(h http.Handler) http.Handler {
	if !tracingOn() {
		return h
	}
	return tracing.ControlHandler(h)
}

// tracedHandler wraps the proxied-traffic handler in server spans when
// tracing is on.
func tracedHandler(h http.Handler) http.Handler {
	if !tracingOn() {
		return h
	}
	return tracing.Handler(h)
}
