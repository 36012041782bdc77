package main

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lsproxy/lsproxy/config"
)

func writeBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// cleanEnv blanks every LSPROXY_* variable for the test (an empty value
// counts as unset), so the caller's environment cannot change the result.
func cleanEnv(t *testing.T) {
	for _, n := range config.Names() {
		if _, ok := os.LookupEnv(n); ok {
			t.Setenv(n, "")
		}
	}
}

func randomKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// writeYAML writes a config file of "key: value" lines.
func writeYAML(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lsproxy.yaml")
	writeBytes(t, p, []byte(strings.Join(lines, "\n")+"\n"))
	return p
}
