package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix is the prefix of every environment variable lsproxy reads.
const EnvPrefix = "LSPROXY_"

// redactedValue replaces a secret in Redacted.
const redactedValue = "[redacted]"

// Sentinel errors returned (wrapped) by Load.
var (
	// ErrFile: the YAML file cannot be read or parsed, or has an unknown
	// key or a value of the wrong type.
	ErrFile = errors.New("config: bad config file")
	// ErrFileUnusable (with ErrFile): the file cannot be read or is not
	// YAML at all, so nothing of it was loaded.
	ErrFileUnusable = errors.New("config: config file unusable")
	// ErrEnv: an LSPROXY_* variable cannot be parsed into its option's type.
	ErrEnv = errors.New("config: bad environment variable")
	// ErrSecretConflict: a secret and its *_FILE form are both set in one layer.
	ErrSecretConflict = errors.New("config: secret set both directly and by file")
	// ErrSecretFile: a *_FILE secret cannot be read or is empty.
	ErrSecretFile = errors.New("config: secret file unusable")
)

// Config is lsproxy's complete configuration. Field tags give the YAML key
// and the environment variable name without EnvPrefix. No field has an
// envDefault tag: defaults come from Default, so that an unset environment
// variable never overrides the file.
type Config struct {
	// Listen is the proxied-traffic listener (host:port).
	Listen string `yaml:"listen" env:"LISTEN"`
	// ControlListen serves health, metrics, the admin API and the OAuth callback.
	ControlListen string `yaml:"control_listen" env:"CONTROL_LISTEN"`

	// Provider is the Lightspeed preset: k-series, k-series-v1, l-series,
	// o-series, r-series, x-series or custom.
	Provider string `yaml:"provider" env:"PROVIDER"`
	// Environment selects the preset's hosts: production or trial.
	Environment string `yaml:"environment" env:"ENVIRONMENT"`

	ClientID         string `yaml:"client_id" env:"CLIENT_ID"`
	ClientSecret     string `yaml:"client_secret" env:"CLIENT_SECRET"`
	ClientSecretFile string `yaml:"client_secret_file" env:"CLIENT_SECRET_FILE"`
	// RedirectURL is the public URL of the control listener's /oauth/callback.
	RedirectURL string `yaml:"redirect_url" env:"REDIRECT_URL"`
	// Scopes is space-separated; "" means the preset's.
	Scopes string `yaml:"scopes" env:"SCOPES"`

	// UpstreamURL, AuthorizeURL, TokenURL: "" means the preset's.
	UpstreamURL  string `yaml:"upstream_url" env:"UPSTREAM_URL"`
	AuthorizeURL string `yaml:"authorize_url" env:"AUTHORIZE_URL"`
	TokenURL     string `yaml:"token_url" env:"TOKEN_URL"`
	// ClientAuth is basic or body; "" means the preset's.
	ClientAuth string `yaml:"client_auth" env:"CLIENT_AUTH"`
	// PKCE: nil means the preset's.
	PKCE *bool `yaml:"pkce" env:"PKCE"`

	// RedisURL is a redis:// or rediss:// URL; "" means the embedded store.
	RedisURL            string   `yaml:"redis_url" env:"REDIS_URL"`
	RedisSentinelMaster string   `yaml:"redis_sentinel_master" env:"REDIS_SENTINEL_MASTER"`
	RedisSentinelAddrs  []string `yaml:"redis_sentinel_addrs" env:"REDIS_SENTINEL_ADDRS"`
	RedisClusterAddrs   []string `yaml:"redis_cluster_addrs" env:"REDIS_CLUSTER_ADDRS"`
	RedisPassword       string   `yaml:"redis_password" env:"REDIS_PASSWORD"`
	RedisPasswordFile   string   `yaml:"redis_password_file" env:"REDIS_PASSWORD_FILE"`
	RedisCAFile         string   `yaml:"redis_ca_file" env:"REDIS_CA_FILE"`
	// RedisWaitReplicas is how many replicas must acknowledge the lock and
	// in-flight mark (WAIT) before a refresh token is sent, when the master
	// has replicas; 0 never waits. RedisWaitTimeout bounds that wait; no
	// acknowledgement within it means nothing is sent (503).
	RedisWaitReplicas int           `yaml:"redis_wait_replicas" env:"REDIS_WAIT_REPLICAS"`
	RedisWaitTimeout  time.Duration `yaml:"redis_wait_timeout" env:"REDIS_WAIT_TIMEOUT"`
	// RedisTLS uses TLS to Sentinel and Cluster addresses (implied by
	// RedisCAFile); a RedisURL chooses TLS by its scheme (rediss://).
	RedisTLS       bool   `yaml:"redis_tls" env:"REDIS_TLS"`
	RedisKeyPrefix string `yaml:"redis_key_prefix" env:"REDIS_KEY_PREFIX"`

	// DataDir is the embedded store's directory.
	DataDir string `yaml:"data_dir" env:"DATA_DIR"`

	// AdminToken is the bearer token of /admin; "" disables the admin API.
	AdminToken     string `yaml:"admin_token" env:"ADMIN_TOKEN"`
	AdminTokenFile string `yaml:"admin_token_file" env:"ADMIN_TOKEN_FILE"`

	// EncryptionKey is base64 (standard alphabet) of 32 bytes; it encrypts
	// tokens at rest. EncryptionKeys are older keys that still decrypt.
	EncryptionKey     string   `yaml:"encryption_key" env:"ENCRYPTION_KEY"`
	EncryptionKeyFile string   `yaml:"encryption_key_file" env:"ENCRYPTION_KEY_FILE"`
	EncryptionKeys    []string `yaml:"encryption_keys" env:"ENCRYPTION_KEYS"`

	// TenantHeader names the tenant on proxied requests.
	TenantHeader string `yaml:"tenant_header" env:"TENANT_HEADER"`
	// LocationHeader names a K-Series business location id: a request
	// without the tenant header but with this one goes to the active
	// tenant whose grant covers the location.
	LocationHeader string `yaml:"location_header" env:"LOCATION_HEADER"`
	// LocationPreferred names, per location id, the tenant chosen when
	// several tenants the caller may use cover it (else 409
	// ambiguous_location): "location=tenant,location=tenant".
	LocationPreferred string `yaml:"location_preferred" env:"LOCATION_PREFERRED"`
	// RefreshBefore: refresh an access token this long before it expires.
	RefreshBefore time.Duration `yaml:"refresh_before" env:"REFRESH_BEFORE"`

	// LogLevel is a zap level; LogFormat is json or console.
	LogLevel  string `yaml:"log_level" env:"LOG_LEVEL"`
	LogFormat string `yaml:"log_format" env:"LOG_FORMAT"`

	// UpstreamTimeout is the response-header timeout to the upstream.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout" env:"UPSTREAM_TIMEOUT"`
	// TokenTimeout is the hard timeout of one token-endpoint request.
	TokenTimeout time.Duration `yaml:"token_timeout" env:"TOKEN_TIMEOUT"`
	// LockTTL is the refresh holder's lease on the tenant lock, renewed
	// every third of it while the holder works; 0 derives it from
	// TokenTimeout (auth.LockTTLFor: token_timeout + 1.25s). It must cover
	// a whole token request plus the write retry (SPEC §3 rule 17). A dead
	// holder is taken over about LockTTL + 1.5s after it died.
	LockTTL           time.Duration `yaml:"lock_ttl" env:"LOCK_TTL"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout" env:"READ_HEADER_TIMEOUT"`
	// BodyReadTimeout bounds how long a proxied request's body may take to
	// arrive, so a client trickling it cannot hold an upstream connection.
	BodyReadTimeout time.Duration `yaml:"body_read_timeout" env:"BODY_READ_TIMEOUT"`
	IdleTimeout     time.Duration `yaml:"idle_timeout" env:"IDLE_TIMEOUT"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" env:"SHUTDOWN_TIMEOUT"`

	// MaxReplayBodyBytes bounds the request body kept for one replay after a 401.
	MaxReplayBodyBytes int64 `yaml:"max_replay_body_bytes" env:"MAX_REPLAY_BODY_BYTES"`
	MaxHeaderBytes     int   `yaml:"max_header_bytes" env:"MAX_HEADER_BYTES"`

	// BreakerFailures consecutive token-endpoint failures open the breaker
	// for BreakerOpenFor.
	BreakerFailures int           `yaml:"breaker_failures" env:"BREAKER_FAILURES"`
	BreakerOpenFor  time.Duration `yaml:"breaker_open_for" env:"BREAKER_OPEN_FOR"`

	// InvalidGrantGuardThreshold distinct tenants rejected with
	// invalid_grant within InvalidGrantGuardWindow stop all flagging (a
	// configuration mistake, not the merchants); -1 turns the guard off.
	InvalidGrantGuardThreshold int           `yaml:"invalid_grant_guard_threshold" env:"INVALID_GRANT_GUARD_THRESHOLD"`
	InvalidGrantGuardWindow    time.Duration `yaml:"invalid_grant_guard_window" env:"INVALID_GRANT_GUARD_WINDOW"`

	// CacheTTL bounds how long a cached token is trusted without a store
	// re-read (the fallback if change notifications are lost).
	CacheTTL time.Duration `yaml:"cache_ttl" env:"CACHE_TTL"`
	// CacheMaxBytes bounds the in-process token cache (estimated bytes;
	// past it, tenants not requested lately are evicted and read from the
	// store again when next requested). 0: a quarter of the container's
	// memory limit when one is known, else auth.DefaultCacheMaxBytes.
	CacheMaxBytes ByteSize `yaml:"cache_max_bytes" env:"CACHE_MAX_BYTES"`

	// StateTTL is the OAuth state lifetime after the merchant opens the link;
	// AuthorizeLinkTTL is how long the admin's link stays valid.
	StateTTL         time.Duration `yaml:"state_ttl" env:"STATE_TTL"`
	AuthorizeLinkTTL time.Duration `yaml:"authorize_link_ttl" env:"AUTHORIZE_LINK_TTL"`
	// Identify asks the preset's identity endpoint, after every code
	// exchange, which merchant account a grant belongs to (SPEC §8);
	// false for apps whose scopes do not cover it. IdentifyRetry is the
	// first wait before an identification that could not be completed is
	// retried in the background (doubling up to 10 minutes).
	Identify      bool          `yaml:"identify" env:"IDENTIFY"`
	IdentifyRetry time.Duration `yaml:"identify_retry" env:"IDENTIFY_RETRY"`
	// ConsoleSessionIdle ends an operator console session after this long
	// without an action.
	ConsoleSessionIdle time.Duration `yaml:"console_session_idle" env:"CONSOLE_SESSION_IDLE"`
	// ConsoleOIDCIssuer turns on console sign-in with that OpenID Connect
	// provider (the admin token stays as the fallback); the client is
	// ConsoleOIDCClientID/Secret, registered with ConsoleOIDCRedirectURL
	// (the public URL of /console/oidc/callback); a person may sign in when
	// their verified email is in ConsoleOIDCAllowedEmails or a group of
	// theirs in ConsoleOIDCAllowedGroups.
	ConsoleOIDCIssuer           string   `yaml:"console_oidc_issuer" env:"CONSOLE_OIDC_ISSUER"`
	ConsoleOIDCClientID         string   `yaml:"console_oidc_client_id" env:"CONSOLE_OIDC_CLIENT_ID"`
	ConsoleOIDCClientSecret     string   `yaml:"console_oidc_client_secret" env:"CONSOLE_OIDC_CLIENT_SECRET"`
	ConsoleOIDCClientSecretFile string   `yaml:"console_oidc_client_secret_file" env:"CONSOLE_OIDC_CLIENT_SECRET_FILE"`
	ConsoleOIDCRedirectURL      string   `yaml:"console_oidc_redirect_url" env:"CONSOLE_OIDC_REDIRECT_URL"`
	ConsoleOIDCAllowedEmails    []string `yaml:"console_oidc_allowed_emails" env:"CONSOLE_OIDC_ALLOWED_EMAILS"`
	ConsoleOIDCAllowedGroups    []string `yaml:"console_oidc_allowed_groups" env:"CONSOLE_OIDC_ALLOWED_GROUPS"`
	// SuccessURL is where a successful callback redirects; "" = built-in page.
	SuccessURL string `yaml:"success_url" env:"SUCCESS_URL"`

	WebhookURL        string `yaml:"webhook_url" env:"WEBHOOK_URL"`
	WebhookSecret     string `yaml:"webhook_secret" env:"WEBHOOK_SECRET"`
	WebhookSecretFile string `yaml:"webhook_secret_file" env:"WEBHOOK_SECRET_FILE"`
	// WebhookSecrets are more secrets, each adding a signature (rotation).
	WebhookSecrets []string `yaml:"webhook_secrets" env:"WEBHOOK_SECRETS"`
	// WebhookRetrySchedule is the wait after each failed delivery attempt,
	// comma-separated durations; "" means the Standard Webhooks schedule
	// (onboard.DefaultWebhookSchedule). After the last, a dead letter.
	WebhookRetrySchedule string `yaml:"webhook_retry_schedule" env:"WEBHOOK_RETRY_SCHEDULE"`
	// WebhookTimeout bounds one delivery attempt.
	WebhookTimeout time.Duration `yaml:"webhook_timeout" env:"WEBHOOK_TIMEOUT"`
	// WebhookLease is how long a replica holds a claimed event before any
	// other replica may take it over (more than WebhookTimeout).
	WebhookLease time.Duration `yaml:"webhook_lease" env:"WEBHOOK_LEASE"`
	// WebhookPollInterval is how often each replica looks for due events.
	WebhookPollInterval time.Duration `yaml:"webhook_poll_interval" env:"WEBHOOK_POLL_INTERVAL"`

	// RefresherInterval is the background refresher's scan period.
	RefresherInterval    time.Duration `yaml:"refresher_interval" env:"REFRESHER_INTERVAL"`
	RefresherConcurrency int           `yaml:"refresher_concurrency" env:"REFRESHER_CONCURRENCY"`
	// RefreshIdleMargin: refresh an idle tenant this long before its refresh
	// token's idle expiry.
	RefreshIdleMargin time.Duration `yaml:"refresh_idle_margin" env:"REFRESH_IDLE_MARGIN"`

	// RateLimit turns the per-tenant rate-limit governor on or off; nil
	// means the preset's (on for every preset).
	RateLimit *bool `yaml:"rate_limit" env:"RATE_LIMIT"`
	// RateLimitWait is the longest a request waits for its tenant's budget
	// before lsproxy answers 429 rate_limited; 0 means never wait.
	RateLimitWait time.Duration `yaml:"rate_limit_wait" env:"RATE_LIMIT_WAIT"`
	// RateLimitMaxBlock caps every block learned from one upstream or
	// token-endpoint answer (Retry-After, X-RateLimit-Reset, a slow drip
	// rate); 0 means ratelimit.DefaultMaxBlock (1h).
	RateLimitMaxBlock time.Duration `yaml:"rate_limit_max_block" env:"RATE_LIMIT_MAX_BLOCK"`
	// RateLimitCosts prices requests by method, "GET=1,HEAD=1,*=10"; ""
	// means the preset's.
	RateLimitCosts string `yaml:"rate_limit_costs" env:"RATE_LIMIT_COSTS"`
	// RateLimitKeyShare (0 < s < 1) holds each caller key to that fraction
	// of a tenant's budget; 0 means no per-key limit.
	RateLimitKeyShare float64 `yaml:"rate_limit_key_share" env:"RATE_LIMIT_KEY_SHARE"`

	// ClientKeys are caller keys, "id:hash:tenant1,prefix*", carried raw.
	// In the environment they are whitespace-separated only (they contain commas).
	ClientKeys []string `yaml:"client_keys" env:"CLIENT_KEYS"`
	// AllowUnauthenticated permits a non-loopback Listen without ClientKeys.
	AllowUnauthenticated bool `yaml:"allow_unauthenticated" env:"ALLOW_UNAUTHENTICATED"`

	// TLSCertFile and TLSKeyFile (PEM) turn on TLS for the proxied-traffic
	// listener; set both or neither. They are re-read when they change.
	TLSCertFile string `yaml:"tls_cert_file" env:"TLS_CERT_FILE"`
	TLSKeyFile  string `yaml:"tls_key_file" env:"TLS_KEY_FILE"`
	// ControlTLSCertFile and ControlTLSKeyFile do the same for the control listener.
	ControlTLSCertFile string `yaml:"control_tls_cert_file" env:"CONTROL_TLS_CERT_FILE"`
	ControlTLSKeyFile  string `yaml:"control_tls_key_file" env:"CONTROL_TLS_KEY_FILE"`
}

