// Package e2e holds end-to-end tests of the built lsproxy binary: real
// processes, real HTTP over loopback, a real redis-server (internal/testredis)
// and the strict Lightspeed emulator (internal/emulator) served in-process as
// token endpoint, authorize endpoint and API upstream.
//
// TestMain builds ./cmd/lsproxy once (with -race when the tests run with
// -race, so data races inside the binary fail the tests too).
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/internal/emulator"
)

// binPath is the lsproxy binary built by TestMain.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "lsproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinary(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building lsproxy:", err)
		return 1
	}
	return m.Run()
}

// buildBinary runs `go build -o dir/lsproxy ./cmd/lsproxy` in the module root.
func buildBinary(dir string) error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return errors.New("not inside a Go module")
	}
	binPath = filepath.Join(dir, "lsproxy")
	args := []string{"build", "-o", binPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/lsproxy")
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Dir(gomod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, b)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Output capture.

// syncBuffer is a goroutine-safe buffer whose writers wake waiters.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitMatch waits until re matches the buffer, stop is closed, or timeout
// passes. It returns the submatches, or nil.
func (b *syncBuffer) waitMatch(re *regexp.Regexp, stop <-chan struct{}, timeout time.Duration) []string {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		m := re.FindStringSubmatch(b.buf.String())
		ch := b.changed
		b.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-ch:
		case <-stop:
			// One last look: the process may have written and exited.
			return re.FindStringSubmatch(b.String())
		case <-deadline.C:
			return nil
		}
	}
}

// ---------------------------------------------------------------------------
// The emulator, served over loopback, with a tap that records every token
// and code it hands out (for the no-secrets checks).

type upstream struct {
	*emulator.Emulator
	srv *httptest.Server
	URL string

	mu      sync.Mutex
	secrets map[string]bool // every access token, refresh token and code issued
}

// startEmulator serves a new emulator on a loopback httptest server, closed
// at cleanup.
func startEmulator(t testing.TB, cfg emulator.Config) *upstream {
	t.Helper()
	if cfg.ClientSecret == "" {
		cfg.ClientSecret = "e2e-client-secret-" + randomHex(12)
	}
	u := &upstream{Emulator: emulator.New(cfg), secrets: map[string]bool{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	u.URL = u.srv.URL
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	p := u.Paths()
	switch r.URL.Path {
	case p.Token:
		rec := &tapWriter{ResponseWriter: w}
		u.Emulator.ServeHTTP(rec, r)
		var body struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		if json.Unmarshal(rec.body.Bytes(), &body) == nil {
			u.record(body.AccessToken, body.RefreshToken)
		}
		// The code a client presents was recorded at authorize.
	case p.Authorize:
		rec := &tapWriter{ResponseWriter: w}
		u.Emulator.ServeHTTP(rec, r)
		if loc, err := url.Parse(w.Header().Get("Location")); err == nil {
			u.record(loc.Query().Get("code"))
		}
	default:
		u.Emulator.ServeHTTP(w, r)
	}
}

// IssueGrant issues a grant and records its tokens.
func (u *upstream) IssueGrant(tenant string) emulator.Grant {
	g := u.Emulator.IssueGrant(tenant)
	u.record(g.AccessToken, g.RefreshToken)
	return g
}

func (u *upstream) record(vals ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, v := range vals {
		if v != "" {
			u.secrets[v] = true
		}
	}
}

// issued returns every token and code the emulator handed out.
func (u *upstream) issued() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]string, 0, len(u.secrets))
	for v := range u.secrets {
		out = append(out, v)
	}
	return out
}

// tapWriter copies the response body.
type tapWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *tapWriter) Write(p []byte) (int, error) {
	w.body.Write(p)
	return w.ResponseWriter.Write(p)
}

