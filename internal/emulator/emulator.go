package emulator

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Mode selects which Lightspeed service the emulator plays.
type Mode string

// Modes, named like lsproxy's presets (SPEC §4).
const (
	ModeKSeries   Mode = "k-series"
	ModeKSeriesV1 Mode = "k-series-v1"
	ModeLSeries   Mode = "l-series"
	ModeOSeries   Mode = "o-series"
	ModeRSeries   Mode = "r-series"
	ModeXSeries   Mode = "x-series"
)

// Client authentication styles at the token endpoint.
const (
	// AuthBasic: HTTP Basic (RFC 6749 §2.3.1, client_secret_basic). The
	// client id and secret are form-urlencoded before base64, as the RFC says
	// (golang.org/x/oauth2 does this).
	AuthBasic = "basic"
	// AuthBody: client_id and client_secret form fields (client_secret_post).
	AuthBody = "body"
)

// Defaults applied by New for zero Config fields.
const (
	DefaultClientID     = "emulator-client"
	DefaultClientSecret = "emulator-secret"
	DefaultAccessTTL    = time.Hour
	DefaultCodeTTL      = 30 * time.Second
)

// Config configures an Emulator. The zero value is usable: k-series, the
// default client credentials, no registered redirect URL.
type Config struct {
	// Mode is the service played; "" = k-series. New panics on an unknown mode.
	Mode Mode
	// ClientID and ClientSecret are the one registered client's credentials;
	// "" = DefaultClientID / DefaultClientSecret.
	ClientID, ClientSecret string
	// RedirectURL, when set, is the registered redirect URI: the authorize
	// request's redirect_uri must equal it byte for byte. When empty, any
	// absolute http(s) redirect_uri is accepted at authorize (it must be
	// present). Either way the code exchange must present the exact
	// redirect_uri used at authorize.
	RedirectURL string
	// ClientAuth is AuthBasic or AuthBody; "" = the mode's default
	// (k-series, k-series-v1, l-series: basic; o-series, r-series, x-series:
	// body). New panics on another value.
	ClientAuth string
	// PKCE requires an S256 code_challenge at authorize (and so a matching
	// code_verifier at exchange). Always on for l-series.
	PKCE bool
	// RequireState makes authorize reject requests without a state parameter.
	RequireState bool
	// SignInPage: an authorize request with neither login_hint nor an
	// approved login (Approve) answers an HTML sign-in page listing the
	// registered users (AddUser) as links that repeat the request with
	// login_hint=<login>, and a "deny" link (emulator_deny=1); for people
	// trying the sandbox in a browser (lsproxy dev). Off: such a request
	// is denied (access_denied).
	SignInPage bool
	// AccessTTL is the access token lifetime; 0 = DefaultAccessTTL (1h).
	AccessTTL time.Duration
	// RefreshIdleTTL: 0 = refresh tokens never expire; otherwise a refresh
	// token not used within this long after its issue expires. K-series
	// reports it as refresh_expires_in.
	RefreshIdleTTL time.Duration
	// CodeTTL is the authorization code lifetime; 0 = DefaultCodeTTL (30s).
	CodeTTL time.Duration
	// RevokeOldAccessOnRefresh makes a successful refresh revoke, at once,
	// the access token issued together with the refresh token presented
	// (some providers do this). Default: old access tokens stay valid until
	// they expire.
	RevokeOldAccessOnRefresh bool
	// OtherClients are further clients registered with the same provider
	// (client id → secret), e.g. a vendor's second app. They authenticate
	// at the token endpoint (authorize knows ClientID only), but a refresh token or code issued to one client is invalid_grant for
	// another: what a provider answers when a deployment switched its
	// client id. nil = none.
	OtherClients map[string]string
	// Scope is the scope granted when the authorize request names none and
	// for IssueGrant; "" = the mode's default (see DefaultScope).
	Scope string
	// Now is the clock seam for every expiry; nil = time.Now. Delays
	// (SetTokenDelay etc.) use real time.
	Now func() time.Time
	// StoreHosts (x-series) makes the API check that a request's host is
	// its token's store: the first host label must be the store's
	// domain_prefix, else 403 {"error":"wrong_store"}. Default: any host.
	StoreHosts bool
	// Logf, when set, receives one line per notable event (grants, refreshes,
	// rejections, reuse detection). Lines never contain token, code or secret
	// values. nil = silent.
	Logf func(format string, args ...any)
}

