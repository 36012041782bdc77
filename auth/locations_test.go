package auth_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

func TestLocationRefresher(t *testing.T) {
	em := emulator.New(emulator.Config{})
	em.AddAccount(emulator.Account{ID: "1234", Name: "Bistro", Locations: []emulator.Location{{ID: "1001", Name: "A"}, {ID: "1002", Name: "B"}}})
	em.AddUser("alice", "1234", "1001")
	srv := httptest.NewServer(em)
	defer srv.Close()
	keys, _ := store.NewKeyring([]byte(strings.Repeat("k", 32)))
	s, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	g := em.IssueGrant("alice")
	rec := &store.Tenant{ID: "biz", Status: store.StatusActive, AccessToken: g.AccessToken, RefreshToken: g.RefreshToken,
		Account: &store.Account{ID: "1234", Name: "Bistro"}, Locations: []store.Location{{ID: "1001", Name: "A", BusinessID: "1234"}}}
	if _, err := s.Put(ctx, rec, 0); err != nil {
		t.Fatal(err)
	}
	lr := &auth.LocationRefresher{Store: s, Identifier: &auth.Identifier{Identity: auth.Presets["k-series"].Identity, API: fixedAPI(srv.URL)},
		Token: func(context.Context, string) (auth.Token, error) { return auth.Token{AccessToken: g.AccessToken}, nil }}

	// The user now sees both locations: an on-demand refresh picks them up.
	em.AddUser("alice", "1234", "1001", "1002")
	got, err := lr.RefreshLocations(ctx, "biz")
	if err != nil || len(got.Locations) != 2 {
		t.Fatalf("%+v %v", got, err)
	}
	if ids, _ := s.LocationTenants(ctx, "1002"); !slices.Equal(ids, []string{"biz"}) {
		t.Errorf("index: %v", ids)
	}
	// A refresh holding the lock, or an in-flight mark: busy, nothing written.
	lock, _ := s.TryLock(ctx, "tenant:biz", time.Minute)
	if _, err := lr.RefreshLocations(ctx, "biz"); !errors.Is(err, auth.ErrLocationsBusy) {
		t.Errorf("lock held: %v", err)
	}
	lock.Release(ctx)
	cur, _ := s.Get(ctx, "biz")
	cur.RefreshInFlight = true
	if _, err := s.Put(ctx, cur, cur.Version); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Get(ctx, "biz")
	if _, err := lr.RefreshLocations(ctx, "biz"); !errors.Is(err, auth.ErrLocationsBusy) {
		t.Errorf("in flight: %v", err)
	}
	if after, _ := s.Get(ctx, "biz"); after.Version != before.Version {
		t.Error("written while a refresh was in flight")
	}
	// The grant now answering for another business: refused, unchanged.
	before.RefreshInFlight = false
	before.Account = &store.Account{ID: "5555"}
	if _, err := s.Put(ctx, before, before.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := lr.RefreshLocations(ctx, "biz"); !errors.Is(err, auth.ErrIdentify) {
		t.Errorf("other account: %v", err)
	}
}
