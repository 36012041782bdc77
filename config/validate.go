package config

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/ratelimit"
	"github.com/lsproxy/lsproxy/store"
)

// Modes accepted by Validate.
const (
	ModeServe = "serve" // production proxy
	ModeDev   = "dev"   // sandbox: OAuth client and encryption key not required
	ModeCheck = "check" // check-config: same rules as serve
)

// Providers lists the accepted Provider values.
var Providers = []string{"k-series", "k-series-v1", "l-series", "o-series", "r-series", "x-series", "custom"}

var (
	environments = []string{"production", "trial"}
	clientAuths  = []string{"", "basic", "body"}
	logFormats   = []string{"json", "console"}
)

// FieldError is one problem found by Validate. Its message names the
// environment variable and the YAML key and never contains a secret value.
type FieldError struct {
	Env     string // e.g. LSPROXY_ENCRYPTION_KEY
	Key     string // e.g. encryption_key
	Problem string // e.g. "is required"
}

func (e *FieldError) Error() string { return e.Env + " (" + e.Key + ") " + e.Problem }

// validator accumulates FieldErrors.
type validator struct{ errs []error }

func (v *validator) add(goName, format string, args ...any) {
	f, ok := byName[goName]
	if !ok {
		panic("config: unknown field " + goName)
	}
	v.errs = append(v.errs, &FieldError{Env: f.env, Key: f.key, Problem: fmt.Sprintf(format, args...)})
}

