package e2e

import (
	"context"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// TestEmbeddedStore: without Redis the embedded store keeps tenants across
// a restart, and a second process on the same data directory fails fast
// with a clear message instead of hanging.
func TestEmbeddedStore(t *testing.T) {
	emu := startEmulator(t, emulator.Config{})
	env := with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir())
	p := startProxy(t, env)
	if !strings.Contains(p.Logs(), `"kind":"embedded"`) {
		t.Errorf("store kind not logged as embedded:\n%s", p.Logs())
	}
	p.importTenant(t, "acme", emu.IssueGrant("acme"))
	p.expectServes(t, "acme")

	// A second process on the same directory while the first runs.
	start := time.Now()
	second := startCmd(t, env, "serve")
	code := second.Wait(15 * time.Second)
	took := time.Since(start)
	t.Logf("second process exited %d after %v", code, took.Round(time.Millisecond))
	if code == 0 {
		t.Errorf("a second process on a locked data dir exited 0:\n%s", second.Logs())
	}
	if logs := strings.ToLower(second.Logs()); !strings.Contains(logs, "lock") && !strings.Contains(logs, "another process") {
		t.Errorf("the message does not mention the lock or another process:\n%s", second.Logs())
	}
	if took > 10*time.Second {
		t.Errorf("the second process took %v to give up", took)
	}
	p.expectServes(t, "acme") // the first one is unaffected

	if code := p.Term(30 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	requests := emu.APICount("acme")
	p = startProxy(t, env)
	v := p.getTenant(t, "acme")
	if v.Status != store.StatusActive || !v.HasRefreshToken {
		t.Errorf("after the restart: %+v", v)
	}
	p.expectServes(t, "acme")
	if emu.APICount("acme") != requests+1 {
		t.Errorf("API requests %d → %d", requests, emu.APICount("acme"))
	}
	if n := emu.RefreshCount("acme"); n != 0 {
		t.Errorf("the stored access token was not reused after the restart: %d refreshes", n)
	}
}

// TestConfigErrors: configuration problems are reported all at once and
// stop the process with a non-zero exit; version works.
func TestConfigErrors(t *testing.T) {
	run := func(t *testing.T, env map[string]string, args ...string) (int, string) {
		t.Helper()
		p := startCmd(t, env, args...)
		code := p.Wait(20 * time.Second)
		return code, p.Logs()
	}

	t.Run("version", func(t *testing.T) {
		code, out := run(t, nil, "version")
		if code != 0 || !strings.HasPrefix(out, "lsproxy ") {
			t.Errorf("exit %d: %q", code, out)
		}
	})

	t.Run("check-config reports every problem", func(t *testing.T) {
		env := map[string]string{
			"LSPROXY_PROVIDER":       "z-series",
			"LSPROXY_ENCRYPTION_KEY": "dG9vIHNob3J0",
			"LSPROXY_LOG_LEVEL":      "loud",
			"LSPROXY_LISTEN":         "nowhere",
			"LSPROXY_UPSTREAM_URL":   "ftp://example.com",
			"LSPROXY_CLIENT_ID":      "id",
		}
		code, out := run(t, env, "check-config")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		for _, name := range []string{"LSPROXY_PROVIDER", "LSPROXY_ENCRYPTION_KEY", "LSPROXY_LOG_LEVEL",
			"LSPROXY_LISTEN", "LSPROXY_UPSTREAM_URL", "LSPROXY_CLIENT_SECRET"} {
			if !strings.Contains(out, name) {
				t.Errorf("output does not name %s:\n%s", name, out)
			}
		}
		if strings.Contains(out, "dG9vIHNob3J0") {
			t.Errorf("output echoes the encryption key:\n%s", out)
		}
	})

	t.Run("check-config reports every unparsable value", func(t *testing.T) {
		env := map[string]string{
			"LSPROXY_REFRESH_BEFORE":   "soon",
			"LSPROXY_BREAKER_FAILURES": "many",
			"LSPROXY_PKCE":             "perhaps",
		}
		code, out := run(t, env, "check-config")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		for _, name := range []string{"LSPROXY_REFRESH_BEFORE", "LSPROXY_BREAKER_FAILURES", "LSPROXY_PKCE"} {
			if !strings.Contains(out, name) {
				t.Errorf("output does not name %s:\n%s", name, out)
			}
		}
	})

	t.Run("check-config OK", func(t *testing.T) {
		emu := startEmulator(t, emulator.Config{})
		code, out := run(t, with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir()), "check-config")
		if code != 0 || !strings.Contains(out, "configuration OK") {
			t.Errorf("exit %d: %s", code, out)
		}
	})

	t.Run("serve on a public address without client keys", func(t *testing.T) {
		emu := startEmulator(t, emulator.Config{})
		_, port, _ := net.SplitHostPort(freeAddr(t))
		env := with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir(), "LSPROXY_LISTEN", "0.0.0.0:"+port)
		code, out := run(t, env, "serve")
		if code == 0 {
			t.Errorf("exit 0")
		}
		if !strings.Contains(out, "LSPROXY_CLIENT_KEYS") || !strings.Contains(out, "LSPROXY_ALLOW_UNAUTHENTICATED") {
			t.Errorf("the message does not name LSPROXY_CLIENT_KEYS and LSPROXY_ALLOW_UNAUTHENTICATED:\n%s", out)
		}
		if strings.Contains(out, "lsproxy listening") {
			t.Errorf("it listened:\n%s", out)
		}
	})

	t.Run("serve with Redis unreachable", func(t *testing.T) {
		emu := startEmulator(t, emulator.Config{})
		env := with(baseEnv(emu), "LSPROXY_REDIS_URL", "redis://"+freeAddr(t)+"/0")
		start := time.Now()
		code, out := run(t, env, "serve")
		t.Logf("exit %d after %v", code, time.Since(start).Round(time.Millisecond))
		if code == 0 {
			t.Errorf("exit 0")
		}
		if !strings.Contains(strings.ToLower(out), "redis") || !strings.Contains(out, "unreachable") {
			t.Errorf("unclear message:\n%s", out)
		}
		if strings.Contains(out, "lsproxy listening") {
			t.Errorf("it listened without its store:\n%s", out)
		}
	})
}

