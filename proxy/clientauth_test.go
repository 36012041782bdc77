package proxy

import (
	"github.com/lsproxy/lsproxy/internal/httperr"
	"net/http"
	"strings"
	"testing"
)

func TestCallerAuthentication(t *testing.T) {
	keyA, hashA, err := NewClientKey()
	if err != nil {
		t.Fatal(err)
	}
	keyB, hashB, _ := NewClientKey()
	keys, err := ParseClientKeys([]string{"app-a:" + hashA + ":acme,chain-*", "ops:" + hashB + ":*"})
	if err != nil {
		t.Fatal(err)
	}
	ca := NewCallerAuth(keys)
	hn := newHarness(t, func(h *Handler) { h.Authenticate = ca.Authenticate })
	hn.tokens.tokens["chain-7"] = "tok-acme"
	cases := []struct {
		name, proxyAuth, tenant string
		status                  int
		code                    string
	}{
		{"no key", "", "acme", 401, httperr.ProxyAuthRequired.Code},
		{"wrong key", "Bearer lsk_wrong", "acme", 401, httperr.ProxyAuthRequired.Code},
		{"basic scheme", "Basic " + keyA, "acme", 401, httperr.ProxyAuthRequired.Code},
		{"exact tenant", "Bearer " + keyA, "acme", 200, ""},
		{"prefix tenant", "Bearer " + keyA, "chain-7", 200, ""},
		{"not allowed", "Bearer " + keyA, "beta", 403, httperr.TenantNotAllowed.Code},
		{"wildcard", "Bearer " + keyB, "beta", 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := map[string]string{"X-Tenant": c.tenant}
			if c.proxyAuth != "" {
				hdr["Proxy-Authorization"] = c.proxyAuth
			}
			resp, body := hn.do(t, "GET", "/x", hdr, "")
			if resp.StatusCode != c.status || resp.Header.Get("X-Lsproxy-Error") != c.code {
				t.Fatalf("got %d %q %s", resp.StatusCode, resp.Header.Get("X-Lsproxy-Error"), body)
			}
		})
	}
	for _, r := range hn.up.requests() {
		if v := r.Header.Get("Proxy-Authorization"); v != "" {
			t.Fatalf("client key forwarded upstream")
		}
	}
}

func TestParseClientKeysErrors(t *testing.T) {
	good := HashClientKey("k")
	for _, raw := range []string{"", "id", "id:" + good, "id:zz:acme", "id:" + good + ":a/b", ":" + good + ":acme"} {
		if _, err := ParseClientKeys([]string{raw}); err == nil {
			t.Errorf("%q accepted", raw)
		} else if strings.Contains(err.Error(), good) {
			t.Errorf("error echoes the hash: %v", err)
		}
	}
	if _, err := ParseClientKeys([]string{"a:" + good + ":x", "a:" + good + ":y"}); err == nil {
		t.Error("duplicate id accepted")
	}
}

var _ = http.StatusOK
