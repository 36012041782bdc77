package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

const cliAdminToken = "cli-test-admin-token-0123456789"

// cliTokens answers every refresh with the tenant needing
// re-authorization (409 from the admin API).
type cliTokens struct{}

func (cliTokens) ForceRefresh(context.Context, string) (auth.Token, error) {
	return auth.Token{}, &auth.ReauthError{Reason: "refresh token rejected by the provider (invalid_grant)"}
}
func (cliTokens) Retry(ctx context.Context, t string) (auth.Token, error) {
	return cliTokens{}.ForceRefresh(ctx, t)
}
func (cliTokens) Invalidate(string) {}

// cliOnboarding makes links like onboard's (with & in them and an exp
// parameter) and records whether a rebind link was asked for.
type cliOnboarding struct {
	mu     sync.Mutex
	rebind bool
}

func (o *cliOnboarding) link(tenant string) string {
	return "https://lsproxy.example.com/oauth/start?tenant=" + tenant + "&exp=" + strconv.FormatInt(time.Now().Add(7*24*time.Hour).Unix(), 10) + "&sig=abc"
}
func (o *cliOnboarding) AuthorizeLink(_ context.Context, tenant string) (string, error) {
	return o.link(tenant), nil
}
func (o *cliOnboarding) RebindLink(_ context.Context, tenant string) (string, error) {
	o.mu.Lock()
	o.rebind = true
	o.mu.Unlock()
	return o.link(tenant), nil
}
func (o *cliOnboarding) rebound() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rebind
}
func (o *cliOnboarding) ServeStart(http.ResponseWriter, *http.Request)    {}
func (o *cliOnboarding) ServeCallback(http.ResponseWriter, *http.Request) {}

// adminServer is a real control listener on loopback over a bolt store;
// requests counts what reached it.
func adminServer(t *testing.T) (url string, ob *cliOnboarding, requests *atomic.Int64) {
	t.Helper()
	keys, _ := store.ParseKeys(randomKey(t))
	s, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Put(context.Background(), &store.Tenant{ID: "acme", RefreshToken: "RT", Status: store.StatusActive}, 0); err != nil {
		t.Fatal(err)
	}
	ob = &cliOnboarding{}
	cs := &control.Server{Store: s, Tokens: cliTokens{}, AdminToken: cliAdminToken, Onboarding: ob, Gatherer: prometheus.NewRegistry(), Provider: "k-series"}
	h := cs.Handler()
	n := new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ob, n
}

func runTenants(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errs bytes.Buffer
	code := run(args, &out, &errs)
	return code, out.String(), errs.String()
}

// Without an admin token the CLI says so and sends nothing.
func TestTenantsChecksAdminTokenFirst(t *testing.T) {
	cleanEnv(t)
	u, _, n := adminServer(t)
	t.Setenv("LSPROXY_ADMIN_URL", u)
	code, _, errs := runTenants(t, "tenants", "list")
	if code != exitAuth || !strings.Contains(errs, "no admin token: set LSPROXY_ADMIN_TOKEN") {
		t.Fatalf("tenants list without a token: exit %d %s", code, errs)
	}
	if n.Load() != 0 {
		t.Fatalf("%d requests sent without a token", n.Load())
	}
	// A bad command line is still reported as such first (exit 2).
	if code, _, errs := runTenants(t, "tenants", "list", "--status", "flagged"); code != exitUsage || n.Load() != 0 {
		t.Fatalf("bad --status without a token: exit %d %s", code, errs)
	}
	code, _, errs = runTenants(t, "tenants", "import", "/dev/null")
	if code != 2 || !strings.Contains(errs, "no admin token") || n.Load() != 0 {
		t.Fatalf("tenants import without a token: exit %d %s (%d requests)", code, errs, n.Load())
	}
}

