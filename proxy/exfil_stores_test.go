package proxy

// Exfiltration tests for a templated upstream (x-series: one host per
// store, SPEC §8): every request reaches its own tenant's store host with
// that tenant's token only. The template's hosts (*.retail.test) are dialed
// to loopback listeners by a custom dialer; any other host dials the evil
// listener, which must never see a connection.

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/httperr"
)

// storeHost is one store's API host; it records what reaches it.
type storeHost struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []upReq
}

func (s *storeHost) requests() []upReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]upReq(nil), s.reqs...)
}

// prefixTokens hands out tokens carrying each tenant's domain_prefix.
type prefixTokens struct {
	tokens map[string]string
	dp     map[string]string
}

func (p *prefixTokens) Token(_ context.Context, tenant string) (auth.Token, error) {
	tok, ok := p.tokens[tenant]
	if !ok {
		return auth.Token{}, auth.ErrUnknownTenant
	}
	return auth.Token{AccessToken: tok, Expiry: time.Now().Add(time.Hour), DomainPrefix: p.dp[tenant]}, nil
}

func (p *prefixTokens) Recover(ctx context.Context, tenant, _ string) (auth.Token, error) {
	return p.Token(ctx, tenant)
}

var storeTokens = map[string]string{"acme": "tok-acme-7Qx", "beta": "tok-beta-9Zr", "nodp": "tok-nodp-1Aa", "baddp": "tok-baddp-2Bb"}

type storesHarness struct {
	proxyAddr string
	stores    map[string]*storeHost // by domain_prefix
	evil      *evilHost
}

func newStores(t *testing.T, template string) *storesHarness {
	t.Helper()
	x := &storesHarness{stores: map[string]*storeHost{}, evil: newEvilHost(t)}
	for _, dp := range []string{"acme", "beta"} {
		sh := &storeHost{}
		sh.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			sh.mu.Lock()
			sh.reqs = append(sh.reqs, upReq{r.Method, r.RequestURI, r.Host, r.Header.Clone(), string(b)})
			sh.mu.Unlock()
			if strings.Contains(r.URL.Path, "/redirect") {
				w.Header().Set("Location", r.URL.Query().Get("to"))
				w.WriteHeader(http.StatusFound)
				return
			}
			io.WriteString(w, "ok")
		}))
		t.Cleanup(sh.srv.Close)
		x.stores[dp] = sh
	}
	tr := NewTransport(TransportOptions{ResponseHeaderTimeout: 2 * time.Second})
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		target := x.evil.addr
		if dp, ok := strings.CutSuffix(host, ".retail.test"); ok && x.stores[dp] != nil {
			target = x.stores[dp].srv.Listener.Addr().String()
		}
		return d.DialContext(ctx, network, target)
	}
	h := &Handler{
		UpstreamTemplate: template,
		Tokens: &prefixTokens{tokens: storeTokens, dp: map[string]string{
			"acme": "acme", "beta": "beta", "baddp": "evil.example",
		}},
		Transport: tr,
	}
	if err := h.Init(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	x.proxyAddr = srv.Listener.Addr().String()
	return x
}

func (x *storesHarness) raw(t *testing.T, req string) (*http.Response, string) {
	t.Helper()
	return (&exfil{proxyAddr: x.proxyAddr}).raw(t, req)
}

// check asserts that every request a store got came for its own tenant:
// its own Host, exactly its own token; and that n requests arrived in all.
func (x *storesHarness) check(t *testing.T, n int) {
	t.Helper()
	total := 0
	for dp, sh := range x.stores {
		for _, r := range sh.requests() {
			total++
			if want := dp + ".retail.test"; r.Host != want {
				t.Errorf("store %s saw Host %q, want %q", dp, r.Host, want)
			}
			if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+storeTokens[dp] {
				t.Errorf("store %s saw Authorization %q, want only its own token", dp, got)
			}
		}
	}
	if total != n {
		t.Errorf("stores got %d requests, want %d", total, n)
	}
	x.evil.check(t)
}

func noStoreTokenIn(t *testing.T, resp string) {
	t.Helper()
	for _, tok := range storeTokens {
		if strings.Contains(resp, tok) {
			t.Errorf("a token reached the caller: %q", resp)
		}
	}
}

func tenantGet(tenant, target string, headers ...string) string {
	return strings.Replace(get(target, headers...), "X-Tenant: acme", "X-Tenant: "+tenant, 1)
}

