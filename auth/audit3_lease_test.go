package auth

import (
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/store"
)

// AUDIT3-F12a (SPEC §3 rule 17): the successor compared the dead holder's
// wall-clock mark time (plus its lease) with its own clock, so a holder
// whose clock ran ahead delayed the takeover by the skew. The lock's expiry
// is the store's clock; the grace is the successor's own monotonic
// observation; no wall clock of another process counts.
func TestAudit3TakeoverWaitsOutHolderClockSkew(t *testing.T) {
	f := newFixture(t, func(o *ManagerOptions) { o.TakeoverGrace = 200 * time.Millisecond; o.WaitFor = 5 * time.Second })
	rec := f.put(t, "acme", -time.Second)
	// The holder died (no lock left); its clock was 60 s ahead of ours.
	rec.MarkRefresh(store.Mark{ID: "dead", StartedAt: f.clk.Now().Add(time.Minute), Lease: 2 * time.Second, Grace: 200 * time.Millisecond})
	if _, err := f.store.Put(ctx, rec, rec.Version); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := f.m.Token(ctx, "acme")
	t.Logf("Token after %v: %v (refreshes %d)", time.Since(start).Round(10*time.Millisecond), err, f.ref.count())
	if err != nil {
		t.Errorf("a dead holder's mark (lease 2s, grace 200ms, no lock) was not taken over within WaitFor 5s: the successor waits for its own clock to pass the holder's mark time + lease")
	}
}

// TestDefectWallClockTakeoverBringsBackSkew: with defect 12 switched on the
// successor compares wall clocks again and the skewed mark is not taken
// over within WaitFor (the reproduction above fails again).
func TestDefectWallClockTakeoverBringsBackSkew(t *testing.T) {
	defer defect.Enable(defect.WallClockTakeover)()
	f := newFixture(t, func(o *ManagerOptions) { o.TakeoverGrace = 200 * time.Millisecond; o.WaitFor = time.Second })
	rec := f.put(t, "acme", -time.Second)
	rec.MarkRefresh(store.Mark{ID: "dead", StartedAt: f.clk.Now().Add(time.Minute), Lease: 2 * time.Second, Grace: 200 * time.Millisecond})
	if _, err := f.store.Put(ctx, rec, rec.Version); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Token(ctx, "acme"); err == nil || f.ref.count() != 0 {
		t.Errorf("with the defect on, the skewed mark was taken over (err %v, refreshes %d)", err, f.ref.count())
	}
}
