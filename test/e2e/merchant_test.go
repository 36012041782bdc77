package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// kSeriesBusiness registers business 1234 with three locations: alice sees
// 1001 and 1002, bob 1003; carol belongs to another business.
func kSeriesBusiness(emu *upstream) {
	emu.AddAccount(emulator.Account{ID: "1234", Name: "Bistro Group", Locations: []emulator.Location{
		{ID: "1001", Name: "Soho"}, {ID: "1002", Name: "Leeds"}, {ID: "1003", Name: "York"}}})
	emu.AddAccount(emulator.Account{ID: "9876", Name: "Other Venue", Locations: []emulator.Location{{ID: "5001", Name: "Bar"}}})
	emu.AddUser("alice", "1234", "1001", "1002")
	emu.AddUser("bob", "1234", "1003")
	emu.AddUser("carol", "9876")
}

func startKSeries(t *testing.T) (*proc, *upstream) {
	t.Helper()
	var emu *upstream
	p := startProxyAt(t, func(controlAddr string) map[string]string {
		redirect := "http://" + controlAddr + "/oauth/callback"
		emu = startEmulator(t, emulator.Config{Mode: emulator.ModeKSeries, RedirectURL: redirect, RequireState: true})
		kSeriesBusiness(emu)
		return with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir(), "LSPROXY_REDIRECT_URL", redirect)
	})
	return p, emu
}

// TestReauthorizationOtherAccountThroughBinary: a re-authorization signed
// in to another account is refused (409, the page names neither the bound
// account nor the tenant) and
// the tenant keeps serving with its grant; a rebind link accepts it.
func TestReauthorizationOtherAccountThroughBinary(t *testing.T) {
	p, emu := startKSeries(t)
	emu.Approve("alice")
	onboard(t, p, "biz")
	v := p.getTenant(t, "biz")
	if v.Account == nil || v.Account.ID != "1234" || v.Account.Name != "Bistro Group" || len(v.Locations) != 2 ||
		v.Locations[0].ID != "1001" || v.Locations[0].BusinessID != "1234" {
		t.Fatalf("admin view after onboarding: account %+v locations %+v", v.Account, v.Locations)
	}
	before := p.mustGet(t, "biz", "/o/op/data/items")
	if before.Status != 200 || before.str("tenant") != "alice" {
		t.Fatalf("serving: %d %s", before.Status, before.Body)
	}

	emu.Approve("carol")
	r, _ := followLink(t, p.authorizeLink(t, "biz"))
	if r.Status != http.StatusConflict || r.Header.Get("X-Lsproxy-Error") != "other_account" {
		t.Fatalf("other account: %d %s", r.Status, r.Body)
	}
	// The page speaks to whoever signed in: the account it names is the
	// one signed in to; the bound account is not named (issue 22).
	if !bytes.Contains(r.Body, []byte("Other Venue")) {
		t.Errorf("refusal page lacks the signed-in account's name")
	}
	for _, leak := range []string{"Bistro Group", "biz", "rebind", "HTTP 409"} {
		if bytes.Contains(r.Body, []byte(leak)) {
			t.Errorf("refusal page names %q", leak)
		}
	}
	after := p.mustGet(t, "biz", "/o/op/data/items")
	if after.Status != 200 || after.str("tenant") != "alice" || after.str("token_fp") != before.str("token_fp") {
		t.Fatalf("after the refusal the tenant does not serve with its grant: %d %s", after.Status, after.Body)
	}
	if v := p.getTenant(t, "biz"); v.Account.ID != "1234" || v.Version == 0 {
		t.Fatalf("refusal changed the tenant: %+v", v.Account)
	}

	// Rebind: accepted, the tenant now serves carol's grant.
	rb := p.admin(t, http.MethodPost, "/admin/tenants/biz/authorize", map[string]any{"rebind": true})
	if rb.Status != 200 || rb.str("authorize_url") == "" {
		t.Fatalf("rebind link: %d %s", rb.Status, rb.Body)
	}
	if r, _ := followLink(t, rb.str("authorize_url")); r.Status != 200 {
		t.Fatalf("rebind: %d %s", r.Status, r.Body)
	}
	if got := p.mustGet(t, "biz", "/o/op/data/items"); got.str("tenant") != "carol" {
		t.Fatalf("after rebind: %s", got.Body)
	}
	if v := p.getTenant(t, "biz"); v.Account.ID != "9876" || len(v.Locations) != 1 || v.Locations[0].ID != "5001" {
		t.Fatalf("after rebind: %+v %+v", v.Account, v.Locations)
	}
	for _, body := range p.adminResponses() {
		for _, s := range emu.issued() {
			if strings.Contains(body, s) {
				t.Fatal("an admin response carries a token or code")
			}
		}
	}
}

