package emulator_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/internal/emulator"
)

// TestOAuth2LibraryCompat drives the emulator with golang.org/x/oauth2, the
// way a real client would: wire compatibility of authorize, code exchange,
// refresh and API calls, per mode and client auth style.
func TestOAuth2LibraryCompat(t *testing.T) {
	tests := []struct {
		mode    emulator.Mode
		style   oauth2.AuthStyle
		pkce    bool
		idle    time.Duration
		wantErr string // exchange fails with this RFC 6749 error
	}{
		{mode: emulator.ModeKSeries, style: oauth2.AuthStyleInHeader, idle: 30 * 24 * time.Hour},
		{mode: emulator.ModeKSeries, style: oauth2.AuthStyleInHeader, pkce: true},
		{mode: emulator.ModeKSeriesV1, style: oauth2.AuthStyleInHeader},
		{mode: emulator.ModeLSeries, style: oauth2.AuthStyleInHeader, pkce: true},
		{mode: emulator.ModeOSeries, style: oauth2.AuthStyleInParams},
		{mode: emulator.ModeRSeries, style: oauth2.AuthStyleInParams},
		{mode: emulator.ModeXSeries, style: oauth2.AuthStyleInParams},
		{mode: emulator.ModeKSeries, style: oauth2.AuthStyleInParams, wantErr: "invalid_client"},
		{mode: emulator.ModeLSeries, style: oauth2.AuthStyleInParams, pkce: true, wantErr: "invalid_client"},
		{mode: emulator.ModeOSeries, style: oauth2.AuthStyleInHeader, wantErr: "invalid_client"},
		{mode: emulator.ModeLSeries, style: oauth2.AuthStyleInHeader, pkce: false, wantErr: "access_denied/invalid_request"},
	}
	for _, tc := range tests {
		name := string(tc.mode) + map[oauth2.AuthStyle]string{oauth2.AuthStyleInHeader: "/header", oauth2.AuthStyleInParams: "/params"}[tc.style]
		if tc.pkce {
			name += "/pkce"
		}
		if tc.wantErr != "" {
			name += "/fails"
		}
		t.Run(name, func(t *testing.T) {
			em := emulator.New(emulator.Config{
				Mode: tc.mode, ClientID: "lsproxy", ClientSecret: "s+cret/=", // needs encoding in Basic
				RedirectURL: redirectURL, RefreshIdleTTL: tc.idle,
			})
			srv := newServer(t, em)
			conf := &oauth2.Config{
				ClientID:     "lsproxy",
				ClientSecret: "s+cret/=",
				RedirectURL:  redirectURL,
				Scopes:       []string{"offline_access", "orders-api"},
				Endpoint: oauth2.Endpoint{
					AuthURL:   srv + em.Paths().Authorize,
					TokenURL:  srv + em.Paths().Token,
					AuthStyle: tc.style,
				},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			ver := oauth2.GenerateVerifier()
			opts := []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("login_hint", "shop-7")}
			if tc.pkce {
				opts = append(opts, oauth2.S256ChallengeOption(ver))
			}
			resp, err := noFollow.Get(conf.AuthCodeURL("st-9", opts...))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, err := resp.Location()
			if err != nil {
				t.Fatalf("authorize: %d, no redirect: %v", resp.StatusCode, err)
			}
			q := loc.Query()
			if q.Get("state") != "st-9" {
				t.Errorf("state %q", q.Get("state"))
			}
			if tc.wantErr == "access_denied/invalid_request" {
				if q.Get("error") != "invalid_request" || q.Has("code") {
					t.Fatalf("l-series without PKCE: %v", q)
				}
				return
			}
			var exOpts []oauth2.AuthCodeOption
			if tc.pkce {
				exOpts = append(exOpts, oauth2.VerifierOption(ver))
			}
			tok, err := conf.Exchange(ctx, q.Get("code"), exOpts...)
			if tc.wantErr != "" {
				var re *oauth2.RetrieveError
				if !errors.As(err, &re) || re.ErrorCode != tc.wantErr || re.Response.StatusCode != http.StatusUnauthorized {
					t.Fatalf("Exchange err = %v, want RetrieveError %s (401)", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if !tok.Valid() || tok.Type() != "Bearer" || tok.RefreshToken == "" ||
				time.Until(tok.Expiry) < 59*time.Minute || time.Until(tok.Expiry) > time.Hour {
				t.Errorf("token: type %q expiry in %s", tok.Type(), time.Until(tok.Expiry))
			}
			if got, want := tok.Extra("refresh_expires_in") != nil, tc.idle > 0; got != want {
				t.Errorf("refresh_expires_in present %t, want %t", got, want)
			}
			if got := tok.Extra("domain_prefix"); (tc.mode == emulator.ModeXSeries) != (got == "shop-7") {
				t.Errorf("domain_prefix %v", got)
			}
			if tok.Extra("scope") != "offline_access orders-api" {
				t.Errorf("scope %v", tok.Extra("scope"))
			}
			apiTenant(t, conf.Client(ctx, tok), srv+em.Paths().APIPrefix+"v1/items", "shop-7")

			// Refresh through a TokenSource holding only the refresh token.
			tok2, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if tok2.AccessToken == tok.AccessToken || tok2.RefreshToken == tok.RefreshToken || tok2.RefreshToken == "" {
				t.Error("refresh did not rotate")
			}
			apiTenant(t, oauth2.NewClient(ctx, oauth2.StaticTokenSource(tok2)), srv+"/whoami", "shop-7")

			// The library cannot save a client from reusing a spent refresh token.
			_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
				t.Fatalf("reuse: err = %v, want invalid_grant", err)
			}
			if s := em.Stats(); s.CodeExchanges != 1 || s.RefreshGrants != 1 || s.ReuseDetected != 1 || s.ClientAuthFailures != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func apiTenant(t *testing.T, c *http.Client, u, tenant string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"tenant":"`+tenant+`"`) {
		t.Fatalf("API %s: %d %s", u, resp.StatusCode, b)
	}
}
