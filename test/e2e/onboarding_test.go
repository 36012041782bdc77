package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

// followLink opens an onboarding link like the merchant's browser: it
// follows every redirect (lsproxy /oauth/start → emulator authorize →
// lsproxy /oauth/callback) and returns the final response and the URL it
// came from.
func followLink(t testing.TB, link string) (result, *url.URL) {
	t.Helper()
	jar, _ := cookiejar.New(nil) // one browser per link: the OAuth state is bound to it
	client := &http.Client{
		Jar:       jar,
		Timeout:   10 * time.Second,
		Transport: httpClient.Transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("following the onboarding link: %v", err)
	}
	defer resp.Body.Close()
	final := resp.Request.URL
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("reading the final page: %v", err)
	}
	return result{Status: resp.StatusCode, Header: resp.Header, Body: b}, final
}

// onboard runs the whole flow for tenant and checks the callback page.
func onboard(t testing.TB, p *proc, tenant string) *url.URL {
	t.Helper()
	link := p.authorizeLink(t, tenant)
	r, final := followLink(t, link)
	if r.Status != http.StatusOK {
		t.Fatalf("onboarding %s: final page %d at %s: %s", tenant, r.Status, final.Path, r.Body)
	}
	if final.Path != "/oauth/callback" || final.Query().Get("code") == "" || final.Query().Get("state") == "" {
		t.Fatalf("onboarding %s ended at %s, not at the callback with code and state", tenant, final.Redacted())
	}
	return final
}

// TestOnboardingThroughBinary: admin link → provider authorize → callback
// → tenant serves, for a plain (k-series) and a PKCE (l-series) provider. A
// replayed callback fails and changes nothing; after a revocation a new
// link brings the tenant back.
func TestOnboardingThroughBinary(t *testing.T) {
	for _, mode := range []emulator.Mode{emulator.ModeKSeries, emulator.ModeLSeries} {
		t.Run(string(mode), func(t *testing.T) {
			const tenant = "merchant-1"
			var emu *upstream
			p := startProxyAt(t, func(controlAddr string) map[string]string {
				redirect := "http://" + controlAddr + "/oauth/callback"
				emu = startEmulator(t, emulator.Config{Mode: mode, RedirectURL: redirect, RequireState: true})
				emu.Approve(tenant)
				return with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir(), "LSPROXY_REDIRECT_URL", redirect)
			})

			callback := onboard(t, p, tenant)
			p.expectServes(t, tenant)
			st := emu.Stats()
			if st.CodeExchanges != 1 || st.GrantsIssued != 1 {
				t.Errorf("after onboarding: code exchanges %d, grants %d", st.CodeExchanges, st.GrantsIssued)
			}
			if v := p.getTenant(t, tenant); v.Status != store.StatusActive || !v.HasRefreshToken {
				t.Errorf("after onboarding: %+v", v)
			}

			// Replaying the callback (state already taken) fails before any
			// exchange: the code is not presented again (which would revoke
			// the grant at a strict provider).
			r, err := do(context.Background(), http.MethodGet, callback.String(), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status < 400 || r.Status > 499 {
				t.Errorf("replayed callback: %d, want 4xx", r.Status)
			}
			if st := emu.Stats(); st.CodeReuse != 0 || st.CodeExchanges != 1 {
				t.Errorf("replayed callback reached the provider: code reuse %d, exchanges %d", st.CodeReuse, st.CodeExchanges)
			}
			p.expectServes(t, tenant)

			// Revoked at the provider → flagged → a new link heals it.
			emu.Revoke(tenant)
			var last result
			for i := 0; i < 3 && last.Header.Get("X-Lsproxy-Error") != "reauthorization_required"; i++ {
				last = p.mustGet(t, tenant, "/f/data/businesses")
			}
			if last.Status != http.StatusUnauthorized || last.Header.Get("X-Lsproxy-Error") != "reauthorization_required" {
				t.Fatalf("after revocation: %d %s", last.Status, last.Body)
			}
			onboard(t, p, tenant)
			p.expectServes(t, tenant)
			if v := p.getTenant(t, tenant); v.Status != store.StatusActive || v.Reason != "" {
				t.Errorf("after re-onboarding: status %q reason %q", v.Status, v.Reason)
			}
			if st := emu.Stats(); st.CodeExchanges != 2 || st.ReuseDetected != 0 || st.CodeReuse != 0 {
				t.Errorf("emulator: %+v", st)
			}
		})
	}
}
