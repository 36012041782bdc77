package onboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

// identityFixture is a K-Series fixture whose Onboarder identifies grants
// against the emulator's API, with two businesses.
func identityFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, fixOpts{mode: emulator.ModeKSeries, pkce: true})
	f.ob.Identifier = &auth.Identifier{Identity: auth.Presets["k-series"].Identity,
		API: func(string) (*url.URL, error) { return url.Parse(f.emSrv.URL) }}
	f.ob.Locations = f.st.Store.(store.LocationIndex)
	f.em.AddAccount(emulator.Account{ID: "1234", Name: "Bistro Group", Locations: []emulator.Location{
		{ID: "1001", Name: "Soho"}, {ID: "1002", Name: "Leeds"}, {ID: "1003", Name: "York"}}})
	f.em.AddAccount(emulator.Account{ID: "9876", Name: "Other Venue", Locations: []emulator.Location{{ID: "5001", Name: "Bar"}}})
	f.em.AddUser("alice", "1234", "1001", "1002")
	f.em.AddUser("carol", "9876")
	return f
}

// rebindLink asks the admin API for a rebind link.
func (f *fixture) rebindLink(tenant string) string {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.ctlURL+"/admin/tenants/"+tenant+"/authorize", bytes.NewReader([]byte(`{"rebind": true}`)))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AuthorizeURL string `json:"authorize_url"`
		Rebind       bool   `json:"rebind"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || !body.Rebind {
		f.t.Fatalf("rebind link: %d %v %+v", resp.StatusCode, err, body)
	}
	return body.AuthorizeURL
}

func TestOnboardIdentifiesAccountAndLocations(t *testing.T) {
	f := identityFixture(t)
	f.em.Approve("alice")
	if r := f.open(f.link("biz")); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := f.tenant("biz")
	if rec.Account == nil || *rec.Account != (store.Account{ID: "1234", Name: "Bistro Group"}) || len(rec.Locations) != 2 ||
		rec.Locations[0] != (store.Location{ID: "1001", Name: "Soho", BusinessID: "1234"}) || rec.LocationsAt.IsZero() {
		t.Fatalf("identity not stored: %+v %+v", rec.Account, rec.Locations)
	}
	idx := f.st.Store.(store.LocationIndex)
	if got, _ := idx.LocationTenants(context.Background(), "1002"); !slices.Equal(got, []string{"biz"}) {
		t.Errorf("location index: %v", got)
	}

	// Same account again (another user of the business): accepted.
	f.clock.Advance(2 * time.Second)
	if r := f.open(f.link("biz")); r.status != http.StatusOK {
		t.Fatalf("same account: %d %s", r.status, r.body)
	}

	// Another account: refused with 409; the page names the account to
	// use only by its last digits; the grant is kept.
	before := f.tenant("biz")
	f.clock.Advance(2 * time.Second)
	f.em.Approve("carol")
	r := f.open(f.link("biz"))
	mustFail(t, r, http.StatusConflict, "Other Venue", before.RefreshToken, before.AccessToken)
	for _, want := range []string{"Other Venue", "keeps working", "changing the account"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, leak := range []string{"Bistro Group", "1234", "biz", "rebind", "HTTP 409"} {
		if strings.Contains(r.body, leak) {
			t.Errorf("page names %q", leak)
		}
	}
	after := f.tenant("biz")
	if after.Version != before.Version || after.RefreshToken != before.RefreshToken || after.Account.ID != "1234" {
		t.Fatal("the refused re-authorization changed the tenant")
	}

	// A rebind link accepts the other account and moves the locations.
	f.clock.Advance(2 * time.Second)
	if r := f.open(f.rebindLink("biz")); r.status != http.StatusOK {
		t.Fatalf("rebind: %d %s", r.status, r.body)
	}
	rb := f.tenant("biz")
	if rb.Account.ID != "9876" || len(rb.Locations) != 1 || rb.Locations[0].ID != "5001" {
		t.Fatalf("rebind not applied: %+v %+v", rb.Account, rb.Locations)
	}
	if got, _ := idx.LocationTenants(context.Background(), "1002"); len(got) != 0 {
		t.Errorf("old location still indexed: %v", got)
	}
	if got, _ := idx.LocationTenants(context.Background(), "5001"); !slices.Equal(got, []string{"biz"}) {
		t.Errorf("new location not indexed: %v", got)
	}
	f.assertLogsClean(rb.RefreshToken, rb.AccessToken)
}

// A rebind link cannot be made from a plain one: flipping the flag breaks
// the signature.
func TestOnboardRebindFlagSigned(t *testing.T) {
	f := identityFixture(t)
	link := f.link("biz") + "&rebind=1"
	r := get(t, browser, link)
	if r.status != http.StatusBadRequest {
		t.Fatalf("forged rebind link: %d", r.status)
	}
	plain := strings.Replace(f.rebindLink("biz"), "rebind=1", "rebind=0", 1)
	if r := get(t, browser, plain); r.status != http.StatusBadRequest {
		t.Fatalf("rebind flag removed: %d", r.status)
	}
}

func TestAdminAuthorizeBadBody(t *testing.T) {
	f := identityFixture(t)
	for _, body := range []string{`{"rebind": "yes"}`, `{"other": 1}`, `[`} {
		req, _ := http.NewRequest(http.MethodPost, f.ctlURL+"/admin/tenants/biz/authorize", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d", body, resp.StatusCode)
		}
	}
}
