package config

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/lsproxy/lsproxy/auth"
)

const examplePath = "../config.example.yaml"

// leak is a distinctive secret; no error or redacted output may contain it.
const leak = "Zq9-SECRET-do-not-leak"

var testKey = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// yamlFields maps each yaml key to its Config field index.
func yamlFields(t *testing.T) map[string]int {
	t.Helper()
	m := map[string]int{}
	ty := reflect.TypeFor[Config]()
	for i := range ty.NumField() {
		sf := ty.Field(i)
		key, env := sf.Tag.Get("yaml"), sf.Tag.Get("env")
		if key == "" || env == "" {
			t.Fatalf("field %s lacks a yaml or env tag", sf.Name)
		}
		if strings.ToLower(env) != key {
			t.Errorf("field %s: yaml key %q is not the lower case of env %q", sf.Name, key, env)
		}
		if _, dup := m[key]; dup {
			t.Errorf("duplicate yaml key %q", key)
		}
		if _, ok := sf.Tag.Lookup("envDefault"); ok {
			t.Errorf("field %s has an envDefault tag; it would override the file", sf.Name)
		}
		m[key] = i
	}
	return m
}

// exampleKeys returns the keys set in the example and the keys shown only
// commented out ("# key: value").
func exampleKeys(t *testing.T) (set, commented []string) {
	t.Helper()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for k := range m {
		set = append(set, k)
	}
	re := regexp.MustCompile(`(?m)^# ?([a-z][a-z0-9_]*):( |$)`)
	for _, sm := range re.FindAllStringSubmatch(string(data), -1) {
		commented = append(commented, sm[1])
	}
	slices.Sort(set)
	return set, commented
}

func TestExampleEqualsDefault(t *testing.T) {
	got, err := Load(examplePath, nil)
	if err != nil {
		t.Fatalf("Load(example): %v", err)
	}
	def := Default()
	set, _ := exampleKeys(t)
	idx := yamlFields(t)
	gv, dv := reflect.ValueOf(got), reflect.ValueOf(def)
	for _, k := range set {
		i := idx[k]
		if !reflect.DeepEqual(gv.Field(i).Interface(), dv.Field(i).Interface()) {
			t.Errorf("example %s = %v, Default() = %v", k, gv.Field(i).Interface(), dv.Field(i).Interface())
		}
	}
	if !reflect.DeepEqual(got, def) {
		t.Errorf("Load(example) != Default():\n got %+v\nwant %+v", got, def)
	}
}

func TestExampleCoversEveryKey(t *testing.T) {
	idx := yamlFields(t)
	set, commented := exampleKeys(t)
	seen := map[string]int{}
	for _, k := range append(slices.Clone(set), commented...) {
		if _, ok := idx[k]; !ok {
			t.Errorf("example mentions unknown key %q", k)
		}
		seen[k]++
	}
	for k := range idx {
		switch seen[k] {
		case 0:
			t.Errorf("Config key %q is missing from the example", k)
		case 1:
		default:
			t.Errorf("key %q appears %d times in the example", k, seen[k])
		}
	}
	for _, s := range secrets {
		for _, n := range []string{s.value, s.file} {
			if slices.Contains(set, byName[n].key) {
				t.Errorf("secret key %q must be commented out in the example", byName[n].key)
			}
		}
	}
}

func TestNames(t *testing.T) {
	names := Names()
	if len(names) != reflect.TypeFor[Config]().NumField() {
		t.Errorf("Names() has %d entries, Config has %d fields", len(names), reflect.TypeFor[Config]().NumField())
	}
	uniq := map[string]bool{}
	for _, n := range names {
		if !regexp.MustCompile(`^LSPROXY_[A-Z0-9_]+$`).MatchString(n) {
			t.Errorf("bad name %q", n)
		}
		if uniq[n] {
			t.Errorf("duplicate name %q", n)
		}
		uniq[n] = true
	}
	// SPEC section 2 names, plus the _FILE forms of secrets.
	for _, n := range []string{
		"LSPROXY_LISTEN", "LSPROXY_CONTROL_LISTEN", "LSPROXY_PROVIDER", "LSPROXY_ENVIRONMENT",
		"LSPROXY_CLIENT_ID", "LSPROXY_CLIENT_SECRET", "LSPROXY_CLIENT_SECRET_FILE", "LSPROXY_REDIRECT_URL",
		"LSPROXY_SCOPES", "LSPROXY_UPSTREAM_URL", "LSPROXY_AUTHORIZE_URL", "LSPROXY_TOKEN_URL",
		"LSPROXY_CLIENT_AUTH", "LSPROXY_PKCE", "LSPROXY_REDIS_URL", "LSPROXY_DATA_DIR",
		"LSPROXY_ADMIN_TOKEN", "LSPROXY_ADMIN_TOKEN_FILE", "LSPROXY_ENCRYPTION_KEY",
		"LSPROXY_ENCRYPTION_KEY_FILE", "LSPROXY_ENCRYPTION_KEYS", "LSPROXY_TENANT_HEADER",
		"LSPROXY_REFRESH_BEFORE", "LSPROXY_LOG_LEVEL", "LSPROXY_LOG_FORMAT",
		"LSPROXY_REDIS_PASSWORD_FILE", "LSPROXY_WEBHOOK_SECRET_FILE", "LSPROXY_CLIENT_KEYS",
		"LSPROXY_ALLOW_UNAUTHENTICATED",
	} {
		if !uniq[n] {
			t.Errorf("Names() lacks %s", n)
		}
	}
}

func TestNamesPanicsOnUnknownField(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("names(unknown) did not panic")
		}
	}()
	names("NoSuchField")
}

func boolPtr(b bool) *bool { return &b }

