package httperr

import (
	"encoding/hex"
	"math/rand/v2"
	"net/http"
)

// RequestIDHeader correlates a request across the caller, lsproxy's log
// and error body, and the upstream. Both listeners set it on every
// response; Write quotes it in the body as request_id.
const RequestIDHeader = "X-Request-Id"

// validRequestID: one short token of the characters UUIDs and the usual
// trace ids use, ^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$ (a loop: this runs on
// every request).
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == ':' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// RequestID returns the caller's X-Request-Id when it is exactly one value
// matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$, else a new random one:
// anything else could forge log lines or carry a secret into the logs.
func RequestID(r *http.Request) string {
	if v := r.Header[RequestIDHeader]; len(v) == 1 && validRequestID(v[0]) {
		return v[0]
	}
	// 64 random bits: unique enough to correlate, and a request id is no
	// secret, so math/rand's per-thread generator (no system call) will do.
	var b [8]byte
	u := rand.Uint64()
	for i := range b {
		b[i] = byte(u >> (8 * i))
	}
	var out [16]byte
	hex.Encode(out[:], b[:])
	return string(out[:])
}