// Validate checks c for mode (ModeServe, ModeDev or ModeCheck) and returns
// every problem found, in field order, each a *FieldError (an unknown mode
// yields one plain error). It returns nil when c is valid. No message echoes
// a secret value or a Redis URL.
func (c Config) Validate(mode string) []error {
	if mode != ModeServe && mode != ModeDev && mode != ModeCheck {
		return []error{fmt.Errorf("config: unknown validation mode %q", mode)}
	}
	v := &validator{}

	okListen := v.listen("Listen", c.Listen)
	okControl := v.listen("ControlListen", c.ControlListen)
	if okListen && okControl && c.Listen == c.ControlListen && !strings.HasSuffix(c.Listen, ":0") {
		v.add("ControlListen", "must differ from LSPROXY_LISTEN (listen)")
	}
	if !isLoopbackListen(c.Listen) && len(c.ClientKeys) == 0 && !c.AllowUnauthenticated {
		v.add("Listen", "binds a non-loopback address, which requires caller authentication: "+
			"set LSPROXY_CLIENT_KEYS (client_keys) (make a key with: lsproxy hash-key), "+
			"or bind a loopback address such as 127.0.0.1:8080, "+
			"or set LSPROXY_ALLOW_UNAUTHENTICATED (allow_unauthenticated) to true if something in front authenticates callers")
	}

	v.enum("Provider", c.Provider, Providers)
	v.enum("Environment", c.Environment, environments)

	required := mode != ModeDev
	if required && c.ClientID == "" {
		v.add("ClientID", "is required")
	}
	if required && c.ClientSecret == "" {
		v.add("ClientSecret", "is required (or set LSPROXY_CLIENT_SECRET_FILE (client_secret_file))")
	}
	v.httpURL("RedirectURL", c.RedirectURL)

	// {domain_prefix} (host or path) names each x-series store's own host.
	upstream := strings.ReplaceAll(c.UpstreamURL, "{domain_prefix}", "domain-prefix")
	v.httpURL("UpstreamURL", upstream)
	if strings.ContainsAny(upstream, "{}") {
		v.add("UpstreamURL", "the only placeholder allowed is {domain_prefix}")
	}
	if upstream != c.UpstreamURL && c.Provider != "x-series" && c.Provider != "custom" {
		v.add("UpstreamURL", "{domain_prefix} is filled only for x-series (or custom) tenants; provider is %q", c.Provider)
	}
	if u, err := url.Parse(upstream); c.UpstreamURL != "" && err == nil &&
		(u.User != nil || u.RawQuery != "" || u.Fragment != "") {
		v.add("UpstreamURL", "must not contain user info, a query or a fragment")
	}
	v.httpURL("AuthorizeURL", c.AuthorizeURL)
	// X-Series token hosts are per merchant: allow the preset's placeholder.
	v.httpURL("TokenURL", strings.ReplaceAll(c.TokenURL, "{domain_prefix}", "domain-prefix"))
	v.enum("ClientAuth", c.ClientAuth, clientAuths)
	if c.Provider == "custom" {
		for _, n := range []string{"UpstreamURL", "AuthorizeURL", "TokenURL"} {
			if *c.str(n) == "" {
				v.add(n, "is required when LSPROXY_PROVIDER (provider) is custom")
			}
		}
	}

	v.redis(c)

	if required && c.EncryptionKey == "" {
		v.add("EncryptionKey", "is required (or set LSPROXY_ENCRYPTION_KEY_FILE (encryption_key_file)); generate one with: openssl rand -base64 32")
	} else if c.EncryptionKey != "" && !isKey(c.EncryptionKey) {
		v.add("EncryptionKey", "must be standard base64 of exactly 32 bytes (openssl rand -base64 32)")
	}
	for i, k := range c.EncryptionKeys {
		if !isKey(k) {
			v.add("EncryptionKeys", "entry %d must be standard base64 of exactly 32 bytes", i+1)
		}
	}

	if !validHeaderName(c.TenantHeader) {
		v.add("TenantHeader", "must be a valid HTTP header name")
	} else if reservedHeaders[http.CanonicalHeaderKey(c.TenantHeader)] {
		v.add("TenantHeader", "must not be %s", http.CanonicalHeaderKey(c.TenantHeader))
	}

	if _, err := c.LocationPreferences(); err != nil {
		v.add("LocationPreferred", "%v", err)
	}
	if !validHeaderName(c.LocationHeader) {
		v.add("LocationHeader", "must be a valid HTTP header name")
	} else if reservedHeaders[http.CanonicalHeaderKey(c.LocationHeader)] {
		v.add("LocationHeader", "must not be %s", http.CanonicalHeaderKey(c.LocationHeader))
	} else if strings.EqualFold(c.LocationHeader, c.TenantHeader) {
		v.add("LocationHeader", "must differ from the tenant header")
	}

	if c.LogLevel == "" {
		v.add("LogLevel", "is required (debug, info, warn, error)")
	} else if _, err := zapcore.ParseLevel(c.LogLevel); err != nil {
		v.add("LogLevel", "must be one of debug, info, warn, error, dpanic, panic, fatal; got %q", c.LogLevel)
	}
	v.enum("LogFormat", c.LogFormat, logFormats)

	for _, d := range []struct {
		name string
		val  time.Duration
	}{
		{"RefreshBefore", c.RefreshBefore},
		{"UpstreamTimeout", c.UpstreamTimeout},
		{"TokenTimeout", c.TokenTimeout},
		{"ReadHeaderTimeout", c.ReadHeaderTimeout},
		{"BodyReadTimeout", c.BodyReadTimeout},
		{"IdleTimeout", c.IdleTimeout},
		{"ShutdownTimeout", c.ShutdownTimeout},
		{"BreakerOpenFor", c.BreakerOpenFor},
		{"CacheTTL", c.CacheTTL},
		{"StateTTL", c.StateTTL},
		{"AuthorizeLinkTTL", c.AuthorizeLinkTTL},
		{"IdentifyRetry", c.IdentifyRetry},
		{"ConsoleSessionIdle", c.ConsoleSessionIdle},
		{"RefresherInterval", c.RefresherInterval},
		{"RefreshIdleMargin", c.RefreshIdleMargin},
	} {
		if d.val <= 0 {
			v.add(d.name, "must be greater than 0; got %s", d.val)
		}
	}
	switch {
	case c.LockTTL < 0:
		v.add("LockTTL", "must not be negative (0 means the default %s); got %s", DefaultLockTTL, c.LockTTL)
	case c.LockTTL > 0 && c.LockTTL < 300*time.Millisecond:
		v.add("LockTTL", "must be at least 300ms (it is renewed every third of it); got %s", c.LockTTL)
	case c.TokenTimeout > 0:
		if err := auth.CheckLease(c.TokenTimeout, c.LockTTL); err != nil {
			v.add("LockTTL", "%v", err)
		}
	}
	if c.RedisWaitReplicas < 0 {
		v.add("RedisWaitReplicas", "must not be negative (0 never waits); got %d", c.RedisWaitReplicas)
	}
	if c.RedisWaitTimeout <= 0 || c.RedisWaitTimeout > 10*time.Second {
		v.add("RedisWaitTimeout", "must be greater than 0 and at most 10s; got %s", c.RedisWaitTimeout)
	}
	if c.InvalidGrantGuardThreshold == 0 || c.InvalidGrantGuardThreshold < -1 {
		v.add("InvalidGrantGuardThreshold", "must be at least 1, or -1 to turn the guard off; got %d", c.InvalidGrantGuardThreshold)
	}
	if c.InvalidGrantGuardWindow <= 0 {
		v.add("InvalidGrantGuardWindow", "must be greater than 0; got %s", c.InvalidGrantGuardWindow)
	}

	if c.MaxReplayBodyBytes < 0 {
		v.add("MaxReplayBodyBytes", "must not be negative; got %d", c.MaxReplayBodyBytes)
	}
	for _, n := range []struct {
		name string
		val  int
	}{
		{"MaxHeaderBytes", c.MaxHeaderBytes},
		{"BreakerFailures", c.BreakerFailures},
		{"RefresherConcurrency", c.RefresherConcurrency},
	} {
		if n.val <= 0 {
			v.add(n.name, "must be greater than 0; got %d", n.val)
		}
	}

	if c.CacheMaxBytes != 0 && c.CacheMaxBytes < MinCacheMaxBytes {
		v.add("CacheMaxBytes", "must be 0 (sized from the memory limit) or at least %s; got %s", ByteSize(MinCacheMaxBytes), c.CacheMaxBytes)
	}
	if c.RateLimitMaxBlock < 0 {
		v.add("RateLimitMaxBlock", "must not be negative (0 means %s); got %s", ratelimit.DefaultMaxBlock, c.RateLimitMaxBlock)
	}
	if c.RateLimitWait < 0 {
		v.add("RateLimitWait", "must not be negative (0 = never wait); got %s", c.RateLimitWait)
	}
	if c.RateLimitKeyShare < 0 || c.RateLimitKeyShare >= 1 || math.IsNaN(c.RateLimitKeyShare) {
		v.add("RateLimitKeyShare", "must be at least 0 and below 1 (0 = no per-key limit); got %v", c.RateLimitKeyShare)
	}
	if _, err := ratelimit.ParseCosts(c.RateLimitCosts); err != nil {
		v.add("RateLimitCosts", "must look like GET=1,HEAD=1,*=10 (non-negative units per method); got %q", c.RateLimitCosts)
	}

	v.secrets(c, required)

	v.httpURL("SuccessURL", c.SuccessURL)
	v.consoleOIDC(c)
	v.httpURL("WebhookURL", c.WebhookURL)
	if _, err := onboard.ParseSchedule(c.WebhookRetrySchedule); err != nil {
		v.add("WebhookRetrySchedule", "must be comma-separated positive durations such as 5s,5m,30m,2h; got %q", c.WebhookRetrySchedule)
	}
	for _, d := range []struct {
		name string
		val  time.Duration
	}{{"WebhookTimeout", c.WebhookTimeout}, {"WebhookLease", c.WebhookLease}, {"WebhookPollInterval", c.WebhookPollInterval}} {
		if c.WebhookURL != "" && d.val <= 0 {
			v.add(d.name, "must be greater than 0; got %s", d.val)
		}
	}
	if c.WebhookURL != "" && c.WebhookTimeout > 0 && c.WebhookLease > 0 && c.WebhookLease <= c.WebhookTimeout {
		v.add("WebhookLease", "must be longer than LSPROXY_WEBHOOK_TIMEOUT (webhook_timeout) (%s), or a slow attempt is sent twice", c.WebhookTimeout)
	}

	v.tlsPair("TLSCertFile", "TLSKeyFile", c.TLSCertFile, c.TLSKeyFile)
	v.tlsPair("ControlTLSCertFile", "ControlTLSKeyFile", c.ControlTLSCertFile, c.ControlTLSKeyFile)

	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

func (v *validator) enum(goName, val string, allowed []string) {
	if !slices.Contains(allowed, val) {
		shown := slices.DeleteFunc(slices.Clone(allowed), func(s string) bool { return s == "" })
		v.add(goName, "must be one of %s; got %q", strings.Join(shown, ", "), val)
	}
}

// listen checks a host:port listen address (empty host = all interfaces,
// port 0 = any free port) and reports whether it is valid.
func (v *validator) listen(goName, addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		v.add(goName, "must be host:port with a numeric port; got %q", addr)
		return false
	}
	return true
}