// DefaultScope is the scope granted by mode when neither the authorize
// request nor Config.Scope names one.
func DefaultScope(m Mode) string {
	switch m {
	case ModeKSeries:
		return "offline_access orders-api items"
	case ModeXSeries:
		return "products:read sales:read"
	case ModeRSeries:
		return "employee:all"
	default:
		return "all"
	}
}

// Paths are the request paths the emulator serves for its mode.
type Paths struct {
	Authorize string // GET: the merchant's browser
	Token     string // POST: code exchange and refresh
	APIPrefix string // where the real API lives; every other path is API here
}

// PathsFor returns the real service's paths for a mode; ok is false for an
// unknown mode.
func PathsFor(m Mode) (p Paths, ok bool) {
	switch m {
	case ModeKSeries:
		return Paths{"/realms/k-series/protocol/openid-connect/auth", "/realms/k-series/protocol/openid-connect/token", "/"}, true
	case ModeKSeriesV1:
		return Paths{"/oauth/authorize", "/oauth/token", "/"}, true
	case ModeLSeries:
		return Paths{"/resto/oauth2/v1/authorize", "/resto/oauth2/v1/token", "/resto/"}, true
	case ModeOSeries:
		return Paths{"/authorize", "/v1/token.json", "/"}, true
	case ModeRSeries:
		return Paths{"/auth/oauth/authorize", "/auth/oauth/token", "/"}, true
	case ModeXSeries:
		return Paths{"/connect", "/api/1.0/token", "/"}, true
	}
	return Paths{}, false
}

// DefaultClientAuth is the mode's client authentication style.
func DefaultClientAuth(m Mode) string {
	switch m {
	case ModeOSeries, ModeRSeries, ModeXSeries:
		return AuthBody
	}
	return AuthBasic
}

// Grant is a token pair as a client receives it.
type Grant struct {
	AccessToken  string
	RefreshToken string
	ExpiresIn    int // access token lifetime, seconds
	// RefreshExpiresIn is the refresh token's idle lifetime in seconds; 0 =
	// it does not expire.
	RefreshExpiresIn int
	Scope            string
}

// Emulator is one emulated Lightspeed service. It implements http.Handler.
// Create it with New.
type Emulator struct {
	cfg   Config
	paths Paths
	now   func() time.Time
	c     counters

	mu           sync.Mutex
	approved     string
	denyNext     int
	codes        map[string]*authCode
	access       map[string]*accessToken
	refresh      map[string]*refreshToken
	grants       map[string][]*grant // by tenant
	refreshCount map[string]int
	apiCount     map[string]int
	nextGrant    int
	nextAccess   int
	outage       int
	tokenDelay   time.Duration
	tokenHold    time.Duration
	dropN        int
	apiDelay     time.Duration
	// identityStatus, when not 0, is what the identity endpoint answers
	// (SetIdentityStatus).
	identityStatus int
	accounts       map[string]Account
	users          map[string]user
	brownout       Brownout
	brownoutFrom   time.Time

	rl rateLimiter // ratelimit.go
}

var _ http.Handler = (*Emulator)(nil)

type grant struct {
	id       int
	tenant   string
	clientID string
	scope    string
	revoked  bool
}

type authCode struct {
	tenant, clientID, redirectURI, challenge, scope string
	expires                                         time.Time
	used                                            bool
	revoked                                         bool
	grant                                           *grant // set by the exchange
}

type accessToken struct {
	g       *grant
	serial  int
	expires time.Time
	revoked bool
}

