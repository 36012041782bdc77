package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sync"
	"testing"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// tenantRE is the SPEC §2 tenant id syntax, the oracle for ValidTenantID.
var tenantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// unknownTokens answers every tenant "unknown" and records what it was asked.
type unknownTokens struct {
	mu    sync.Mutex
	asked []string
}

func (u *unknownTokens) Token(_ context.Context, tenant string) (auth.Token, error) {
	u.mu.Lock()
	u.asked = append(u.asked, tenant)
	u.mu.Unlock()
	return auth.Token{}, auth.ErrUnknownTenant
}

func (u *unknownTokens) Recover(ctx context.Context, tenant, _ string) (auth.Token, error) {
	return u.Token(ctx, tenant)
}

// FuzzTenantHeader checks ValidTenantID against the regular expression of
// the specification, and the handler's answer for the value as a tenant
// header: 400 invalid_tenant (no token looked up) for anything invalid.
func FuzzTenantHeader(f *testing.F) {
	for _, s := range []string{"acme", "a", "A1._:-z", "", "-a", ".a", "a b", "a/b", "a\nb", "a\r\nX: y",
		"ü", "acme\x00", "acme%0d%0a", "a}b{", "12345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678",
		"123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
		"acme\n", "\u0430cme", "acme\u200b", "a::", "0"} {
		f.Add(s)
	}
	target, _ := url.Parse("http://upstream.invalid/api")
	tokens := &unknownTokens{}
	h := &Handler{Upstream: target, Tokens: tokens}
	if err := h.Init(); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		valid := store.ValidTenantID(s)
		if want := tenantRE.MatchString(s); valid != want {
			t.Fatalf("store.ValidTenantID(%q) = %v, the regexp says %v", s, valid, want)
		}
		req := httptest.NewRequest("GET", "/x", nil)
		req.Header["X-Tenant"] = []string{s} // raw: no net/http validation in front
		rec := httptest.NewRecorder()
		tokens.mu.Lock()
		tokens.asked = tokens.asked[:0]
		tokens.mu.Unlock()
		h.ServeHTTP(rec, req)
		tokens.mu.Lock()
		asked := append([]string(nil), tokens.asked...)
		tokens.mu.Unlock()
		switch {
		case s == "":
			if rec.Code != http.StatusBadRequest || rec.Header().Get("X-Lsproxy-Error") != httperr.MissingTenant.Code {
				t.Fatalf("empty tenant: %d", rec.Code)
			}
		case !valid:
			if rec.Code != http.StatusBadRequest || rec.Header().Get("X-Lsproxy-Error") != httperr.InvalidTenant.Code || len(asked) != 0 {
				t.Fatalf("invalid tenant %q: %d, asked %q", s, rec.Code, asked)
			}
		default:
			if rec.Code != http.StatusNotFound || len(asked) != 1 || asked[0] != s {
				t.Fatalf("valid tenant %q: %d, asked %q", s, rec.Code, asked)
			}
		}
	})
}
