package auth_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

// The presets SPEC §2 names for LSPROXY_PROVIDER.
var specPresets = []string{"custom", "k-series", "k-series-v1", "l-series", "o-series", "r-series", "x-series"}

func TestPresetNamesAndLookup(t *testing.T) {
	if got := auth.PresetNames(); !slices.Equal(got, specPresets) {
		t.Fatalf("PresetNames() = %v, want %v", got, specPresets)
	}
	for name, p := range auth.Presets {
		if p.Name != name {
			t.Errorf("%s: Name %q", name, p.Name)
		}
		if _, err := auth.AuthStyleFor(p.ClientAuth); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, err := auth.LookupPreset("z-series", "production"); err == nil {
		t.Fatal("unknown preset accepted")
	}
	// A series without a trial environment falls back to production.
	_, ep, err := auth.LookupPreset("o-series", "trial")
	if err != nil || ep.Token != auth.Presets["o-series"].Environments["production"].Token {
		t.Fatalf("fallback: %+v %v", ep, err)
	}
	_, ep, _ = auth.LookupPreset("l-series", "trial")
	if !strings.Contains(ep.Authorize, "test.lightspeedapis.com") {
		t.Fatalf("l-series trial: %+v", ep)
	}
}

func TestPresetURLsAreHTTPS(t *testing.T) {
	for name, p := range auth.Presets {
		if name == "custom" {
			continue
		}
		if _, ok := p.Environments["production"]; !ok {
			t.Errorf("%s: no production environment", name)
		}
		for env, ep := range p.Environments {
			for kind, raw := range map[string]string{"authorize": ep.Authorize, "token": ep.Token, "api": ep.API} {
				u, err := url.Parse(strings.ReplaceAll(raw, "{domain_prefix}", "merchant"))
				if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
					t.Errorf("%s/%s %s URL %q is not a plain https URL", name, env, kind, raw)
				}
				if strings.Contains(raw, "{domain_prefix}") && !slices.Contains(p.CallbackParams, "domain_prefix") {
					t.Errorf("%s: URL uses {domain_prefix} but the callback does not provide it", name)
				}
			}
		}
	}
}

// dialTo returns a client that sends every request, whatever its host, to
// addr, and records the hosts asked for.
func dialTo(addr string) (*http.Client, func() []string) {
	var mu sync.Mutex
	var hosts []string
	c := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, host string) (net.Conn, error) {
			mu.Lock()
			hosts = append(hosts, host)
			mu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(hosts)
	}
}

// plain swaps https for http, keeping host and path: the dialer sends the
// request to the emulator, which serves the real service's paths.
func plain(raw string) string { return "http://" + strings.TrimPrefix(raw, "https://") }

