package ratelimit

import (
	"context"
	"net/http"
	"time"

	"github.com/lsproxy/lsproxy/internal/defect"
)

// TokenTransport paces requests to a token endpoint (SPEC §3 rule 18). A
// host that answered 429 is governed as the pseudo-tenant "token@<host>",
// shared by every replica: per token host, so for X-Series per store
// domain, and one host's 429 never holds another's refreshes. It learns
// only from that endpoint's own 429 and its Retry-After (capped at the
// governor's MaxBlock), never from window or bucket headers, which a token
// endpoint may copy from the API's budget.
//
// Waiting happens in PaceToken, which the caller runs before the request's
// own timeout starts (auth.OAuthClient.Pace, called by the token manager
// before it marks a refresh): a refresh token is never sent with less than
// its full token_timeout. A request that was not paced that way is refused
// at once when the host is blocked, never held inside its timeout. A
// request is paced before it is written, so a single-use refresh token is
// never spent by pacing.
type TokenTransport struct {
	Governor *Governor
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
}

var _ http.RoundTripper = (*TokenTransport)(nil)

// pacedKey marks a request context whose budget PaceToken booked; the value
// is the host.
type pacedKey struct{}

// PaceToken waits, at most wait, until a token request to host fits its
// budget and books it; it returns ctx marked as paced for that host. It
// returns a *RefusedError when the host stays blocked past wait, or ctx's
// error.
func (t *TokenTransport) PaceToken(ctx context.Context, host string, wait time.Duration) (context.Context, error) {
	if err := t.Governor.AdmitWait(ctx, tokenKey(host), 1, "", wait); err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, pacedKey{}, host), nil
}

func tokenKey(host string) string { return "token@" + host }

// legacyTokenWait bounds the in-timeout wait of the PacingInsideTimeout
// defect (tests only) for a request without a deadline.
const legacyTokenWait = 10 * time.Second

// RoundTrip implements http.RoundTripper.
func (t *TokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	key := tokenKey(req.URL.Host)
	if paced, _ := req.Context().Value(pacedKey{}).(string); paced != req.URL.Host {
		wait := time.Duration(0) // not paced before its timeout: never wait inside it
		if defect.On(defect.PacingInsideTimeout) {
			wait = legacyTokenWait
			if dl, ok := req.Context().Deadline(); ok {
				wait = time.Until(dl) - 100*time.Millisecond
			}
		}
		if err := t.Governor.AdmitWait(req.Context(), key, 1, "", wait); err != nil {
			if req.Body != nil {
				_ = req.Body.Close()
			}
			return nil, err
		}
	}
	sent := t.Governor.now()
	resp, err := base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		// Only the endpoint's own 429 and its Retry-After teach a block.
		h := http.Header{}
		if v := resp.Header.Values(HeaderRetryAfter); len(v) > 0 {
			h[HeaderRetryAfter] = v[:1]
		}
		t.Governor.ObserveSent(key, sent, resp.StatusCode, h)
	}
	return resp, err
}
