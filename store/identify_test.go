package store

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// confCandidate: a candidate grant round-trips, its tokens sealed at rest;
// promotion makes it the served grant, dropping keeps the served one.
func confCandidate(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	tn := fullTenant("cand")
	now := time.Unix(1_800_000_000, 0).UTC()
	tn.KeepCandidate(Tokens{Access: "AT-candidate-77cc", Refresh: "RT-candidate-88dd", AccessExpiry: now.Add(time.Hour), Scope: "s2"},
		map[string]string{"domain_prefix": "shop"}, "identity endpoint answered 503", now.Add(5*time.Second), now)
	if _, err := s.Put(ctx, tn, 0); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "cand")
	if err != nil {
		t.Fatal(err)
	}
	c := got.Candidate
	if c == nil || c.AccessToken != "AT-candidate-77cc" || c.RefreshToken != "RT-candidate-88dd" || c.Scope != "s2" || c.Extra["domain_prefix"] != "shop" {
		t.Fatalf("candidate after Get: %+v", c)
	}
	if got.Identify == nil || got.Identify.State != IdentifyPending || !got.Identify.NextAt.Equal(now.Add(5*time.Second)) || got.Identify.LastError == "" {
		t.Fatalf("identify after Get: %+v", got.Identify)
	}
	if got.AccessToken != tn.AccessToken || got.RefreshToken != tn.RefreshToken {
		t.Fatal("a candidate changed the served grant")
	}
	raw := h.Raw(t)
	for _, secret := range []string{"AT-candidate-77cc", "RT-candidate-88dd"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatalf("backend holds candidate token %q in plaintext", secret)
		}
	}
	// A clone is deep.
	cl := got.Clone()
	cl.Candidate.Extra["domain_prefix"] = "x"
	cl.Identify.Attempts = 99
	if got.Candidate.Extra["domain_prefix"] != "shop" || got.Identify.Attempts == 99 {
		t.Fatal("Clone shares the candidate or the identify state")
	}

	next := got.Clone()
	if err := next.PromoteCandidate(&Account{ID: "42", Name: "Shop"}, nil, "identified as the tenant's account", now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, next, got.Version); err != nil {
		t.Fatal(err)
	}
	got, err = s.Get(ctx, "cand")
	if err != nil {
		t.Fatal(err)
	}
	if got.Candidate != nil || got.Identify != nil || got.AccessToken != "AT-candidate-77cc" || got.RefreshToken != "RT-candidate-88dd" ||
		got.Status != StatusActive || got.Account == nil || got.Account.ID != "42" || got.Extra["domain_prefix"] != "shop" {
		t.Fatalf("after promotion: %+v", got)
	}
	if err := got.Clone().PromoteCandidate(nil, nil, "", now); !errors.Is(err, ErrNoCandidate) {
		t.Fatalf("promoting without a candidate: %v", err)
	}
}

// confPlaceholderReadsPending: a placeholder written by an earlier version
// (flagged, reason "awaiting the merchant's first authorization", never
// authorized) reads as pending; a flagged tenant with a grant does not.
func confPlaceholderReadsPending(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	now := time.Unix(1_800_000_000, 0).UTC()
	old := &Tenant{ID: "old-placeholder", Status: StatusReauthorizationRequired, Reason: ReasonAwaitingFirstAuthorization, FlaggedAt: now, CreatedAt: now}
	if _, err := s.Put(ctx, old, 0); err != nil {
		t.Fatal(err)
	}
	flagged := fullTenant("flagged")
	flagged.Flag(ReasonAwaitingFirstAuthorization, now) // same words, but it has a grant
	if _, err := s.Put(ctx, flagged, 0); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "old-placeholder")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != StatusPending || !got.FlaggedAt.IsZero() {
		t.Fatalf("old placeholder reads as %s (flagged at %v), want pending", got.Status, got.FlaggedAt)
	}
	if got, err := s.Get(ctx, "flagged"); err != nil || got.Status != StatusReauthorizationRequired {
		t.Fatalf("flagged tenant: %v %v", got, err)
	}
}

func TestValidStatus(t *testing.T) {
	for _, s := range []Status{StatusActive, StatusPending, StatusReauthorizationRequired} {
		if !ValidStatus(s) {
			t.Errorf("%s not valid", s)
		}
	}
	for _, s := range []Status{"", "flagged", "Pending"} {
		if ValidStatus(s) {
			t.Errorf("%q valid", s)
		}
	}
}
