package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// fakeTokens is a hand-written TokenSource for unit tests.
type fakeTokens struct {
	mu       sync.Mutex
	tokens   map[string]string
	errs     map[string]error
	recovers int
	// onRecover replaces the token on Recover when set.
	onRecover map[string]string
}

func (f *fakeTokens) Token(_ context.Context, tenant string) (auth.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.errs[tenant]; err != nil {
		return auth.Token{}, err
	}
	tok, ok := f.tokens[tenant]
	if !ok {
		return auth.Token{}, fmt.Errorf("%w: %s", auth.ErrUnknownTenant, tenant)
	}
	return auth.Token{AccessToken: tok, Expiry: time.Now().Add(time.Hour)}, nil
}

func (f *fakeTokens) Recover(ctx context.Context, tenant, used string) (auth.Token, error) {
	f.mu.Lock()
	f.recovers++
	if next, ok := f.onRecover[tenant]; ok {
		f.tokens[tenant] = next
	}
	f.mu.Unlock()
	return f.Token(ctx, tenant)
}

// upstream records what reached it.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
	// valid maps access token -> tenant; others get 401.
	valid map[string]string
}

type recorded struct {
	Method, Path, RawQuery, Host string
	Header                       http.Header
	Body                         string
}

func newUpstream(t *testing.T, valid map[string]string) *upstream {
	u := &upstream{valid: valid}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header.Clone(), string(b)})
		u.mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/forbidden"):
			w.WriteHeader(http.StatusForbidden)
			return
		case strings.HasSuffix(r.URL.Path, "/redirect"):
			http.Redirect(w, r, "http://evil.invalid/steal", http.StatusFound)
			return
		case strings.HasSuffix(r.URL.Path, "/slow"):
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		case strings.HasSuffix(r.URL.Path, "/stream"):
			w.Header().Set("Content-Type", "text/event-stream")
			w.Write([]byte("data: one\n\n"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		tenant, ok := u.valid[tok]
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"tenant": tenant, "path": r.URL.Path})
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.reqs...)
}

type harness struct {
	proxy    *httptest.Server
	up       *upstream
	tokens   *fakeTokens
	logs     *observer.ObservedLogs
	upstream *url.URL
}

func newHarness(t *testing.T, opts ...func(*Handler)) *harness {
	t.Helper()
	up := newUpstream(t, map[string]string{"tok-acme": "acme", "tok-acme-2": "acme", "tok-beta": "beta"})
	target, _ := url.Parse(up.URL + "/api")
	ft := &fakeTokens{tokens: map[string]string{"acme": "tok-acme", "beta": "tok-beta"}, errs: map[string]error{}, onRecover: map[string]string{}}
	core, logs := observer.New(zap.DebugLevel)
	h := &Handler{Upstream: target, Tokens: ft, Logger: zap.New(core),
		Transport: NewTransport(TransportOptions{ResponseHeaderTimeout: 500 * time.Millisecond})}
	for _, o := range opts {
		o(h)
	}
	if err := h.Init(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &harness{proxy: srv, up: up, tokens: ft, logs: logs, upstream: target}
}

func (hn *harness) do(t *testing.T, method, path string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, hn.proxy.URL+path, strings.NewReader(body))
	if body == "" {
		req.Body = nil
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestInjectsTokenAndCleansHeaders(t *testing.T) {
	hn := newHarness(t)
	resp, body := hn.do(t, "GET", "/f/data/businesses?x=1&y=two", map[string]string{
		"X-Tenant":            "acme",
		"Authorization":       "Bearer client-own",
		"Proxy-Authorization": "Basic Zm9vOmJhcg==",
		"Connection":          "Authorization, X-Keep",
		"Cookie":              "session=1",
		"X-Forwarded-Host":    "evil.invalid",
		"X-Other":             "kept",
	}, "")
	if resp.StatusCode != 200 || !strings.Contains(body, `"tenant":"acme"`) {
		t.Fatalf("status %d body %s", resp.StatusCode, body)
	}
	reqs := hn.up.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests", len(reqs))
	}
	r := reqs[0]
	if r.Path != "/api/f/data/businesses" || r.RawQuery != "x=1&y=two" {
		t.Errorf("path %q query %q", r.Path, r.RawQuery)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer tok-acme" {
		t.Errorf("Authorization = %q", got)
	}
	for _, h := range []string{"X-Tenant", "Proxy-Authorization", "Cookie", "X-Forwarded-Host"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("%s forwarded: %q", h, v)
		}
	}
	if r.Header.Get("X-Other") != "kept" {
		t.Errorf("ordinary header dropped")
	}
	if r.Host != hn.upstream.Host {
		t.Errorf("Host = %q, want %q", r.Host, hn.upstream.Host)
	}
}