// Each store's requests reach its own host, with its own token and path
// prefix, whatever the request names.
func TestStoresEachOnOwnHost(t *testing.T) {
	for _, template := range []string{"http://{domain_prefix}.retail.test", "http://{domain_prefix}.retail.test/api"} {
		t.Run(template, func(t *testing.T) {
			x := newStores(t, template)
			prefix := strings.TrimPrefix(template, "http://{domain_prefix}.retail.test")
			n := 0
			for _, tn := range []string{"acme", "beta", "beta", "acme"} {
				resp, all := x.raw(t, tenantGet(tn, "/x?q=1"))
				if resp == nil || resp.StatusCode != 200 {
					t.Fatalf("%s: %v %s", tn, resp, all)
				}
				noStoreTokenIn(t, all)
				n++
			}
			x.check(t, n)
			for dp, sh := range x.stores {
				for _, r := range sh.requests() {
					if r.RequestURI != prefix+"/x?q=1" {
						t.Errorf("store %s: request target %q", dp, r.RequestURI)
					}
				}
			}
		})
	}
}

// Attacks per tenant: another store's host in the absolute-form target, the
// Host header, forwarding headers, path tricks and an upstream redirect.
// Nothing reaches another store's host or carries a token elsewhere.
func TestExfilPerStore(t *testing.T) {
	x := newStores(t, "http://{domain_prefix}.retail.test/api")
	attacks := func(victim string) []string {
		vh := victim + ".retail.test"
		return []string{
			"GET http://" + vh + "/x HTTP/1.1\r\nHost: " + vh + "\r\n",
			"GET http://" + x.evil.addr + "/x HTTP/1.1\r\nHost: lsproxy.local\r\n",
			"GET /x HTTP/1.1\r\nHost: " + vh + "\r\nX-Forwarded-Host: " + vh + "\r\nForwarded: host=" + vh + "\r\n",
			"GET //" + vh + "/x HTTP/1.1\r\nHost: lsproxy.local\r\n",
			"GET /@" + vh + "/x HTTP/1.1\r\nHost: lsproxy.local\r\n",
			"GET /redirect?to=http://" + vh + "/steal HTTP/1.1\r\nHost: lsproxy.local\r\n",
		}
	}
	n := 0
	for _, pair := range [][2]string{{"acme", "beta"}, {"beta", "acme"}} {
		tn, victim := pair[0], pair[1]
		for _, a := range attacks(victim) {
			req := a + "X-Tenant: " + tn + "\r\nAuthorization: Bearer " + storeTokens[victim] + "\r\nConnection: close\r\n\r\n"
			resp, all := x.raw(t, req)
			if resp == nil {
				t.Fatalf("%s: no response to %q", tn, a)
			}
			noStoreTokenIn(t, all)
			if resp.StatusCode < 400 {
				n++
			}
		}
	}
	x.check(t, n)
	// The redirect was passed back, never followed: the victim store saw
	// no /steal request.
	for dp, sh := range x.stores {
		for _, r := range sh.requests() {
			if strings.HasPrefix(r.RequestURI, "/steal") {
				t.Errorf("store %s got a followed redirect", dp)
			}
		}
	}
}

// A tenant without a domain_prefix, or with one that is not a single DNS
// label, gets 502 upstream_unavailable and nothing is sent anywhere.
func TestStoresTenantWithoutDomainPrefix(t *testing.T) {
	x := newStores(t, "http://{domain_prefix}.retail.test")
	for _, tn := range []string{"nodp", "baddp"} {
		resp, all := x.raw(t, tenantGet(tn, "/x"))
		if resp == nil || resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Lsproxy-Error") != httperr.UpstreamUnavailable.Code {
			t.Fatalf("%s: %v %s", tn, resp, all)
		}
		noStoreTokenIn(t, all)
	}
	x.check(t, 0)
}

func TestParseUpstream(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://{domain_prefix}.retail.lightspeed.app": true,
		"https://api.example.com/{domain_prefix}/v1":    true,
		"https://api.example.com":                       true,
		"{domain_prefix}://x":                           false,
		"https://x.example.com:{domain_prefix}":         false,
		"https://{store}.example.com":                   false,
		"https://x.example.com/?q={domain_prefix}":      false,
		"https://u:p@{domain_prefix}.example.com":       false,
		"/relative": false,
	} {
		up, err := ParseUpstream(raw)
		if (err == nil) != ok {
			t.Errorf("%q: err %v, want ok=%v", raw, err, ok)
			continue
		}
		if err != nil {
			continue
		}
		u, err := up.Resolve("store-1")
		if err != nil || strings.Contains(u.String(), "{") {
			t.Errorf("%q: Resolve = %v, %v", raw, u, err)
		}
		if up.Templated() {
			for _, bad := range []string{"", "a.b", "-x", "x-", "x/y", "x:1", strings.Repeat("a", 64), "évil"} {
				if _, err := up.Resolve(bad); err != ErrNoUpstreamHost {
					t.Errorf("%q: Resolve(%q) err %v", raw, bad, err)
				}
			}
		}
	}
}
