package httperr

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
)

// RequestIDHeader correlates a request across the caller, lsproxy's log
// and error body, and the upstream. Both listeners set it on every
// response; Write quotes it in the body as request_id.
const RequestIDHeader = "X-Request-Id"

// requestIDRE: one short token of the characters UUIDs and the usual trace
// ids use.
var requestIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)

// RequestID returns the caller's X-Request-Id when it is exactly one value
// matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$, else a new random one:
// anything else could forge log lines or carry a secret into the logs.
func RequestID(r *http.Request) string {
	if v := r.Header[RequestIDHeader]; len(v) == 1 && len(v[0]) <= 64 && requestIDRE.MatchString(v[0]) {
		return v[0]
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
