package emulator

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// maxAPIBody bounds how much of an API request body is read (and counted).
const maxAPIBody = 32 << 20

var statusPath = regexp.MustCompile(`/status/([0-9]{3})$`)

// apiResponse is the default API answer.
type apiResponse struct {
	Tenant  string `json:"tenant"`
	Host    string `json:"host,omitempty"`
	Path    string `json:"path"`
	Method  string `json:"method"`
	Query   string `json:"query"`
	BodyLen int64  `json:"body_len"`
	TokenFP string `json:"token_fp"` // TokenFingerprint of the bearer token
}

// echoResponse answers /echo-headers.
type echoResponse struct {
	apiResponse
	Headers map[string][]string `json:"headers"`
}

// serveAPI answers every path that is not the authorize or token path. It
// requires exactly one "Authorization: Bearer <token>" with a valid,
// unexpired, unrevoked access token; then:
//
//   - a path containing "/wrong-location": 403 {"error":"forbidden"}
//   - a path ending in "/echo-headers": 200, the request headers (Authorization
//     replaced by the token's fingerprint)
//   - a path ending in "/status/NNN" (200-599): status NNN
//   - anything else: 200 {"tenant","path","method","query","body_len","token_fp"}
func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request) {
	e.c.apiRequests.Add(1)
	// Read the body first: the HTTP/1 server notices a client that went away
	// (and cancels r.Context()) only once the request body is consumed.
	n, _ := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxAPIBody))
	e.mu.Lock()
	delay := e.apiDelay
	e.mu.Unlock()
	if delay > 0 && !sleepCtx(r.Context(), delay) {
		e.c.apiAbandoned.Add(1)
		return
	}
	bad := func(desc string) {
		e.c.apiBadRequests.Add(1)
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": desc})
	}
	if len(r.Header.Values("Authorization")) > 1 {
		bad("more than one Authorization header")
		return
	}
	if q := r.URL.Query(); q.Has("access_token") {
		bad("access tokens are not accepted in the URL")
		return
	}
	unauthorized := func(challenge, desc string) {
		e.c.apiUnauthorized.Add(1)
		w.Header().Set("WWW-Authenticate", challenge)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": desc})
	}
	token, ok := bearerToken(r)
	if !ok {
		unauthorized(`Bearer realm="lightspeed-emulator"`, "bearer token required")
		return
	}
	e.mu.Lock()
	at := e.access[token]
	var tenant, why string
	switch {
	case at == nil:
		why = "unknown access token"
	case at.revoked || at.g.revoked:
		why = "access token revoked"
	case !e.now().Before(at.expires):
		why = "access token expired"
	default:
		tenant = at.g.tenant
		e.apiCount[tenant]++
	}
	e.mu.Unlock()
	if why != "" {
		unauthorized(`Bearer realm="lightspeed-emulator", error="invalid_token", error_description="`+why+`"`, why)
		return
	}

	if e.meterAPI(w, r, tenant) {
		return
	}
	if !e.storeHostOK(r, tenant) {
		e.c.apiForbidden.Add(1)
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "wrong_store", "error_description": "this token belongs to another store's host"})
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == identityPath(e.cfg.Mode) && identityPath(e.cfg.Mode) != "" {
		e.mu.Lock()
		st := e.identityStatus
		e.mu.Unlock()
		if st != 0 {
			writeJSON(w, st, map[string]string{"error": "unavailable", "error_description": "identity endpoint outage (emulator knob)"})
			return
		}
		e.serveIdentity(w, tenant)
		return
	}
	if loc, ok := e.locationOf(r); ok && !e.coversLocation(tenant, loc) {
		e.c.apiForbidden.Add(1)
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden", "error_description": "the token's user has no access to this business location"})
		return
	}
	resp := apiResponse{
		Tenant:  tenant,
		Host:    r.Host,
		Path:    r.URL.Path,
		Method:  r.Method,
		Query:   r.URL.RawQuery,
		BodyLen: n,
		TokenFP: TokenFingerprint(token),
	}
	path := r.URL.Path
	switch {
	case strings.Contains(path, "/wrong-location"):
		e.c.apiForbidden.Add(1)
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "forbidden", "error_description": "the token's user has no access to this location"})
	case strings.HasSuffix(path, "/echo-headers"):
		h := make(map[string][]string, len(r.Header))
		for k, v := range r.Header {
			h[k] = append([]string(nil), v...)
		}
		h["Authorization"] = []string{"Bearer " + resp.TokenFP}
		writeJSON(w, http.StatusOK, echoResponse{apiResponse: resp, Headers: h})
	case statusPath.MatchString(path):
		code, _ := strconv.Atoi(statusPath.FindStringSubmatch(path)[1])
		if code < 200 || code > 599 {
			bad("status must be 200-599")
			return
		}
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lightspeed-emulator", error="invalid_token"`)
		}
		if code == http.StatusNoContent || code == http.StatusNotModified {
			w.WriteHeader(code)
			return
		}
		writeJSON(w, code, map[string]any{"status": code, "tenant": tenant, "path": path})
	default:
		writeJSON(w, http.StatusOK, resp)
	}
}

// bearerToken extracts the token of "Authorization: Bearer <token>" (scheme
// case-insensitive, RFC 7235).
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}
