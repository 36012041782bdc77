package onboard_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/store"
)

// verifier returns a Verifier over f's store and identity endpoint, using
// the stored access token as the served grant's token; dropped receives
// OnDropped's accounts, promoted OnPromoted's tenants.
func (f *fixture) verifier() (v *onboard.Verifier, dropped chan store.Account, promoted chan string) {
	dropped, promoted = make(chan store.Account, 4), make(chan string, 4)
	v = &onboard.Verifier{
		Store:      f.st,
		Identifier: f.ob.Identifier,
		Locations:  f.ob.Locations,
		Token: func(ctx context.Context, tenant string) (auth.Token, error) {
			rec, err := f.st.Get(ctx, tenant)
			if err != nil {
				return auth.Token{}, err
			}
			return auth.Token{AccessToken: rec.AccessToken, Expiry: rec.AccessExpiresAt}, nil
		},
		OnDropped:  func(_ string, a store.Account) { dropped <- a },
		OnPromoted: func(tenant string) { promoted <- tenant },
		Logger:     f.ob.Logger,
		Now:        f.clock.Now,
	}
	f.ob.Verifier = v
	return v, dropped, promoted
}

// The identity endpoint down during a first authorization: the grant is
// stored and served, the merchant sees "connected, verification pending",
// and the Verifier identifies the account once the endpoint is back.
func TestOnboardIdentifyDownKeepsFirstGrant(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusForbidden} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			onboard.ResetForbiddenHint()
			f := identityFixture(t)
			v, _, _ := f.verifier()
			f.em.SetIdentityStatus(status)
			f.em.Approve("alice")
			r := f.open(f.link("biz"))
			if r.status != http.StatusOK || !strings.Contains(r.body, "verification pending") || r.header.Get("X-Lsproxy-Error") != "" {
				t.Fatalf("page: %d %s", r.status, r.body)
			}
			rec := f.tenant("biz")
			switch {
			case rec.Status != store.StatusActive, rec.AccessToken == "", rec.RefreshToken == "":
				t.Fatalf("grant not stored and served: %+v", rec)
			case rec.Account != nil, rec.Identify == nil, rec.Identify.State != store.IdentifyPending:
				t.Fatalf("identify state: account %+v identify %+v", rec.Account, rec.Identify)
			case !strings.Contains(rec.Identify.LastError, "answered "+strconv.Itoa(status)):
				t.Fatalf("last_error %q does not say %d", rec.Identify.LastError, status)
			case !rec.Identify.NextAt.Equal(f.clock.Now().Add(onboard.DefaultIdentifyRetry)):
				t.Fatalf("next_at %v, want now+%v", rec.Identify.NextAt, onboard.DefaultIdentifyRetry)
			}
			select {
			case <-f.connected:
			default:
				t.Fatal("OnConnected not called")
			}
			// Still down: one more failed attempt, backing off.
			next, ok := v.Attempt(context.Background(), "biz")
			if again := f.tenant("biz"); !ok || again.Identify == nil || again.Identify.Attempts != 2 ||
				!next.Equal(f.clock.Now().Add(2*onboard.DefaultIdentifyRetry)) || again.AccessToken != rec.AccessToken {
				t.Fatalf("second attempt: next %v ok %v identify %+v", next, ok, again.Identify)
			}
			hints := f.logs.FilterMessageSnippet("LSPROXY_IDENTIFY=false").Len()
			if want := map[bool]int{true: 1, false: 0}[status == http.StatusForbidden]; hints != want {
				t.Fatalf("%d hint lines, want %d", hints, want)
			}

			f.em.SetIdentityStatus(0)
			if _, ok := v.Attempt(context.Background(), "biz"); ok {
				t.Fatal("a successful attempt schedules another")
			}
			done := f.tenant("biz")
			if done.Account == nil || done.Account.ID != "1234" || done.Identify != nil || len(done.Locations) != 2 || done.AccessToken != rec.AccessToken {
				t.Fatalf("after recovery: account %+v identify %+v locations %+v", done.Account, done.Identify, done.Locations)
			}
			if got, _ := f.st.Store.(store.LocationIndex).LocationTenants(context.Background(), "1001"); !slices.Equal(got, []string{"biz"}) {
				t.Fatalf("location index after background identification: %v", got)
			}
			if h := done.History[len(done.History)-1]; h.Kind != store.EventIdentified {
				t.Fatalf("last history event %+v", h)
			}
			f.assertLogsClean(done.AccessToken, done.RefreshToken)
		})
	}
}