func TestLoadLayers(t *testing.T) {
	tests := []struct {
		name    string
		file    string // "" = no file
		environ []string
		check   func(t *testing.T, c Config)
	}{
		{
			name: "defaults without file or env",
			check: func(t *testing.T, c Config) {
				if !reflect.DeepEqual(c, Default()) {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "empty file keeps defaults",
			file: "# nothing\n",
			check: func(t *testing.T, c Config) {
				if !reflect.DeepEqual(c, Default()) {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "file overrides defaults",
			file: "listen: 127.0.0.1:9000\nrefresh_before: 45s\nbreaker_failures: 7\npkce: false\n" +
				"redis_cluster_addrs: [a:1, b:2]\nclient_keys: ['app:h:t1,t2*']\nallow_unauthenticated: true\n" +
				"max_replay_body_bytes: 10\n",
			check: func(t *testing.T, c Config) {
				if c.Listen != "127.0.0.1:9000" || c.RefreshBefore != 45*time.Second || c.BreakerFailures != 7 ||
					c.PKCE == nil || *c.PKCE || !slices.Equal(c.RedisClusterAddrs, []string{"a:1", "b:2"}) ||
					!slices.Equal(c.ClientKeys, []string{"app:h:t1,t2*"}) || !c.AllowUnauthenticated ||
					c.MaxReplayBodyBytes != 10 {
					t.Errorf("got %+v", c)
				}
				if c.ControlListen != Default().ControlListen {
					t.Errorf("unset key changed: %q", c.ControlListen)
				}
			},
		},
		{
			name:    "env overrides file",
			file:    "listen: 127.0.0.1:9000\nrefresh_before: 45s\npkce: false\nredis_cluster_addrs: [a:1]\n",
			environ: []string{"LSPROXY_LISTEN=127.0.0.1:9100", "LSPROXY_REFRESH_BEFORE=1m", "LSPROXY_PKCE=true", "LSPROXY_REDIS_CLUSTER_ADDRS=c:3"},
			check: func(t *testing.T, c Config) {
				if c.Listen != "127.0.0.1:9100" || c.RefreshBefore != time.Minute || c.PKCE == nil || !*c.PKCE ||
					!slices.Equal(c.RedisClusterAddrs, []string{"c:3"}) {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name:    "unset or empty env keeps file value",
			file:    "refresh_before: 45s\nlog_level: debug\ntenant_header: X-Shop\n",
			environ: []string{"LSPROXY_LOG_LEVEL=", "PATH=/bin", "LSPROXY_LISTEN=127.0.0.1:1"},
			check: func(t *testing.T, c Config) {
				if c.RefreshBefore != 45*time.Second || c.LogLevel != "debug" || c.TenantHeader != "X-Shop" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "env without file",
			environ: []string{
				"LSPROXY_PROVIDER=l-series", "LSPROXY_ENVIRONMENT=trial", "LSPROXY_CLIENT_ID=cid",
				"LSPROXY_MAX_HEADER_BYTES=1024", "LSPROXY_ALLOW_UNAUTHENTICATED=true", "LSPROXY_SCOPES=a b",
				"LSPROXY_LOCK_TTL=31s", "LSPROXY_AUTHORIZE_LINK_TTL=2h",
			},
			check: func(t *testing.T, c Config) {
				if c.Provider != "l-series" || c.Environment != "trial" || c.ClientID != "cid" ||
					c.MaxHeaderBytes != 1024 || !c.AllowUnauthenticated || c.Scopes != "a b" ||
					c.LockTTL != 31*time.Second || c.AuthorizeLinkTTL != 2*time.Hour {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "env lists split on spaces and commas; client keys on whitespace only",
			environ: []string{
				"LSPROXY_REDIS_SENTINEL_ADDRS=s1:26379, s2:26379 s3:26379,,",
				"LSPROXY_ENCRYPTION_KEYS=" + testKey + "," + testKey,
				"LSPROXY_CLIENT_KEYS=a:h1:t1,t2*  b:h2:t3\n",
			},
			check: func(t *testing.T, c Config) {
				if !slices.Equal(c.RedisSentinelAddrs, []string{"s1:26379", "s2:26379", "s3:26379"}) {
					t.Errorf("sentinel addrs %q", c.RedisSentinelAddrs)
				}
				if !slices.Equal(c.EncryptionKeys, []string{testKey, testKey}) {
					t.Errorf("encryption keys %q", c.EncryptionKeys)
				}
				if !slices.Equal(c.ClientKeys, []string{"a:h1:t1,t2*", "b:h2:t3"}) {
					t.Errorf("client keys %q", c.ClientKeys)
				}
			},
		},
		{
			name:    "first occurrence of a duplicated variable wins; malformed lines ignored",
			environ: []string{"LSPROXY_DATA_DIR=/a", "garbage", "LSPROXY_DATA_DIR=/b"},
			check: func(t *testing.T, c Config) {
				if c.DataDir != "/a" {
					t.Errorf("data dir %q", c.DataDir)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, "lsproxy.yaml", tt.file)
			}
			c, err := Load(path, tt.environ)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// TestLoadIgnoresProcessEnvironment: a nil environ must not make env read
// os.Environ (env.Options treats a nil Environment that way).
func TestLoadIgnoresProcessEnvironment(t *testing.T) {
	t.Setenv("LSPROXY_LISTEN", "10.9.9.9:1")
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != Default().Listen {
		t.Errorf("Load read the process environment: listen %q", c.Listen)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		file    string // "" = no file; "MISSING" = a path that does not exist
		environ []string
		is      error
		want    []string // substrings; "PATH" stands for the file's path
	}{
		{
			name: "unknown key names file and line",
			file: "listen: 127.0.0.1:9000\nlissen: x\n",
			is:   ErrFile,
			want: []string{"PATH", "line 2", `unknown key "lissen"`},
		},
		{
			name: "several unknown keys all reported",
			file: "a_key: 1\nlisten: 127.0.0.1:9000\nb_key: 2\n",
			is:   ErrFile,
			want: []string{"PATH", `line 1: unknown key "a_key"`, `line 3: unknown key "b_key"`},
		},
		{
			name: "syntax error names file and line",
			file: "listen: 127.0.0.1:9000\n  bad: [\n",
			is:   ErrFile,
			want: []string{"PATH", "line 2"},
		},
		{
			name: "wrong type names file and line",
			file: "listen: a:1\nrefresh_before: soon\n",
			is:   ErrFile,
			want: []string{"PATH", "line 2", `refresh_before: "soon" is not a duration`},
		},
		{
			name: "integer duration rejected",
			file: "refresh_before: 30\n",
			is:   ErrFile,
			want: []string{"PATH", "line 1"},
		},
		{
			name: "duplicate key",
			file: "listen: a:1\nlisten: b:2\n",
			is:   ErrFile,
			want: []string{"PATH", "listen"},
		},
		{
			name: "top level not a mapping",
			file: "- listen\n",
			is:   ErrFile,
			want: []string{"PATH", "line 1"},
		},
		{
			name: "two documents",
			file: "listen: a:1\n---\nlisten: b:2\n",
			is:   ErrFile,
			want: []string{"PATH", "more than one YAML document"},
		},
		{
			name: "missing config file",
			file: "MISSING",
			is:   ErrFile,
			want: []string{"PATH", "no such file"},
		},
		{
			name:    "bad env duration names the variable",
			environ: []string{"LSPROXY_REFRESH_BEFORE=soon"},
			is:      ErrEnv,
			want:    []string{"LSPROXY_REFRESH_BEFORE (refresh_before)"},
		},
		{
			name:    "all bad env values reported",
			environ: []string{"LSPROXY_PKCE=maybe", "LSPROXY_MAX_HEADER_BYTES=lots", "LSPROXY_ALLOW_UNAUTHENTICATED=perhaps"},
			is:      ErrEnv,
			want:    []string{"LSPROXY_PKCE (pkce)", "LSPROXY_MAX_HEADER_BYTES (max_header_bytes)", "LSPROXY_ALLOW_UNAUTHENTICATED (allow_unauthenticated)"},
		},
		{
			name:    "env, conflict and secret-file problems reported together",
			environ: []string{"LSPROXY_LOCK_TTL=x", "LSPROXY_ADMIN_TOKEN=a", "LSPROXY_ADMIN_TOKEN_FILE=b", "LSPROXY_WEBHOOK_SECRET_FILE=/nonexistent/lsproxy"},
			is:      ErrEnv,
			want:    []string{"LSPROXY_LOCK_TTL (lock_ttl)", "LSPROXY_ADMIN_TOKEN and LSPROXY_ADMIN_TOKEN_FILE", "LSPROXY_WEBHOOK_SECRET_FILE (webhook_secret_file)", "/nonexistent/lsproxy"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			switch tt.file {
			case "":
			case "MISSING":
				path = filepath.Join(t.TempDir(), "nope.yaml")
			default:
				path = writeFile(t, "lsproxy.yaml", tt.file)
			}
			_, err := Load(path, tt.environ)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			for _, w := range tt.want {
				if w == "PATH" {
					w = path
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	secretPath := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretPath, []byte(leak+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	crlfPath := filepath.Join(dir, "crlf")
	if err := os.WriteFile(crlfPath, []byte(leak+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyPath := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyPath, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	type want struct {
		field string // Go field that must hold leak
		is    error  // or: the error expected
		msg   []string
	}
	tests := []struct {
		name    string
		file    string
		environ []string
		want    want
	}{
		{name: "env client secret file", environ: []string{"LSPROXY_CLIENT_SECRET_FILE=" + secretPath}, want: want{field: "ClientSecret"}},
		{name: "env admin token file, CRLF trimmed", environ: []string{"LSPROXY_ADMIN_TOKEN_FILE=" + crlfPath}, want: want{field: "AdminToken"}},
		{name: "env encryption key file", environ: []string{"LSPROXY_ENCRYPTION_KEY_FILE=" + secretPath}, want: want{field: "EncryptionKey"}},
		{name: "env redis password file", environ: []string{"LSPROXY_REDIS_PASSWORD_FILE=" + secretPath}, want: want{field: "RedisPassword"}},
		{name: "env webhook secret file", environ: []string{"LSPROXY_WEBHOOK_SECRET_FILE=" + secretPath}, want: want{field: "WebhookSecret"}},
		{name: "yaml client_secret_file", file: "client_secret_file: " + secretPath + "\n", want: want{field: "ClientSecret"}},
		{name: "yaml webhook_secret_file", file: "webhook_secret_file: " + secretPath + "\n", want: want{field: "WebhookSecret"}},
		{name: "yaml value", file: "admin_token: " + leak + "\n", want: want{field: "AdminToken"}},
		{
			name:    "env value replaces yaml file form",
			file:    "client_secret_file: " + missing + "\n",
			environ: []string{"LSPROXY_CLIENT_SECRET=" + leak},
			want:    want{field: "ClientSecret"},
		},
		{
			name:    "env file form replaces yaml value",
			file:    "client_secret: other\n",
			environ: []string{"LSPROXY_CLIENT_SECRET_FILE=" + secretPath},
			want:    want{field: "ClientSecret"},
		},
		{
			name:    "both set in env",
			environ: []string{"LSPROXY_CLIENT_SECRET=" + leak, "LSPROXY_CLIENT_SECRET_FILE=" + secretPath},
			want:    want{is: ErrSecretConflict, msg: []string{"LSPROXY_CLIENT_SECRET and LSPROXY_CLIENT_SECRET_FILE"}},
		},
		{
			name:    "both set in env, every pair reported",
			environ: []string{"LSPROXY_ADMIN_TOKEN=" + leak, "LSPROXY_ADMIN_TOKEN_FILE=" + secretPath, "LSPROXY_WEBHOOK_SECRET=" + leak, "LSPROXY_WEBHOOK_SECRET_FILE=" + secretPath},
			want:    want{is: ErrSecretConflict, msg: []string{"LSPROXY_ADMIN_TOKEN and", "LSPROXY_WEBHOOK_SECRET and"}},
		},
		{
			name: "both set in yaml",
			file: "encryption_key: " + leak + "\nencryption_key_file: " + secretPath + "\n",
			want: want{is: ErrSecretConflict, msg: []string{"encryption_key and encryption_key_file", "lsproxy.yaml"}},
		},
		{
			name:    "missing file names the path",
			environ: []string{"LSPROXY_REDIS_PASSWORD_FILE=" + missing},
			want:    want{is: ErrSecretFile, msg: []string{"LSPROXY_REDIS_PASSWORD_FILE (redis_password_file)", missing}},
		},
		{
			name: "directory is unreadable",
			file: "admin_token_file: " + dir + "\n",
			want: want{is: ErrSecretFile, msg: []string{"LSPROXY_ADMIN_TOKEN_FILE (admin_token_file)", dir}},
		},
		{
			name:    "empty file",
			environ: []string{"LSPROXY_ENCRYPTION_KEY_FILE=" + emptyPath},
			want:    want{is: ErrSecretFile, msg: []string{"LSPROXY_ENCRYPTION_KEY_FILE (encryption_key_file)", "empty", emptyPath}},
		},
		{
			name:    "all unreadable files reported",
			environ: []string{"LSPROXY_CLIENT_SECRET_FILE=" + missing, "LSPROXY_WEBHOOK_SECRET_FILE=" + missing + "2"},
			want:    want{is: ErrSecretFile, msg: []string{"LSPROXY_CLIENT_SECRET_FILE", "LSPROXY_WEBHOOK_SECRET_FILE"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, "lsproxy.yaml", tt.file)
			}
			c, err := Load(path, tt.environ)
			if tt.want.is != nil {
				if err == nil {
					t.Fatal("Load succeeded")
				}
				if !errors.Is(err, tt.want.is) {
					t.Errorf("error %v is not %v", err, tt.want.is)
				}
				for _, m := range tt.want.msg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error %q lacks %q", err, m)
					}
				}
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error leaks the secret: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := *c.str(tt.want.field); got != leak {
				t.Errorf("%s = %q, want the file's content", tt.want.field, got)
			}
		})
	}
}

// validConfig passes Validate in every mode.
func validConfig() Config {
	c := Default()
	c.ClientID = "client"
	c.ClientSecret = leak
	c.EncryptionKey = testKey
	return c
}

func TestValidDefaults(t *testing.T) {
	for _, mode := range []string{ModeServe, ModeCheck, ModeDev} {
		if errs := validConfig().Validate(mode); errs != nil {
			t.Errorf("%s: %v", mode, errs)
		}
	}
	if errs := Default().Validate(ModeDev); errs != nil {
		t.Errorf("Default() in dev mode: %v", errs)
	}
	c, err := Load(examplePath, []string{"LSPROXY_CLIENT_ID=x", "LSPROXY_CLIENT_SECRET=y", "LSPROXY_ENCRYPTION_KEY=" + testKey})
	if err != nil {
		t.Fatal(err)
	}
	if errs := c.Validate(ModeServe); errs != nil {
		t.Errorf("example + required env: %v", errs)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mode   string
		mutate func(c *Config)
		want   []string // one substring per expected error, in order; nil = valid
	}{
		{"client id required", ModeServe, func(c *Config) { c.ClientID = "" }, []string{"LSPROXY_CLIENT_ID (client_id) is required"}},
		{"client secret required in check", ModeCheck, func(c *Config) { c.ClientSecret = "" }, []string{"LSPROXY_CLIENT_SECRET (client_secret) is required"}},
		{"encryption key required", ModeServe, func(c *Config) { c.EncryptionKey = "" }, []string{"LSPROXY_ENCRYPTION_KEY (encryption_key) is required"}},
		{"dev needs no client or key", ModeDev, func(c *Config) { c.ClientID, c.ClientSecret, c.EncryptionKey = "", "", "" }, nil},
		{"key not base64", ModeServe, func(c *Config) { c.EncryptionKey = "%%%" + leak }, []string{"LSPROXY_ENCRYPTION_KEY (encryption_key) must be standard base64 of exactly 32 bytes"}},
		{"key wrong length", ModeDev, func(c *Config) { c.EncryptionKey = base64.StdEncoding.EncodeToString(make([]byte, 16)) }, []string{"LSPROXY_ENCRYPTION_KEY (encryption_key) must be"}},
		{"old key bad", ModeServe, func(c *Config) { c.EncryptionKeys = []string{testKey, leak} }, []string{"LSPROXY_ENCRYPTION_KEYS (encryption_keys) entry 2"}},
		{"provider", ModeServe, func(c *Config) { c.Provider = "z-series" }, []string{`LSPROXY_PROVIDER (provider) must be one of k-series,`}},
		{"environment", ModeServe, func(c *Config) { c.Environment = "staging" }, []string{"LSPROXY_ENVIRONMENT (environment) must be one of production, trial"}},
		{"client auth", ModeServe, func(c *Config) { c.ClientAuth = "header" }, []string{"LSPROXY_CLIENT_AUTH (client_auth) must be one of basic, body"}},
		{"client auth basic", ModeServe, func(c *Config) { c.ClientAuth = "basic" }, nil},
		{"log level", ModeServe, func(c *Config) { c.LogLevel = "verbose" }, []string{"LSPROXY_LOG_LEVEL (log_level) must be one of"}},
		{"log level empty", ModeServe, func(c *Config) { c.LogLevel = "" }, []string{"LSPROXY_LOG_LEVEL (log_level) is required"}},
		{"log level debug", ModeServe, func(c *Config) { c.LogLevel = "debug" }, nil},
		{"log format", ModeServe, func(c *Config) { c.LogFormat = "text" }, []string{"LSPROXY_LOG_FORMAT (log_format) must be one of json, console"}},
		{"upstream scheme", ModeServe, func(c *Config) { c.UpstreamURL = "ftp://example.com" }, []string{"LSPROXY_UPSTREAM_URL (upstream_url) must be an absolute http"}},
		{"upstream relative", ModeServe, func(c *Config) { c.UpstreamURL = "/api" }, []string{"LSPROXY_UPSTREAM_URL (upstream_url) must be an absolute"}},
		{"upstream query", ModeServe, func(c *Config) { c.UpstreamURL = "https://example.com/api?x=1" }, []string{"LSPROXY_UPSTREAM_URL (upstream_url) must not contain"}},
		{"upstream user info", ModeServe, func(c *Config) { c.UpstreamURL = "https://u:" + leak + "@example.com" }, []string{"LSPROXY_UPSTREAM_URL (upstream_url) must not contain"}},
		{"upstream ok", ModeServe, func(c *Config) { c.UpstreamURL = "http://127.0.0.1:9999/base" }, nil},
		{"authorize unparsable", ModeServe, func(c *Config) { c.AuthorizeURL = "http://[::1" }, []string{"LSPROXY_AUTHORIZE_URL (authorize_url) is not a valid URL"}},
		{"token url with domain prefix placeholder", ModeServe, func(c *Config) {
			c.TokenURL = "https://{domain_prefix}.retail.lightspeed.app/api/1.0/token"
		}, nil},
		{"token url bad", ModeServe, func(c *Config) { c.TokenURL = "token" }, []string{"LSPROXY_TOKEN_URL (token_url)"}},
		{"redirect bad", ModeServe, func(c *Config) { c.RedirectURL = "localhost:8081/oauth/callback" }, []string{"LSPROXY_REDIRECT_URL (redirect_url)"}},
		{"success bad", ModeServe, func(c *Config) { c.SuccessURL = "mailto:x@example.com" }, []string{"LSPROXY_SUCCESS_URL (success_url)"}},
		{"webhook bad", ModeServe, func(c *Config) { c.WebhookURL = "https://"; c.WebhookSecret = strings.Repeat("s", 16) }, []string{"LSPROXY_WEBHOOK_URL (webhook_url)"}},
		{"admin token short", ModeServe, func(c *Config) { c.AdminToken = "admin" }, []string{"LSPROXY_ADMIN_TOKEN (admin_token) must be at least 16 characters"}},
		{"admin token short check", ModeCheck, func(c *Config) { c.AdminToken = strings.Repeat("a", 15) }, []string{"LSPROXY_ADMIN_TOKEN (admin_token) must be at least 16"}},
		{"admin token short dev", ModeDev, func(c *Config) { c.AdminToken = "admin" }, nil},
		{"admin token 16", ModeServe, func(c *Config) { c.AdminToken = strings.Repeat("a", 16) }, nil},
		{"redirect path", ModeServe, func(c *Config) { c.RedirectURL = "https://lsproxy.example.com/callback" }, []string{"LSPROXY_REDIRECT_URL (redirect_url) must end in the path /oauth/callback"}},
		{"redirect path ok", ModeServe, func(c *Config) { c.RedirectURL = "https://lsproxy.example.com/oauth/callback" }, nil},
		{"webhook without secret", ModeServe, func(c *Config) { c.WebhookURL = "https://hooks.example/x" }, []string{"LSPROXY_WEBHOOK_SECRET (webhook_secret) is required when LSPROXY_WEBHOOK_URL"}},
		{"webhook whsec not base64", ModeServe, func(c *Config) { c.WebhookURL = "https://hooks.example/x"; c.WebhookSecret = "whsec_not*base64!" }, []string{"webhook_secret) starts with whsec_ but the rest is not standard base64"}},
		{"webhook whsec short", ModeServe, func(c *Config) { c.WebhookURL = "https://hooks.example/x"; c.WebhookSecret = "whsec_AAAAAA==" }, []string{"decodes to 4 bytes"}},
		{"webhook whsec ok", ModeServe, func(c *Config) {
			c.WebhookURL = "https://hooks.example/x"
			c.WebhookSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
		}, nil},
		{"webhook raw short", ModeServe, func(c *Config) { c.WebhookURL = "https://hooks.example/x"; c.WebhookSecret = "abcd" }, []string{"webhook_secret) must be at least 16 bytes"}},
		{"custom needs urls", ModeServe, func(c *Config) { c.Provider = "custom" }, []string{
			"LSPROXY_UPSTREAM_URL (upstream_url) is required when LSPROXY_PROVIDER (provider) is custom",
			"LSPROXY_AUTHORIZE_URL (authorize_url) is required",
			"LSPROXY_TOKEN_URL (token_url) is required",
		}},
		{"custom with urls", ModeServe, func(c *Config) {
			c.Provider, c.UpstreamURL, c.AuthorizeURL, c.TokenURL = "custom", "https://a", "https://b/auth", "https://b/token"
		}, nil},
		{"redis scheme", ModeServe, func(c *Config) { c.RedisURL = "http://:" + leak + "@h:6379" }, []string{"LSPROXY_REDIS_URL (redis_url) must use the redis:// or rediss:// scheme"}},
		{"redis no host", ModeServe, func(c *Config) { c.RedisURL = "redis://" }, []string{"LSPROXY_REDIS_URL (redis_url) must name a host"}},
		{"redis unparsable", ModeServe, func(c *Config) { c.RedisURL = "redis://:" + leak + "@[::1" }, []string{"LSPROXY_REDIS_URL (redis_url) is not a valid URL"}},
		{"redis ok", ModeServe, func(c *Config) { c.RedisURL = "rediss://:" + leak + "@redis.example:6380/2" }, nil},
		{"sentinel master without addrs", ModeServe, func(c *Config) { c.RedisSentinelMaster = "mymaster" }, []string{"LSPROXY_REDIS_SENTINEL_MASTER (redis_sentinel_master) and LSPROXY_REDIS_SENTINEL_ADDRS"}},
		{"sentinel addrs without master", ModeServe, func(c *Config) { c.RedisSentinelAddrs = []string{"s:26379"} }, []string{"LSPROXY_REDIS_SENTINEL_MASTER (redis_sentinel_master)"}},
		{"sentinel and cluster", ModeServe, func(c *Config) {
			c.RedisSentinelMaster, c.RedisSentinelAddrs, c.RedisClusterAddrs = "m", []string{"s:26379"}, []string{"c:6379"}
		}, []string{"LSPROXY_REDIS_CLUSTER_ADDRS (redis_cluster_addrs) cannot be combined"}},
		{"bad redis addrs", ModeServe, func(c *Config) { c.RedisClusterAddrs = []string{"c:6379", "nope", ":6379", "c:0"} }, []string{
			`LSPROXY_REDIS_CLUSTER_ADDRS (redis_cluster_addrs) entry "nope"`,
			`entry ":6379"`,
			`entry "c:0"`,
		}},
		{"redis key prefix hash tag", ModeServe, func(c *Config) { c.RedisKeyPrefix = "{x}" }, []string{"LSPROXY_REDIS_KEY_PREFIX (redis_key_prefix)"}},
		{"listen no port", ModeServe, func(c *Config) { c.Listen = "127.0.0.1" }, []string{"LSPROXY_LISTEN (listen) must be host:port"}},
		{"control listen bad port", ModeServe, func(c *Config) { c.ControlListen = "127.0.0.1:99999" }, []string{"LSPROXY_CONTROL_LISTEN (control_listen) must be host:port"}},
		{"same listeners", ModeServe, func(c *Config) { c.ControlListen = c.Listen }, []string{"LSPROXY_CONTROL_LISTEN (control_listen) must differ"}},
		{"both on port 0", ModeServe, func(c *Config) { c.Listen, c.ControlListen = "127.0.0.1:0", "127.0.0.1:0" }, nil},
		{"non-loopback listen needs auth", ModeServe, func(c *Config) { c.Listen = "0.0.0.0:8080" }, []string{"LSPROXY_LISTEN (listen) binds a non-loopback address"}},
		{"all interfaces listen needs auth", ModeServe, func(c *Config) { c.Listen = ":8080" }, []string{"LSPROXY_LISTEN (listen) binds a non-loopback"}},
		{"hostname listen needs auth", ModeServe, func(c *Config) { c.Listen = "proxy.internal:8080" }, []string{"LSPROXY_LISTEN (listen) binds a non-loopback"}},
		{"non-loopback with client keys", ModeServe, func(c *Config) { c.Listen, c.ClientKeys = "0.0.0.0:8080", []string{"a:h:t"} }, nil},
		{"non-loopback explicitly unauthenticated", ModeServe, func(c *Config) { c.Listen, c.AllowUnauthenticated = "10.0.0.1:8080", true }, nil},
		{"localhost listen", ModeServe, func(c *Config) { c.Listen = "localhost:8080" }, nil},
		{"ipv6 loopback listen", ModeServe, func(c *Config) { c.Listen = "[::1]:8080" }, nil},
		{"control listen may be public", ModeServe, func(c *Config) { c.ControlListen = "0.0.0.0:8081" }, nil},
		{"tenant header not a token", ModeServe, func(c *Config) { c.TenantHeader = "X Tenant" }, []string{"LSPROXY_TENANT_HEADER (tenant_header) must be a valid HTTP header name"}},
		{"tenant header empty", ModeServe, func(c *Config) { c.TenantHeader = "" }, []string{"LSPROXY_TENANT_HEADER (tenant_header) must be a valid"}},
		{"tenant header reserved", ModeServe, func(c *Config) { c.TenantHeader = "authorization" }, []string{"LSPROXY_TENANT_HEADER (tenant_header) must not be Authorization"}},
		{"lock ttl below token timeout", ModeServe, func(c *Config) { c.LockTTL = c.TokenTimeout / 2 }, []string{"LSPROXY_LOCK_TTL (lock_ttl) 5s does not outlast token_timeout 10s"}},
		{"lock ttl equal to token timeout", ModeServe, func(c *Config) { c.LockTTL = c.TokenTimeout }, []string{"LSPROXY_LOCK_TTL (lock_ttl) 10s does not outlast token_timeout 10s"}},
		{"lock ttl just above token timeout stays valid (SPEC §2)", ModeServe, func(c *Config) { c.LockTTL = c.TokenTimeout + 100*time.Millisecond }, nil},
		{"lock ttl covering the send", ModeServe, func(c *Config) { c.LockTTL = c.TokenTimeout + auth.SendMargin }, nil},
		{"token timeout alone (lock ttl derived)", ModeServe, func(c *Config) { c.TokenTimeout = 20 * time.Second }, nil},
		{"lock ttl too short", ModeServe, func(c *Config) { c.LockTTL = 100 * time.Millisecond }, []string{"LSPROXY_LOCK_TTL (lock_ttl) must be at least 300ms"}},
		{"lock ttl negative", ModeServe, func(c *Config) { c.LockTTL = -time.Second }, []string{"LSPROXY_LOCK_TTL (lock_ttl) must not be negative"}},
		// Rule 17: a lease shorter than a send lets a takeover overlap it.
		{"lock ttl below the send", ModeServe, func(c *Config) { c.LockTTL = time.Second }, []string{"LSPROXY_LOCK_TTL (lock_ttl) 1s does not outlast token_timeout 10s: a successor takes the lock over once it expires, so the lease must cover the whole token request; before each send the holder extends it to token_timeout 10s + write retry 750ms + renewal before the send 500ms = 11.25s"}},
		{"token timeout above a set lock ttl", ModeServe, func(c *Config) { c.LockTTL, c.TokenTimeout = 6*time.Second, 20*time.Second }, []string{"token_timeout 20s + write retry 750ms + renewal before the send 500ms = 21.25s"}},
		{"rate limit max block negative", ModeServe, func(c *Config) { c.RateLimitMaxBlock = -time.Second }, []string{"LSPROXY_RATE_LIMIT_MAX_BLOCK (rate_limit_max_block) must not be negative"}},
		{"lock ttl zero (default)", ModeServe, func(c *Config) { c.LockTTL = 0 }, nil},
		{"redis wait replicas negative", ModeServe, func(c *Config) { c.RedisWaitReplicas = -1 }, []string{"LSPROXY_REDIS_WAIT_REPLICAS (redis_wait_replicas) must not be negative"}},
		{"redis wait replicas off", ModeServe, func(c *Config) { c.RedisWaitReplicas = 0 }, nil},
		{"redis wait timeout zero", ModeServe, func(c *Config) { c.RedisWaitTimeout = 0 }, []string{"LSPROXY_REDIS_WAIT_TIMEOUT (redis_wait_timeout) must be greater than 0 and at most 10s"}},
		{"redis wait timeout long", ModeServe, func(c *Config) { c.RedisWaitTimeout = time.Minute }, []string{"LSPROXY_REDIS_WAIT_TIMEOUT (redis_wait_timeout) must be greater than 0 and at most 10s"}},
		{"guard threshold zero", ModeServe, func(c *Config) { c.InvalidGrantGuardThreshold = 0 }, []string{"LSPROXY_INVALID_GRANT_GUARD_THRESHOLD (invalid_grant_guard_threshold) must be at least 1, or -1"}},
		{"guard off", ModeServe, func(c *Config) { c.InvalidGrantGuardThreshold = -1 }, nil},
		{"guard window zero", ModeServe, func(c *Config) { c.InvalidGrantGuardWindow = 0 }, []string{"LSPROXY_INVALID_GRANT_GUARD_WINDOW (invalid_grant_guard_window) must be greater than 0"}},
		{"replay bytes negative", ModeServe, func(c *Config) { c.MaxReplayBodyBytes = -1 }, []string{"LSPROXY_MAX_REPLAY_BODY_BYTES (max_replay_body_bytes) must not be negative"}},
		{"replay bytes zero disables replay", ModeServe, func(c *Config) { c.MaxReplayBodyBytes = 0 }, nil},
		{"max header bytes", ModeServe, func(c *Config) { c.MaxHeaderBytes = 0 }, []string{"LSPROXY_MAX_HEADER_BYTES (max_header_bytes) must be greater than 0"}},
		{"breaker failures", ModeServe, func(c *Config) { c.BreakerFailures = -1 }, []string{"LSPROXY_BREAKER_FAILURES (breaker_failures) must be greater than 0"}},
		{"refresher concurrency", ModeServe, func(c *Config) { c.RefresherConcurrency = 0 }, []string{"LSPROXY_REFRESHER_CONCURRENCY (refresher_concurrency) must be greater than 0"}},
		{"rate limit wait negative", ModeServe, func(c *Config) { c.RateLimitWait = -time.Second }, []string{"LSPROXY_RATE_LIMIT_WAIT (rate_limit_wait) must not be negative"}},
		{"rate limit wait zero never waits", ModeServe, func(c *Config) { c.RateLimitWait = 0 }, nil},
		{"rate limit key share 1", ModeServe, func(c *Config) { c.RateLimitKeyShare = 1 }, []string{"LSPROXY_RATE_LIMIT_KEY_SHARE (rate_limit_key_share) must be at least 0 and below 1"}},
		{"rate limit costs malformed", ModeServe, func(c *Config) { c.RateLimitCosts = "get=1" }, []string{"LSPROXY_RATE_LIMIT_COSTS (rate_limit_costs) must look like GET=1,HEAD=1,*=10"}},
		{"rate limit costs", ModeServe, func(c *Config) { c.RateLimitCosts = "GET=1,*=5" }, nil},
	}
	// Every duration that must be positive.
	for _, n := range []string{
		"RefreshBefore", "UpstreamTimeout", "TokenTimeout", "ReadHeaderTimeout", "BodyReadTimeout", "IdleTimeout",
		"ShutdownTimeout", "BreakerOpenFor", "CacheTTL", "StateTTL", "AuthorizeLinkTTL",
		"ConsoleSessionIdle", "RefresherInterval", "RefreshIdleMargin", "IdentifyRetry",
	} {
		tests = append(tests, struct {
			name   string
			mode   string
			mutate func(c *Config)
			want   []string
		}{
			name: "zero " + n, mode: ModeServe,
			mutate: func(c *Config) {
				reflect.ValueOf(c).Elem().FieldByName(n).SetInt(0)
				if n == "TokenTimeout" {
					c.LockTTL = 0
				}
			},
			want: []string{names(n) + " must be greater than 0"},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			errs := c.Validate(tt.mode)
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors %v, want %d %q", len(errs), errs, len(tt.want), tt.want)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tt.want[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, err, tt.want[i])
				}
				var fe *FieldError
				if !errors.As(err, &fe) || !strings.HasPrefix(fe.Env, EnvPrefix) || fe.Key == "" {
					t.Errorf("error %q is not a FieldError naming env and key", err)
				}
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error leaks the secret: %q", err)
				}
			}
		})
	}
}

func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	c := Config{ // zero value: nearly everything is wrong
		ClientSecret:  leak,
		EncryptionKey: leak,
		RedisURL:      "mysql://root:" + leak + "@db",
		AdminToken:    leak,
		WebhookSecret: leak,
	}
	errs := c.Validate(ModeServe)
	want := []string{
		"LSPROXY_LISTEN (listen)", "LSPROXY_CONTROL_LISTEN (control_listen)",
		"LSPROXY_PROVIDER (provider)", "LSPROXY_ENVIRONMENT (environment)",
		"LSPROXY_CLIENT_ID (client_id)", "LSPROXY_REDIS_URL (redis_url)",
		"LSPROXY_ENCRYPTION_KEY (encryption_key)", "LSPROXY_TENANT_HEADER (tenant_header)",
		"LSPROXY_LOCATION_HEADER (location_header)", "LSPROXY_LOG_LEVEL (log_level)", "LSPROXY_LOG_FORMAT (log_format)",
		"LSPROXY_REFRESH_BEFORE (refresh_before)", "LSPROXY_UPSTREAM_TIMEOUT (upstream_timeout)",
		"LSPROXY_TOKEN_TIMEOUT (token_timeout)", "LSPROXY_READ_HEADER_TIMEOUT (read_header_timeout)", "LSPROXY_BODY_READ_TIMEOUT (body_read_timeout)",
		"LSPROXY_IDLE_TIMEOUT (idle_timeout)", "LSPROXY_SHUTDOWN_TIMEOUT (shutdown_timeout)",
		"LSPROXY_BREAKER_OPEN_FOR (breaker_open_for)", "LSPROXY_CACHE_TTL (cache_ttl)",
		"LSPROXY_STATE_TTL (state_ttl)", "LSPROXY_AUTHORIZE_LINK_TTL (authorize_link_ttl)", "LSPROXY_IDENTIFY_RETRY (identify_retry)",
		"LSPROXY_CONSOLE_SESSION_IDLE (console_session_idle)",
		"LSPROXY_REFRESHER_INTERVAL (refresher_interval)", "LSPROXY_REFRESH_IDLE_MARGIN (refresh_idle_margin)",
		"LSPROXY_MAX_HEADER_BYTES (max_header_bytes)", "LSPROXY_BREAKER_FAILURES (breaker_failures)",
		"LSPROXY_REFRESHER_CONCURRENCY (refresher_concurrency)",
		"LSPROXY_REDIS_WAIT_TIMEOUT (redis_wait_timeout)",
		"LSPROXY_INVALID_GRANT_GUARD_THRESHOLD (invalid_grant_guard_threshold)",
		"LSPROXY_INVALID_GRANT_GUARD_WINDOW (invalid_grant_guard_window)",
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(errs), len(want), errors.Join(errs...))
	}
	all := errors.Join(errs...).Error()
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("errors lack %q", w)
		}
	}
	if strings.Contains(all, leak) || strings.Contains(all, "mysql") {
		t.Errorf("errors leak a secret or the Redis URL:\n%s", all)
	}
}

func TestValidateUnknownMode(t *testing.T) {
	errs := validConfig().Validate("prod")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `unknown validation mode "prod"`) {
		t.Errorf("got %v", errs)
	}
}

// TestErrorsNeverContainSecrets loads files and environments carrying the
// distinctive secret next to every kind of problem.
func TestErrorsNeverContainSecrets(t *testing.T) {
	secretFile := writeFile(t, "s", leak+"\n")
	files := []string{
		"client_secret: " + leak + "\nlissen: x\n",
		"admin_token: " + leak + "\nadmin_token_file: " + secretFile + "\n",
		"encryption_key: " + leak + "\nrefresh_before: x\n",
		"client_secret: \"" + leak + "\n", // unterminated string
	}
	for i, f := range files {
		_, err := Load(writeFile(t, "c.yaml", f), nil)
		if err == nil {
			t.Errorf("file %d: Load succeeded", i)
		} else if strings.Contains(err.Error(), leak) {
			t.Errorf("file %d: error leaks the secret: %q", i, err)
		}
	}
	environs := [][]string{
		{"LSPROXY_REDIS_PASSWORD=" + leak, "LSPROXY_REDIS_PASSWORD_FILE=" + secretFile},
		{"LSPROXY_WEBHOOK_SECRET=" + leak, "LSPROXY_LOCK_TTL=x"},
		{"LSPROXY_CLIENT_SECRET=" + leak, "LSPROXY_ENCRYPTION_KEY_FILE=" + secretFile + ".missing"},
	}
	for i, env := range environs {
		_, err := Load("", env)
		if err == nil {
			t.Errorf("environ %d: Load succeeded", i)
		} else if strings.Contains(err.Error(), leak) {
			t.Errorf("environ %d: error leaks the secret: %q", i, err)
		}
	}
	// A loaded secret that fails validation is not echoed either.
	c, err := Load("", []string{"LSPROXY_ENCRYPTION_KEY_FILE=" + secretFile, "LSPROXY_CLIENT_ID=x", "LSPROXY_CLIENT_SECRET=" + leak})
	if err != nil {
		t.Fatal(err)
	}
	errs := c.Validate(ModeServe)
	if len(errs) != 1 {
		t.Errorf("got %v", errs)
	}
	if s := errors.Join(errs...).Error(); strings.Contains(s, leak) {
		t.Errorf("Validate leaks the secret: %q", s)
	}
}

func TestRedacted(t *testing.T) {
	c := validConfig()
	c.AdminToken = leak
	c.EncryptionKey = leak
	c.EncryptionKeys = []string{leak, leak}
	c.RedisPassword = leak
	c.RedisPasswordFile = "/run/secrets/redis"
	c.WebhookSecret = leak
	c.RedisURL = "redis://user:" + leak + "@redis:6379/0"
	c.WebhookURL = "https://hook:" + leak + "@example.com/hook"
	c.UpstreamURL = "https://api.example.com/base"
	c.ClientKeys = []string{"app:" + leak + ":t1,t2*", leak}
	c.RedisClusterAddrs = []string{"c:1"}
	c.PKCE = boolPtr(true)
	orig := c
	origKeys := slices.Clone(c.ClientKeys)
	origEnc := slices.Clone(c.EncryptionKeys)

	r := c.Redacted()
	if s := strings.Join([]string{r.ClientSecret, r.AdminToken, r.EncryptionKey, r.RedisPassword, r.WebhookSecret}, " "); s !=
		"[redacted] [redacted] [redacted] [redacted] [redacted]" {
		t.Errorf("secrets not redacted: %q", s)
	}
	if dump := strings.Join(append(append([]string{r.RedisURL, r.WebhookURL}, r.ClientKeys...), r.EncryptionKeys...), " "); strings.Contains(dump, leak) {
		t.Errorf("redacted copy leaks: %q", dump)
	}
	if !slices.Equal(r.ClientKeys, []string{"app:[redacted]:t1,t2*", "[redacted]"}) {
		t.Errorf("client keys %q", r.ClientKeys)
	}
	if r.RedisURL != "redis://user:redacted@redis:6379/0" || r.UpstreamURL != c.UpstreamURL {
		t.Errorf("urls %q %q", r.RedisURL, r.UpstreamURL)
	}
	if r.RedisPasswordFile != "/run/secrets/redis" || r.ClientID != "client" || r.Listen != c.Listen {
		t.Errorf("non-secret fields changed: %+v", r)
	}
	// The original is untouched, including through shared slices and pointers.
	r.RedisClusterAddrs[0] = "changed"
	*r.PKCE = false
	if !reflect.DeepEqual(c, orig) || !slices.Equal(c.ClientKeys, origKeys) || !slices.Equal(c.EncryptionKeys, origEnc) ||
		c.RedisClusterAddrs[0] != "c:1" || !*c.PKCE {
		t.Errorf("Redacted modified the original")
	}
	// Unset secrets stay empty (no "[redacted]" for something not configured).
	d := Default().Redacted()
	if d.AdminToken != "" || d.ClientSecret != "" || d.EncryptionKeys != nil {
		t.Errorf("unset secrets changed: %+v", d)
	}
	if got := (Config{RedisURL: "redis://:" + leak + "@[::1"}).Redacted().RedisURL; got != "[redacted]" {
		t.Errorf("unparsable URL: %q", got)
	}
}

func TestEffectiveLockTTL(t *testing.T) {
	tests := []struct {
		lock, token, want time.Duration
	}{
		{0, 10 * time.Second, DefaultLockTTL},
		{0, time.Second, time.Second + auth.SendMargin},
		{0, 20 * time.Second, 20*time.Second + auth.SendMargin},
		{time.Second, 10 * time.Second, time.Second},
		{40 * time.Second, 10 * time.Second, 40 * time.Second},
	}
	for _, tt := range tests {
		c := Default()
		c.LockTTL, c.TokenTimeout = tt.lock, tt.token
		if got := c.EffectiveLockTTL(); got != tt.want {
			t.Errorf("LockTTL %s TokenTimeout %s: got %s, want %s", tt.lock, tt.token, got, tt.want)
		}
	}
}

func TestValidateUpstreamTemplateAndLocationHeader(t *testing.T) {
	base := Default()
	base.ClientID, base.ClientSecret = "id", "secret"
	base.EncryptionKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	for _, tc := range []struct {
		name  string
		edit  func(c *Config)
		field string // "" = valid
	}{
		{"x-series template", func(c *Config) {
			c.Provider, c.UpstreamURL = "x-series", "https://{domain_prefix}.retail.lightspeed.app"
		}, ""},
		{"template path", func(c *Config) {
			c.Provider, c.UpstreamURL = "custom", "https://api.example/{domain_prefix}"
			c.AuthorizeURL, c.TokenURL = "https://auth.example/a", "https://auth.example/t"
		}, ""},
		{"template for k-series", func(c *Config) { c.UpstreamURL = "https://{domain_prefix}.example" }, "LSPROXY_UPSTREAM_URL"},
		{"other placeholder", func(c *Config) { c.Provider, c.UpstreamURL = "x-series", "https://{store}.example" }, "LSPROXY_UPSTREAM_URL"},
		{"location header bad", func(c *Config) { c.LocationHeader = "X Location" }, "LSPROXY_LOCATION_HEADER"},
		{"location header = tenant header", func(c *Config) { c.LocationHeader = "x-tenant" }, "LSPROXY_LOCATION_HEADER"},
		{"location header reserved", func(c *Config) { c.LocationHeader = "Authorization" }, "LSPROXY_LOCATION_HEADER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			all := errors.Join(c.Validate(ModeServe)...)
			if tc.field == "" && all != nil {
				t.Fatalf("unexpected problems: %v", all)
			}
			if tc.field != "" && (all == nil || !strings.Contains(all.Error(), tc.field)) {
				t.Fatalf("want a problem with %s, got %v", tc.field, all)
			}
		})
	}
}

// Nothing of the control plane on is legal but warned about.
func TestWarningsAllControlOff(t *testing.T) {
	c := validConfig()
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "all off") {
		t.Fatalf("admin API, console and onboarding off: %q", w)
	}
	c.AdminToken = strings.Repeat("a", 32)
	if w := c.Warnings(); len(w) != 0 {
		t.Fatalf("admin token set: %q", w)
	}
	c.AdminToken, c.RedirectURL = "", "https://lsproxy.example.com/oauth/callback"
	if w := c.Warnings(); len(w) != 0 {
		t.Fatalf("onboarding on: %q", w)
	}
}
