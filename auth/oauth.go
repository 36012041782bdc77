package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// Grant is the result of a successful token request.
type Grant struct {
	AccessToken   string
	RefreshToken  string
	Expiry        time.Time
	RefreshExpiry time.Time // zero when the provider did not say
	Scope         string
}

// Refresher performs one refresh-token grant for a tenant. Implementations
// must be safe for concurrent use and must not retry a request that may have
// reached the provider: a refresh token is single-use.
//
// Errors: ErrInvalidGrant (via *EndpointError) when the provider rejected the
// refresh token; ErrOutcomeUnknown when the request was sent but no answer
// arrived; anything else is transient.
type Refresher interface {
	Refresh(ctx context.Context, t *store.Tenant) (*Grant, error)
}

// Pacer is implemented by a Refresher whose token endpoint may have a rate
// budget (an OAuthClient whose transport is a TokenPacer). The manager calls
// Pace before it marks a refresh and before token_timeout starts (SPEC §3
// rule 18). Safe for concurrent use.
type Pacer interface {
	// Pace waits, at most wait, until a token request for t may be sent,
	// and returns the context to send it with (the request is booked:
	// the transport does not pace it again).
	//
	// Errors: one with a RetryAfterSeconds() int method when the budget
	// does not allow the request within wait; ctx's error.
	Pace(ctx context.Context, t *store.Tenant, wait time.Duration) (context.Context, error)
}

// TokenPacer is implemented by a token transport that paces requests per
// token host (ratelimit.TokenTransport). Safe for concurrent use.
type TokenPacer interface {
	// PaceToken waits, at most wait, until a request to host may be sent
	// and returns the context that marks it as paced. Errors as for
	// Pacer.Pace.
	PaceToken(ctx context.Context, host string, wait time.Duration) (context.Context, error)
}

// OAuthClient talks to a token endpoint with golang.org/x/oauth2.
type OAuthClient struct {
	ClientID     string
	ClientSecret string
	// TokenURL may contain {domain_prefix}, filled from the tenant's Extra.
	TokenURL string
	// AuthStyle must be explicit: oauth2.AuthStyleAutoDetect retries a
	// failed request with the other style, which replays a single-use
	// refresh token.
	AuthStyle oauth2.AuthStyle
	Scopes    []string
	// HTTPClient sends token requests; nil uses a client with Timeout over
	// a shared NewTokenTransport.
	HTTPClient *http.Client
	// Timeout bounds one token request (hard timeout). 0 means
	// DefaultTokenTimeout (10s).
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var (
	_ Refresher = (*OAuthClient)(nil)
	_ Pacer     = (*OAuthClient)(nil)
)

// Pace implements Pacer: it waits on the HTTP client's transport when that
// is a TokenPacer, for the host of t's token URL; otherwise it returns ctx.
func (c *OAuthClient) Pace(ctx context.Context, t *store.Tenant, wait time.Duration) (context.Context, error) {
	if c.HTTPClient == nil {
		return ctx, nil
	}
	p, ok := c.HTTPClient.Transport.(TokenPacer)
	if !ok {
		return ctx, nil
	}
	cfg, err := c.config(t, "")
	if err != nil {
		return ctx, nil // Refresh reports it
	}
	u, err := url.Parse(cfg.Endpoint.TokenURL)
	if err != nil {
		return ctx, nil
	}
	return p.PaceToken(ctx, u.Host, wait)
}

// AuthStyleFor maps a preset's "basic"/"body" to an explicit oauth2 style.
func AuthStyleFor(clientAuth string) (oauth2.AuthStyle, error) {
	switch clientAuth {
	case "basic":
		return oauth2.AuthStyleInHeader, nil
	case "body":
		return oauth2.AuthStyleInParams, nil
	}
	return 0, fmt.Errorf("auth: client auth must be basic or body, got %q", clientAuth)
}

func (c *OAuthClient) config(t *store.Tenant, redirectURL string) (*oauth2.Config, error) {
	if c.AuthStyle == oauth2.AuthStyleAutoDetect {
		return nil, errors.New("auth: AuthStyle must be set explicitly")
	}
	tokenURL := c.TokenURL
	if strings.Contains(tokenURL, "{domain_prefix}") {
		dp := ""
		if t != nil {
			dp = t.Extra["domain_prefix"]
		}
		if !ValidDomainPrefix(dp) {
			return nil, errors.New("auth: tenant has no valid domain_prefix for the token URL")
		}
		tokenURL = strings.ReplaceAll(tokenURL, "{domain_prefix}", dp)
	}
	return &oauth2.Config{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: c.AuthStyle},
		RedirectURL:  redirectURL,
		Scopes:       c.Scopes,
	}, nil
}

