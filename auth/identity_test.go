package auth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

func fixedAPI(raw string) func(string) (*url.URL, error) {
	return func(string) (*url.URL, error) { return url.Parse(raw) }
}

// Every preset's identity lookup, against the emulator playing it.
func TestIdentifyPerPreset(t *testing.T) {
	for _, tc := range []struct {
		preset string
		mode   emulator.Mode
		want   store.Account
		locs   int
	}{
		{"k-series", emulator.ModeKSeries, store.Account{ID: "1234", Name: "Bistro Group"}, 2},
		{"k-series-v1", emulator.ModeKSeriesV1, store.Account{ID: "1234", Name: "Bistro Group"}, 2},
		{"r-series", emulator.ModeRSeries, store.Account{ID: "1234", Name: "Bistro Group"}, 0},
		{"o-series", emulator.ModeOSeries, store.Account{ID: "1234", Name: "Bistro Group"}, 0},
		{"x-series", emulator.ModeXSeries, store.Account{ID: "bistro", Name: "bistro"}, 0},
	} {
		t.Run(tc.preset, func(t *testing.T) {
			em := emulator.New(emulator.Config{Mode: tc.mode})
			em.AddAccount(emulator.Account{ID: "1234", Name: "Bistro Group", DomainPrefix: "bistro",
				Locations: []emulator.Location{{ID: "20", Name: "Leeds"}, {ID: "10", Name: "Soho"}, {ID: "30", Name: "York"}}})
			em.AddUser("alice", "1234", "10", "20")
			srv := httptest.NewServer(em)
			defer srv.Close()
			g := em.IssueGrant("alice")
			id := &auth.Identifier{Identity: auth.Presets[tc.preset].Identity, API: fixedAPI(srv.URL)}
			got, err := id.Identify(context.Background(), g.AccessToken, map[string]string{"domain_prefix": "bistro"})
			if err != nil {
				t.Fatal(err)
			}
			if got.Account != tc.want || len(got.Locations) != tc.locs {
				t.Fatalf("got %+v", got)
			}
			if tc.locs == 2 && (got.Locations[0] != store.Location{ID: "10", Name: "Soho", BusinessID: "1234"} || got.Locations[1].ID != "20") {
				t.Errorf("locations %+v", got.Locations)
			}
		})
	}
	if auth.Presets["l-series"].Identity.Known() || auth.Presets["custom"].Identity.Known() {
		t.Error("l-series/custom claim an identity lookup that is not documented")
	}
	for name, p := range auth.Presets {
		if p.Identity.Known() && p.Identity.Source == "" {
			t.Errorf("%s: identity without a documentation source", name)
		}
	}
	// No lookup: nothing is sent, nothing identified.
	got, err := (&auth.Identifier{}).Identify(context.Background(), "tok", nil)
	if got != nil || err != nil {
		t.Errorf("unknown identity: %v %v", got, err)
	}
}

// Several businesses: the identity is the sorted set.
func TestIdentifySeveralBusinesses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"_embedded":{"businessList":[
			{"businessId":99,"businessName":"B","businessLocations":[{"blID":45454565682155,"blName":"b1"}]},
			{"businessId":7,"businessName":"A","businessLocations":[]}]}}`))
	}))
	defer srv.Close()
	id := &auth.Identifier{Identity: auth.Presets["k-series"].Identity, API: fixedAPI(srv.URL)}
	got, err := id.Identify(context.Background(), "tok", nil)
	if err != nil || got.Account.ID != "7,99" || got.Account.Name != "A, B" || len(got.Locations) != 1 ||
		got.Locations[0].ID != "45454565682155" || got.Locations[0].BusinessID != "99" {
		t.Fatalf("%+v %v", got, err)
	}
}

// Failures: each an ErrIdentify without the token or the body in it; a
// redirect is never followed (it would carry the token).
func TestIdentifyFailures(t *testing.T) {
	followed := false
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed = true }))
	defer evil.Close()
	for name, h := range map[string]http.HandlerFunc{
		"401":        func(w http.ResponseWriter, r *http.Request) { http.Error(w, "secret-body", 401) },
		"not json":   func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret-body")) },
		"no account": func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"_embedded":{"businessList":[]}}`)) },
		"redirect":   func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, evil.URL+"/steal", http.StatusFound) },
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			id := &auth.Identifier{Identity: auth.Presets["k-series"].Identity, API: fixedAPI(srv.URL)}
			got, err := id.Identify(context.Background(), "tok-SECRET", nil)
			if got != nil || !errors.Is(err, auth.ErrIdentify) {
				t.Fatalf("%v %v", got, err)
			}
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "secret-body") {
				t.Errorf("error leaks: %v", err)
			}
		})
	}
	if followed {
		t.Error("a redirect was followed with the token")
	}
	// x-series without domain_prefix; an API that cannot be resolved.
	if _, err := (&auth.Identifier{Identity: auth.Presets["x-series"].Identity}).Identify(context.Background(), "t", nil); !errors.Is(err, auth.ErrIdentify) {
		t.Errorf("x-series without domain_prefix: %v", err)
	}
	noAPI := &auth.Identifier{Identity: auth.Presets["r-series"].Identity, API: func(string) (*url.URL, error) { return nil, errors.New("no host") }}
	if _, err := noAPI.Identify(context.Background(), "t", nil); !errors.Is(err, auth.ErrIdentify) {
		t.Errorf("unresolvable API: %v", err)
	}
}
