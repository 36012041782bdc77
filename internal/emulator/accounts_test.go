package emulator_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/lsproxy/lsproxy/internal/emulator"
)

// K-Series: a business with three locations and two users who each see
// part of them; the identity endpoint answers what each grant reaches and
// the API refuses a location the grant does not cover.
func TestAccountsKSeriesLocations(t *testing.T) {
	v := start(t, emulator.Config{})
	v.em.AddAccount(emulator.Account{ID: "1234", Name: "Bistro Group", Locations: []emulator.Location{
		{ID: "1001", Name: "Soho"}, {ID: "1002", Name: "Leeds"}, {ID: "1003", Name: "York"},
	}})
	v.em.AddUser("alice", "1234", "1001", "1002")
	v.em.AddUser("bob", "1234", "1003")
	atA, _ := tokens(t, v.exchange(v.code("alice")))
	atB, _ := tokens(t, v.exchange(v.code("bob")))

	r := v.api(http.MethodGet, "/f/data/businesses", atA)
	if r.status != 200 || !strings.Contains(r.raw, `"businessId":1234`) || !strings.Contains(r.raw, `"blID":1001`) ||
		!strings.Contains(r.raw, `"blID":1002`) || strings.Contains(r.raw, `1003`) || !strings.Contains(r.raw, `"businessName":"Bistro Group"`) {
		t.Errorf("alice's businesses: %d %s", r.status, r.raw)
	}
	r = v.api(http.MethodGet, "/f/data/businesses", atB)
	if r.status != 200 || !strings.Contains(r.raw, `"blID":1003`) || strings.Contains(r.raw, `1001`) {
		t.Errorf("bob's businesses: %d %s", r.status, r.raw)
	}
	if r := v.api(http.MethodGet, "/o/op/data/items?businessLocationId=1002", atA); r.status != 200 {
		t.Errorf("alice at her location: %d", r.status)
	}
	if r := v.api(http.MethodGet, "/o/op/data/items?businessLocationId=1003", atA); r.status != 403 {
		t.Errorf("alice at bob's location: %d, want 403", r.status)
	}
	if r := v.api(http.MethodGet, "/o/op/data/items?businessLocationId=1003", atB); r.status != 200 {
		t.Errorf("bob at his location: %d", r.status)
	}
	if r := v.api(http.MethodGet, "/f/data/businesses", ""); r.status != 401 {
		t.Errorf("no token: %d", r.status)
	}
}

func TestAccountsIdentityPerMode(t *testing.T) {
	for _, tc := range []struct {
		mode emulator.Mode
		path string
		want []string
	}{
		{emulator.ModeRSeries, "/API/V3/Account.json", []string{`"accountID":"555"`, `"name":"Bike Shop"`}},
		{emulator.ModeOSeries, "/v1/companies/me.json", []string{`"id":555`, `"name":"Bike Shop"`}},
		{emulator.ModeKSeriesV1, "/f/data/businesses", []string{`"businessId":555`}},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			v := start(t, emulator.Config{Mode: tc.mode})
			v.em.AddAccount(emulator.Account{ID: "555", Name: "Bike Shop"})
			v.em.AddUser("owner", "555")
			at, _ := tokens(t, v.exchange(v.code("owner")))
			r := v.api(http.MethodGet, tc.path, at)
			for _, w := range tc.want {
				if r.status != 200 || !strings.Contains(r.raw, w) {
					t.Errorf("%s: %d %s, want %s", tc.path, r.status, r.raw, w)
				}
			}
		})
	}
}

// X-Series: the callback and the token response carry the account's
// domain_prefix; with StoreHosts the API answers a token only on its own
// store's host.
func TestAccountsXSeriesStores(t *testing.T) {
	v := start(t, emulator.Config{Mode: emulator.ModeXSeries, StoreHosts: true})
	v.em.AddAccount(emulator.Account{ID: "r-1", Name: "Shoe Store", DomainPrefix: "shoes"})
	v.em.AddUser("manager", "r-1")
	u := location(t, v.authorize(v.authParams("manager")))
	if dp := u.Query().Get("domain_prefix"); dp != "shoes" {
		t.Fatalf("callback domain_prefix %q", dp)
	}
	r := v.exchange(u.Query().Get("code"))
	if r.str("domain_prefix") != "shoes" {
		t.Fatalf("token response %s", r.raw)
	}
	at, _ := tokens(t, r)
	for host, want := range map[string]int{"shoes.retail.test": 200, "SHOES.retail.test:8443": 200, "hats.retail.test": 403, "127.0.0.1": 403} {
		req, _ := http.NewRequest(http.MethodGet, v.srv.URL+"/api/2.0/products", nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+at)
		if got := do(t, req); got.status != want {
			t.Errorf("host %s: %d, want %d (%s)", host, got.status, want, got.raw)
		}
	}
	// An unregistered login is its own store, as before accounts existed.
	u = location(t, v.authorize(v.authParams("solo")))
	if dp := u.Query().Get("domain_prefix"); dp != "solo" {
		t.Errorf("unregistered login: domain_prefix %q", dp)
	}
}