// TestLocationRoutingThroughBinary: one business, three locations split
// over two grants; requests by location id reach a grant covering it (the
// emulator refuses a location the grant does not cover); unknown → 404.
func TestLocationRoutingThroughBinary(t *testing.T) {
	p, emu := startKSeries(t)
	emu.Approve("alice")
	onboard(t, p, "biz-a")
	emu.Approve("bob")
	onboard(t, p, "biz-b")
	for loc, login := range map[string]string{"1001": "alice", "1002": "alice", "1003": "bob"} {
		r, err := do(context.Background(), http.MethodGet, p.ProxyURL+"/o/op/data/items?businessLocationId="+loc,
			http.Header{"X-Location": {loc}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 200 || r.str("tenant") != login {
			t.Errorf("location %s: %d %s, want %s's grant", loc, r.Status, r.Body, login)
		}
	}
	r, err := do(context.Background(), http.MethodGet, p.ProxyURL+"/o/op/data/items", http.Header{"X-Location": {"424242"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusNotFound || r.Header.Get("X-Lsproxy-Error") != "unknown_location" {
		t.Errorf("unknown location: %d %s", r.Status, r.Body)
	}
	a := p.getTenant(t, "biz-a")
	b := p.getTenant(t, "biz-b")
	ids := func(ls []store.Location) (out []string) {
		for _, l := range ls {
			out = append(out, l.ID+"@"+l.BusinessID)
		}
		return out
	}
	if !slices.Equal(ids(a.Locations), []string{"1001@1234", "1002@1234"}) || !slices.Equal(ids(b.Locations), []string{"1003@1234"}) ||
		a.Account.ID != "1234" || b.Account.ID != "1234" {
		t.Errorf("admin: biz-a %+v %v, biz-b %+v %v", a.Account, ids(a.Locations), b.Account, ids(b.Locations))
	}
}

// runCLI runs the lsproxy binary with args and env, returning its exit
// code, stdout and stderr.
func runMigrateCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = childEnviron(env)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running lsproxy %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// TestImportExportThroughBinary: N tenants from NDJSON with 20 bad lines
// (each reported by line number, nothing else changed); a re-run changes
// nothing; export → import into a fresh store round-trips every record
// (tokens included: the second export equals the first). N is 1,000 by
// default (CI time); LSPROXY_E2E_IMPORT_N=10000 measures the issue's
// figure, LSPROXY_E2E_IMPORT_STORE=redis on Redis instead of the embedded
// store (see docs/migration.md for the numbers).
func TestImportExportThroughBinary(t *testing.T) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("LSPROXY_E2E_IMPORT_N")); err == nil && v >= 200 {
		n = v / 100 * 100
	}
	emu := startEmulator(t, emulator.Config{})
	dir := t.TempDir()
	env := with(baseEnv(emu), "LSPROXY_DATA_DIR", filepath.Join(dir, "a"))
	env2 := with(env, "LSPROXY_DATA_DIR", filepath.Join(dir, "b"))
	if os.Getenv("LSPROXY_E2E_IMPORT_STORE") == "redis" {
		env = with(env, "LSPROXY_REDIS_URL", testredis.Start(t).URL())
		env2 = with(env2, "LSPROXY_REDIS_URL", testredis.Start(t).URL())
	}
	p := startProxy(t, env)
	cli := with(env, "LSPROXY_ADMIN_URL", p.ControlURL)

	var file bytes.Buffer
	bad := map[int]string{}
	real := emu.IssueGrant("m-00001") // one tenant with a live grant, to serve through
	for i := 1; i <= n; i++ {
		switch {
		case i == 1:
			fmt.Fprintf(&file, `{"id":"m-00001","refresh_token":%q,"access_token":%q,"expires_in":%d}`+"\n", real.RefreshToken, real.AccessToken, real.ExpiresIn)
		case i%(n/10) == 7: // 10 lines without a refresh token
			fmt.Fprintf(&file, `{"id":"m-%05d","access_token":"at-%d","expires_in":3600}`+"\n", i, i)
			bad[i] = "refresh_token is required"
		case i%(n/10) == 13: // 10 lines with a bad id
			fmt.Fprintf(&file, `{"id":"bad id %d","refresh_token":"rt-%d"}`+"\n", i, i)
			bad[i] = "id must match"
		default:
			fmt.Fprintf(&file, `{"id":"m-%05d","refresh_token":"rt-%d-%s","access_token":"at-%d","expires_in":3600,"scope":"orders-api"}`+"\n", i, i, randomHex(8), i)
		}
	}
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runMigrateCLI(t, cli, "tenants", "import", "--dry-run", in)
	if code != 1 || !strings.Contains(errs, fmt.Sprintf("would_create %d", n-20)) {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, errs, tail(out, 2000))
	}
	start := time.Now()
	code, out, errs = runMigrateCLI(t, cli, "tenants", "import", in)
	took := time.Since(start)
	t.Logf("imported %d tenants (%d bad lines) in %s: %s", n-20, len(bad), took.Round(time.Millisecond), strings.TrimSpace(errs))
	if code != 1 || !strings.Contains(errs, fmt.Sprintf("created %d", n-20)) || !strings.Contains(errs, "error 20") {
		t.Fatalf("import: exit %d\n%s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 20 {
		t.Fatalf("want 20 error lines, got %d:\n%s", len(lines), tail(out, 3000))
	}
	for _, l := range lines {
		var num int
		fmt.Sscanf(l, "line %d:", &num)
		if w, ok := bad[num]; !ok || !strings.Contains(l, w) {
			t.Errorf("error line %q, want line %d: %s", l, num, w)
		}
		if strings.Contains(l, "rt-") || strings.Contains(l, "at-") {
			t.Errorf("error line carries a token: %q", l)
		}
	}
	// Re-run: every good line unchanged.
	code, _, errs = runMigrateCLI(t, cli, "tenants", "import", in)
	if code != 1 || !strings.Contains(errs, fmt.Sprintf("unchanged %d", n-20)) {
		t.Fatalf("re-run: exit %d %s", code, errs)
	}
	p.expectServes(t, "m-00001")

	// Export needs the embedded store to itself: stop serve first.
	if c := p.Term(30 * time.Second); c != 0 {
		t.Fatalf("serve exit %d", c)
	}
	exp1 := filepath.Join(dir, "export1.ndjson")
	if code, _, errs := runMigrateCLI(t, env, "tenants", "export", exp1); code != 0 {
		t.Fatalf("export: %d %s", code, errs)
	}
	if st, err := os.Stat(exp1); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("export file mode: %v %v", st.Mode(), err)
	}
	if code, _, errs := runMigrateCLI(t, env, "tenants", "export", exp1); code == 0 || !strings.Contains(errs, "exists") {
		t.Errorf("export over an existing file: %d %s", code, errs)
	}

	p2 := startProxy(t, env2)
	code, _, errs = runMigrateCLI(t, with(env2, "LSPROXY_ADMIN_URL", p2.ControlURL), "tenants", "import", exp1)
	if code != 0 || !strings.Contains(errs, fmt.Sprintf("created %d", n-20)) {
		t.Fatalf("import of the export: %d %s", code, errs)
	}
	p2.expectServes(t, "m-00001")
	if c := p2.Term(30 * time.Second); c != 0 {
		t.Fatalf("serve exit %d", c)
	}
	exp2 := filepath.Join(dir, "export2.ndjson")
	if code, _, errs := runMigrateCLI(t, env2, "tenants", "export", exp2); code != 0 {
		t.Fatalf("export 2: %d %s", code, errs)
	}
	a, _ := os.ReadFile(exp1)
	b, _ := os.ReadFile(exp2)
	norm := func(b []byte) []string { // expires_in counts down between the exports
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			out = append(out, expiresRE.ReplaceAllString(l, `"expires_in":N`))
		}
		return out
	}
	if na, nb := norm(a), norm(b); len(na) != n-20 || !slices.Equal(na, nb) {
		t.Fatalf("export → import → export differs: %d vs %d lines", len(na), len(nb))
	}
}

var expiresRE = regexp.MustCompile(`"expires_in":\d+`)
