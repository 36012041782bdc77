package onboard_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/store"
)

// fzStore counts writes, to prove a rejected callback stores nothing.
type fzStore struct {
	store.Store
	puts atomic.Int64
}

func (s *fzStore) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	s.puts.Add(1)
	return s.Store.Put(ctx, t, expect)
}

// FuzzServeCallback sends arbitrary query strings to the OAuth callback,
// alone or next to a real, live state: the answer is a 4xx page, never a
// 5xx or a panic, and nothing is stored (the token endpoint rejects every
// code but one the fuzzer cannot know).
func FuzzServeCallback(f *testing.F) {
	for _, q := range []string{
		"", "code=abc", "state=x", "code=abc&state=x", "error=access_denied", "error=access_denied&state=x",
		"error=%00%ff&error_description=%3Cscript%3E", "code=&state=", "code=a&code=b", "state=a&state=b",
		"code=" + strings.Repeat("A", 5000), "state=" + strings.Repeat("A", 43), "%zz", "code=abc;state=x",
		"code=abc&domain_prefix=evil.example", "code=abc&domain_prefix=../../x", "code=%0d%0aSet-Cookie:%20x",
		"error=invalid_scope", "error=server_error&code=abc",
	} {
		f.Add(q, false)
		f.Add(q, true)
	}

	goodCode := make([]byte, 16)
	rand.Read(goodCode)
	good := hex.EncodeToString(goodCode)
	var exchanges atomic.Int64
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		exchanges.Add(1)
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("code") == good {
			json.NewEncoder(w).Encode(map[string]any{"access_token": "AT", "refresh_token": "RT", "expires_in": 3600, "token_type": "bearer"})
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"invalid_grant"}`))
	}))
	f.Cleanup(tokenSrv.Close)

	keys, _ := store.NewKeyring([]byte(strings.Repeat("z", 32)))
	bolt, err := store.OpenBolt(f.TempDir(), keys)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { bolt.Close() })
	st := &fzStore{Store: bolt}
	style, _ := auth.AuthStyleFor("body")
	ob := &onboard.Onboarder{
		Store:        st,
		Client:       &auth.OAuthClient{ClientID: "cid", ClientSecret: "csecret", TokenURL: tokenSrv.URL + "/token", AuthStyle: style, Timeout: 5 * time.Second},
		Preset:       auth.Presets["k-series"],
		AuthorizeURL: "https://provider.example/authorize",
		RedirectURL:  "https://lsproxy.example/oauth/callback",
		PKCE:         true,
		LinkKey:      []byte(strings.Repeat("L", 32)),
	}
	ctx := context.Background()

	// liveState starts a real flow for tenant acme and returns its state.
	liveState := func(t *testing.T) string {
		link, err := ob.AuthorizeLink(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		ob.ServeStart(rec, httptest.NewRequest("GET", link, nil))
		loc, err := url.Parse(rec.Header().Get("Location"))
		if rec.Code != http.StatusFound || err != nil {
			t.Fatalf("start: %d %v", rec.Code, err)
		}
		return loc.Query().Get("state")
	}

	f.Fuzz(func(t *testing.T, rawQuery string, withState bool) {
		if withState {
			rawQuery += "&state=" + liveState(t)
		}
		if strings.Contains(rawQuery, good) {
			t.Skip()
		}
		before, _ := bolt.List(ctx)
		var acme *store.Tenant
		if len(before) > 0 {
			acme, _ = bolt.Get(ctx, "acme")
		}
		puts := st.puts.Load()
		req := httptest.NewRequest("GET", "/oauth/callback", nil)
		req.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		ob.ServeCallback(rec, req)
		if rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("query %q: status %d", rawQuery, rec.Code)
		}
		if n := st.puts.Load() - puts; n != 0 {
			t.Fatalf("query %q: %d writes", rawQuery, n)
		}
		after, _ := bolt.List(ctx)
		if len(after) != len(before) {
			t.Fatalf("query %q: tenants %v -> %v", rawQuery, before, after)
		}
		if acme != nil {
			now, err := bolt.Get(ctx, "acme")
			if err != nil || now.Version != acme.Version || now.RefreshToken != "" {
				t.Fatalf("query %q changed tenant acme: %+v %v", rawQuery, now, err)
			}
		}
		// The page never shows the client secret, the state or a code.
		body := rec.Body.String()
		shown := []string{"csecret"}
		if q, err := url.ParseQuery(rawQuery); err == nil {
			for _, k := range []string{"state", "code"} {
				for _, v := range q[k] {
					if len(v) >= 20 {
						shown = append(shown, v)
					}
				}
			}
		}
		for _, secret := range shown {
			if strings.Contains(body, secret) {
				t.Fatalf("page holds %q", secret)
			}
		}
	})
}
