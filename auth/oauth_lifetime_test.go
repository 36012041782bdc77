package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/store"
)

// A token endpoint may answer form-encoded (RFC 6749 says JSON; some
// answer application/x-www-form-urlencoded): x/oauth2's Token.Extra then
// returns int64 where a JSON body gives float64. Both must set the
// lifetimes, counted from when the request was sent (the clock seam).
func TestGrantLifetimesJSONAndFormBodies(t *testing.T) {
	t.Parallel()
	sent := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name, contentType, body string
		expiry, refreshExpiry   time.Time
	}{
		{"json", "application/json",
			`{"access_token":"a","token_type":"Bearer","refresh_token":"r","expires_in":1800,"refresh_expires_in":1209600}`,
			sent.Add(1800 * time.Second), sent.Add(1209600 * time.Second)},
		{"json strings", "application/json",
			`{"access_token":"a","token_type":"Bearer","refresh_token":"r","expires_in":"1800","refresh_expires_in":"1209600"}`,
			sent.Add(1800 * time.Second), sent.Add(1209600 * time.Second)},
		{"form", "application/x-www-form-urlencoded",
			"access_token=a&token_type=Bearer&refresh_token=r&expires_in=1800&refresh_expires_in=1209600",
			sent.Add(1800 * time.Second), sent.Add(1209600 * time.Second)},
		{"form float", "application/x-www-form-urlencoded",
			"access_token=a&token_type=Bearer&refresh_token=r&expires_in=1800.5&refresh_expires_in=1209600.0",
			sent.Add(1800 * time.Second), sent.Add(1209600 * time.Second)},
		// Unusable lifetimes count as unstated: 1 h for the access token
		// (our assumption), none for the refresh token.
		{"form garbage", "application/x-www-form-urlencoded",
			"access_token=a&token_type=Bearer&refresh_token=r&expires_in=soon&refresh_expires_in=-5",
			sent.Add(time.Hour), time.Time{}},
		{"json absurd", "application/json",
			`{"access_token":"a","token_type":"Bearer","refresh_token":"r","expires_in":0,"refresh_expires_in":1e30}`,
			sent.Add(time.Hour), time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c := &OAuthClient{
				ClientID: "id", ClientSecret: "secret", TokenURL: srv.URL,
				AuthStyle: oauth2.AuthStyleInParams,
				Now:       func() time.Time { return sent },
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			g, err := c.Refresh(ctx, &store.Tenant{ID: "t", RefreshToken: "old"})
			if err != nil {
				t.Fatal(err)
			}
			if !g.Expiry.Equal(tc.expiry) {
				t.Errorf("Expiry = %v, want %v", g.Expiry, tc.expiry)
			}
			if !g.RefreshExpiry.Equal(tc.refreshExpiry) {
				t.Errorf("RefreshExpiry = %v, want %v", g.RefreshExpiry, tc.refreshExpiry)
			}
		})
	}
}

func TestExtraSeconds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   any
		want time.Duration
	}{
		{float64(60), time.Minute},
		{60.9, time.Minute},
		{int64(60), time.Minute},
		{"60", time.Minute},
		{" 60 ", time.Minute},
		{nil, 0},
		{int(60), 0}, // never produced by x/oauth2
		{"", 0},
		{"1h", 0},
		{int64(0), 0},
		{int64(-1), 0},
		{-1.0, 0},
		{int64(1) << 62, 0},
		{1e300, 0},
		{"9223372036854775807", 0},
	} {
		if got := extraSeconds(tc.in); got != tc.want {
			t.Errorf("extraSeconds(%#v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
