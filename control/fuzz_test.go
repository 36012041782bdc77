package control

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/store"
)

// FuzzAdminPut sends arbitrary bodies (and tenant ids) to PUT
// /admin/tenants/{id}: the answer is 2xx or 4xx, never 5xx or a panic; a
// 4xx changes nothing, a 2xx stores exactly the refresh token sent.
func FuzzAdminPut(f *testing.F) {
	for _, s := range []string{
		`{"refresh_token":"RT"}`, `{"refresh_token":"RT","access_token":"AT","expires_in":3600}`,
		`{"refresh_token":"RT","expires_in":-1}`, `{"refresh_token":"RT","expires_in":9223372036854775807}`,
		`{"refresh_token":"RT","access_token":"AT","expires_in":9223372036854775807}`,
		`{"refresh_token":"RT","refresh_expires_in":9223372036854775807}`,
		`{"refresh_token":"RT","expires_in":1e400}`, `{"refresh_token":"RT","bogus":1}`, `{"refresh_token":1}`,
		`[]`, `null`, ``, `{`, `{"refresh_token":"RT"}{}`, `{"refresh_token":"RT"} x`, `{"refresh_token":" "}`,
		`{"refresh_token":"RT","domain_prefix":"a/b"}`, `{"refresh_token":"\u0000"}`, `{"REFRESH_TOKEN":"RT"}`,
	} {
		f.Add(s, "acme")
	}
	f.Add(`{"refresh_token":"RT"}`, "bad id")
	f.Add(`{"refresh_token":"RT"}`, "")
	f.Add(`{"refresh_token":"RT"}`, "a/../b")

	keys, _ := store.NewKeyring([]byte(strings.Repeat("f", 32)))
	s, err := store.OpenBolt(f.TempDir(), keys)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	h := (&Server{Store: s, Tokens: &fakeTokens{}, AdminToken: adminToken, Provider: "k-series", Logger: zap.NewNop()}).Handler()

	f.Fuzz(func(t *testing.T, body, id string) {
		ctx := context.Background()
		before, _ := s.Get(ctx, id)
		req := httptest.NewRequest("PUT", "/admin/tenants/"+url.PathEscape(id), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 || rec.Code < 200 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
		if rec.Code < 300 && rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("content type %q", rec.Header().Get("Content-Type"))
		}
		after, _ := s.Get(ctx, id)
		if rec.Code >= 300 { // 4xx, or the mux redirecting a non-canonical path

			if before == nil && after != nil || before != nil && (after == nil || after.Version != before.Version) {
				t.Fatalf("a %d changed the tenant", rec.Code)
			}
			return
		}
		var sent struct {
			RefreshToken string `json:"refresh_token"`
		}
		if json.Unmarshal([]byte(body), &sent) != nil && rec.Code < 300 {
			// The handler accepted what encoding/json alone would not: fine
			// only if the stored token is what the handler parsed.
			return
		}
		if after == nil || after.RefreshToken != sent.RefreshToken {
			t.Fatalf("2xx but stored %+v for %q", after, body)
		}
		if strings.Contains(rec.Body.String(), `"refresh_token"`) || strings.Contains(rec.Body.String(), `"access_token"`) {
			t.Fatalf("response holds a token field: %s", rec.Body.String())
		}
	})
}