// field describes one Config field's names.
type field struct {
	name string // Go field name
	env  string // full environment variable, with EnvPrefix
	key  string // YAML key
}

// fields lists every Config field in declaration order; byName indexes it.
var fields, byName = func() ([]field, map[string]field) {
	t := reflect.TypeFor[Config]()
	fs := make([]field, 0, t.NumField())
	m := make(map[string]field, t.NumField())
	for i := range t.NumField() {
		sf := t.Field(i)
		f := field{name: sf.Name, env: EnvPrefix + sf.Tag.Get("env"), key: sf.Tag.Get("yaml")}
		fs = append(fs, f)
		m[sf.Name] = f
	}
	return fs, m
}()

// names returns "LSPROXY_X (x)" for the Go field name; it panics on an
// unknown name (a programming error caught by the tests).
func names(goName string) string {
	f, ok := byName[goName]
	if !ok {
		panic("config: unknown field " + goName)
	}
	return f.env + " (" + f.key + ")"
}

// Names returns every LSPROXY_* environment variable lsproxy knows, including
// the *_FILE ones, in declaration order.
func Names() []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = f.env
	}
	return out
}

// secret pairs a secret field with its *_FILE field (Go field names).
type secret struct{ value, file string }

var secrets = []secret{
	{"ClientSecret", "ClientSecretFile"},
	{"AdminToken", "AdminTokenFile"},
	{"EncryptionKey", "EncryptionKeyFile"},
	{"RedisPassword", "RedisPasswordFile"},
	{"WebhookSecret", "WebhookSecretFile"},
	{"ConsoleOIDCClientSecret", "ConsoleOIDCClientSecretFile"},
}

