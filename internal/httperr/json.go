package httperr

import (
	"encoding/json"
	"net/http"
)

// WriteJSON answers v as JSON with status. Every JSON answer of lsproxy
// (admin API results and errors alike) goes through it; it is never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// PageHeaders sets the headers every HTML page of lsproxy carries (the
// onboarding pages and the console): never cached, never framed, no
// referrer, no MIME sniffing, and csp as the Content-Security-Policy.
func PageHeaders(h http.Header, csp string) {
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", csp)
}