// A re-authorization of a tenant whose account is known, not identified:
// the old grant keeps serving, the new one waits as a candidate and is
// promoted once identification shows the same account.
func TestOnboardReauthorizationKeepsCandidate(t *testing.T) {
	f := identityFixture(t)
	v, _, promoted := f.verifier()
	f.em.Approve("alice")
	if r := f.open(f.link("biz")); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	before := f.tenant("biz")
	f.em.SetIdentityStatus(http.StatusBadGateway)
	f.clock.Advance(2 * time.Second)
	r := f.open(f.link("biz"))
	if r.status != http.StatusOK || !strings.Contains(r.body, "verification pending") {
		t.Fatalf("page: %d %s", r.status, r.body)
	}
	rec := f.tenant("biz")
	switch {
	case rec.AccessToken != before.AccessToken, rec.RefreshToken != before.RefreshToken:
		t.Fatal("the unverified grant replaced the served one")
	case rec.Candidate == nil, rec.Candidate.AccessToken == "", rec.Candidate.AccessToken == before.AccessToken:
		t.Fatalf("no candidate: %+v", rec.Candidate)
	case rec.Account == nil, rec.Account.ID != "1234", rec.Identify == nil:
		t.Fatalf("account %+v identify %+v", rec.Account, rec.Identify)
	}
	// The same link is used now (the candidate counts).
	cand := rec.Candidate
	f.em.SetIdentityStatus(0)
	if _, ok := v.Attempt(context.Background(), "biz"); ok {
		t.Fatal("attempt after recovery asks for another")
	}
	done := f.tenant("biz")
	if done.Candidate != nil || done.Identify != nil || done.AccessToken != cand.AccessToken || done.RefreshToken != cand.RefreshToken ||
		done.Account.ID != "1234" || done.Status != store.StatusActive {
		t.Fatalf("not promoted: %+v", done)
	}
	select {
	case got := <-promoted:
		if got != "biz" {
			t.Fatal(got)
		}
	default:
		t.Fatal("OnPromoted not called")
	}
	f.assertLogsClean(done.AccessToken, done.RefreshToken, before.AccessToken, before.RefreshToken)
}

// A candidate that identification shows to be another account is dropped
// (OnDropped); the served grant stays. An operator may accept a candidate.
func TestOnboardCandidateOtherAccountDropped(t *testing.T) {
	f := identityFixture(t)
	v, dropped, _ := f.verifier()
	f.em.Approve("alice")
	if r := f.open(f.link("biz")); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	before := f.tenant("biz")
	f.em.SetIdentityStatus(http.StatusServiceUnavailable)
	f.em.Approve("carol")
	f.clock.Advance(2 * time.Second)
	if r := f.open(f.link("biz")); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	f.em.SetIdentityStatus(0)
	v.Attempt(context.Background(), "biz")
	rec := f.tenant("biz")
	if rec.Candidate != nil || rec.Identify != nil || rec.AccessToken != before.AccessToken || rec.Account.ID != "1234" {
		t.Fatalf("candidate of another account not dropped: %+v", rec)
	}
	select {
	case a := <-dropped:
		if a.ID != "9876" {
			t.Fatalf("dropped as %+v", a)
		}
	default:
		t.Fatal("OnDropped not called")
	}
	if h := rec.History[len(rec.History)-1]; h.Kind != store.EventCandidateDropped {
		t.Fatalf("history %+v", h)
	}

	// By hand: a new candidate, accepted by an operator.
	f.em.SetIdentityStatus(http.StatusServiceUnavailable)
	f.clock.Advance(2 * time.Second)
	if r := f.open(f.link("biz")); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	cand := f.tenant("biz").Candidate
	accept := func() (int, string) {
		req, _ := http.NewRequest(http.MethodPost, f.ctlURL+"/admin/tenants/biz/accept-candidate", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Lsproxy-Error")
	}
	if st, code := accept(); st != http.StatusOK {
		t.Fatalf("accept-candidate: %d %s", st, code)
	}
	got := f.tenant("biz")
	if got.AccessToken != cand.AccessToken || got.Candidate != nil || got.Identify != nil || got.Account.ID != "1234" {
		t.Fatalf("after accept-candidate: %+v", got)
	}
	if st, code := accept(); st != http.StatusConflict || code != "no_candidate" {
		t.Fatalf("accepting without a candidate: %d %s", st, code)
	}
	if _, ok := v.Attempt(context.Background(), "biz"); ok {
		t.Fatal("an attempt after acceptance asks for another")
	}
}

// Every write of the callback drops the handling replica's cached token
// before the page is answered (a rebind served the previous grant once).
func TestOnboardInvalidatesSynchronously(t *testing.T) {
	f := identityFixture(t)
	var invalidated []string
	f.ob.Invalidate = func(tenant string) { invalidated = append(invalidated, tenant) }
	f.em.Approve("alice")
	if r := f.open(f.link("biz")); r.status != http.StatusOK || len(invalidated) != 1 {
		t.Fatalf("first authorization: %d, invalidated %v", r.status, invalidated)
	}
	f.clock.Advance(2 * time.Second)
	f.em.Approve("carol")
	if r := f.open(f.rebindLink("biz")); r.status != http.StatusOK || len(invalidated) != 2 || invalidated[1] != "biz" {
		t.Fatalf("rebind of an active tenant: %d, invalidated %v", r.status, invalidated)
	}
	f.clock.Advance(2 * time.Second)
	f.em.SetIdentityStatus(http.StatusServiceUnavailable)
	if r := f.open(f.link("biz")); r.status != http.StatusOK || len(invalidated) != 3 {
		t.Fatalf("candidate write: %d, invalidated %v", r.status, invalidated)
	}
}
