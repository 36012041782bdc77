package onboard

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/store"
)

// ErrMisconfigured: the Onboarder's fields are unusable (no store, no
// client, a redirect URL that is not absolute, a link key shorter than 32
// bytes). Returned (wrapped) by AuthorizeLink; the HTTP handlers answer 503.
var ErrMisconfigured = errors.New("onboard: onboarding is misconfigured")

// Defaults for Onboarder fields left zero; package config's defaults are
// these.
const (
	DefaultLinkTTL  = 7 * 24 * time.Hour
	DefaultStateTTL = time.Hour
)

// AwaitingFirstAuthorization is the Reason of the placeholder record that
// AuthorizeLink creates for a tenant that does not exist yet.
const AwaitingFirstAuthorization = store.ReasonAwaitingFirstAuthorization

const (
	stateKeyPrefix = "state:"
	stateBytes     = 32 // 256 bits of randomness
	// linkMACLabel separates authorize-link MACs from any other use of the
	// key.
	linkMACLabel = "lsproxy/authorize-link/v1"
	// maxCallbackValue bounds code and provider parameters we accept.
	maxCallbackValue = 4096
	// casAttempts bounds the compare-and-set retries of the final write.
	casAttempts = 8
	// storeTimeout bounds store calls made after the code exchange, which
	// run detached from the browser's request (see ServeCallback).
	storeTimeout = 10 * time.Second
)

// Onboarder runs the OAuth authorization-code flow that connects a merchant
// to a tenant. It implements control.Onboarding:
//
//   - AuthorizeLink (admin API) returns a signed, reusable link to
//     /oauth/start; it stores nothing but a placeholder tenant record when the
//     tenant does not exist yet.
//   - ServeStart (the merchant opens the link) verifies the link, stores a
//     single-use state bound to the tenant (with the PKCE verifier) in the
//     shared store, and redirects to the provider's authorize endpoint. Only
//     a link signed with LinkKey can create a state.
//   - ServeCallback (the provider's redirect) takes the state once, exchanges
//     the code at once and writes the tokens onto the tenant record with
//     compare-and-set. Because state lives in the store, any replica can
//     finish a flow that another replica started.
//
// Failures answer a plain HTML page with a 4xx (or 502/503) status that says
// what to do; no page, log line or error ever contains a code, state,
// verifier or token value.
//
// Set the fields, then use it; do not change them afterwards. All methods
// are safe for concurrent use.
type Onboarder struct {
	// Store holds tenants and the one-time states. Required.
	Store store.Store
	// Client exchanges codes. Required; its ClientID is also sent to the
	// authorize endpoint.
	Client *auth.OAuthClient
	// Preset supplies the provider name recorded on tenants and the callback
	// parameters to keep (CallbackParams, e.g. x-series domain_prefix).
	Preset auth.Preset
	// AuthorizeURL is the provider's authorize endpoint. Required.
	AuthorizeURL string
	// RedirectURL is the public URL of the control listener's
	// /oauth/callback, exactly as registered with the provider. The start
	// URL of links is derived from it by replacing the last path element
	// with "start". Required.
	RedirectURL string
	// Scopes requested at authorize.
	Scopes []string
	// PKCE sends an S256 code challenge and keeps the verifier server-side.
	PKCE bool
	// LinkKey is the HMAC-SHA256 key that signs authorize links; at least 32
	// bytes. Every replica must have the same key.
	LinkKey []byte
	// LinkTTL is how long an authorize link works; 0 = DefaultLinkTTL (7 days).
	LinkTTL time.Duration
	// StateTTL is how long the merchant has between opening the link and the
	// provider's redirect; 0 = DefaultStateTTL (1 h).
	StateTTL time.Duration
	// SuccessURL, when set, is where the browser is redirected after a
	// successful authorization; "" = a built-in success page.
	SuccessURL string
	// Logger receives onboarding events (never a code, state or token);
	// nil = no logging.
	Logger *zap.Logger
	// Identifier, when set, asks the provider after every code exchange
	// which merchant account the grant belongs to (auth.Preset.Identity):
	// the account and K-Series locations are stored on the tenant, and a
	// re-authorization that identifies another account is refused (409)
	// unless the link was made with RebindLink. nil = no identity check
	// beyond the x-series domain_prefix.
	Identifier *auth.Identifier
	// Locations is the store's location index, updated when a grant's
	// K-Series locations change; nil = Store's, when it implements
	// store.LocationIndex.
	Locations store.LocationIndex
	// OnActivated is called, synchronously and after the write, when a
	// flagged tenant (reauthorization_required) becomes active again. It
	// must not block. nil = nothing. It is not called when an already
	// active tenant is re-authorized, nor for a first authorization.
	OnActivated func(tenant string)
	// OnConnected is called, synchronously and after the write, when a
	// tenant is authorized for the first time (it was pending). It must
	// not block. nil = nothing.
	OnConnected func(tenant string)
	// Invalidate is called synchronously after every write the callback
	// makes, before the merchant's page is answered, to drop the handling
	// replica's cached token of the tenant (auth.Manager.Invalidate).
	// nil = nothing.
	Invalidate func(tenant string)
	// Verifier retries identifications that could not be completed at the
	// callback (kicked after such a write); nil = the record is marked
	// and left to whichever replica's Verifier sweeps it.
	Verifier *Verifier
	// Now is the clock for link and state expiry and record timestamps;
	// nil = time.Now.
	Now func() time.Time
	// RefreshWait bounds how long a callback waits for a refresh of its
	// tenant in flight to end before it answers 409 refresh_in_flight
	// (SPEC §3 rule 19). 0: 10 s (a refresh's token_timeout by default).
	RefreshWait time.Duration

	once     sync.Once
	initErr  error
	startURL string
	log      *zap.Logger
}

func (o *Onboarder) init() error {
	o.once.Do(func() {
		o.log = o.Logger
		if o.log == nil {
			o.log = zap.NewNop()
		}
		var problems []string
		if o.Store == nil {
			problems = append(problems, "no store")
		}
		if o.Client == nil || o.Client.ClientID == "" {
			problems = append(problems, "no OAuth client id")
		}
		if len(o.LinkKey) < 32 {
			problems = append(problems, "link key shorter than 32 bytes")
		}
		if u, err := url.Parse(o.AuthorizeURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			problems = append(problems, "authorize URL is not an absolute http(s) URL")
		}
		start, err := startURLFor(o.RedirectURL)
		if err != nil {
			problems = append(problems, err.Error())
		}
		o.startURL = start
		if len(problems) > 0 {
			o.initErr = fmt.Errorf("%w: %s", ErrMisconfigured, strings.Join(problems, "; "))
		}
	})
	return o.initErr
}

// startURLFor derives the link's start URL from the redirect URL:
// https://h/p/oauth/callback → https://h/p/oauth/start.
func startURLFor(redirect string) (string, error) {
	u, err := url.Parse(redirect)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" {
		return "", errors.New("redirect URL is not an absolute http(s) URL without fragment")
	}
	dir, last := path.Split(u.Path)
	if last == "" {
		return "", errors.New("redirect URL path must end in /oauth/callback")
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: dir + "start"}).String(), nil
}

func (o *Onboarder) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Onboarder) linkTTL() time.Duration {
	if o.LinkTTL > 0 {
		return o.LinkTTL
	}
	return DefaultLinkTTL
}

func (o *Onboarder) stateTTL() time.Duration {
	if o.StateTTL > 0 {
		return o.StateTTL
	}
	return DefaultStateTTL
}
