package ratelimit

import (
	"net/http"
	"time"
)

// TokenTransport paces requests to a token endpoint under the same rules as
// API traffic: a host that reported a limit (X-Series' token endpoint has
// its own, per its authorization docs) or answered 429 is governed as the
// pseudo-tenant "token@<host>", shared by every replica, so a storm of due
// refreshes (the background refresher, a restart) is spread instead of
// being refused. A token request waits until its context's deadline (the
// token timeout) rather than Wait: refusing it would only fail the refresh.
// A request is paced before it is written, so a single-use refresh token is
// never spent by pacing.
type TokenTransport struct {
	Governor *Governor
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
}

var _ http.RoundTripper = (*TokenTransport)(nil)

// tokenWait bounds the pacing wait of a token request without a deadline.
const tokenWait = 10 * time.Second

// RoundTrip implements http.RoundTripper.
func (t *TokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	key := "token@" + req.URL.Host
	wait := tokenWait
	if dl, ok := req.Context().Deadline(); ok {
		wait = time.Until(dl) - 100*time.Millisecond
	}
	if err := t.Governor.AdmitWait(req.Context(), key, 1, "", wait); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	sent := t.Governor.now()
	resp, err := base.RoundTrip(req)
	if err == nil {
		t.Governor.ObserveSent(key, sent, resp.StatusCode, resp.Header)
	}
	return resp, err
}