func TestTenantErrors(t *testing.T) {
	hn := newHarness(t)
	hn.tokens.errs["flagged"] = &auth.ReauthError{Tenant: "flagged", Reason: "refresh token rejected by the provider (invalid_grant)"}
	hn.tokens.errs["down"] = &auth.UnavailableError{Tenant: "down", RetryAfter: 3 * time.Second, Err: auth.ErrBreakerOpen}
	long := strings.Repeat("a", 129)
	cases := []struct {
		name, tenant string
		status       int
		code         string
	}{
		{"missing", "", 400, httperr.MissingTenant.Code},
		{"invalid chars", "acme/../x", 400, httperr.InvalidTenant.Code},
		{"leading dot", ".acme", 400, httperr.InvalidTenant.Code},
		{"too long", long, 400, httperr.InvalidTenant.Code},
		{"unknown", "nobody", 404, httperr.UnknownTenant.Code},
		{"flagged", "flagged", 401, httperr.ReauthorizationRequired.Code},
		{"unavailable", "down", 503, httperr.TokenUnavailable.Code},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := map[string]string{}
			if c.tenant != "" {
				hdr["X-Tenant"] = c.tenant
			}
			before := len(hn.up.requests())
			resp, body := hn.do(t, "GET", "/x", hdr, "")
			if resp.StatusCode != c.status || resp.Header.Get("X-Lsproxy-Error") != c.code {
				t.Fatalf("got %d %q, want %d %q (%s)", resp.StatusCode, resp.Header.Get("X-Lsproxy-Error"), c.status, c.code, body)
			}
			var eb httperr.Body
			if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error != c.code || eb.Message == "" {
				t.Fatalf("body %s", body)
			}
			if c.code == httperr.ReauthorizationRequired.Code && eb.Reason == "" {
				t.Errorf("reason missing: %s", body)
			}
			if c.code == httperr.TokenUnavailable.Code && resp.Header.Get("Retry-After") != "3" {
				t.Errorf("Retry-After = %q", resp.Header.Get("Retry-After"))
			}
			if len(hn.up.requests()) != before {
				t.Errorf("upstream was called")
			}
		})
	}
}

func TestTwoTenantHeadersRejected(t *testing.T) {
	hn := newHarness(t)
	req, _ := http.NewRequest("GET", hn.proxy.URL+"/x", nil)
	req.Header.Add("X-Tenant", "acme")
	req.Header.Add("X-Tenant", "beta")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("X-Lsproxy-Error") != httperr.InvalidTenant.Code {
		t.Fatalf("got %d", resp.StatusCode)
	}
}

