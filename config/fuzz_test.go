package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad loads arbitrary bytes as the YAML file: Load returns a Config or
// an error (never panics, never hangs), and Validate and Redacted accept
// whatever Load returned.
func FuzzLoad(f *testing.F) {
	if example, err := os.ReadFile(examplePath); err == nil {
		f.Add(example)
	}
	for _, s := range []string{
		"", "listen: 0.0.0.0:8080\n", "listen: [1,2]\n", "pkce: maybe\n", "refresh_before: -5s\n",
		"client_keys: ['a:b:c']\nencryption_keys: x\n", "---\n---\n", "redis_url: 'redis://:p@[::1'\n",
		"max_header_bytes: 99999999999999999999\n", "&a [*a, *a]\n", "tenant_header: \"X\\r\\nY\"\n",
		"lock_ttl: 1h\ntoken_timeout: 2h\n", "client_secret: a\nclient_secret_file: b\n", "? [a]\n: b\n",
		"tls_cert_file: /nonexistent\ntls_key_file: /nonexistent\n", "redis_tls: true\nredis_url: redis://h:1\n",
		"a: &x\n  b: *x\n", "\t", "{", "listen: !!binary aGVsbG8=\n",
	} {
		f.Add([]byte(s))
	}
	p := filepath.Join(f.TempDir(), "c.yaml") // one per worker process; calls are sequential in it
	f.Fuzz(func(t *testing.T, data []byte) {
		// Secret files and TLS files are read by path; keep the fuzzer
		// away from whatever the machine holds.
		if strings.Contains(string(data), "_file") {
			t.Skip()
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p, nil)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config:") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			return
		}
		for _, mode := range []string{ModeServe, ModeDev, ModeCheck} {
			_ = c.Validate(mode)
		}
		_ = c.Redacted()
	})
}