// ValidDomainPrefix reports whether s is a usable X-Series domain_prefix
// (one host label). It keeps a merchant-supplied host label from steering the
// token request (and the client secret) to another host.
func ValidDomainPrefix(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return s[0] != '-' && s[len(s)-1] != '-' // a DNS label neither starts nor ends with a hyphen
}

func (c *OAuthClient) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *OAuthClient) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTokenTimeout
}

// Refresh sends one refresh_token grant. See Refresher for errors.
func (c *OAuthClient) Refresh(ctx context.Context, t *store.Tenant) (*Grant, error) {
	if t.RefreshToken == "" {
		return nil, &EndpointError{Code: "invalid_grant"}
	}
	cfg, err := c.config(t, "")
	if err != nil {
		return nil, err
	}
	return c.do(ctx, func(ctx context.Context) (*oauth2.Token, error) {
		// An already-expired token makes the source refresh at once.
		src := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: t.RefreshToken, Expiry: time.Unix(1, 0)})
		return src.Token()
	})
}

// Exchange trades an authorization code for tokens. verifier is the PKCE
// code verifier ("" when PKCE is off); t supplies Extra (domain_prefix).
// Errors as for Refresh.
func (c *OAuthClient) Exchange(ctx context.Context, t *store.Tenant, code, verifier, redirectURL string) (*Grant, error) {
	cfg, err := c.config(t, redirectURL)
	if err != nil {
		return nil, err
	}
	// Pace before the exchange's own timeout starts (rule 18).
	ctx, err = c.Pace(ctx, t, c.timeout())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPaced, err)
	}
	var opts []oauth2.AuthCodeOption
	if verifier != "" {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}
	return c.do(ctx, func(ctx context.Context) (*oauth2.Token, error) {
		return cfg.Exchange(ctx, code, opts...)
	})
}

func (c *OAuthClient) do(ctx context.Context, fn func(context.Context) (*oauth2.Token, error)) (*Grant, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: c.timeout(), Transport: defaultTokenTransport()}
	}
	// Never follow a redirect from the token endpoint: it would carry the
	// client secret and the refresh token elsewhere.
	noRedirect := *client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &noRedirect)

	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Store(true) },
	})
	start := c.now()
	tok, err := fn(ctx)
	if err != nil {
		return nil, classify(err, wrote.Load())
	}
	if tok.AccessToken == "" {
		// The grant may have rotated the refresh token: treat as lost.
		return nil, fmt.Errorf("%w: answer without an access_token", ErrOutcomeUnknown)
	}
	g := &Grant{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry}
	// Count the lifetime from when the request was sent, not when the
	// answer arrived (x/oauth2's choice): the provider's clock started first.
	if d := extraSeconds(tok.Extra("expires_in")); d > 0 {
		g.Expiry = start.Add(d)
	}
	if g.Expiry.IsZero() {
		g.Expiry = start.Add(time.Hour) // providers that omit expires_in: assume the common 1 h
	}
	if s, ok := tok.Extra("scope").(string); ok {
		g.Scope = s
	}
	if d := extraSeconds(tok.Extra("refresh_expires_in")); d > 0 {
		g.RefreshExpiry = start.Add(d)
	}
	return g, nil
}

// maxLifetime bounds a lifetime a provider states; anything longer is
// treated as unstated rather than overflowing time.Duration.
const maxLifetime = 100 * 365 * 24 * time.Hour

// extraSeconds reads a lifetime in whole seconds from x/oauth2's
// Token.Extra: a JSON body gives float64 (or a string), a form-encoded body
// gives int64 (float64 with a dot, the raw string otherwise). Anything
// else, not positive or beyond maxLifetime, is 0 (unstated).
func extraSeconds(v any) time.Duration {
	var n int64
	switch x := v.(type) {
	case float64:
		if !(x > 0) || x > maxLifetime.Seconds() {
			return 0
		}
		n = int64(x)
	case int64:
		n = x
	case string:
		i, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return 0
		}
		n = i
	default:
		return 0
	}
	if n <= 0 || n > int64(maxLifetime/time.Second) {
		return 0
	}
	return time.Duration(n) * time.Second
}

// classify turns an oauth2 error into one of ours without keeping the
// response body (it could echo a secret).
func classify(err error, wrote bool) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		ee := &EndpointError{Code: re.ErrorCode}
		if re.Response != nil {
			ee.Status = re.Response.StatusCode
		}
		return ee
	}
	if errors.Is(err, context.Canceled) && !wrote {
		return context.Canceled
	}
	var paced interface{ RetryAfterSeconds() int }
	if !wrote && errors.As(err, &paced) {
		return fmt.Errorf("%w (retry after %ds)", ErrPaced, paced.RetryAfterSeconds())
	}
	if wrote {
		return fmt.Errorf("%w: %s", ErrOutcomeUnknown, httperr.NetReason(err))
	}
	return fmt.Errorf("auth: token endpoint unreachable: %s", httperr.NetReason(err))
}