func (c *Config) str(goName string) *string {
	return reflect.ValueOf(c).Elem().FieldByName(goName).Addr().Interface().(*string)
}

// Load returns Default, overlaid by the YAML file at path (none if path is
// ""), overlaid by the LSPROXY_* variables in environ ("KEY=value" lines as
// from os.Environ; an empty value counts as unset). It then reads *_FILE
// secrets. Load does not validate; call Validate.
//
// Errors (all prefixed "config:", never containing a secret value):
// ErrFile (with the file name and line: unknown key, wrong type, duplicate
// key; and, also wrapping ErrFileUnusable, an unreadable file or a YAML
// syntax error), ErrEnv (unparsable variable, naming it),
// ErrSecretConflict (a secret and its _FILE form set in the same layer),
// ErrSecretFile (unreadable or empty secret file, naming its path).
// Every problem is reported (errors.Join): one bad key does not hide the
// others or the environment's. On ErrFileUnusable the Config is the zero
// value; otherwise it holds everything that did load.
func Load(path string, environ []string) (Config, error) {
	c := Default()
	var errs []error
	if path != "" {
		errs = c.loadFile(path)
	}
	envMap := environMap(environ)
	errs = append(errs, c.loadEnv(envMap)...)
	errs = append(errs, c.readSecretFiles()...)
	if len(errs) == 0 {
		return c, nil
	}
	err := errors.Join(errs...)
	if errors.Is(err, ErrFileUnusable) {
		return Config{}, err
	}
	// The rest of c is loaded, so that a caller can still validate it and
	// report every problem at once.
	return c, err
}

