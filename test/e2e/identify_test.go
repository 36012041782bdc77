package e2e

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/proxy"
)

// startKSeriesEnv is startKSeries with extra environment.
func startKSeriesEnv(t *testing.T, kv ...string) (*proc, *upstream) {
	t.Helper()
	var emu *upstream
	p := startProxyAt(t, func(controlAddr string) map[string]string {
		redirect := "http://" + controlAddr + "/oauth/callback"
		emu = startEmulator(t, emulator.Config{Mode: emulator.ModeKSeries, RedirectURL: redirect, RequireState: true})
		kSeriesBusiness(emu)
		return with(with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir(), "LSPROXY_REDIRECT_URL", redirect), kv...)
	})
	return p, emu
}

// waitTenant polls the admin view of tenant until ok holds (at most 20 s).
func waitTenant(t *testing.T, p *proc, tenant, what string, ok func(v control.TenantView) bool) control.TenantView {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := p.getTenant(t, tenant)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s; last view %+v (identify %+v)", what, v, v.Identify)
		}
		time.Sleep(50 * time.Millisecond) // polling the admin API: there is no signal to wait on
	}
}

// TestIdentifyKeepsGrantsThroughBinary (issue 22, "Done when"): the
// identity endpoint down (503) or forbidden (403) during a first
// authorization → the tenant is active and served, identified after the
// endpoint recovers; the same during a re-authorization → the old grant
// keeps serving, the candidate is promoted after recovery; another
// account → 409, grant kept, a rebind link works.
func TestIdentifyKeepsGrantsThroughBinary(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusForbidden} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			p, emu := startKSeriesEnv(t, "LSPROXY_IDENTIFY_RETRY", "200ms")

			// First authorization while the identity endpoint fails.
			emu.SetIdentityStatus(status)
			emu.Approve("alice")
			r, _ := followLink(t, p.authorizeLink(t, "biz"))
			if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte("verification pending")) {
				t.Fatalf("first authorization page: %d %s", r.Status, r.Body)
			}
			v := p.getTenant(t, "biz")
			if v.Status != "active" || v.Account != nil || v.Identify == nil || v.Identify.State != "pending" || v.Identify.LastError == "" || v.Identify.NextAt == nil {
				t.Fatalf("admin view after a first authorization without identification: %+v identify %+v", v, v.Identify)
			}
			if got := p.mustGet(t, "biz", "/o/op/data/items"); got.Status != 200 || got.str("tenant") != "alice" {
				t.Fatalf("not served meanwhile: %d %s", got.Status, got.Body)
			}
			emu.SetIdentityStatus(0)
			v = waitTenant(t, p, "biz", "identified after recovery", func(v control.TenantView) bool {
				return v.Account != nil && v.Identify == nil
			})
			if v.Account.ID != "1234" || len(v.Locations) != 2 {
				t.Fatalf("identified as %+v %+v", v.Account, v.Locations)
			}

			// Re-authorization (bob, same business) while it fails again.
			aliceFP := p.mustGet(t, "biz", "/o/op/data/items").str("token_fp")
			emu.SetIdentityStatus(status)
			emu.Approve("bob")
			r, _ = followLink(t, p.authorizeLink(t, "biz"))
			if r.Status != http.StatusOK || !bytes.Contains(r.Body, []byte("verification pending")) {
				t.Fatalf("re-authorization page: %d %s", r.Status, r.Body)
			}
			v = p.getTenant(t, "biz")
			if v.Candidate == nil || v.Identify == nil || v.Account == nil || v.Account.ID != "1234" {
				t.Fatalf("no candidate: %+v candidate %+v identify %+v", v, v.Candidate, v.Identify)
			}
			if got := p.mustGet(t, "biz", "/o/op/data/items"); got.str("tenant") != "alice" || got.str("token_fp") != aliceFP {
				t.Fatalf("the unverified grant is served: %s", got.Body)
			}
			emu.SetIdentityStatus(0)
			waitTenant(t, p, "biz", "candidate promoted after recovery", func(v control.TenantView) bool {
				return v.Candidate == nil && v.Identify == nil
			})
			if got := p.mustGet(t, "biz", "/o/op/data/items"); got.Status != 200 || got.str("tenant") != "bob" {
				t.Fatalf("after promotion: %d %s", got.Status, got.Body)
			}

			// Another account, identified: refused, grant kept; rebind works.
			emu.Approve("carol")
			r, _ = followLink(t, p.authorizeLink(t, "biz"))
			if r.Status != http.StatusConflict || r.Header.Get("X-Lsproxy-Error") != "other_account" {
				t.Fatalf("other account: %d %s", r.Status, r.Body)
			}
			if got := p.mustGet(t, "biz", "/o/op/data/items"); got.str("tenant") != "bob" {
				t.Fatalf("after the refusal: %s", got.Body)
			}
			rb := p.admin(t, http.MethodPost, "/admin/tenants/biz/authorize", map[string]any{"rebind": true})
			if r, _ := followLink(t, rb.str("authorize_url")); r.Status != 200 {
				t.Fatalf("rebind: %d %s", r.Status, r.Body)
			}
			if got := p.mustGet(t, "biz", "/o/op/data/items"); got.str("tenant") != "carol" {
				t.Fatalf("after rebind: %s", got.Body)
			}
			if v := p.getTenant(t, "biz"); v.Account == nil || v.Account.ID != "9876" {
				t.Fatalf("after rebind: %+v", v.Account)
			}
			for _, body := range p.adminResponses() {
				for _, s := range emu.issued() {
					if bytes.Contains([]byte(body), []byte(s)) {
						t.Fatal("an admin response carries a token or code")
					}
				}
			}
		})
	}
}