// validHostPort reports whether addr is a dialable host:port (host and a
// non-zero port required).
func validHostPort(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0
}

// httpURL checks an optional absolute http(s) URL. The value is echoed only
// when it parses, with any password masked.
func (v *validator) httpURL(goName, raw string) {
	if raw == "" {
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		v.add(goName, "is not a valid URL")
		return
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(goName, "must be an absolute http:// or https:// URL; got %q", u.Redacted())
	}
}

func (v *validator) redis(c Config) {
	if c.RedisURL != "" {
		// Never echo the URL: it may carry a password.
		u, err := url.Parse(c.RedisURL)
		switch {
		case err != nil:
			v.add("RedisURL", "is not a valid URL")
		case u.Scheme != "redis" && u.Scheme != "rediss":
			v.add("RedisURL", "must use the redis:// or rediss:// scheme")
		case u.Host == "":
			v.add("RedisURL", "must name a host")
		}
	}
	if (c.RedisSentinelMaster == "") != (len(c.RedisSentinelAddrs) == 0) {
		v.add("RedisSentinelMaster", "and LSPROXY_REDIS_SENTINEL_ADDRS (redis_sentinel_addrs) must be set together")
	}
	if len(c.RedisSentinelAddrs) > 0 && len(c.RedisClusterAddrs) > 0 {
		v.add("RedisClusterAddrs", "cannot be combined with LSPROXY_REDIS_SENTINEL_ADDRS (redis_sentinel_addrs)")
	}
	for _, a := range []struct {
		name  string
		addrs []string
	}{{"RedisSentinelAddrs", c.RedisSentinelAddrs}, {"RedisClusterAddrs", c.RedisClusterAddrs}} {
		for _, addr := range a.addrs {
			if !validHostPort(addr) {
				v.add(a.name, "entry %q must be host:port", addr)
			}
		}
	}
	if scheme := redisScheme(c.RedisURL); scheme == "redis" {
		if c.RedisTLS {
			v.add("RedisTLS", "applies to Sentinel and Cluster addresses; for TLS with LSPROXY_REDIS_URL (redis_url) use a rediss:// URL")
		}
		if c.RedisCAFile != "" {
			v.add("RedisCAFile", "needs TLS: use a rediss:// URL in LSPROXY_REDIS_URL (redis_url)")
		}
	}
	if strings.ContainsAny(c.RedisKeyPrefix, "{}") {
		v.add("RedisKeyPrefix", "must not contain { or } (keys use Redis Cluster hash tags)")
	}
}

