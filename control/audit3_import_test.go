package control_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/internal/emulator"
)

// AUDIT3-F9 (promise 1): PUT /admin/tenants/{id} neither takes the
// tenant lock nor looks at the in-flight mark (bulk import does both, and
// refuses "a refresh is in flight"), and it overwrites even when the body
// carries the refresh token already stored. A retried (duplicate) import
// request that lands while a refresh is in flight clears the holder's mark
// with the very token the holder has just spent; the holder's fenced write
// then discards the only copy of the new refresh token, and the next
// refresh sends the spent one.
func TestAudit3ImportPUTMidRefreshDiscardsGrant(t *testing.T) {
	code, burned := audit3ImportPUTMidRefresh(t)
	if burned {
		t.Errorf("the import PUT overwrote an in-flight refresh's mark with the refresh token it had just spent: the new token was discarded and the grant burned")
	}
	if code != http.StatusConflict {
		t.Errorf("duplicate PUT during the refresh answered %d, want 409 refresh_in_flight", code)
	}
	// The test-only switch brings the defect back: the test can fail.
	t.Run("defect AdminPutIgnoresMark", func(t *testing.T) {
		defer defect.Enable(defect.AdminPutIgnoresMark)()
		if _, burned := audit3ImportPUTMidRefresh(t); !burned {
			t.Errorf("with the defect switched on the grant was not burned: the reproduction no longer reproduces it")
		}
	})
}

// audit3ImportPUTMidRefresh runs the interleaving; it returns the status
// of the duplicate PUT and whether the grant was burned.
func audit3ImportPUTMidRefresh(t *testing.T) (code int, burned bool) {
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	s := importBoltStore(t)
	m := auth.NewManager(s, importOAuthClient(emu, srv.URL, 0, nil), auth.ManagerOptions{GuardThreshold: -1, LockTTL: time.Second})
	cs := &control.Server{Store: s, Tokens: m, AdminToken: "admin"}
	admin := httptest.NewServer(cs.Handler())
	defer admin.Close()
	g := emu.IssueGrant("acme")
	put := func() int {
		body := fmt.Sprintf(`{"refresh_token":%q,"access_token":%q,"expires_in":1}`, g.RefreshToken, g.AccessToken)
		req, _ := http.NewRequest(http.MethodPut, admin.URL+"/admin/tenants/acme", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer admin")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := put(); c != http.StatusCreated {
		t.Fatalf("import: %d", c)
	}
	ctx := context.Background()
	emu.SetTokenHold(time.Second) // the provider rotates at once, answers 1 s later
	done := make(chan error, 1)
	go func() { _, err := m.Token(ctx, "acme"); done <- err }() // expires_in 1 s: within refresh_before
	for emu.Stats().RefreshGrants == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	code = put() // the import client's retry of the same request
	err := <-done
	rec, _ := s.Get(ctx, "acme")
	t.Logf("duplicate PUT during the refresh: %d; refresh: %v; stored refresh token is the spent one: %v", code, err, rec.RefreshToken == g.RefreshToken)
	emu.SetTokenHold(0)
	_, err2 := m.ForceRefresh(ctx, "acme")
	st := emu.Stats()
	t.Logf("next refresh: %v; reuse=%d active grants=%d", err2, st.ReuseDetected, emu.ActiveGrants("acme"))
	return code, st.ReuseDetected != 0 || errors.Is(err2, auth.ErrReauthorizationRequired)
}
