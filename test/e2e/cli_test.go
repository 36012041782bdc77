package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
)

// cliRun is one finished CLI invocation of the built binary.
type cliRun struct {
	code           int
	stdout, stderr string
}

// runCLI runs the binary with args and env (no LSPROXY_* inherited), stdin
// empty (not a terminal), and waits at most 30 s.
func runCLI(t *testing.T, env map[string]string, args ...string) cliRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = childEnviron(env)
	cmd.Dir = t.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("lsproxy %v: %v", args, err)
	}
	return r
}

func (r cliRun) expect(t *testing.T, args []string, code int, stdoutRE string) {
	t.Helper()
	if r.code != code || !regexp.MustCompile(stdoutRE).MatchString(r.stdout) {
		t.Errorf("lsproxy %s: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s\nwant stdout matching %q",
			strings.Join(args, " "), r.code, code, r.stdout, r.stderr, stdoutRE)
	}
}

// TestCLIHelp: help on every command and spelling exits 0 on stdout; bad
// command lines exit 2 with a hint on stderr; --version and version agree.
func TestCLIHelp(t *testing.T) {
	commands := [][]string{{}, {"serve"}, {"dev"}, {"check-config"}, {"hash-key"}, {"healthcheck"}, {"rekey"}, {"version"},
		{"completion"}, {"tenants"}, {"tenants", "list"}, {"tenants", "get"}, {"tenants", "authorize"},
		{"tenants", "refresh"}, {"tenants", "retry"}, {"tenants", "delete"}, {"tenants", "reset-rate-limit"}}
	for _, c := range commands {
		for _, h := range []string{"--help", "-h"} {
			args := append(append([]string{}, c...), h)
			r := runCLI(t, nil, args...)
			want := "Usage:\n  lsproxy " + strings.Join(c, " ")
			r.expect(t, args, 0, regexp.QuoteMeta(want))
			if len(c) > 0 && strings.Contains(r.stdout, "Usage of lsproxy serve") {
				t.Errorf("%v: help of another command", args)
			}
		}
	}
	runCLI(t, nil, "help").expect(t, []string{"help"}, 0, `Available Commands:(.|\n)*tenants`)
	runCLI(t, nil, "help", "tenants").expect(t, []string{"help", "tenants"}, 0, `lsproxy tenants \[command\]`)
	runCLI(t, nil, "--help").expect(t, []string{"--help"}, 0, `Exit codes:(.|\n)*3  no such tenant`)

	v := runCLI(t, nil, "--version")
	v.expect(t, []string{"--version"}, 0, `^lsproxy \S+ \(revision \S+, go1\.\d+\S*, \w+/\w+\)\n$`)
	runCLI(t, nil, "version").expect(t, []string{"version"}, 0, "^"+regexp.QuoteMeta(v.stdout)+"$")
	j := runCLI(t, nil, "version", "-o", "json")
	var b map[string]string
	if err := json.Unmarshal([]byte(j.stdout), &b); err != nil || b["version"] == "" || !strings.HasPrefix(b["goversion"], "go") || b["revision"] == "" {
		t.Errorf("version -o json: %v %q", err, j.stdout)
	}

	for _, args := range [][]string{{"bogus"}, {"serve", "--bogus"}, {"tenants", "get"}, {"tenants", "get", "a", "b"},
		{"tenants", "list", "--status", "flagged"}, {"tenants", "list", "-o", "yaml"}, {"version", "-o", "xml"},
		{"tenants", "list", "--admin-url", "ftp://x"}} {
		r := runCLI(t, map[string]string{"LSPROXY_ADMIN_URL": "http://127.0.0.1:1"}, args...)
		if r.code != 2 || r.stderr == "" || r.stdout != "" {
			t.Errorf("lsproxy %v: exit %d stdout %q stderr %q; want 2 and a message on stderr", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		r := runCLI(t, nil, "completion", sh)
		r.expect(t, []string{"completion", sh}, 0, `lsproxy`)
	}
}

// TestCLITenants runs the tenants commands against a real serve with one
// active and one flagged tenant: output, filters, JSON, exit codes.
func TestCLITenants(t *testing.T) {
	emu := startEmulator(t, emulator.Config{})
	env := with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir())
	p := startProxyAt(t, func(controlAddr string) map[string]string {
		return with(env, "LSPROXY_REDIRECT_URL", "http://"+controlAddr+"/oauth/callback")
	})
	for _, id := range []string{"acme", "gone"} {
		p.importTenant(t, id, emu.IssueGrant(id))
		p.expectServes(t, id)
	}
	emu.Revoke("gone")
	if !eventually(10*time.Second, func() bool {
		return p.mustGet(t, "gone", "/f/data/businesses").Header.Get("X-Lsproxy-Error") == "reauthorization_required"
	}) {
		t.Fatal("gone was not flagged")
	}

	cli := map[string]string{"LSPROXY_ADMIN_URL": p.ControlURL, "LSPROXY_ADMIN_TOKEN": env["LSPROXY_ADMIN_TOKEN"]}
	run := func(code int, stdoutRE string, args ...string) cliRun {
		t.Helper()
		r := runCLI(t, cli, args...)
		r.expect(t, args, code, stdoutRE)
		for _, g := range []string{emu.IssueGrant("probe").RefreshToken, env["LSPROXY_ADMIN_TOKEN"]} {
			if strings.Contains(r.stdout+r.stderr, g) {
				t.Errorf("lsproxy %v printed a secret", args)
			}
		}
		return r
	}

	r := run(0, `(?s)^TENANT +STATUS .*\nacme +active .*\ngone +reauthorization_required .*invalid_grant`, "tenants", "list")
	t.Logf("lsproxy tenants list:\n%s", r.stdout)
	r = run(0, `(?s)^TENANT +STATUS [^\n]*\ngone +reauthorization_required [^\n]*\n$`, "tenants", "list", "--status", "reauthorization_required")
	t.Logf("lsproxy tenants list --status reauthorization_required:\n%s", r.stdout)
	run(0, `(?s)^TENANT [^\n]*\nacme +active [^\n]*\n$`, "tenants", "list", "--status", "active")
	run(0, `(?s)^TENANT [^\n]*\nacme [^\n]*\n$`, "tenants", "list", "--limit", "1")

	r = run(0, `"tenants"`, "tenants", "list", "-o", "json")
	var lb struct {
		Tenants []struct{ ID, Status string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &lb); err != nil || len(lb.Tenants) != 2 || lb.Tenants[1].Status != "reauthorization_required" {
		t.Errorf("list -o json: %v %s", err, r.stdout)
	}
	run(0, `(?m)^id +acme$(?s).*^status +active$`, "tenants", "get", "acme")
	r = run(0, `"id": "gone"`, "tenants", "get", "gone", "--output", "json")
	if !strings.Contains(r.stdout, `"reason"`) {
		t.Errorf("get -o json: %s", r.stdout)
	}
	run(0, `(?m)^id +acme$`, "tenants", "refresh", "acme")
	run(0, `^http://\S+\n$`, "tenants", "authorize", "gone")

	// Exit codes a script can branch on.
	run(3, `^$`, "tenants", "get", "nobody")
	run(3, `^$`, "tenants", "refresh", "nobody")
	run(6, `^$`, "tenants", "refresh", "gone")
	run(2, `^$`, "tenants", "get", "bad id")
	run(2, `^$`, "tenants", "delete", "acme") // no --yes
	bad := runCLI(t, with(cli, "LSPROXY_ADMIN_TOKEN", "wrong"), "tenants", "list")
	if bad.code != 4 || !strings.Contains(bad.stderr, "401") {
		t.Errorf("wrong token: exit %d %s", bad.code, bad.stderr)
	}
	down := runCLI(t, with(cli, "LSPROXY_ADMIN_URL", "http://"+freeAddr(t)), "tenants", "list")
	if down.code != 5 || !strings.Contains(down.stderr, "cannot reach the admin API") {
		t.Errorf("unreachable: exit %d %s", down.code, down.stderr)
	}
	// The grant is revoked: the retry is refused and the tenant stays flagged.
	retry := runCLI(t, cli, "tenants", "retry", "gone")
	if retry.code != 6 || !strings.Contains(retry.stderr, "reauthorization_required") {
		t.Errorf("tenants retry gone: exit %d\n%s%s", retry.code, retry.stdout, retry.stderr)
	}
	run(3, `^$`, "tenants", "retry", "nobody")

	run(0, `^deleted acme\n$`, "tenants", "delete", "acme", "--yes")
	run(3, `^$`, "tenants", "get", "acme")
	if r := p.admin(t, http.MethodGet, "/admin/tenants/acme", nil); r.Status != http.StatusNotFound {
		t.Errorf("after delete: %d", r.Status)
	}
}

// TestCheckConfigOperators: unknown LSPROXY_* variables are a problem with a
// suggestion in check-config, serve refuses a near typo and warns about
// other unknown names; YAML type errors and
// environment problems are reported together in the file's terms;
// --print shows the effective configuration with every secret redacted.
func TestCheckConfigOperators(t *testing.T) {
	emu := startEmulator(t, emulator.Config{})
	env := with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir(), "LSPROXY_REDIS_ULR", "redis://127.0.0.1:1/0")

	r := runCLI(t, env, "check-config")
	if r.code != 1 || !strings.Contains(r.stderr, "LSPROXY_REDIS_ULR (did you mean LSPROXY_REDIS_URL?)") {
		t.Errorf("check-config with a mistyped variable: exit %d\n%s", r.code, r.stderr)
	}

	// serve refuses a near typo of a known variable (it would have left the
	// embedded store in use) and only warns about a name far from any.
	r = runCLI(t, env, "serve")
	if r.code != 1 || !strings.Contains(r.stderr, "LSPROXY_REDIS_ULR (did you mean LSPROXY_REDIS_URL?)") {
		t.Errorf("serve with a mistyped variable: exit %d\n%s", r.code, r.stderr)
	}
	p := startProxy(t, with(env, "LSPROXY_REDIS_ULR", "", "LSPROXY_FROM_A_NEWER_VERSION", "1"))
	if !strings.Contains(p.Logs(), `"msg":"unknown environment variable ignored","problem":"unknown environment variable: LSPROXY_FROM_A_NEWER_VERSION (see config.example.yaml for the known ones)"`) {
		t.Errorf("serve did not warn:\n%s", p.Logs())
	}
	if !strings.Contains(p.Logs(), `"msg":"store opened","kind":"embedded","why":"LSPROXY_REDIS_URL is not set: the embedded store in `) {
		t.Errorf("no startup line naming the store and why:\n%s", p.Logs())
	}
	if !regexp.MustCompile(`"msg":"lsproxy starting","version":"[^"]+","revision":"[^"]+","goversion":"go1\.`).MatchString(p.Logs()) {
		t.Errorf("no build in the startup log:\n%s", p.Logs())
	}
	m, err := do(context.Background(), "GET", p.ControlURL+"/metrics", nil, nil)
	if err != nil || !regexp.MustCompile(`(?m)^lsproxy_build_info\{goversion="go1\.[^"]+",revision="[^"]+",version="[^"]+"\} 1$`).Match(m.Body) {
		t.Errorf("no lsproxy_build_info: %v", err)
	}

	good := with(env, "LSPROXY_REDIS_ULR", "", "LSPROXY_WEBHOOK_SECRET", "whsec-"+randomHex(8), "LSPROXY_WEBHOOK_URL", "https://hooks.example/x")
	r = runCLI(t, good, "check-config", "--print")
	if r.code != 0 || !strings.Contains(r.stdout, "configuration OK") || !strings.Contains(r.stdout, "client_id: "+good["LSPROXY_CLIENT_ID"]) {
		t.Errorf("check-config --print: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, k := range []string{"LSPROXY_CLIENT_SECRET", "LSPROXY_ENCRYPTION_KEY", "LSPROXY_ADMIN_TOKEN", "LSPROXY_WEBHOOK_SECRET"} {
		if strings.Contains(r.stdout, good[k]) {
			t.Errorf("check-config --print shows %s", k)
		}
	}

	file := t.TempDir() + "/lsproxy.yaml"
	writeFileE2E(t, file, "refresh_before: soon\nlissen: x\nbreaker_failures: 3\n")
	r = runCLI(t, with(good, "LSPROXY_LOCK_TTL", "long"), "check-config", "--config", file)
	for _, want := range []string{`line 1: refresh_before: "soon" is not a duration`, `line 2: unknown key "lissen" (did you mean "listen"?)`, "LSPROXY_LOCK_TTL"} {
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("check-config --config: exit %d, stderr lacks %q:\n%s", r.code, want, r.stderr)
		}
	}
}

func writeFileE2E(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