// redisScheme returns the scheme of a Redis URL, or "" when there is none
// or it does not parse (reported elsewhere).
func redisScheme(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme
}

// tlsPair checks a listener's certificate and key files: both or neither,
// and when set, that they load as a matching PEM pair. Messages name the
// files and the problem, never their content.
func (v *validator) tlsPair(certName, keyName, certFile, keyFile string) {
	switch {
	case certFile == "" && keyFile == "":
		return
	case certFile == "":
		v.add(certName, "must be set together with %s", names(keyName))
		return
	case keyFile == "":
		v.add(keyName, "must be set together with %s", names(certName))
		return
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		v.add(certName, "and %s cannot be loaded as a PEM certificate and key: %v", names(keyName), err)
	}
}

// isKey reports whether s is standard base64 of exactly 32 bytes.
func isKey(s string) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// isLoopbackListen reports whether a listen address binds loopback only.
// An empty host, a wildcard or a non-localhost name is not loopback.
func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true // reported by listen; no second error here
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0:
		default:
			return false
		}
	}
	return true
}

// reservedHeaders cannot name the tenant: they carry credentials, routing or
// hop-by-hop semantics the proxy relies on.
var reservedHeaders = map[string]bool{
	"Authorization":       true,
	"Proxy-Authorization": true,
	"Host":                true,
	"Connection":          true,
	"Content-Length":      true,
	"Content-Type":        true,
	"Transfer-Encoding":   true,
	"Te":                  true,
	"Trailer":             true,
	"Upgrade":             true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Cookie":              true,
}

