package proxy

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// annotateSpan adds lsproxy's view of the request to the caller's server
// span, when one records (tracing.Handler): the tenant, the request id,
// the caller's key id, lsproxy's error code and whether it was replayed;
// a value that is empty (no caller key, no error) is left out. Never a
// header value, a token or the query.
func annotateSpan(r *http.Request, st *reqState, tenant string) {
	s := trace.SpanFromContext(r.Context())
	if !s.IsRecording() {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 5)
	for _, kv := range [...]struct{ k, v string }{
		{"lsproxy.tenant", tenant}, {"lsproxy.request_id", st.requestID},
		{"lsproxy.caller", st.caller}, {"lsproxy.error", st.errCode},
	} {
		if kv.v != "" { // an empty attribute says nothing and costs bytes
			attrs = append(attrs, attribute.String(kv.k, kv.v))
		}
	}
	s.SetAttributes(append(attrs, attribute.Bool("lsproxy.replayed", st.replayed))...)
}