var yamlPrefixRE = regexp.MustCompile(`^yaml: `)

// loadFile overlays the file's keys one by one, so that every unknown key
// and every wrong value is reported with its line and key, and the other
// keys still load.
func (c *Config) loadFile(path string) []error {
	data, err := os.ReadFile(path)
	if err != nil {
		return []error{fmt.Errorf("%w: %w: %w", ErrFile, ErrFileUnusable, err)}
	}
	unusable := func(msg string) []error {
		return []error{fmt.Errorf("%w: %w: %s: %s", ErrFile, ErrFileUnusable, path, msg)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil // empty file: defaults
	} else if err != nil {
		return unusable(yamlPrefixRE.ReplaceAllString(err.Error(), ""))
	}
	var extra yaml.Node
	if dec.Decode(&extra) != io.EOF {
		return unusable("more than one YAML document")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil // only comments
	}
	if root.Kind != yaml.MappingNode {
		return unusable(fmt.Sprintf("line %d: the file must be a mapping of keys (key: value lines)", root.Line))
	}
	var errs []error
	problem := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: line %d: %s", ErrFile, path, line, fmt.Sprintf(format, args...)))
	}
	seen := map[string]int{}
	rv := reflect.ValueOf(c).Elem()
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		if first, dup := seen[key]; dup {
			problem(k.Line, "key %q repeats line %d", key, first)
			continue
		}
		seen[key] = k.Line
		f, ok := byKey[key]
		if !ok {
			if s := suggest(key, yamlKeys()); s != "" {
				problem(k.Line, "unknown key %q (did you mean %q?)", key, s)
			} else {
				problem(k.Line, "unknown key %q", key)
			}
			continue
		}
		fv := rv.FieldByName(f.name)
		tmp := reflect.New(fv.Type())
		if err := v.Decode(tmp.Interface()); err != nil {
			problem(v.Line, "%s: %s", key, wrongType(v, fv.Type(), isSecret(f.name)))
			continue
		}
		fv.Set(tmp.Elem())
	}
	for _, s := range secrets {
		if *c.str(s.value) != "" && *c.str(s.file) != "" {
			errs = append(errs, fmt.Errorf("%w: %s: %s and %s are both set; use one",
				ErrSecretConflict, path, byName[s.value].key, byName[s.file].key))
		}
	}
	return errs
}

