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
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/internal/emulator"
)

// Two X-Series stores onboarded through the emulator, each on its own host
// ({domain_prefix}.retail.test, dialed to the emulator by testDial): every
// request reaches its own store's host with its own token (the emulator's
// StoreHosts refuses a token on another store's host), and a tenant
// without a domain_prefix gets 502 upstream_unavailable.
func TestXSeriesStoresOnOwnHosts(t *testing.T) {
	em := emulator.New(emulator.Config{Mode: emulator.ModeXSeries, StoreHosts: true, RequireState: true})
	em.AddAccount(emulator.Account{ID: "r-shoes", Name: "Shoe Store", DomainPrefix: "shoes"})
	em.AddAccount(emulator.Account{ID: "r-hats", Name: "Hat Store", DomainPrefix: "hats"})
	em.AddUser("m1", "r-shoes")
	em.AddUser("m2", "r-hats")
	emSrv := httptest.NewServer(em)
	defer emSrv.Close()
	var (
		mu     sync.Mutex
		dialed int
	)
	testDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		if !strings.HasSuffix(host, ".retail.test") {
			t.Errorf("dial to %s: not a store host", addr)
		}
		mu.Lock()
		dialed++
		mu.Unlock()
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
	cfg.AdminToken = "admin-xseries-test"
	cfg.RedirectURL = "http://" + controlAddr + "/oauth/callback"
	cfg.AuthorizeURL = emSrv.URL + "/connect"
	cfg.TokenURL = "http://{domain_prefix}.retail.test/api/1.0/token"
	cfg.UpstreamURL = "http://{domain_prefix}.retail.test"
	cfg.Scopes = "products:read"
	cfg.ShutdownTimeout = 5 * time.Second
	if problems := cfg.Validate(config.ModeServe); problems != nil {
		t.Fatal(problems)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := build(ctx, cfg, zap.NewNop(), prometheus.NewRegistry())
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
	admin := func(method, path string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+controlAddr+path, nil)
		req.Header.Set("Authorization", "Bearer "+cfg.AdminToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	for tenant, login := range map[string]string{"store-a": "m1", "store-b": "m2"} {
		em.Approve(login)
		link, _ := admin("POST", "/admin/tenants/"+tenant+"/authorize")["authorize_url"].(string)
		resp, err := client.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("onboarding %s: %d %s", tenant, resp.StatusCode, b)
		}
	}
	get := func(tenant string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+proxyAddr+"/api/2.0/products", nil)
		req.Header.Set("X-Tenant", tenant)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	for i := 0; i < 3; i++ {
		for tenant, want := range map[string][2]string{"store-a": {"m1", "shoes.retail.test"}, "store-b": {"m2", "hats.retail.test"}} {
			st, body := get(tenant)
			if st != 200 || body["tenant"] != want[0] || body["host"] != want[1] {
				t.Fatalf("%s: %d %v, want %s's token on %s", tenant, st, body, want[0], want[1])
			}
		}
	}
	if acct, _ := admin("GET", "/admin/tenants/store-b")["account"].(map[string]any); acct["id"] != "hats" {
		t.Errorf("store-b account %v", acct)
	}
	// Imported without a domain_prefix: no host to go to.
	req, _ := http.NewRequest("PUT", "http://"+controlAddr+"/admin/tenants/store-c", strings.NewReader(`{"refresh_token":"rt","access_token":"at","expires_in":3600}`))
	req.Header.Set("Authorization", "Bearer "+cfg.AdminToken)
	if resp, err := client.Do(req); err != nil || resp.StatusCode != 201 {
		t.Fatalf("import: %v %v", resp, err)
	}
	mu.Lock()
	n := dialed
	mu.Unlock()
	if st, body := get("store-c"); st != http.StatusBadGateway || body["error"] != "upstream_unavailable" {
		t.Fatalf("tenant without domain_prefix: %d %v", st, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if dialed != n {
		t.Errorf("a connection was made for a tenant without a host")
	}
}
