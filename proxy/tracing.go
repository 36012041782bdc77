package proxy

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// annotateSpan adds lsproxy's view of the request to the caller's server
// span, when one records (tracing.Handler): the tenant, the request id,
// the caller's key id, lsproxy's error code and whether it was replayed.
// Never a header value, a token or the query.
func annotateSpan(r *http.Request, st *reqState, tenant string) {
	s := trace.SpanFromContext(r.Context())
	if !s.IsRecording() {
		return
	}
	s.SetAttributes(
		attribute.String("lsproxy.tenant", tenant),
		attribute.String("lsproxy.request_id", st.requestID),
		attribute.String("lsproxy.caller", st.caller),
		attribute.String("lsproxy.error", st.errCode),
		attribute.Bool("lsproxy.replayed", st.replayed),
	)
}
