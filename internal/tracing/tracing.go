// Package tracing sets up OpenTelemetry tracing for lsproxy: off unless the
// standard OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
// is set, then an OTLP/HTTP exporter configured by the standard OTEL_*
// variables, W3C trace context propagation, and a span processor that keeps
// URL queries (which may carry secrets) out of every span.
//
// Spans: one server span per proxied request (Handler), one client span per
// upstream or token-endpoint request (Transport), and the token manager's
// refresh spans (package auth). No span attribute carries a token, an
// authorization code, a secret or a query string.
package tracing

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// Enabled reports whether environ (os.Environ form) turns tracing on.
func Enabled(environ []string) bool {
	on := false
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
			on = on || v != ""
		case "OTEL_SDK_DISABLED":
			if strings.EqualFold(v, "true") {
				return false
			}
		}
	}
	return on
}

// Setup installs the global tracer provider and propagator when Enabled,
// and returns its shutdown (which flushes pending spans); when tracing is
// off it installs nothing and returns a no-op. version names the build in
// the resource (service.version); OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override as usual.
func Setup(ctx context.Context, version string) (shutdown func(context.Context) error, enabled bool, err error) {
	noop := func(context.Context) error { return nil }
	if !Enabled(os.Environ()) {
		return noop, false, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return noop, false, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("lsproxy"), semconv.ServiceVersion(version)))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return noop, false, err
	}
	if envRes, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, envRes); err == nil {
			res = merged
		}
	}
	tp := NewProvider(res, sdktrace.NewBatchSpanProcessor(exp))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(Propagator())
	return tp.Shutdown, true, nil
}

// NewProvider returns a tracer provider whose ended spans pass through
// Redact on their way to next (an exporter's processor; tests pass a
// tracetest recorder).
func NewProvider(res *resource.Resource, next sdktrace.SpanProcessor) *sdktrace.TracerProvider {
	opts := []sdktrace.TracerProviderOption{sdktrace.WithSpanProcessor(Redact{Next: next})}
	if res != nil {
		opts = append(opts, sdktrace.WithResource(res))
	}
	return sdktrace.NewTracerProvider(opts...)
}

// Propagator is W3C trace context and baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Handler wraps the proxied-traffic handler in a server span per request
// (named "proxy <METHOD>"), continuing the caller's traceparent.
func Handler(h http.Handler) http.Handler {
	return otelhttp.NewHandler(h, "proxy", otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
		return "proxy " + r.Method
	}))
}

// ControlHandler wraps the control listener's handler in a server span per
// request, so that an admin refresh or an OAuth code exchange is a trace of
// its own with lsproxy's spans as children. Names are bounded: "control
// admin <METHOD>", "control oauth start|callback", "control console
// <METHOD>"; health, readiness and metrics scrapes make no span.
func ControlHandler(h http.Handler) http.Handler {
	return otelhttp.NewHandler(h, "control",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return ControlSpanName(r) }),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
				return false
			}
			return true
		}))
}

// ControlSpanName is the bounded span name of a control listener request
// (no tenant id, no query).
func ControlSpanName(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/admin/"):
		return "control admin " + r.Method
	case p == "/oauth/start":
		return "control oauth start"
	case p == "/oauth/callback":
		return "control oauth callback"
	case strings.HasPrefix(p, "/console/"):
		return "control console " + r.Method
	}
	return "control " + r.Method
}

// Transport wraps rt in a client span per request and injects traceparent.
func Transport(rt http.RoundTripper, name string) http.RoundTripper {
	return otelhttp.NewTransport(rt, otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
		return name + " " + r.Method
	}))
}

// Redact is a span processor that hands Next every ended span with its
// URL attributes cleaned: url.full (and the older http.url) without query,
// fragment or user info, url.query and http.target replaced by
// "[redacted]". Queries may carry secrets (an OAuth code, a signed link),
// which no exported span may hold, whichever instrumentation set them.
type Redact struct{ Next sdktrace.SpanProcessor }

var _ sdktrace.SpanProcessor = Redact{}

func (r Redact) OnStart(ctx context.Context, s sdktrace.ReadWriteSpan) { r.Next.OnStart(ctx, s) }
func (r Redact) OnEnd(s sdktrace.ReadOnlySpan)                         { r.Next.OnEnd(redactedSpan{s}) }
func (r Redact) Shutdown(ctx context.Context) error                    { return r.Next.Shutdown(ctx) }
func (r Redact) ForceFlush(ctx context.Context) error                  { return r.Next.ForceFlush(ctx) }

// redactedSpan is a span whose Attributes are cleaned.
type redactedSpan struct{ sdktrace.ReadOnlySpan }

func (s redactedSpan) Attributes() []attribute.KeyValue {
	in := s.ReadOnlySpan.Attributes()
	out := make([]attribute.KeyValue, len(in))
	for i, kv := range in {
		switch kv.Key {
		case "url.full", "http.url":
			v := "[redacted]"
			if u, err := url.Parse(kv.Value.AsString()); err == nil {
				u.RawQuery, u.Fragment, u.User = "", "", nil
				v = u.String()
			}
			kv = attribute.String(string(kv.Key), v)
		case "url.query", "http.target":
			kv = attribute.String(string(kv.Key), "[redacted]")
		}
		out[i] = kv
	}
	return out
}
