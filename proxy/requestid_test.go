package proxy

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/lsproxy/lsproxy/internal/httperr"
)

var generatedID = regexp.MustCompile(`^[0-9a-f]{16}$`)

// TestRequestID: every response carries X-Request-Id — the caller's when
// valid, else a generated one — the upstream receives the same id, and the
// request log line and every lsproxy error body carry it with the caller's
// key id.
func TestRequestID(t *testing.T) {
	key, hash, _ := NewClientKey()
	keys, err := ParseClientKeys([]string{"app-a:" + hash + ":acme"})
	if err != nil {
		t.Fatal(err)
	}
	hn := newHarness(t, func(h *Handler) { h.Authenticate = NewCallerAuth(keys).Authenticate })
	auth := "Bearer " + key

	// Proxied: the caller's id goes upstream and comes back once.
	resp, _ := hn.do(t, "GET", "/x", map[string]string{"X-Tenant": "acme", "Proxy-Authorization": auth, "X-Request-Id": "req-123.abc:9"}, "")
	if got := resp.Header.Values("X-Request-Id"); resp.StatusCode != 200 || len(got) != 1 || got[0] != "req-123.abc:9" {
		t.Fatalf("proxied: %d X-Request-Id %q", resp.StatusCode, got)
	}
	reqs := hn.up.requests()
	if got := reqs[len(reqs)-1].Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "req-123.abc:9" {
		t.Fatalf("upstream got X-Request-Id %q", got)
	}

	// Invalid caller ids are replaced, never echoed or forwarded.
	for _, bad := range []string{"has space", strings.Repeat("a", 65), "line\tbreak", "ü"} {
		resp, _ := hn.do(t, "GET", "/x", map[string]string{"X-Tenant": "acme", "Proxy-Authorization": auth, "X-Request-Id": bad}, "")
		got := resp.Header.Get("X-Request-Id")
		up := hn.up.requests()
		if !generatedID.MatchString(got) || up[len(up)-1].Header.Get("X-Request-Id") != got {
			t.Errorf("caller id %q: response %q upstream %q", bad, got, up[len(up)-1].Header.Get("X-Request-Id"))
		}
	}

	// lsproxy's own errors: header and body carry the id, before and after
	// tenant resolution.
	for _, c := range []struct {
		name string
		hdr  map[string]string
		code string
	}{
		{"missing tenant", map[string]string{}, httperr.MissingTenant.Code},
		{"no key", map[string]string{"X-Tenant": "acme"}, httperr.ProxyAuthRequired.Code},
		{"not allowed", map[string]string{"X-Tenant": "beta", "Proxy-Authorization": auth}, httperr.TenantNotAllowed.Code},
		{"unknown tenant", map[string]string{"X-Tenant": "acme", "Proxy-Authorization": auth, "X-Request-Id": "mine"}, ""},
	} {
		if c.code == "" {
			delete(hn.tokens.tokens, "acme")
			c.code = httperr.UnknownTenant.Code
		}
		resp, body := hn.do(t, "GET", "/x", c.hdr, "")
		var eb httperr.Body
		_ = json.Unmarshal([]byte(body), &eb)
		id := resp.Header.Get("X-Request-Id")
		if eb.Error != c.code || id == "" || eb.RequestID != id {
			t.Errorf("%s: %s, X-Request-Id %q", c.name, body, id)
		}
		if want := c.hdr["X-Request-Id"]; want != "" && id != want {
			t.Errorf("%s: X-Request-Id %q, want the caller's %q", c.name, id, want)
		}
	}

	// The log line: request id and caller key id, never the key.
	var found bool
	for _, e := range hn.logs.FilterMessage("request").All() {
		m := e.ContextMap()
		if m["request_id"] == "req-123.abc:9" {
			found = m["caller"] == "app-a"
		}
		for _, v := range m {
			if s, ok := v.(string); ok && strings.Contains(s, key) {
				t.Fatal("the request log carries the caller key")
			}
		}
	}
	if !found {
		t.Error("no request log line with request_id req-123.abc:9 and caller app-a")
	}
	_ = http.StatusOK
}
