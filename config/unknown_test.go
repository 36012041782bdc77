package config

import (
	"errors"
	"strings"
	"testing"
)

func TestUnknownEnv(t *testing.T) {
	errs := UnknownEnv([]string{
		"LSPROXY_REDIS_ULR=redis://secret@host", "LSPROXY_LISTEN=x", "PATH=/bin", "LSPROXY_ADMIN_URL=http://x",
		"LSPROXY_TOTALLY_DIFFERENT=1", "LSPROXY_REDIS_ULR=again",
	}, "LSPROXY_ADMIN_URL")
	if len(errs) != 2 {
		t.Fatalf("got %v, want two problems", errs)
	}
	if !errors.Is(errs[0], ErrUnknownEnv) || !strings.Contains(errs[0].Error(), "LSPROXY_REDIS_ULR (did you mean LSPROXY_REDIS_URL?)") {
		t.Errorf("first: %v", errs[0])
	}
	if !strings.Contains(errs[1].Error(), "LSPROXY_TOTALLY_DIFFERENT") || strings.Contains(errs[1].Error(), "did you mean") {
		t.Errorf("second: %v", errs[1])
	}
	for _, e := range errs {
		if strings.Contains(e.Error(), "secret") {
			t.Errorf("a value leaked: %v", e)
		}
	}
	if errs := UnknownEnv([]string{"LSPROXY_LISTEN=x", "LSPROXY_CLIENT_SECRET_FILE=/x"}); len(errs) != 0 {
		t.Errorf("known variables reported: %v", errs)
	}
}

// TestFileProblemsAllReported: type errors and unknown keys do not hide
// each other, good keys still load, environment problems are reported
// too, and a secret's wrong value is never quoted.
func TestFileProblemsAllReported(t *testing.T) {
	path := writeFile(t, "lsproxy.yaml", strings.Join([]string{
		"listen: 127.0.0.1:9999",
		"refresh_before: soon",
		"breaker_failures: many",
		"pkce: perhaps",
		"redis_ulr: redis://x",
		"client_secret: [s3cr3t-value]",
		"encryption_key: {a: b}",
		"listen: 127.0.0.1:1",
		"scopes: [a, b]",
	}, "\n")+"\n")
	c, err := Load(path, []string{"LSPROXY_LOCK_TTL=x"})
	if err == nil || !errors.Is(err, ErrFile) || !errors.Is(err, ErrEnv) || errors.Is(err, ErrFileUnusable) {
		t.Fatalf("err %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`line 2: refresh_before: "soon" is not a duration`,
		`line 3: breaker_failures: "many" is not a whole number`,
		`line 4: pkce: "perhaps" is not true or false`,
		`line 5: unknown key "redis_ulr" (did you mean "redis_url"?)`,
		`line 6: client_secret: a list is not a string`,
		`line 7: encryption_key: a mapping is not a string`,
		`line 8: key "listen" repeats line 1`,
		`line 9: scopes: a list is not a string`,
		"LSPROXY_LOCK_TTL",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "s3cr3t") {
		t.Errorf("a secret is quoted: %s", msg)
	}
	if c.Listen != "127.0.0.1:9999" {
		t.Errorf("good key not loaded: listen %q", c.Listen)
	}
}

// A name within MaxTypoDistance edits of a known one is a typo (serve
// refuses it); one further away is not (it only warns).
func TestMistypedEnv(t *testing.T) {
	errs := MistypedEnv([]string{"LSPROXY_REDIS_ULR=redis://secret@host", "LSPROXY_LISTN=x", "LSPROXY_FUTURE_FEATURE=1", "LSPROXY_ADMIN_URL=x", "LSPROXY_LISTEN=y"}, "LSPROXY_ADMIN_URL")
	if len(errs) != 2 {
		t.Fatalf("MistypedEnv = %v, want LSPROXY_LISTN and LSPROXY_REDIS_ULR", errs)
	}
	if !strings.Contains(errs[0].Error(), "LSPROXY_LISTN (did you mean LSPROXY_LISTEN?)") || !strings.Contains(errs[1].Error(), "LSPROXY_REDIS_ULR (did you mean LSPROXY_REDIS_URL?)") {
		t.Errorf("MistypedEnv = %v", errs)
	}
	for _, e := range errs {
		if strings.Contains(e.Error(), "secret") || !errors.Is(e, ErrUnknownEnv) {
			t.Errorf("error %q: echoes a value or does not wrap ErrUnknownEnv", e)
		}
	}
}
