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