var curlRE = regexp.MustCompile(`curl -H '([A-Za-z-]+): ([^']+)' (http://\S+)`)

// TestDevCommand: `lsproxy dev` onboards a demo tenant through the real
// flow and prints a curl line that works; SIGTERM ends it cleanly.
func TestDevCommand(t *testing.T) {
	var p *proc
	var m []string
	for attempt := 0; attempt < 3 && m == nil; attempt++ {
		p = startCmd(t, nil, "dev", "--listen", freeAddr(t), "--control-listen", freeAddr(t))
		m = p.out.waitMatch(curlRE, p.done, 30*time.Second)
		if m == nil && !strings.Contains(p.Logs(), "address already in use") {
			t.Fatalf("no curl line (exit %d):\n%s", p.exitCode, p.Logs())
		}
	}
	if m == nil {
		t.Fatalf("no curl line:\n%s", p.Logs())
	}
	header, tenant, rawURL := m[1], m[2], m[3]
	t.Logf("printed: %s", m[0])
	if header != "X-Tenant" || tenant != "demo" {
		t.Errorf("curl line names %s: %s", header, tenant)
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" {
		t.Fatalf("curl URL %q: %v", rawURL, err)
	}
	r, err := do(context.Background(), http.MethodGet, rawURL, http.Header{header: {tenant}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK || r.str("tenant") != "demo" {
		t.Errorf("the printed request answered %d %s", r.Status, r.Body)
	}
	if code := p.Term(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d\n%s", code, tail(p.Logs(), 4000))
	}
}

// TestGracefulShutdown: SIGTERM while a slow upstream request is in flight
// lets it finish, then exits 0.
func TestGracefulShutdown(t *testing.T) {
	emu := startEmulator(t, emulator.Config{})
	p := startProxy(t, with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir()))
	p.importTenant(t, "slow", emu.IssueGrant("slow"))
	emu.SetAPIDelay(time.Second)

	type outcome struct {
		r   result
		err error
	}
	done := make(chan outcome, 1)
	before := emu.Stats().APIRequests
	go func() {
		r, err := p.get(context.Background(), "slow", "/f/data/businesses")
		done <- outcome{r, err}
	}()
	// The request is in flight once the emulator has it.
	if !eventually(5*time.Second, func() bool { return emu.Stats().APIRequests > before }) {
		t.Fatal("the request never reached the upstream")
	}
	start := time.Now()
	code := p.Term(30 * time.Second)
	t.Logf("exit %d after %v", code, time.Since(start).Round(time.Millisecond))
	o := <-done
	if o.err != nil || o.r.Status != http.StatusOK || o.r.str("tenant") != "slow" {
		t.Errorf("in-flight request: %v %d %s", o.err, o.r.Status, o.r.Body)
	}
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if _, err := p.get(context.Background(), "slow", "/f/data/businesses"); err == nil {
		t.Errorf("still accepting requests after exit")
	}
}

// TestReadyz: /readyz follows the store; tenants with cached valid tokens
// keep being served while Redis is down.
func TestReadyz(t *testing.T) {
	emu := startEmulator(t, emulator.Config{})
	rdb := testredis.Start(t)
	env := with(baseEnv(emu), "LSPROXY_REDIS_URL", rdb.URL())
	// Import through another replica that is gone before p starts: the
	// import's change notification would otherwise reach p at some moment
	// and drop the token p is about to cache.
	importer := startProxy(t, env)
	importer.importTenant(t, "cached", emu.IssueGrant("cached"))
	if code := importer.Term(30 * time.Second); code != 0 {
		t.Fatalf("importer exited %d", code)
	}
	p := startProxy(t, env)
	ready := func() int {
		r, err := do(context.Background(), http.MethodGet, p.ControlURL+"/readyz", nil, nil)
		if err != nil {
			return 0
		}
		return r.Status
	}
	if s := ready(); s != http.StatusOK {
		t.Fatalf("/readyz %d with Redis up", s)
	}
	p.expectServes(t, "cached") // the token is now in p's cache

	rdb.Kill()
	start := time.Now()
	if !eventually(10*time.Second, func() bool { return ready() == http.StatusServiceUnavailable }) {
		t.Fatalf("/readyz still %d 10 s after Redis died", ready())
	}
	t.Logf("/readyz 503 after %v", time.Since(start).Round(time.Millisecond))
	for i := 0; i < 5; i++ {
		p.expectServes(t, "cached")
	}
	if r := p.mustGet(t, "never-seen", "/f/data/businesses"); r.Status/100 != 5 {
		t.Errorf("an uncached tenant with the store down: %d %s", r.Status, r.Body)
	} else {
		t.Logf("uncached tenant with the store down: %d %s", r.Status, r.Header.Get("X-Lsproxy-Error"))
	}

	rdb.Restart()
	start = time.Now()
	if !eventually(10*time.Second, func() bool { return ready() == http.StatusOK }) {
		t.Fatalf("/readyz still %d 10 s after Redis came back", ready())
	}
	t.Logf("/readyz 200 again after %v", time.Since(start).Round(time.Millisecond))
	if code := p.Term(30 * time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}

var (
	devTokenRE    = regexp.MustCompile(`export LSPROXY_ADMIN_URL=\S+ LSPROXY_ADMIN_TOKEN=(\S+)`)
	devLocationRE = regexp.MustCompile(`curl -H 'X-Location: (\d+)' '(http://\S+)'`)
	devRevokeRE   = regexp.MustCompile(`curl -X POST '(http://\S+/revoke\?tenant=demo)'`)
	devAuthRE     = regexp.MustCompile(`curl -X POST -H "Authorization: Bearer \$LSPROXY_ADMIN_TOKEN" (http://\S+/authorize)`)
	signInLinkRE  = regexp.MustCompile(`href="([^"]+)" id="login-demo"`)
)

// TestDevSandboxWalkthrough (issue 22): the sandbox shows the README's
// walk-through: a request by location, a grant revoked at the emulator
// (its knob printed by lsproxy dev) flags the tenant, and a new link opened
// in a browser reaches the emulator's sign-in page, whose login_hint link
// reconnects the tenant.
func TestDevSandboxWalkthrough(t *testing.T) {
	var p *proc
	var m []string
	for attempt := 0; attempt < 3 && m == nil; attempt++ {
		p = startCmd(t, nil, "dev", "--listen", freeAddr(t), "--control-listen", freeAddr(t))
		m = p.out.waitMatch(devAuthRE, p.done, 30*time.Second)
		if m == nil && !strings.Contains(p.Logs(), "address already in use") {
			t.Fatalf("no authorize line (exit %d):\n%s", p.exitCode, p.Logs())
		}
	}
	if m == nil {
		t.Fatalf("no authorize line:\n%s", p.Logs())
	}
	out := p.Logs()
	tok, loc, rev := devTokenRE.FindStringSubmatch(out), devLocationRE.FindStringSubmatch(out), devRevokeRE.FindStringSubmatch(out)
	tm := curlRE.FindStringSubmatch(out)
	if tok == nil || loc == nil || rev == nil || tm == nil {
		t.Fatalf("lsproxy dev did not print the walk-through lines:\n%s", out)
	}
	r, err := do(context.Background(), http.MethodGet, loc[2], http.Header{"X-Location": {loc[1]}}, nil)
	if err != nil || r.Status != http.StatusOK || r.str("tenant") != "demo" {
		t.Fatalf("by location: %v %d %s", err, r.Status, r.Body)
	}
	// Revoke at the provider: the next request finds the grant dead.
	if r, err := do(context.Background(), http.MethodPost, rev[1], nil, nil); err != nil || r.Status != http.StatusNoContent {
		t.Fatalf("revoke knob: %v %v", err, r)
	}
	r, err = do(context.Background(), http.MethodGet, tm[3], http.Header{"X-Tenant": {"demo"}}, nil)
	if err != nil || r.Status != http.StatusUnauthorized || r.Header.Get("X-Lsproxy-Error") != "reauthorization_required" {
		t.Fatalf("after the revocation: %v %d %s", err, r.Status, r.Body)
	}
	// Re-authorize in a browser: lsproxy → the emulator's sign-in page.
	ar, err := do(context.Background(), http.MethodPost, m[1], http.Header{"Authorization": {"Bearer " + tok[1]}}, nil)
	if err != nil || ar.Status != http.StatusOK {
		t.Fatalf("authorize: %v %v", err, ar)
	}
	jar, _ := cookiejar.New(nil) // one browser: the OAuth state is bound to its cookie
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: httpClient.Transport}
	open := func(u string) (*http.Response, []byte) {
		t.Helper()
		resp, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp, b
	}
	resp, body := open(ar.str("authorize_url"))
	link := signInLinkRE.FindSubmatch(body)
	if resp.StatusCode != http.StatusOK || link == nil {
		t.Fatalf("no sign-in page at %s: %d %s", resp.Request.URL.Redacted(), resp.StatusCode, body)
	}
	next, err := resp.Request.URL.Parse(html.UnescapeString(string(link[1])))
	if err != nil || next.Query().Get("login_hint") != "demo" {
		t.Fatalf("sign-in link %q: %v", link[1], err)
	}
	if resp, body := open(next.String()); resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/oauth/callback" {
		t.Fatalf("reconnect: %d at %s: %s", resp.StatusCode, resp.Request.URL.Path, body)
	}
	r, err = do(context.Background(), http.MethodGet, tm[3], http.Header{"X-Tenant": {"demo"}}, nil)
	if err != nil || r.Status != http.StatusOK || r.str("tenant") != "demo" {
		t.Fatalf("after reconnecting: %v %d %s", err, r.Status, r.Body)
	}
	if code := p.Term(30 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}
}
