package store

import (
	"testing"
	"time"
)

// Record merges repeats, keeps MaxHistory events and never writes into a
// slice another record shares.
func TestTenantRecord(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var tn Tenant
	tn.Record(t0, EventRefreshed, "")
	tn.Record(t0.Add(time.Minute), EventRefreshed, "")
	tn.Record(t0.Add(2*time.Minute), EventRefreshed, "")
	if len(tn.History) != 1 || tn.History[0].Count != 3 || !tn.History[0].Since.Equal(t0) || !tn.History[0].At.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("merged: %+v", tn.History)
	}
	shared := tn.Clone()
	tn.Record(t0.Add(3*time.Minute), EventRefreshed, "")
	if shared.History[0].Count != 3 {
		t.Fatalf("Record wrote into a clone's history: %+v", shared.History)
	}
	for i := 0; i < 2*MaxHistory; i++ {
		kind := EventRefreshFailed
		if i%2 == 1 {
			kind = EventFlagged
		}
		tn.Record(t0.Add(time.Duration(10+i)*time.Minute), kind, "r")
	}
	if len(tn.History) != MaxHistory || tn.History[MaxHistory-1].Kind != EventFlagged || tn.History[0].Kind != EventRefreshFailed {
		t.Fatalf("bounded: %d events, last %+v", len(tn.History), tn.History[len(tn.History)-1])
	}
}

// Every state method leaves its event in the history, with fixed words.
func TestStateMethodsRecord(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tn := &Tenant{ID: "acme"}
	tn.Authorize(Tokens{Access: "AT", Refresh: "RT"}, t0)
	tn.ApplyGrant(Tokens{Access: "AT2"}, t0.Add(time.Minute))
	tn.Flag("refresh token rejected by the provider (invalid_grant)", t0.Add(2*time.Minute))
	tn.Unflag(t0.Add(3 * time.Minute))
	tn.Flag("refresh token rejected by the provider (invalid_grant)", t0.Add(4*time.Minute))
	tn.ApplyGrant(Tokens{Access: "AT3"}, t0.Add(5*time.Minute)) // a successful retry
	tn.Authorize(Tokens{Access: "AT4", Refresh: "RT4"}, t0.Add(6*time.Minute))
	tn.Import(Tokens{Access: "AT5", Refresh: "RT5"}, t0.Add(7*time.Minute))
	var kinds []string
	for _, e := range tn.History {
		kinds = append(kinds, e.Kind+":"+e.Reason)
	}
	want := []string{"authorized:first authorization", "refreshed:", "flagged:refresh token rejected by the provider (invalid_grant)",
		"unflagged:flag reverted: one of many invalid_grant answers at once (configuration)",
		"flagged:refresh token rejected by the provider (invalid_grant)", "retried:the stored grant worked again",
		"authorized:re-authorized while active", "imported:tokens imported through the admin API"}
	if len(kinds) != len(want) {
		t.Fatalf("history %q", kinds)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Errorf("event %d: %q, want %q", i, kinds[i], want[i])
		}
	}
}
