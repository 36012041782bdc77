package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// With Tracing the caller's server span gets lsproxy's attributes (never a
// token); without, the span is left alone.
func TestSpanAnnotatedOnlyWithTracing(t *testing.T) {
	for _, on := range []bool{true, false} {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		hn := newHarness(t, func(h *Handler) { h.Tracing = on })
		h := hn.proxy.Config.Handler
		req := httptest.NewRequest(http.MethodGet, "/items", nil)
		req.Header.Set("X-Tenant", "acme")
		ctx, span := tp.Tracer("test").Start(req.Context(), "proxy GET", trace.WithSpanKind(trace.SpanKindServer))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req.WithContext(ctx))
		span.End()
		if w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		spans := rec.Ended()
		if len(spans) != 1 {
			t.Fatalf("%d spans", len(spans))
		}
		attrs := map[string]string{}
		for _, kv := range spans[0].Attributes() {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if on && (attrs["lsproxy.tenant"] != "acme" || attrs["lsproxy.request_id"] == "" || attrs["lsproxy.replayed"] != "false") {
			t.Fatalf("tracing on: attributes %v", attrs)
		}
		if !on && len(attrs) != 0 {
			t.Fatalf("tracing off: attributes %v", attrs)
		}
		for k, v := range attrs {
			if v == "" {
				t.Errorf("attribute %s is sent empty (no caller key, no error)", k)
			}
			if v == "tok-acme" {
				t.Fatalf("attribute %s carries the token", k)
			}
		}
	}
}