type refreshToken struct {
	g       *grant
	expires time.Time // zero: never
	used    bool
	access  string // the access token issued with it
}

// New returns an emulator for cfg with defaults applied. It panics on an
// unknown Mode or ClientAuth (a test's programming error).
func New(cfg Config) *Emulator {
	if cfg.Mode == "" {
		cfg.Mode = ModeKSeries
	}
	paths, ok := PathsFor(cfg.Mode)
	if !ok {
		panic(fmt.Sprintf("emulator: unknown mode %q", cfg.Mode))
	}
	switch cfg.ClientAuth {
	case "":
		cfg.ClientAuth = DefaultClientAuth(cfg.Mode)
	case AuthBasic, AuthBody:
	default:
		panic(fmt.Sprintf("emulator: unknown client auth %q", cfg.ClientAuth))
	}
	if cfg.Mode == ModeLSeries {
		cfg.PKCE = true
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID
	}
	if cfg.ClientSecret == "" {
		cfg.ClientSecret = DefaultClientSecret
	}
	if cfg.AccessTTL <= 0 {
		cfg.AccessTTL = DefaultAccessTTL
	}
	if cfg.CodeTTL <= 0 {
		cfg.CodeTTL = DefaultCodeTTL
	}
	if cfg.RefreshIdleTTL < 0 {
		cfg.RefreshIdleTTL = 0
	}
	if cfg.Scope == "" {
		cfg.Scope = DefaultScope(cfg.Mode)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Emulator{
		cfg:          cfg,
		paths:        paths,
		now:          now,
		codes:        map[string]*authCode{},
		access:       map[string]*accessToken{},
		refresh:      map[string]*refreshToken{},
		grants:       map[string][]*grant{},
		refreshCount: map[string]int{},
		apiCount:     map[string]int{},
	}
}

// Config returns the effective configuration (defaults applied).
func (e *Emulator) Config() Config { return e.cfg }

// Paths returns the mode's paths.
func (e *Emulator) Paths() Paths { return e.paths }

// ServeHTTP serves the authorize path, the token path and, for every other
// path, the API.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case e.paths.Authorize:
		e.serveAuthorize(w, r)
	case e.paths.Token:
		e.serveToken(w, r)
	default:
		e.serveAPI(w, r)
	}
}

// Approve makes the authorize endpoint approve as tenant (the login of the
// merchant who signs in; see AddUser for the account it belongs to) when
// the request has no login_hint. "" withdraws the approval: authorize then
// answers access_denied unless login_hint names a tenant.
func (e *Emulator) Approve(tenant string) {
	e.mu.Lock()
	e.approved = tenant
	e.mu.Unlock()
}

// Deny makes the next authorize request (one per call) that passes client and
// redirect validation redirect with error=access_denied.
func (e *Emulator) Deny() {
	e.mu.Lock()
	e.denyNext++
	e.mu.Unlock()
}

// IssueGrant creates a grant for tenant directly, as if a code exchange had
// happened (for tests that import tokens).
func (e *Emulator) IssueGrant(tenant string) Grant {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.newGrantLocked(tenant, e.cfg.ClientID, e.cfg.Scope)
	e.logf("grant issued directly tenant=%q grant=%d", tenant, g.id)
	return e.issueLocked(g)
}

// Revoke revokes every grant of tenant: its access tokens, refresh tokens and
// unexchanged codes stop working at once.
func (e *Emulator) Revoke(tenant string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, g := range e.grants[tenant] {
		e.revokeGrantLocked(g, "revoked by test")
	}
	for _, c := range e.codes {
		if c.tenant == tenant {
			c.revoked = true
		}
	}
}

// SetTokenOutage makes the token endpoint answer every request with status
// (200-599; a plain-text body, as a load balancer would) until
// SetTokenOutage(0). A token delay (SetTokenDelay) still applies first.
func (e *Emulator) SetTokenOutage(status int) {
	e.mu.Lock()
	e.outage = status
	e.mu.Unlock()
}