func TestUpstreamStatusesPassThrough(t *testing.T) {
	hn := newHarness(t)
	resp, _ := hn.do(t, "GET", "/forbidden", map[string]string{"X-Tenant": "acme"}, "")
	if resp.StatusCode != 403 || resp.Header.Get("X-Lsproxy-Error") != "" {
		t.Fatalf("403: got %d %q", resp.StatusCode, resp.Header.Get("X-Lsproxy-Error"))
	}
	if hn.tokens.recovers != 0 {
		t.Errorf("403 triggered a token recovery")
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	hn := newHarness(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", hn.proxy.URL+"/redirect", nil)
	req.Header.Set("X-Tenant", "acme")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "http://evil.invalid/steal" {
		t.Fatalf("got %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestUpstreamErrors(t *testing.T) {
	hn := newHarness(t)
	resp, _ := hn.do(t, "GET", "/slow", map[string]string{"X-Tenant": "acme"}, "")
	if resp.StatusCode != 504 || resp.Header.Get("X-Lsproxy-Error") != httperr.UpstreamTimeout.Code {
		t.Fatalf("slow: got %d %q", resp.StatusCode, resp.Header.Get("X-Lsproxy-Error"))
	}
	hn.up.Close()
	resp, _ = hn.do(t, "GET", "/x", map[string]string{"X-Tenant": "acme"}, "")
	if resp.StatusCode != 502 || resp.Header.Get("X-Lsproxy-Error") != httperr.UpstreamUnavailable.Code {
		t.Fatalf("down: got %d %q", resp.StatusCode, resp.Header.Get("X-Lsproxy-Error"))
	}
}

func TestReplayAfter401WithNewToken(t *testing.T) {
	hn := newHarness(t)
	hn.tokens.tokens["acme"] = "tok-stale"
	hn.tokens.onRecover["acme"] = "tok-acme-2"
	resp, body := hn.do(t, "POST", "/orders", map[string]string{"X-Tenant": "acme"}, `{"item":42}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, body)
	}
	reqs := hn.up.requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream requests = %d, want 2", len(reqs))
	}
	if reqs[0].Body != `{"item":42}` || reqs[1].Body != `{"item":42}` {
		t.Errorf("bodies %q %q", reqs[0].Body, reqs[1].Body)
	}
	if reqs[1].Header.Get("Authorization") != "Bearer tok-acme-2" {
		t.Errorf("replay token %q", reqs[1].Header.Get("Authorization"))
	}
}

func TestNoReplayWhenSameTokenOrBodyTooLarge(t *testing.T) {
	hn := newHarness(t, func(h *Handler) { h.MaxReplayBody = 8 })
	hn.tokens.tokens["acme"] = "tok-stale"
	// Same token after recovery: the 401 passes through, one request.
	resp, _ := hn.do(t, "GET", "/x", map[string]string{"X-Tenant": "acme"}, "")
	if resp.StatusCode != 401 || resp.Header.Get("X-Lsproxy-Error") != "" {
		t.Fatalf("got %d", resp.StatusCode)
	}
	if n := len(hn.up.requests()); n != 1 {
		t.Fatalf("requests = %d", n)
	}
	// A body over the replay bound streams and is not replayed.
	hn.tokens.onRecover["acme"] = "tok-acme-2"
	resp, _ = hn.do(t, "POST", "/x", map[string]string{"X-Tenant": "acme"}, strings.Repeat("z", 100))
	if resp.StatusCode != 401 {
		t.Fatalf("got %d", resp.StatusCode)
	}
	reqs := hn.up.requests()
	if len(reqs) != 2 || len(reqs[1].Body) != 100 {
		t.Fatalf("requests = %d", len(reqs))
	}
	// The streamed body cannot be replayed; the token is recovered in the
	// background so that the caller's retry works.
	deadline := time.Now().Add(5 * time.Second)
	for {
		hn.tokens.mu.Lock()
		n := hn.tokens.recovers
		hn.tokens.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recovers = %d, want 2 (one in the background for the large body)", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	hn.tokens.mu.Lock()
	got := hn.tokens.tokens["acme"]
	hn.tokens.mu.Unlock()
	if got != "tok-acme-2" {
		t.Errorf("token after background recovery = %q", got)
	}
}

func TestRecoverFailureMapsError(t *testing.T) {
	hn := newHarness(t)
	hn.tokens.tokens["acme"] = "tok-stale"
	ft := hn.tokens
	// Recover reports the tenant flagged.
	ft.onRecover = nil
	hn2 := newHarness(t, func(h *Handler) {
		h.Tokens = &recoverErr{fakeTokens: ft, err: &auth.ReauthError{Tenant: "acme", Reason: "revoked"}}
	})
	hn2.tokens.tokens = ft.tokens
	resp, body := hn2.do(t, "GET", "/x", map[string]string{"X-Tenant": "acme"}, "")
	if resp.StatusCode != 401 || resp.Header.Get("X-Lsproxy-Error") != httperr.ReauthorizationRequired.Code {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
}

type recoverErr struct {
	*fakeTokens
	err error
}

func (r *recoverErr) Recover(context.Context, string, string) (auth.Token, error) {
	return auth.Token{}, r.err
}

func TestStreamingResponseFlushes(t *testing.T) {
	hn := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", hn.proxy.URL+"/stream", nil)
	req.Header.Set("X-Tenant", "acme")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event %q %v (the proxy buffered the stream)", line, err)
	}
}

func TestAbsoluteFormAndHostCannotRedirect(t *testing.T) {
	hn := newHarness(t)
	// A second server that must never be reached.
	var hits atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer evil.Close()
	evilHost := strings.TrimPrefix(evil.URL, "http://")

	for _, target := range []string{"http://" + evilHost + "/x", "//" + evilHost + "/x", "/x"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(hn.proxy.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nX-Forwarded-Host: %s\r\nX-Tenant: acme\r\nConnection: close\r\n\r\n", target, evilHost, evilHost)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		conn.Close()
	}
	if hits.Load() != 0 {
		t.Fatalf("a request reached another host")
	}
	for _, r := range hn.up.requests() {
		if r.Host != hn.upstream.Host {
			t.Errorf("upstream saw Host %q", r.Host)
		}
	}
	if n := len(hn.up.requests()); n != 3 {
		t.Errorf("upstream requests = %d, want 3", n)
	}
}

func TestRequestLogHasNoSecrets(t *testing.T) {
	hn := newHarness(t)
	hn.tokens.tokens["acme"] = "tok-stale"
	hn.tokens.onRecover["acme"] = "tok-acme-2"
	hn.do(t, "GET", "/x?code=SECRETCODE&access_token=SECRETQ", map[string]string{"X-Tenant": "acme", "Authorization": "Bearer CLIENTSECRET"}, "")
	hn.proxy.Close() // waits for the handler, which logs after answering
	entries := hn.logs.FilterMessage("request").All()
	if len(entries) != 1 {
		t.Fatalf("request log lines = %d", len(entries))
	}
	fields := entries[0].ContextMap()
	for _, k := range []string{"tenant", "method", "path", "status", "latency", "upstream_latency", "request_id"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("log line lacks %s", k)
		}
	}
	if fields["replayed"] != true {
		t.Errorf("replayed = %v", fields["replayed"])
	}
	all := fmt.Sprint(hn.logs.All())
	for _, secret := range []string{"tok-stale", "tok-acme-2", "SECRETCODE", "SECRETQ", "CLIENTSECRET"} {
		if strings.Contains(all, secret) {
			t.Errorf("log contains %q", secret)
		}
	}
}

func TestInitErrors(t *testing.T) {
	if err := (&Handler{Tokens: &fakeTokens{}}).Init(); err == nil {
		t.Error("no upstream accepted")
	}
	u, _ := url.Parse("http://x")
	if err := (&Handler{Upstream: u}).Init(); err == nil {
		t.Error("no tokens accepted")
	}
}

func TestValidTenantID(t *testing.T) {
	ok := []string{"a", "acme", "A1._:-z", strings.Repeat("b", 128), "12345"}
	bad := []string{"", "-a", "_a", "a b", "a/b", "a\nb", "ü", strings.Repeat("b", 129), "a%2f"}
	for _, s := range ok {
		if !store.ValidTenantID(s) {
			t.Errorf("%q rejected", s)
		}
	}
	for _, s := range bad {
		if store.ValidTenantID(s) {
			t.Errorf("%q accepted", s)
		}
	}
}