// Pointed at the proxy listener, the CLI says which listener it reached
// and where the admin API is (exit 1, not the usage exit 2).
func TestTenantsPointedAtProxyPort(t *testing.T) {
	cleanEnv(t)
	proxyLike := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httperr.Write(w, httperr.Error{Kind: httperr.MissingTenant}) // what the proxy answers without X-Tenant
	}))
	defer proxyLike.Close()
	t.Setenv("LSPROXY_ADMIN_URL", proxyLike.URL)
	t.Setenv("LSPROXY_ADMIN_TOKEN", cliAdminToken)
	for _, args := range [][]string{{"tenants", "list"}, {"tenants", "get", "acme"}} {
		code, _, errs := runTenants(t, args...)
		if code != exitFailure || !strings.Contains(errs, "as lsproxy's proxy listener does") || !strings.Contains(errs, "LSPROXY_CONTROL_LISTEN") {
			t.Errorf("%v against the proxy port: exit %d %s", args, code, errs)
		}
	}
}

// tenants authorize: --rebind asks for a rebind link, the expiry is
// printed on standard error, and -o json keeps "&" as it is.
func TestTenantsAuthorizeRebindExpiryJSON(t *testing.T) {
	cleanEnv(t)
	u, ob, _ := adminServer(t)
	t.Setenv("LSPROXY_ADMIN_URL", u)
	t.Setenv("LSPROXY_ADMIN_TOKEN", cliAdminToken)
	code, out, errs := runTenants(t, "tenants", "authorize", "acme")
	if code != 0 || !strings.HasPrefix(out, "https://lsproxy.example.com/oauth/start?tenant=acme&exp=") || !strings.Contains(errs, "the link expires ") || !strings.Contains(errs, "(in 6d)") && !strings.Contains(errs, "(in 7d)") {
		t.Fatalf("authorize: exit %d\n%s%s", code, out, errs)
	}
	if ob.rebound() {
		t.Fatal("a plain authorize asked for a rebind link")
	}
	code, out, errs = runTenants(t, "tenants", "authorize", "acme", "--rebind", "-o", "json")
	if code != 0 || !ob.rebound() {
		t.Fatalf("authorize --rebind: exit %d rebind %v\n%s", code, ob.rebound(), errs)
	}
	if strings.Contains(out, `\u0026`) || !strings.Contains(out, "&exp=") || !strings.Contains(out, `"rebind": true`) {
		t.Fatalf("-o json escapes the link or lacks rebind:\n%s", out)
	}
}

// A 409 names the command to run, not an HTTP call.
func TestTenants409SuggestsCommand(t *testing.T) {
	cleanEnv(t)
	u, _, _ := adminServer(t)
	t.Setenv("LSPROXY_ADMIN_URL", u)
	t.Setenv("LSPROXY_ADMIN_TOKEN", cliAdminToken)
	code, _, errs := runTenants(t, "tenants", "refresh", "acme")
	if code != exitConflict || !strings.Contains(errs, "lsproxy tenants authorize acme") || strings.Contains(errs, "POST /admin") {
		t.Fatalf("refresh of a rejected grant: exit %d %s", code, errs)
	}
}

// Unknown subcommands get "did you mean"; export and import document
// double-dash flags (and still accept the single-dash spelling).
func TestTenantsSuggestionsAndFlags(t *testing.T) {
	cleanEnv(t)
	for args, want := range map[string]string{"tenants lisst": "did you mean list?", "tenants gte acme": "did you mean get?", "chek-config": "did you mean check-config?"} {
		code, _, errs := runTenants(t, strings.Fields(args)...)
		if code != exitUsage || !strings.Contains(errs, want) {
			t.Errorf("%s: exit %d %s", args, code, errs)
		}
	}
	for _, sub := range []string{"export", "import"} {
		code, out, _ := runTenants(t, "tenants", sub, "--help")
		if code != 0 || !strings.Contains(out, "      --") || strings.Contains(out, "\n  -config") || strings.Contains(out, "\n  -dry-run") {
			t.Errorf("tenants %s --help: exit %d\n%s", sub, code, out)
		}
	}
	var errs bytes.Buffer
	if code := tenantsExport(context.Background(), []string{"-force", "-config"}, io.Discard, &errs); code != 2 || !strings.Contains(errs.String(), "flag needs an argument: --config") {
		t.Errorf("single-dash flags: exit %d %s", code, errs.String())
	}
}