// SetTokenDelay makes the token endpoint wait d before it looks at a request.
// When the client goes away first, the request is not processed (nothing
// rotates) and Stats.TokenAbandoned counts it. 0 = no delay.
func (e *Emulator) SetTokenDelay(d time.Duration) {
	e.mu.Lock()
	e.tokenDelay = d
	e.mu.Unlock()
}

// SetTokenHold makes the token endpoint process a successful grant (tokens
// issued, the refresh token rotated) and then hold the response for d. When
// the client goes away first, the response is lost although the grant
// happened (Stats.TokenAbandoned). 0 = no hold.
func (e *Emulator) SetTokenHold(d time.Duration) {
	e.mu.Lock()
	e.tokenHold = d
	e.mu.Unlock()
}

// SetTokenDropAfterGrant makes the next n successful refresh grants rotate
// the token and then close the connection without a response (a lost
// response). Code exchanges are not affected. 0 cancels pending drops.
func (e *Emulator) SetTokenDropAfterGrant(n int) {
	e.mu.Lock()
	e.dropN = n
	e.mu.Unlock()
}

// SetAPIDelay makes API requests wait d (or until the client goes away,
// Stats.APIAbandoned) before they are answered. 0 = no delay.
func (e *Emulator) SetAPIDelay(d time.Duration) {
	e.mu.Lock()
	e.apiDelay = d
	e.mu.Unlock()
}

// SetIdentityStatus makes the mode's identity endpoint (K-Series
// /f/data/businesses, R-Series Account.json, O-Series companies/me.json)
// answer status n (e.g. 503 for an outage, 403 for an app whose scopes do
// not cover it) to every valid token; 0 answers normally again.
func (e *Emulator) SetIdentityStatus(n int) {
	e.mu.Lock()
	e.identityStatus = n
	e.mu.Unlock()
}

// TokenFingerprint is a short, non-reversible name for a token, used in API
// responses (token_fp, and for the Authorization header in /echo-headers) so
// tests can tell which token arrived without the token appearing anywhere.
func TokenFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "fp-" + hex.EncodeToString(sum[:8])
}

// newSecret returns prefix followed by 130 random bits (base32).
func newSecret(prefix string) string { return prefix + rand.Text() }

func (e *Emulator) logf(format string, args ...any) {
	if e.cfg.Logf != nil {
		e.cfg.Logf("emulator["+string(e.cfg.Mode)+"]: "+format, args...)
	}
}

func (e *Emulator) newGrantLocked(tenant, clientID, scope string) *grant {
	e.nextGrant++
	g := &grant{id: e.nextGrant, tenant: tenant, clientID: clientID, scope: scope}
	e.grants[tenant] = append(e.grants[tenant], g)
	e.c.grantsIssued.Add(1)
	return g
}

// issueLocked mints an access and a refresh token for g.
func (e *Emulator) issueLocked(g *grant) Grant {
	now := e.now()
	at := newSecret("at-")
	rt := newSecret("rt-")
	e.nextAccess++
	e.access[at] = &accessToken{g: g, serial: e.nextAccess, expires: now.Add(e.cfg.AccessTTL)}
	r := &refreshToken{g: g, access: at}
	if e.cfg.RefreshIdleTTL > 0 {
		r.expires = now.Add(e.cfg.RefreshIdleTTL)
	}
	e.refresh[rt] = r
	return Grant{
		AccessToken:      at,
		RefreshToken:     rt,
		ExpiresIn:        ceilSeconds(e.cfg.AccessTTL),
		RefreshExpiresIn: ceilSeconds(e.cfg.RefreshIdleTTL),
		Scope:            g.scope,
	}
}

func (e *Emulator) revokeGrantLocked(g *grant, why string) {
	if g.revoked {
		return
	}
	g.revoked = true
	e.c.grantsRevoked.Add(1)
	e.logf("grant revoked tenant=%q grant=%d reason=%q", g.tenant, g.id, why)
}

func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}
