package control

import (
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"
)

// Every request to /admin/ leaves exactly one "admin" line: who, action,
// tenant and status, for successes and failures alike, and none holds the
// admin token or a token from a body.
func TestAuditEveryAdminRequest(t *testing.T) {
	f := newFixture(t, adminToken)
	calls := []struct {
		method, path, token, body string
		who, action, tenant       string
		status                    int
	}{
		{"PUT", "/admin/tenants/acme", adminToken, `{"refresh_token":"RT-SECRET-AUDIT"}`, "admin-token", "import", "acme", 201},
		{"PUT", "/admin/tenants/acme", adminToken, `{"refresh_token":`, "admin-token", "import", "acme", 400},
		{"GET", "/admin/tenants", adminToken, "", "admin-token", "list", "", 200},
		{"GET", "/admin/tenants/acme", adminToken, "", "admin-token", "get", "acme", 200},
		{"GET", "/admin/tenants/nobody", adminToken, "", "admin-token", "get", "nobody", 404},
		{"POST", "/admin/tenants/acme/refresh", adminToken, "", "admin-token", "refresh", "acme", 200},
		{"POST", "/admin/tenants/acme/authorize", adminToken, "", "admin-token", "authorize", "acme", 503},
		{"DELETE", "/admin/tenants/acme", adminToken, "", "admin-token", "delete", "acme", 204},
		{"DELETE", "/admin/tenants/acme", adminToken, "", "admin-token", "delete", "acme", 404},
		{"GET", "/admin/tenants/bad%20id", adminToken, "", "admin-token", "get", "", 400},
		{"GET", "/admin/nothing", adminToken, "", "admin-token", "unknown", "", 404},
		{"DELETE", "/admin/tenants/acme", "wrong-token", "", "unauthenticated", "denied", "", 401},
		{"GET", "/admin/tenants", "", "", "unauthenticated", "denied", "", 401},
	}
	for i, c := range calls {
		before := f.logs.FilterMessage("admin").Len()
		code, body, _ := f.call(t, c.method, c.path, c.token, c.body)
		if code != c.status {
			t.Fatalf("%d %s %s: status %d, want %d (%s)", i, c.method, c.path, code, c.status, body)
		}
		lines := f.logs.FilterMessage("admin").All()[before:]
		if len(lines) != 1 {
			t.Fatalf("%d %s %s: %d audit lines", i, c.method, c.path, len(lines))
		}
		m := lines[0].ContextMap()
		if m["who"] != c.who || m["action"] != c.action || m["tenant"] != c.tenant || m["status"] != int64(c.status) || m["remote"] == "" {
			t.Errorf("%d %s %s: audit %v", i, c.method, c.path, m)
		}
		if c.who == "unauthenticated" && lines[0].Level != zapcore.WarnLevel {
			t.Errorf("denied request logged at %v", lines[0].Level)
		}
	}
	all := fmt.Sprint(f.logs.All())
	for _, secret := range []string{adminToken, "wrong-token", "RT-SECRET-AUDIT"} {
		if strings.Contains(all, secret) {
			t.Errorf("log holds %q", secret)
		}
	}
	// The admin API disabled: requests are still recorded, as such.
	off := newFixture(t, "")
	off.call(t, "GET", "/admin/tenants", "anything", "")
	if l := off.logs.FilterMessage("admin").All(); len(l) != 1 || l[0].ContextMap()["action"] != "disabled" {
		t.Errorf("disabled admin API: %v", l)
	}
}
