package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// emulatorSecretRE matches any token or code the emulator makes
// ("at-"/"rt-"/"code-" + crypto/rand.Text), as a catch-all beside the exact
// values recorded by the tap.
var emulatorSecretRE = regexp.MustCompile(`\b(at|rt|code)-[A-Z2-7]{26}\b`)

// TestNoSecretsInLogsOrAdmin drives everything that logs — traffic,
// refreshes on two replicas, a forced refresh, onboarding, a revocation and
// flag, every admin call, rejected admin calls — at debug level, then looks
// for every token and code the emulator issued, the client secret, the
// admin token and the encryption key in the processes' output, the admin
// responses, lsproxy's error responses and /metrics.
func TestNoSecretsInLogsOrAdmin(t *testing.T) {
	const onboarded = "onboarded"
	emu := startEmulator(t, emulator.Config{AccessTTL: 2 * time.Second})
	emu.Approve(onboarded)
	rdb := testredis.Start(t)
	env := with(baseEnv(emu), "LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_REFRESH_BEFORE", "1s",
		"LSPROXY_LOG_LEVEL", "debug", "LSPROXY_BREAKER_OPEN_FOR", "1s")
	p1 := startProxyAt(t, func(controlAddr string) map[string]string {
		return with(env, "LSPROXY_REDIRECT_URL", "http://"+controlAddr+"/oauth/callback")
	})
	p2 := startProxy(t, env)
	procs := []*proc{p1, p2}

	var (
		mu         sync.Mutex
		responses  []string // bodies of lsproxy's own error responses
		unexpected []string
	)
	note := func(r result) {
		if r.Header.Get("X-Lsproxy-Error") != "" {
			mu.Lock()
			responses = append(responses, string(r.Body))
			mu.Unlock()
		}
	}

	ids := []string{"alpha", "beta", "gamma", "delta"}
	for _, id := range ids {
		p1.importTenant(t, id, emu.IssueGrant(id))
	}
	onboard(t, p1, onboarded)
	ids = append(ids, onboarded)

	// Traffic on both replicas for a few token lifetimes: refreshes, cache
	// invalidations across replicas.
	ctx, cancel := context.WithTimeout(context.Background(), 4500*time.Millisecond)
	var wg sync.WaitGroup
	for c := 0; c < 6; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; ctx.Err() == nil; i++ {
				tenant := ids[i%len(ids)]
				r, err := procs[c%2].get(ctx, tenant, "/f/data/businesses")
				if ctx.Err() != nil {
					return
				}
				if err != nil || r.Status != http.StatusOK {
					mu.Lock()
					unexpected = append(unexpected, fmt.Sprintf("%s: %v %d %s", tenant, err, r.Status, r.Body))
					mu.Unlock()
				}
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	for _, u := range unexpected {
		t.Errorf("during traffic: %s", u)
	}

	// Admin calls, including a forced refresh and failures.
	p1.admin(t, http.MethodGet, "/admin/tenants", nil)
	for _, id := range ids {
		p2.getTenant(t, id)
	}
	if r := p2.admin(t, http.MethodPost, "/admin/tenants/alpha/refresh", nil); r.Status != http.StatusOK {
		t.Errorf("forced refresh: %d %s", r.Status, r.Body)
	}
	p1.authorizeLink(t, "epsilon")
	if r := p1.admin(t, http.MethodPut, "/admin/tenants/bad", map[string]any{"refresh_token": "", "access_token": "x"}); r.Status != http.StatusBadRequest {
		t.Errorf("bad import: %d %s", r.Status, r.Body)
	}
	if r := p1.admin(t, http.MethodDelete, "/admin/tenants/delta", nil); r.Status != http.StatusNoContent {
		t.Errorf("delete: %d %s", r.Status, r.Body)
	}
	wrongAdmin := "wrong-admin-" + randomHex(8)
	r, err := do(context.Background(), http.MethodGet, p1.ControlURL+"/admin/tenants",
		http.Header{"Authorization": {"Bearer " + wrongAdmin}}, nil)
	if err != nil || r.Status != http.StatusUnauthorized {
		t.Errorf("wrong admin token: %v %d", err, r.Status)
	}

	// A flag: revoked at the provider, found by a refresh on replica 2.
	emu.Revoke("beta")
	if r := p2.admin(t, http.MethodPost, "/admin/tenants/beta/refresh", nil); r.Status != http.StatusConflict {
		t.Errorf("forced refresh of a revoked grant: %d %s", r.Status, r.Body)
	}
	for _, p := range procs {
		note(p.mustGet(t, "beta", "/f/data/businesses"))
		note(p.mustGet(t, "delta", "/f/data/businesses"))
		note(p.mustGet(t, "no-such-tenant", "/f/data/businesses"))
	}
	// A callback with a code-shaped value and an unknown state: the code
	// must not be echoed or logged either.
	bogusCode := "code-" + rand.Text()
	bogus, err := do(context.Background(), http.MethodGet, p1.ControlURL+"/oauth/callback?code="+bogusCode+"&state=x", nil, nil)
	if err != nil || bogus.Status/100 != 4 {
		t.Errorf("bogus callback: %v %d", err, bogus.Status)
	}
	metrics, err := do(context.Background(), http.MethodGet, p1.ControlURL+"/metrics", nil, nil)
	if err != nil || metrics.Status != http.StatusOK {
		t.Fatalf("/metrics: %v %d", err, metrics.Status)
	}

	// Stop the replicas so that everything they will ever log is in.
	for _, p := range procs {
		if code := p.Term(30 * time.Second); code != 0 {
			t.Errorf("exit %d", code)
		}
	}

	st := emu.Stats()
	secrets := map[string]string{
		"client secret":  env["LSPROXY_CLIENT_SECRET"],
		"admin token":    env["LSPROXY_ADMIN_TOKEN"],
		"encryption key": env["LSPROXY_ENCRYPTION_KEY"],
		"wrong admin":    wrongAdmin,
		"callback code":  bogusCode,
	}
	issued := emu.issued()
	for i, v := range issued {
		kind, _, _ := strings.Cut(v, "-")
		secrets[fmt.Sprintf("issued %s- value #%d", kind, i)] = v
	}
	t.Logf("checked %d issued tokens and codes (refreshes=%d, code exchanges=%d, revoked grants=%d), %d log bytes, %d admin responses, %d error responses",
		len(issued), st.RefreshGrants, st.CodeExchanges, st.GrantsRevoked,
		len(p1.Logs())+len(p2.Logs()), len(p1.adminResponses())+len(p2.adminResponses()), len(responses))
	if st.RefreshGrants < 5 || st.CodeExchanges < 1 || st.GrantsRevoked < 1 {
		t.Errorf("the scenario did not exercise refreshes, onboarding and a revocation: %+v", st)
	}

	places := map[string]string{
		"replica 1 output": p1.Logs(),
		"replica 2 output": p2.Logs(),
		"/metrics":         string(metrics.Body),
		"callback page":    string(bogus.Body),
		"error responses":  strings.Join(responses, "\n"),
		"admin responses":  strings.Join(append(p1.adminResponses(), p2.adminResponses()...), "\n"),
	}
	for where, text := range places {
		for what, v := range secrets {
			if v != "" && strings.Contains(text, v) {
				t.Errorf("%s contains the %s", where, what)
			}
		}
		if m := emulatorSecretRE.FindString(text); m != "" {
			t.Errorf("%s contains something shaped like an emulator token or code (%s…)", where, m[:4])
		}
	}
	// The encryption key must not appear hex-encoded either.
	raw, err := base64.StdEncoding.DecodeString(env["LSPROXY_ENCRYPTION_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	for where, text := range places {
		if strings.Contains(strings.ToLower(text), hex.EncodeToString(raw)) {
			t.Errorf("%s contains the encryption key in hex", where)
		}
	}
}
