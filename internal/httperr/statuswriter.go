package httperr

import "net/http"

// StatusWriter records the final status written through it, for access
// logs, audit logs and metrics. Informational 1xx headers (100 Continue,
// 103 Early Hints) are passed on but not recorded: the final status follows
// them. A body written without WriteHeader records 200. Unwrap lets
// http.ResponseController (which ReverseProxy uses to flush) reach the
// underlying writer. Not safe for concurrent use, like any ResponseWriter.
type StatusWriter struct {
	http.ResponseWriter
	// Status is the final status; 0 until one is written.
	Status int
}

// WriteHeader records code when it is the first final status.
func (w *StatusWriter) WriteHeader(code int) {
	if w.Status == 0 && code >= 200 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records 200 when no status was written yet.
func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the underlying writer (for http.ResponseController).
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// StatusOr200 is the recorded status, or 200 when nothing was written (a
// handler that writes nothing answers 200).
func (w *StatusWriter) StatusOr200() int {
	if w.Status == 0 {
		return http.StatusOK
	}
	return w.Status
}