// wrongType says what a key wants, in the file's terms: "soon" is not a
// duration. A secret's value is never quoted.
func wrongType(v *yaml.Node, t reflect.Type, secret bool) string {
	var want string
	switch {
	case t == reflect.TypeFor[time.Duration]():
		want = "a duration such as 30s, 5m or 1h"
	case t.Kind() == reflect.Bool || (t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Bool):
		want = "true or false"
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		want = "a whole number"
	case t.Kind() == reflect.Slice:
		want = "a list of strings"
	default:
		want = "a string"
	}
	got := "this value"
	switch {
	case v.Kind == yaml.MappingNode:
		got = "a mapping"
	case v.Kind == yaml.SequenceNode:
		got = "a list"
	case v.Kind == yaml.ScalarNode && !secret:
		val := v.Value
		if len(val) > 40 {
			val = val[:40] + "..."
		}
		got = strconv.Quote(val)
	}
	return got + " is not " + want
}

func isSecret(goName string) bool {
	for _, s := range secrets {
		if s.value == goName {
			return true
		}
	}
	return goName == "EncryptionKeys" || goName == "ClientKeys" || goName == "WebhookSecrets"
}

// byKey indexes fields by YAML key.
var byKey = func() map[string]field {
	m := make(map[string]field, len(fields))
	for _, f := range fields {
		m[f.key] = f
	}
	return m
}()

func yamlKeys() []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = f.key
	}
	return out
}

func (c *Config) readSecretFiles() []error {
	var errs []error
	for _, s := range secrets {
		p := *c.str(s.file)
		if p == "" {
			continue
		}
		data, err := readSecretFile(p)
		if err != nil {
			// *PathError names the path; the content is never read into an error.
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrSecretFile, names(s.file), err))
			continue
		}
		v := strings.TrimRight(string(data), "\r\n")
		if v == "" {
			errs = append(errs, fmt.Errorf("%w: %s: file %q is empty", ErrSecretFile, names(s.file), p))
			continue
		}
		*c.str(s.value) = v
	}
	return errs
}

// maxSecretFile bounds a secret file: secrets are short, and a path such as
// /dev/zero must not exhaust memory.
const maxSecretFile = 64 << 10

// readSecretFile reads at most maxSecretFile bytes of path; a larger file is
// an error that names the path and the limit, never content.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSecretFile {
		return nil, fmt.Errorf("file %q is larger than %d bytes", path, maxSecretFile)
	}
	return data, nil
}
