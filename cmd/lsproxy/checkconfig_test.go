package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// check-config --print shows the preset's URLs, scopes, client
// authentication and PKCE in effect, not empty strings.
func TestCheckConfigPrintResolvesPreset(t *testing.T) {
	cleanEnv(t)
	t.Setenv("LSPROXY_CLIENT_ID", "client")
	t.Setenv("LSPROXY_CLIENT_SECRET", "client-secret")
	t.Setenv("LSPROXY_ENCRYPTION_KEY", randomKey(t))
	t.Setenv("LSPROXY_ADMIN_TOKEN", strings.Repeat("a", 32))
	t.Setenv("LSPROXY_PROVIDER", "r-series")
	var out, errs bytes.Buffer
	code := run([]string{"check-config", "--print"}, &out, &errs)
	if code != 0 {
		t.Fatalf("check-config --print: exit %d\n%s", code, errs.String())
	}
	for _, want := range []string{`token_url: https://cloud.lightspeedapp.com/auth/oauth/token`, "upstream_url: https://", "authorize_url: https://", "client_auth: ", "pkce: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--print lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), `token_url: ""`) {
		t.Errorf("--print shows an empty token_url:\n%s", out.String())
	}
	// An override wins over the preset.
	t.Setenv("LSPROXY_TOKEN_URL", "https://token.example/t")
	out.Reset()
	if code := run([]string{"check-config", "--print"}, &out, &errs); code != 0 || !strings.Contains(out.String(), "token_url: https://token.example/t") {
		t.Errorf("--print with LSPROXY_TOKEN_URL: exit %d\n%s", code, out.String())
	}
}

// check-config warns (exit 0) when the admin API, the console and
// onboarding are all off.
func TestCheckConfigWarnsAllControlOff(t *testing.T) {
	cleanEnv(t)
	t.Setenv("LSPROXY_CLIENT_ID", "client")
	t.Setenv("LSPROXY_CLIENT_SECRET", "client-secret")
	t.Setenv("LSPROXY_ENCRYPTION_KEY", randomKey(t))
	var out, errs bytes.Buffer
	if code := run([]string{"check-config"}, &out, &errs); code != 0 || !strings.Contains(errs.String(), "warning: the admin API, the console and onboarding are all off") {
		t.Fatalf("check-config: exit %d\n%s", code, errs.String())
	}
}

// serve's configuration refuses a near typo of a known variable (with the
// name meant) and accepts a name far from any (serve then warns).
func TestServeRefusesMistypedEnv(t *testing.T) {
	cleanEnv(t)
	t.Setenv("LSPROXY_CLIENT_ID", "client")
	t.Setenv("LSPROXY_CLIENT_SECRET", "client-secret")
	t.Setenv("LSPROXY_ENCRYPTION_KEY", randomKey(t))
	t.Setenv("LSPROXY_REDIS_ULR", "redis://:secret@redis:6379/0")
	var errs bytes.Buffer
	if _, code := loadConfig("serve", "", &errs); code != exitFailure || !strings.Contains(errs.String(), "LSPROXY_REDIS_ULR (did you mean LSPROXY_REDIS_URL?)") || strings.Contains(errs.String(), "secret") {
		t.Fatalf("serve with LSPROXY_REDIS_ULR: exit %d\n%s", code, errs.String())
	}
	os.Unsetenv("LSPROXY_REDIS_ULR") // t.Setenv restores it
	t.Setenv("LSPROXY_SOMETHING_ENTIRELY_NEW", "1")
	errs.Reset()
	if _, code := loadConfig("serve", "", &errs); code != exitOK {
		t.Fatalf("serve with an unknown far-off variable: exit %d\n%s", code, errs.String())
	}
}
