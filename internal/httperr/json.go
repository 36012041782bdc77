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
