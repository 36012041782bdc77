package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/lsproxy/lsproxy/auth"
)

// TransportOptions tune the upstream transport. Zero values take defaults.
type TransportOptions struct {
	// ResponseHeaderTimeout bounds the wait for the upstream's answer;
	// default 30s.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerHost keeps that many warm connections to the one
	// upstream host; default 512 (ample for many concurrent requests).
	MaxIdleConnsPerHost int
}

// NewTransport returns an http.Transport tuned for many concurrent requests
// to one upstream host. TLS verification is always on.
func NewTransport(o TransportOptions) *http.Transport {
	if o.ResponseHeaderTimeout <= 0 {
		o.ResponseHeaderTimeout = 30 * time.Second
	}
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = 512
	}
	return &http.Transport{
		Proxy: nil, // tokens go to the upstream directly, never via an environment proxy
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          o.MaxIdleConnsPerHost * 2,
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
	}
}

// tokenTransport injects the tenant's bearer token and handles one replay
// after an upstream 401 (SPEC §3 step 8).
type tokenTransport struct {
	h    *Handler
	base http.RoundTripper
}

var _ http.RoundTripper = (*tokenTransport)(nil)

// errNoState means the request did not come through Handler.ServeHTTP.
var errNoState = errors.New("proxy: request without tenant state")

// errExpiredAtUpstream: the upstream rejected a token at the edge of its
// expiry and no newer token could be had.
var errExpiredAtUpstream = errors.New("proxy: upstream rejected a token at its expiry; no newer token available")

// expiryEdge: an upstream 401 for a token this close to its expiry counts as
// expiry. lsproxy measures expiry from the token response's arrival, the
// provider from its issue, and a request takes time to arrive, so a token
// still valid here may have expired there; in normal operation tokens are
// refreshed refresh_before ahead and never get this close.
const expiryEdge = time.Second

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st, _ := req.Context().Value(ctxKey{}).(*reqState)
	if st == nil {
		return nil, errNoState
	}
	ctx := req.Context()
	tok, err := t.h.Tokens.Token(ctx, st.tenant)
	if err != nil {
		return nil, err
	}
	if err := t.target(req, st, tok); err != nil {
		return nil, err
	}
	body, replayable, err := t.keepBody(req)
	if err != nil {
		return nil, err
	}
	req.Header["Authorization"] = []string{tok.Authorization()} // canonical key: no Set's canonicalization
	start := t.h.Now()
	resp, err := t.base.RoundTrip(req)
	st.upstreamTime = t.h.Now().Sub(start)
	t.h.observe(st.tenant, start, resp)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if !replayable {
		// The body streamed and cannot be sent twice: the caller gets the
		// 401, and the token is recovered meanwhile so that its retry works.
		go func() { _, _ = t.h.Tokens.Recover(context.WithoutCancel(ctx), st.tenant, tok.AccessToken) }()
		return resp, nil
	}

	// 401: the token may have been replaced by another replica's refresh
	// (some providers revoke the old token at once) or revoked. Ask for
	// the current one and replay once; never flag here.
	next, err := t.h.Tokens.Recover(ctx, st.tenant, tok.AccessToken)
	if err != nil || next.AccessToken == tok.AccessToken {
		if err == nil && !next.Expiry.IsZero() && !t.h.Now().Add(expiryEdge).Before(next.Expiry) {
			// The token expired on the way and no newer one can be had
			// (token endpoint down): that is 503 token_unavailable, not a
			// 401 the caller would take for a credential problem.
			drain(resp)
			return nil, &auth.UnavailableError{Tenant: st.tenant, RetryAfter: time.Second, Err: errExpiredAtUpstream}
		}
		if err == nil {
			return resp, nil // no other token to try: pass the 401 through
		}
		drain(resp)
		return nil, err
	}
	drain(resp)
	retry := req.Clone(ctx)
	if body != nil {
		retry.Body = io.NopCloser(bytes.NewReader(body))
	}
	if next.DomainPrefix != tok.DomainPrefix {
		// Re-authorized for another store meanwhile: its token goes only
		// to its own host.
		if err := t.target(retry, st, next); err != nil {
			return nil, err
		}
	}
	retry.Header["Authorization"] = []string{next.Authorization()}
	st.replayed = true
	start = t.h.Now()
	resp, err = t.base.RoundTrip(retry)
	st.upstreamTime += t.h.Now().Sub(start)
	t.h.observe(st.tenant, start, resp)
	return resp, err
}

// target points req at the tenant's own host when the upstream is a
// template: the host comes from the same record as the token, so a token
// never travels to another store's host. A fixed upstream is left as
// rewrite set it.
func (t *tokenTransport) target(req *http.Request, st *reqState, tok auth.Token) error {
	if !t.h.up.Templated() {
		return nil
	}
	u, err := t.h.up.Resolve(tok.DomainPrefix)
	if err != nil || st.in == nil {
		return ErrNoUpstreamHost
	}
	in := *st.in
	req.URL = &in
	(&httputil.ProxyRequest{Out: req}).SetURL(u)
	return nil
}

// keepBody buffers a request body up to MaxReplayBody so it can be sent
// twice. A larger body streams and the request is not replayable.
func (t *tokenTransport) keepBody(req *http.Request) ([]byte, bool, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, true, nil
	}
	if req.ContentLength > t.h.MaxReplayBody {
		return nil, false, nil
	}
	buf, err := io.ReadAll(io.LimitReader(req.Body, t.h.MaxReplayBody+1))
	if err != nil {
		return nil, false, err
	}
	if int64(len(buf)) > t.h.MaxReplayBody {
		req.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body}
		return nil, false, nil
	}
	_ = req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(buf))
	return buf, true, nil
}

// drain discards a little of a response so its connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
