package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/lsproxy/lsproxy/internal/testcert"
)

func TestValidateTLS(t *testing.T) {
	cert, key := testcert.New(t).Write(t, t.TempDir())
	otherCert, _ := testcert.New(t).Write(t, t.TempDir())
	garbage := writeFile(t, "garbage.pem", "not PEM "+leak)
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string
	}{
		{"proxy pair", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = cert, key }, nil},
		{"control pair", func(c *Config) { c.ControlTLSCertFile, c.ControlTLSKeyFile = cert, key }, nil},
		{"cert without key", func(c *Config) { c.TLSCertFile = cert },
			[]string{"LSPROXY_TLS_KEY_FILE (tls_key_file) must be set together with LSPROXY_TLS_CERT_FILE (tls_cert_file)"}},
		{"key without cert", func(c *Config) { c.ControlTLSKeyFile = key },
			[]string{"LSPROXY_CONTROL_TLS_CERT_FILE (control_tls_cert_file) must be set together with LSPROXY_CONTROL_TLS_KEY_FILE"}},
		{"missing file", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = cert+".none", key },
			[]string{"LSPROXY_TLS_CERT_FILE (tls_cert_file) and LSPROXY_TLS_KEY_FILE (tls_key_file) cannot be loaded", "no such file"}},
		{"garbage key", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = cert, garbage },
			[]string{"cannot be loaded as a PEM certificate and key"}},
		{"mismatched pair", func(c *Config) { c.ControlTLSCertFile, c.ControlTLSKeyFile = otherCert, key },
			[]string{"LSPROXY_CONTROL_TLS_CERT_FILE (control_tls_cert_file) and", "does not match"}},
		{"redis tls with plain url", func(c *Config) { c.RedisURL, c.RedisTLS = "redis://:"+leak+"@h:6379", true },
			[]string{"LSPROXY_REDIS_TLS (redis_tls) applies to Sentinel and Cluster"}},
		{"redis ca with plain url", func(c *Config) { c.RedisURL, c.RedisCAFile = "redis://h:6379", "/ca.pem" },
			[]string{"LSPROXY_REDIS_CA_FILE (redis_ca_file) needs TLS"}},
		{"redis ca with rediss url", func(c *Config) { c.RedisURL, c.RedisCAFile = "rediss://h:6379", "/ca.pem" }, nil},
		{"redis tls with sentinel", func(c *Config) {
			c.RedisSentinelMaster, c.RedisSentinelAddrs, c.RedisTLS = "m", []string{"s:26379"}, true
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			errs := c.Validate(ModeServe)
			if len(tt.want) == 0 {
				if errs != nil {
					t.Fatalf("unexpected errors %v", errs)
				}
				return
			}
			if len(errs) != 1 {
				t.Fatalf("got %d errors %v, want 1", len(errs), errs)
			}
			for _, w := range tt.want {
				if !strings.Contains(errs[0].Error(), w) {
					t.Errorf("error %q lacks %q", errs[0], w)
				}
			}
			if strings.Contains(errs[0].Error(), leak) || strings.Contains(errs[0].Error(), "PRIVATE") {
				t.Errorf("error leaks content: %q", errs[0])
			}
		})
	}
}

func TestLoadTLSFromEnv(t *testing.T) {
	c, err := Load("", []string{
		"LSPROXY_TLS_CERT_FILE=/c.pem", "LSPROXY_TLS_KEY_FILE=/k.pem",
		"LSPROXY_CONTROL_TLS_CERT_FILE=/cc.pem", "LSPROXY_CONTROL_TLS_KEY_FILE=/ck.pem",
		"LSPROXY_REDIS_TLS=true",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.TLSCertFile != "/c.pem" || c.TLSKeyFile != "/k.pem" || c.ControlTLSCertFile != "/cc.pem" ||
		c.ControlTLSKeyFile != "/ck.pem" || !c.RedisTLS {
		t.Fatalf("got %+v", c)
	}
}

func TestSecretFileBounded(t *testing.T) {
	big := writeFile(t, "big", strings.Repeat("x", maxSecretFile+1))
	_, err := Load("", []string{"LSPROXY_ADMIN_TOKEN_FILE=" + big})
	if !errors.Is(err, ErrSecretFile) || !strings.Contains(err.Error(), "larger than") || strings.Contains(err.Error(), "xxxx") {
		t.Fatalf("oversized secret file: %v", err)
	}
	// A device that never ends is cut at the bound.
	if _, err := Load("", []string{"LSPROXY_WEBHOOK_SECRET_FILE=/dev/zero"}); !errors.Is(err, ErrSecretFile) {
		t.Fatalf("/dev/zero: %v", err)
	}
	ok := writeFile(t, "ok", strings.Repeat("y", maxSecretFile-1)+"\n")
	if c, err := Load("", []string{"LSPROXY_ADMIN_TOKEN_FILE=" + ok}); err != nil || len(c.AdminToken) != maxSecretFile-1 {
		t.Fatalf("secret at the bound: %v", err)
	}
}