func (w *tapWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ---------------------------------------------------------------------------
// Environment.

// baseEnv is the configuration every serve process of a test shares: the
// emulator as provider, a random encryption key and admin token, loopback
// listeners on any free port. Callers add LSPROXY_REDIS_URL or
// LSPROXY_DATA_DIR and any overrides.
func baseEnv(u *upstream) map[string]string {
	cfg := u.Config()
	p := u.Paths()
	return map[string]string{
		"LSPROXY_LISTEN":         "127.0.0.1:0",
		"LSPROXY_CONTROL_LISTEN": "127.0.0.1:0",
		"LSPROXY_PROVIDER":       string(cfg.Mode),
		"LSPROXY_CLIENT_ID":      cfg.ClientID,
		"LSPROXY_CLIENT_SECRET":  cfg.ClientSecret,
		"LSPROXY_UPSTREAM_URL":   u.URL,
		"LSPROXY_TOKEN_URL":      u.URL + p.Token,
		"LSPROXY_AUTHORIZE_URL":  u.URL + p.Authorize,
		"LSPROXY_ENCRYPTION_KEY": randomB64(32),
		"LSPROXY_ADMIN_TOKEN":    "e2e-admin-" + randomHex(16),
		"LSPROXY_LOG_FORMAT":     "json",
	}
}

// with returns a copy of env with kv ("KEY", "value", ...) set; an empty
// value deletes the key.
func with(env map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(env)+len(kv)/2)
	for k, v := range env {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

// childEnviron is the parent's environment without any LSPROXY_* variable,
// plus env. Unless GORACE is set, a race-enabled binary does not linger a
// second at exit (the race runtime's default atexit_sleep_ms).
func childEnviron(env map[string]string) []string {
	var out []string
	gorace := false
	for _, kv := range os.Environ() {
		gorace = gorace || strings.HasPrefix(kv, "GORACE=")
		if !strings.HasPrefix(kv, "LSPROXY_") {
			out = append(out, kv)
		}
	}
	if !gorace {
		out = append(out, "GORACE=atexit_sleep_ms=50")
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// ---------------------------------------------------------------------------
// Processes.

// proc is one running lsproxy process.
type proc struct {
	t          testing.TB
	cmd        *exec.Cmd
	out        *syncBuffer // stdout and stderr, interleaved
	done       chan struct{}
	exitCode   int // valid once done is closed
	adminToken string

	ProxyURL   string // http://host:port of the proxied-traffic listener
	ControlURL string // http://host:port of the control listener

	mu          sync.Mutex
	adminBodies []string // every admin response body, for the no-secrets checks
}

// startCmd starts the binary with args and env (no LSPROXY_* inherited) and
// registers a cleanup that kills it and reports data races in its output.
func startCmd(t testing.TB, env map[string]string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = childEnviron(env)
	cmd.Dir = t.TempDir()
	p := &proc{t: t, cmd: cmd, out: newSyncBuffer(), done: make(chan struct{}), adminToken: env["LSPROXY_ADMIN_TOKEN"]}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting lsproxy: %v", err)
	}
	go func() {
		err := cmd.Wait()
		p.exitCode = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.exitCode = ee.ExitCode() // -1 when killed by a signal
		} else if err != nil {
			p.exitCode = -2
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		logs := p.Logs()
		if strings.Contains(logs, "WARNING: DATA RACE") {
			t.Errorf("lsproxy %v reported a data race:\n%s", args, tail(logs, 20000))
		} else if t.Failed() {
			t.Logf("lsproxy %v output (tail):\n%s", args, tail(logs, 6000))
		}
	})
	return p
}

// listeningRE finds the JSON log line that names the bound addresses;
// listenAddrs decodes it.
var listeningRE = regexp.MustCompile(`(?m)^\{[^\n]*"msg":"lsproxy listening"[^\n]*\}$`)

func listenAddrs(line string) (proxyAddr, controlAddr string, err error) {
	var v struct{ Proxy, Control string }
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		return "", "", fmt.Errorf("the listening line %q: %w", line, err)
	}
	if v.Proxy == "" || v.Control == "" {
		return "", "", fmt.Errorf("the listening line %q names no addresses", line)
	}
	return v.Proxy, v.Control, nil
}

// errAddrInUse: a listener could not bind its (pre-chosen) port.
var errAddrInUse = errors.New("e2e: address already in use")

// startProxyE runs `lsproxy serve` with env and waits until it listens and
// /healthz answers 200. The bound addresses come from the "lsproxy
// listening" log line, so "127.0.0.1:0" listeners need no port guessing.
// A process that exits first yields an error holding its output (wrapping
// errAddrInUse when a listener could not bind).
func startProxyE(t testing.TB, env map[string]string) (*proc, error) {
	t.Helper()
	p := startCmd(t, env, "serve")
	m := p.out.waitMatch(listeningRE, p.done, 30*time.Second)
	if m == nil {
		p.Kill()
		logs := p.Logs()
		if strings.Contains(logs, "address already in use") {
			return nil, fmt.Errorf("%w:\n%s", errAddrInUse, logs)
		}
		return nil, fmt.Errorf("lsproxy serve did not start (exit %d):\n%s", p.exitCode, tail(logs, 6000))
	}
	proxyAddr, controlAddr, err := listenAddrs(m[0])
	if err != nil {
		p.Kill()
		return nil, err
	}
	p.ProxyURL, p.ControlURL = "http://"+proxyAddr, "http://"+controlAddr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := httpClient.Get(p.ControlURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("/healthz not 200 within 10s (last: %v)\n%s", err, tail(p.Logs(), 6000))
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("lsproxy exited %d before /healthz answered:\n%s", p.exitCode, tail(p.Logs(), 6000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startProxy is startProxyE that fails the test on error.
func startProxy(t testing.TB, env map[string]string) *proc {
	t.Helper()
	p, err := startProxyE(t, env)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startProxyAt starts `lsproxy serve` with its control listener on a
// pre-chosen free port (needed when the redirect URL must be known before
// the start). mk builds the environment for the chosen control address
// ("127.0.0.1:port"); LSPROXY_CONTROL_LISTEN is set to it. Should the port
// be taken meanwhile, it retries with a new one.
func startProxyAt(t testing.TB, mk func(controlAddr string) map[string]string) *proc {
	t.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		addr := freeAddr(t)
		env := with(mk(addr), "LSPROXY_CONTROL_LISTEN", addr)
		var p *proc
		p, err = startProxyE(t, env)
		if err == nil {
			return p
		}
		if !errors.Is(err, errAddrInUse) {
			t.Fatal(err)
		}
	}
	t.Fatal(err)
	return nil
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Logs returns everything the process wrote so far.
func (p *proc) Logs() string { return p.out.String() }

// Kill sends SIGKILL and waits for the process to exit.
func (p *proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Term sends SIGTERM and waits up to timeout for the exit; it returns the
// exit code, or fails the test (after a SIGKILL) when the process hangs.
func (p *proc) Term(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.Wait(timeout)
}

// Wait waits up to timeout for the process to exit by itself and returns
// its exit code; on timeout it kills the process and fails the test.
func (p *proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(timeout):
		p.Kill()
		p.t.Fatalf("lsproxy did not exit within %v:\n%s", timeout, tail(p.Logs(), 6000))
		return -1
	}
}

// ---------------------------------------------------------------------------
// HTTP helpers.

// httpClient is shared by all tests: keep-alive connections, no redirects
// followed, bounded.
var httpClient = &http.Client{
	Timeout: 20 * time.Second,
	Transport: &http.Transport{
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     30 * time.Second,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// result is a finished HTTP exchange.
type result struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a map (nil if it is not a JSON object).
func (r result) JSON() map[string]any {
	var m map[string]any
	if json.Unmarshal(r.Body, &m) != nil {
		return nil
	}
	return m
}

// str returns the JSON body's string field k.
func (r result) str(k string) string {
	s, _ := r.JSON()[k].(string)
	return s
}

func do(ctx context.Context, method, rawURL string, header http.Header, body io.Reader) (result, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		return result{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return result{}, err
	}
	return result{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// get sends a proxied GET path for tenant.
func (p *proc) get(ctx context.Context, tenant, path string) (result, error) {
	return do(ctx, http.MethodGet, p.ProxyURL+path, http.Header{"X-Tenant": {tenant}}, nil)
}

// mustGet is get that fails the test on a transport error.
func (p *proc) mustGet(t testing.TB, tenant, path string) result {
	t.Helper()
	r, err := p.get(context.Background(), tenant, path)
	if err != nil {
		t.Fatalf("GET %s for %s: %v", path, tenant, err)
	}
	return r
}

// expectServes asserts a 200 from the emulator's API for tenant.
func (p *proc) expectServes(t testing.TB, tenant string) {
	t.Helper()
	r := p.mustGet(t, tenant, "/f/data/businesses")
	if r.Status != http.StatusOK || r.str("tenant") != tenant {
		t.Fatalf("tenant %s: status %d, body %s", tenant, r.Status, r.Body)
	}
}

// admin calls the admin API and records the response body.
func (p *proc) admin(t testing.TB, method, path string, body any) result {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	h := http.Header{"Authorization": {"Bearer " + p.adminToken}}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	r, err := do(context.Background(), method, p.ControlURL+path, h, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	p.mu.Lock()
	p.adminBodies = append(p.adminBodies, string(r.Body))
	p.mu.Unlock()
	return r
}

// importTenant imports g for tenant through PUT /admin/tenants/{id}.
func (p *proc) importTenant(t testing.TB, tenant string, g emulator.Grant) {
	t.Helper()
	r := p.admin(t, http.MethodPut, "/admin/tenants/"+tenant, map[string]any{
		"refresh_token": g.RefreshToken,
		"access_token":  g.AccessToken,
		"expires_in":    g.ExpiresIn,
	})
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		t.Fatalf("import %s: %d %s", tenant, r.Status, r.Body)
	}
}

// getTenant returns GET /admin/tenants/{id}, failing the test unless 200.
func (p *proc) getTenant(t testing.TB, tenant string) control.TenantView {
	t.Helper()
	r := p.admin(t, http.MethodGet, "/admin/tenants/"+tenant, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /admin/tenants/%s: %d %s", tenant, r.Status, r.Body)
	}
	var v control.TenantView
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("GET /admin/tenants/%s: %v: %s", tenant, err, r.Body)
	}
	return v
}

// authorizeLink asks the admin API for tenant's onboarding link.
func (p *proc) authorizeLink(t testing.TB, tenant string) string {
	t.Helper()
	r := p.admin(t, http.MethodPost, "/admin/tenants/"+tenant+"/authorize", nil)
	link := r.str("authorize_url")
	if r.Status != http.StatusOK || link == "" {
		t.Fatalf("POST /admin/tenants/%s/authorize: %d %s", tenant, r.Status, r.Body)
	}
	return link
}

// adminResponses returns every admin response body seen.
func (p *proc) adminResponses() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.adminBodies...)
}

// ---------------------------------------------------------------------------
// Small helpers.

// eventually polls cond every 25 ms until it holds or timeout passes.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(25 * time.Millisecond) // polling an external process: no signal to wait on
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomB64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