func pathOf(t *testing.T, raw string) string {
	u, err := url.Parse(strings.ReplaceAll(raw, "{domain_prefix}", "merchant"))
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

// TestPresetWireFormat runs each preset's authorize, code exchange and
// refresh against the strict emulator in that preset's mode: the preset's
// paths, client authentication, PKCE and callback parameters must be what
// the emulated service demands.
func TestPresetWireFormat(t *testing.T) {
	const redirect = "https://gw.example/oauth/callback"
	for _, name := range specPresets {
		if name == "custom" {
			continue
		}
		p := auth.Presets[name]
		mode := emulator.Mode(name)
		for env, ep := range p.Environments {
			t.Run(name+"/"+env, func(t *testing.T) {
				paths, ok := emulator.PathsFor(mode)
				if !ok {
					t.Fatalf("emulator has no mode %q", mode)
				}
				if got := pathOf(t, ep.Authorize); got != paths.Authorize {
					t.Errorf("authorize path %q, emulated service uses %q", got, paths.Authorize)
				}
				if got := pathOf(t, ep.Token); got != paths.Token {
					t.Errorf("token path %q, emulated service uses %q", got, paths.Token)
				}
				if got := strings.TrimSuffix(pathOf(t, ep.API), "/"); got != strings.TrimSuffix(paths.APIPrefix, "/") {
					t.Errorf("API path %q, emulated service uses %q", got, paths.APIPrefix)
				}
				if want := emulator.DefaultClientAuth(mode); p.ClientAuth != want {
					t.Errorf("client auth %q, the service expects %q", p.ClientAuth, want)
				}

				idle := p.RefreshIdleTTL
				if name == "k-series" {
					idle = 30 * 24 * time.Hour // Keycloak reports it as refresh_expires_in
				}
				em := emulator.New(emulator.Config{Mode: mode, RedirectURL: redirect, RequireState: true,
					PKCE: p.PKCE, RefreshIdleTTL: idle})
				srv := httptest.NewServer(em)
				defer srv.Close()
				client, hosts := dialTo(srv.Listener.Addr().String())
				em.Approve("merchant1")

				// Authorize, as the Onboarder builds the request.
				state := strings.Repeat("s", 43)
				cfg := &oauth2.Config{ClientID: emulator.DefaultClientID, Endpoint: oauth2.Endpoint{AuthURL: plain(ep.Authorize)},
					RedirectURL: redirect, Scopes: p.Scopes}
				var opts []oauth2.AuthCodeOption
				verifier := ""
				if p.PKCE {
					verifier = oauth2.GenerateVerifier()
					opts = append(opts, oauth2.S256ChallengeOption(verifier))
				}
				resp, err := client.Get(cfg.AuthCodeURL(state, opts...))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				loc, err := url.Parse(resp.Header.Get("Location"))
				if resp.StatusCode != http.StatusFound || err != nil {
					t.Fatalf("authorize: %d %v", resp.StatusCode, err)
				}
				cb := loc.Query()
				if cb.Get("error") != "" || cb.Get("code") == "" || cb.Get("state") != state {
					t.Fatalf("callback query: error=%q code? %t state ok? %t", cb.Get("error"), cb.Get("code") != "", cb.Get("state") == state)
				}
				rec := &store.Tenant{ID: "merchant1"}
				for _, param := range p.CallbackParams {
					if cb.Get(param) == "" {
						t.Fatalf("callback lacks %s", param)
					}
					if rec.Extra == nil {
						rec.Extra = map[string]string{}
					}
					rec.Extra[param] = cb.Get(param)
				}

				style, _ := auth.AuthStyleFor(p.ClientAuth)
				oc := &auth.OAuthClient{ClientID: emulator.DefaultClientID, ClientSecret: emulator.DefaultClientSecret,
					TokenURL: plain(ep.Token), AuthStyle: style, HTTPClient: client, Timeout: 5 * time.Second}
				start := time.Now()
				g, err := oc.Exchange(context.Background(), rec, cb.Get("code"), verifier, redirect)
				if err != nil {
					t.Fatalf("exchange: %v", err)
				}
				if g.AccessToken == "" || g.RefreshToken == "" || g.Expiry.Before(start.Add(59*time.Minute)) {
					t.Fatalf("grant: expiry %v, tokens present %t/%t", g.Expiry, g.AccessToken != "", g.RefreshToken != "")
				}
				wantScope := strings.Join(p.Scopes, " ")
				if wantScope == "" {
					wantScope = emulator.DefaultScope(mode)
				}
				if g.Scope != wantScope {
					t.Errorf("scope %q, want %q", g.Scope, wantScope)
				}
				if name == "k-series" && !g.RefreshExpiry.After(start.Add(29*24*time.Hour)) {
					t.Errorf("refresh_expires_in not read: %v", g.RefreshExpiry)
				}
				if strings.Contains(ep.Token, "{domain_prefix}") {
					want := strings.ReplaceAll(strings.TrimPrefix(ep.Token, "https://"), "{domain_prefix}", "merchant1")
					want = want[:strings.Index(want, "/")] + ":80"
					if !slices.Contains(hosts(), want) {
						t.Errorf("token request went to %v, want %s", hosts(), want)
					}
				}

				// Refresh rotates the single-use refresh token.
				rec.RefreshToken = g.RefreshToken
				g2, err := oc.Refresh(context.Background(), rec)
				if err != nil {
					t.Fatalf("refresh: %v", err)
				}
				if g2.RefreshToken == "" || g2.RefreshToken == g.RefreshToken || g2.AccessToken == g.AccessToken {
					t.Fatal("refresh did not rotate")
				}
				if em.RefreshCount("merchant1") != 1 {
					t.Fatalf("emulator refresh count %d", em.RefreshCount("merchant1"))
				}

				// The other client-auth style is refused (and spends nothing).
				other := oauth2.AuthStyleInParams
				if style == oauth2.AuthStyleInParams {
					other = oauth2.AuthStyleInHeader
				}
				wrong := *oc
				wrong.AuthStyle = other
				rec.RefreshToken = g2.RefreshToken
				var ee *auth.EndpointError
				if _, err := wrong.Refresh(context.Background(), rec); !errors.As(err, &ee) || ee.Code != "invalid_client" {
					t.Fatalf("wrong client auth: %v", err)
				}
				if _, err := oc.Refresh(context.Background(), rec); err != nil {
					t.Fatalf("refresh after a refused request: %v", err)
				}
			})
		}
	}
}
