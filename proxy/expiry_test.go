package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/httperr"
)

// nearExpiry hands out fakeTokens' tokens with an expiry left from now.
type nearExpiry struct {
	*fakeTokens
	left time.Duration
}

func (n *nearExpiry) Token(ctx context.Context, tenant string) (auth.Token, error) {
	tok, err := n.fakeTokens.Token(ctx, tenant)
	tok.Expiry = time.Now().Add(n.left)
	return tok, err
}

func (n *nearExpiry) Recover(ctx context.Context, tenant, used string) (auth.Token, error) {
	tok, err := n.fakeTokens.Recover(ctx, tenant, used)
	tok.Expiry = time.Now().Add(n.left)
	return tok, err
}

// An upstream 401 for a token at the edge of its expiry, with no newer token
// to be had (token endpoint down), is 503 token_unavailable, not a 401 the
// caller would take for a credential problem.
func TestUpstream401AtExpiryIsTokenUnavailable(t *testing.T) {
	for _, c := range []struct {
		left       time.Duration
		wantStatus int
		wantCode   string
	}{
		{-50 * time.Millisecond, 503, httperr.TokenUnavailable.Code},
		{200 * time.Millisecond, 503, httperr.TokenUnavailable.Code},
		{time.Minute, 401, ""}, // far from expiry: the upstream's 401 passes through
	} {
		var ft *fakeTokens
		hn := newHarness(t, func(h *Handler) {
			ft = h.Tokens.(*fakeTokens)
			h.Tokens = &nearExpiry{fakeTokens: ft, left: c.left}
		})
		ft.tokens["acme"] = "tok-stale" // unknown upstream: 401, and Recover keeps it
		resp, body := hn.do(t, "GET", "/x", map[string]string{"X-Tenant": "acme"}, "")
		if resp.StatusCode != c.wantStatus || resp.Header.Get("X-Lsproxy-Error") != c.wantCode {
			t.Errorf("%v left: %d %q %s", c.left, resp.StatusCode, resp.Header.Get("X-Lsproxy-Error"), body)
		}
		if c.wantStatus == 503 && resp.Header.Get("Retry-After") == "" {
			t.Errorf("%v left: no Retry-After", c.left)
		}
		if n := len(hn.up.requests()); n != 1 {
			t.Errorf("%v left: %d upstream requests, want 1", c.left, n)
		}
	}
}
