package emulator

import (
	"net/http"
	"strconv"
	"time"
)

// ControlHandler exposes the emulator's knobs over HTTP, for driving a
// standalone emulator (cmd/lsemulator) from scripts. Serve it on its own
// listener: it has no authentication, and /grant returns live tokens.
//
//	GET  /stats                       Stats as JSON
//	GET  /refresh-count?tenant=T      {"tenant":T,"refresh_count":n,"api_count":n,"active_grants":n}
//	POST /approve?tenant=T            Approve(T) (empty T withdraws)
//	POST /deny                        Deny()
//	POST /revoke?tenant=T             Revoke(T)
//	POST /grant?tenant=T              IssueGrant(T), the Grant as JSON
//	POST /token-outage?status=N       SetTokenOutage(N), N 0 or 200-599
//	POST /token-delay?d=DURATION      SetTokenDelay(d)
//	POST /token-hold?d=DURATION       SetTokenHold(d)
//	POST /token-drop?n=N              SetTokenDropAfterGrant(N)
//	POST /api-delay?d=DURATION        SetAPIDelay(d)
//	POST /identity-status?status=N    SetIdentityStatus(N), N 0 or 200-599
//	POST /token-brownout?min=D&max=D&every=D&for=D
//	                                  SetTokenBrownout (absent = 0; all 0 ends it)
//	POST /rate-limit?bucket=N&drip=R&burst=N&window_limit=N&window=D   SetRateLimit
//	POST /throttle?tenant=T&d=DURATION  Throttle(T, now+d)
//
// Bad input answers 400; a wrong method 405.
func (e *Emulator) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Stats())
	})
	mux.HandleFunc("GET /refresh-count", func(w http.ResponseWriter, r *http.Request) {
		t := r.URL.Query().Get("tenant")
		writeJSON(w, http.StatusOK, map[string]any{
			"tenant": t, "refresh_count": e.RefreshCount(t), "api_count": e.APICount(t), "active_grants": e.ActiveGrants(t),
		})
	})
	mux.HandleFunc("POST /approve", func(w http.ResponseWriter, r *http.Request) {
		e.Approve(r.URL.Query().Get("tenant"))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /deny", func(w http.ResponseWriter, r *http.Request) {
		e.Deny()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /revoke", func(w http.ResponseWriter, r *http.Request) {
		t := r.URL.Query().Get("tenant")
		if t == "" {
			http.Error(w, "tenant required", http.StatusBadRequest)
			return
		}
		e.Revoke(t)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /grant", func(w http.ResponseWriter, r *http.Request) {
		t := r.URL.Query().Get("tenant")
		if t == "" {
			http.Error(w, "tenant required", http.StatusBadRequest)
			return
		}
		g := e.IssueGrant(t)
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, map[string]any{
			"access_token": g.AccessToken, "refresh_token": g.RefreshToken,
			"expires_in": g.ExpiresIn, "refresh_expires_in": g.RefreshExpiresIn, "scope": g.Scope,
		})
	})
	intKnob := func(param string, set func(int)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			n, err := strconv.Atoi(r.URL.Query().Get(param))
			if err != nil || n < 0 {
				http.Error(w, param+" must be a non-negative integer", http.StatusBadRequest)
				return
			}
			set(n)
			w.WriteHeader(http.StatusNoContent)
		}
	}
	durKnob := func(set func(time.Duration)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			d, err := time.ParseDuration(r.URL.Query().Get("d"))
			if err != nil || d < 0 {
				http.Error(w, "d must be a non-negative duration such as 250ms", http.StatusBadRequest)
				return
			}
			set(d)
			w.WriteHeader(http.StatusNoContent)
		}
	}
	mux.HandleFunc("POST /token-outage", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("status"))
		if err != nil || n != 0 && (n < 200 || n > 599) {
			http.Error(w, "status must be 0 or 200-599", http.StatusBadRequest)
			return
		}
		e.SetTokenOutage(n)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /token-drop", intKnob("n", e.SetTokenDropAfterGrant))
	mux.HandleFunc("POST /identity-status", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("status"))
		if err != nil || n != 0 && (n < 200 || n > 599) {
			http.Error(w, "status must be 0 or 200-599", http.StatusBadRequest)
			return
		}
		e.SetIdentityStatus(n)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /token-delay", durKnob(e.SetTokenDelay))
	mux.HandleFunc("POST /token-hold", durKnob(e.SetTokenHold))
	mux.HandleFunc("POST /api-delay", durKnob(e.SetAPIDelay))
	mux.HandleFunc("POST /token-brownout", func(w http.ResponseWriter, r *http.Request) {
		var b Brownout
		for _, f := range []struct {
			param string
			dst   *time.Duration
		}{{"min", &b.MinLatency}, {"max", &b.MaxLatency}, {"every", &b.BurstEvery}, {"for", &b.BurstFor}} {
			v := r.URL.Query().Get(f.param)
			if v == "" {
				continue
			}
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				http.Error(w, f.param+" must be a non-negative duration such as 250ms", http.StatusBadRequest)
				return
			}
			*f.dst = d
		}
		e.SetTokenBrownout(b)
		w.WriteHeader(http.StatusNoContent)
	})
	e.rateLimitControl(mux)
	return mux
}
