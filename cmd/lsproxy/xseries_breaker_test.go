package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/internal/emulator"
)

// TestXSeriesBreakerPerStore (issue 22): one X-Series store's token
// endpoint down does not stop the other stores' refreshes (one breaker per
// token host), and a tenant without a valid domain_prefix answers 502
// upstream_unavailable, sends nothing and opens no breaker. The outage
// lasts as long as the test keeps it (many refresh rounds, well past the
// breaker opening) rather than 30 s of wall clock; breaker_open_for is
// short so recovery is seen at once.
func TestXSeriesBreakerPerStore(t *testing.T) {
	em := emulator.New(emulator.Config{Mode: emulator.ModeXSeries, StoreHosts: true, RequireState: true})
	stores := []string{"shoes", "hats", "bags", "down"}
	for _, dp := range stores {
		em.AddAccount(emulator.Account{ID: "r-" + dp, Name: dp, DomainPrefix: dp})
		em.AddUser("m-"+dp, "r-"+dp)
	}
	// The "down" store's token endpoint answers 503 while down is set.
	var down atomic.Bool
	var downHits, dials atomic.Int64
	emSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Host, "down.retail.test") && r.URL.Path == "/api/1.0/token" && down.Load() {
			downHits.Add(1)
			http.Error(w, `{"error":"temporarily_unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		em.ServeHTTP(w, r)
	}))
	defer emSrv.Close()
	testDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		if !strings.HasSuffix(host, ".retail.test") {
			t.Errorf("dial to %s: not a store host", addr)
		}
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, emSrv.Listener.Addr().String())
	}
	defer func() { testDial = nil }()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	controlAddr := l.Addr().String()
	l.Close()
	cfg := config.Default()
	cfg.Provider = "x-series"
	cfg.Listen, cfg.ControlListen = "127.0.0.1:0", controlAddr
	cfg.ClientID, cfg.ClientSecret = emulator.DefaultClientID, emulator.DefaultClientSecret
	cfg.EncryptionKey = randomKey(t)
	cfg.DataDir = t.TempDir()
	cfg.AdminToken = "admin-xseries-breaker"
	cfg.RedirectURL = "http://" + controlAddr + "/oauth/callback"
	cfg.AuthorizeURL = emSrv.URL + "/connect"
	cfg.TokenURL = "http://{domain_prefix}.retail.test/api/1.0/token"
	cfg.UpstreamURL = "http://{domain_prefix}.retail.test"
	cfg.Scopes = "products:read"
	cfg.BreakerFailures = 2
	cfg.BreakerOpenFor = 300 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	if problems := cfg.Validate(config.ModeServe); problems != nil {
		t.Fatal(problems)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	a, err := build(ctx, cfg, zap.NewNop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.store.Close()
	proxyAddr, _, _, err := a.start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil) // the merchant's browser: the OAuth state is bound to its cookie
	client := &http.Client{Timeout: 10 * time.Second, Jar: jar}
	call := func(method, url, body string, hdr map[string]string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	adminHdr := map[string]string{"Authorization": "Bearer " + cfg.AdminToken}
	admin := func(method, path, body string) (int, map[string]any) {
		return call(method, "http://"+controlAddr+path, body, adminHdr)
	}
	for _, dp := range stores {
		em.Approve("m-" + dp)
		_, out := admin("POST", "/admin/tenants/"+dp+"/authorize", "")
		link, _ := out["authorize_url"].(string)
		resp, err := client.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("onboarding %s: %d", dp, resp.StatusCode)
		}
	}

	// PUT refuses a domain_prefix import refuses; nothing is written.
	if st, out := admin("PUT", "/admin/tenants/bad", `{"refresh_token":"rt","domain_prefix":"evil.example.com/x"}`); st != 400 || out["error"] != "bad_request" {
		t.Fatalf("PUT with a bad domain_prefix: %d %v", st, out)
	}
	if st, _ := admin("GET", "/admin/tenants/bad", ""); st != 404 {
		t.Fatalf("a refused PUT wrote the tenant: %d", st)
	}

	down.Store(true)
	for round := 1; round <= 10; round++ {
		// Its access token is still valid: served, the refresh counted as failed.
		if _, out := admin("POST", "/admin/tenants/down/refresh", ""); out["refresh_count"] != float64(0) {
			t.Fatalf("round %d: the store that is down refreshed: %v", round, out)
		}
		for _, dp := range stores[:3] {
			if st, out := admin("POST", "/admin/tenants/"+dp+"/refresh", ""); st != 200 || out["refresh_count"] != float64(round) {
				t.Fatalf("round %d: %s's refresh while another store's token endpoint is down: %d %v", round, dp, st, out)
			}
		}
	}
	// The breaker of the store that is down opened: it was asked at most
	// BreakerFailures times per open period, not 10 times.
	if n := downHits.Load(); n < 2 || n > 6 {
		t.Errorf("the store that is down got %d token requests over 10 rounds, want its breaker to stop most", n)
	}
	// The other stores still serve through the proxy.
	for _, dp := range stores[:3] {
		st, body := call("GET", "http://"+proxyAddr+"/api/2.0/products", "", map[string]string{"X-Tenant": dp})
		if st != 200 || body["host"] != dp+".retail.test" {
			t.Fatalf("%s: %d %v", dp, st, body)
		}
	}

	// Recovery: once its breaker lets a request through, it refreshes.
	down.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, out := admin("POST", "/admin/tenants/down/refresh", "")
		if st == 200 && out["refresh_count"] == float64(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store's refresh did not recover: %d", st)
		}
		time.Sleep(100 * time.Millisecond) // the breaker's open period; no signal to wait on
	}

	// A tenant without a domain_prefix: 502 upstream_unavailable on the
	// proxy and the admin API, nothing dialed, no breaker opened.
	if st, _ := admin("PUT", "/admin/tenants/nohost", `{"refresh_token":"rt"}`); st != 201 {
		t.Fatalf("import without domain_prefix: %d", st)
	}
	before := dials.Load()
	for i := 0; i < 10; i++ {
		if st, out := call("GET", "http://"+proxyAddr+"/api/2.0/products", "", map[string]string{"X-Tenant": "nohost"}); st != http.StatusBadGateway || out["error"] != "upstream_unavailable" {
			t.Fatalf("proxy, tenant without domain_prefix: %d %v", st, out)
		}
		if st, out := admin("POST", "/admin/tenants/nohost/refresh", ""); st != http.StatusBadGateway || out["error"] != "upstream_unavailable" {
			t.Fatalf("admin refresh, tenant without domain_prefix: %d %v", st, out)
		}
	}
	if dials.Load() != before {
		t.Error("a tenant without a domain_prefix made a connection")
	}
	if a.manager.BreakerOpen() {
		t.Error("a breaker is open after requests of a tenant without a domain_prefix")
	}
	for _, dp := range stores {
		if st, out := admin("POST", "/admin/tenants/"+dp+"/refresh", ""); st != 200 {
			t.Fatalf("%s after the tenant without host: %d %v", dp, st, out)
		}
	}
}