// TestPendingTenantThroughBinary: a tenant created by an authorize link is
// pending (not flagged) in the admin API, its filter and the metrics, and
// becomes active on its first authorization.
func TestPendingTenantThroughBinary(t *testing.T) {
	p, emu := startKSeriesEnv(t)
	link := p.authorizeLink(t, "newbie")
	if v := p.getTenant(t, "newbie"); v.Status != "pending" || v.FlaggedAt != nil {
		t.Fatalf("placeholder: %+v", v)
	}
	list := p.admin(t, http.MethodGet, "/admin/tenants?status=pending", nil)
	if list.Status != 200 || !bytes.Contains(list.Body, []byte(`"newbie"`)) {
		t.Fatalf("status=pending: %d %s", list.Status, list.Body)
	}
	if flagged := p.admin(t, http.MethodGet, "/admin/tenants?status=reauthorization_required", nil); bytes.Contains(flagged.Body, []byte(`"newbie"`)) {
		t.Fatalf("pending listed as flagged: %s", flagged.Body)
	}
	cli := map[string]string{"LSPROXY_ADMIN_URL": p.ControlURL, "LSPROXY_ADMIN_TOKEN": p.adminToken}
	runCLI(t, cli, "tenants", "list", "--status", "pending").expect(t, []string{"tenants", "list", "--status", "pending"}, 0, `(?s)^TENANT +STATUS [^\n]*\nnewbie +pending [^\n]*\n$`)
	runCLI(t, cli, "tenants", "list", "--status", "reauthorization_required").expect(t, []string{"--status", "reauthorization_required"}, 0, `(?s)^TENANT +STATUS [^\n]*\n$`)
	// Revoke the link: it stops working; a new one works.
	runCLI(t, cli, "tenants", "revoke-links", "newbie").expect(t, []string{"tenants", "revoke-links", "newbie"}, 0, `revoked`)
	emu.Approve("alice")
	if r, _ := followLink(t, link); r.Status != http.StatusGone || r.Header.Get("X-Lsproxy-Error") != "link_revoked" {
		t.Fatalf("revoked link: %d %s", r.Status, r.Body)
	}
	link = p.authorizeLink(t, "newbie")
	metrics := getBody(t, p.ControlURL+"/metrics")
	if !strings.Contains(metrics, `lsproxy_tenants{status="pending"} 1`) ||
		!strings.Contains(metrics, `lsproxy_tenants{status="reauthorization_required"} 0`) {
		t.Fatalf("metrics do not count the pending tenant as pending:\n%s", metrics)
	}
	if r, _ := followLink(t, link); r.Status != http.StatusOK {
		t.Fatalf("first authorization: %d %s", r.Status, r.Body)
	}
	if v := p.getTenant(t, "newbie"); v.Status != "active" || v.Account == nil {
		t.Fatalf("after the first authorization: %+v", v)
	}
}

// TestLocationsBehindCallerKeyThroughBinary (issue 22): with client keys,
// an X-Location request is authenticated before any lookup (401, no
// tenant named, for known and unknown locations alike), routed only among
// the key's tenants, and a location two of the key's tenants cover answers
// 409 ambiguous_location unless LSPROXY_LOCATION_PREFERRED names one.
func TestLocationsBehindCallerKeyThroughBinary(t *testing.T) {
	keyA, hashA, err := proxy.NewClientKey()
	if err != nil {
		t.Fatal(err)
	}
	keyAll, hashAll, _ := proxy.NewClientKey()
	p, emu := startKSeriesEnv(t,
		"LSPROXY_CLIENT_KEYS", "app-a:"+hashA+":biz-a ops:"+hashAll+":biz-*",
		"LSPROXY_LOCATION_PREFERRED", "1002=biz-a")
	emu.Approve("alice") // 1001, 1002
	onboard(t, p, "biz-a")
	onboard(t, p, "biz-c") // alice again: the same locations
	emu.Approve("bob")     // 1003
	onboard(t, p, "biz-b")
	get := func(key, loc string) result {
		t.Helper()
		h := http.Header{"X-Location": {loc}}
		if key != "" {
			h.Set("Proxy-Authorization", "Bearer "+key)
		}
		r, err := do(context.Background(), http.MethodGet, p.ProxyURL+"/o/op/data/items?businessLocationId="+loc, h, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, loc := range []string{"1001", "424242"} {
		r := get("", loc)
		if r.Status != http.StatusUnauthorized || r.Header.Get("X-Lsproxy-Error") != "proxy_auth_required" || bytes.Contains(r.Body, []byte("biz-")) {
			t.Errorf("no key, location %s: %d %s", loc, r.Status, r.Body)
		}
	}
	for _, c := range []struct {
		key, loc, code, login string
		status                int
	}{
		{keyA, "1001", "", "alice", 200},
		{keyA, "1003", "unknown_location", "", 404}, // only biz-b covers it
		{keyA, "424242", "unknown_location", "", 404},
		{keyAll, "1001", "ambiguous_location", "", 409},
		{keyAll, "1002", "", "alice", 200}, // preferred biz-a
		{keyAll, "1003", "", "bob", 200},
	} {
		r := get(c.key, c.loc)
		if r.Status != c.status || r.Header.Get("X-Lsproxy-Error") != c.code || c.login != "" && r.str("tenant") != c.login {
			t.Errorf("location %s: %d %s %s", c.loc, r.Status, r.Header.Get("X-Lsproxy-Error"), r.Body)
		}
		if c.status != 200 && bytes.Contains(r.Body, []byte("biz-")) {
			t.Errorf("location %s: the error body names a tenant: %s", c.loc, r.Body)
		}
	}
}