// consoleOIDC checks the console's OpenID Connect sign-in: all or nothing.
func (v *validator) consoleOIDC(c Config) {
	if c.ConsoleOIDCIssuer == "" {
		for _, n := range []string{"ConsoleOIDCClientID", "ConsoleOIDCClientSecret", "ConsoleOIDCRedirectURL"} {
			if *c.str(n) != "" {
				v.add(n, "is set but LSPROXY_CONSOLE_OIDC_ISSUER (console_oidc_issuer) is not")
			}
		}
		return
	}
	v.httpURL("ConsoleOIDCIssuer", c.ConsoleOIDCIssuer)
	v.httpURL("ConsoleOIDCRedirectURL", c.ConsoleOIDCRedirectURL)
	switch {
	case c.ConsoleOIDCRedirectURL == "":
		v.add("ConsoleOIDCRedirectURL", "is required with LSPROXY_CONSOLE_OIDC_ISSUER (console_oidc_issuer): the public URL of /console/oidc/callback")
	case !strings.HasSuffix(strings.SplitN(c.ConsoleOIDCRedirectURL, "?", 2)[0], "/console/oidc/callback"):
		v.add("ConsoleOIDCRedirectURL", "must end in /console/oidc/callback")
	}
	if c.ConsoleOIDCClientID == "" {
		v.add("ConsoleOIDCClientID", "is required with LSPROXY_CONSOLE_OIDC_ISSUER (console_oidc_issuer)")
	}
	if c.ConsoleOIDCClientSecret == "" {
		v.add("ConsoleOIDCClientSecret", "is required with LSPROXY_CONSOLE_OIDC_ISSUER (console_oidc_issuer) (or set LSPROXY_CONSOLE_OIDC_CLIENT_SECRET_FILE (console_oidc_client_secret_file))")
	}
	if len(c.ConsoleOIDCAllowedEmails) == 0 && len(c.ConsoleOIDCAllowedGroups) == 0 {
		v.add("ConsoleOIDCAllowedEmails", "or LSPROXY_CONSOLE_OIDC_ALLOWED_GROUPS (console_oidc_allowed_groups) must name who may sign in")
	}
	if c.AdminToken == "" {
		v.add("ConsoleOIDCIssuer", "needs LSPROXY_ADMIN_TOKEN (admin_token): the console is on only with an admin token")
	}
}

// LocationPreferences parses LocationPreferred ("location=tenant,...")
// into a map; each side must be a valid id, each location named once.
func (c Config) LocationPreferences() (map[string]string, error) {
	if strings.TrimSpace(c.LocationPreferred) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, pair := range strings.Split(c.LocationPreferred, ",") {
		loc, tenant, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !store.ValidTenantID(loc) || !store.ValidTenantID(tenant) {
			return nil, fmt.Errorf("must look like location=tenant,location=tenant (ids matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$); got %q", strings.TrimSpace(pair))
		}
		if _, dup := out[loc]; dup {
			return nil, fmt.Errorf("names location %q twice", loc)
		}
		out[loc] = tenant
	}
	return out, nil
}
