package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"
)

// Conformance of the Lister methods (ListPage, ListDue), run by
// runConformance for every backend.

func confListPage(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	l, ok := s.(Lister)
	if !ok {
		t.Fatalf("%T does not implement Lister", s)
	}
	ids, next, err := l.ListPage(ctx, "", 10)
	if err != nil || len(ids) != 0 || next != "" {
		t.Fatalf("empty store: %v %q %v", ids, next, err)
	}
	const n = 523
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("pg-%04d", i)
		if _, err := s.Put(ctx, fullTenant(want[i]), 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, limit := range []int{1, 7, 100, MaxPageLimit} {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > n+1 {
				t.Fatalf("limit %d: more than %d pages", limit, n+1)
			}
			ids, next, err := l.ListPage(ctx, cursor, limit)
			if err != nil {
				t.Fatalf("limit %d: %v", limit, err)
			}
			if len(ids) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(ids))
			}
			got = append(got, ids...)
			if next == "" {
				break
			}
			cursor = next
		}
		sort.Strings(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("limit %d: pages hold %d ids, want each of %d once", limit, len(got), n)
		}
	}
	for _, bad := range []string{"not a cursor!", "9999.0.0", "1.x.0", "-1.0.0"} {
		if _, _, err := l.ListPage(ctx, bad, 10); !errors.Is(err, ErrInvalidCursor) {
			t.Errorf("cursor %q: %v, want ErrInvalidCursor", bad, err)
		}
	}
	for _, bad := range []int{0, -1, MaxPageLimit + 1} {
		if _, _, err := l.ListPage(ctx, "", bad); err == nil {
			t.Errorf("limit %d accepted", bad)
		}
	}
	// A deleted tenant is not listed.
	if err := s.Delete(ctx, want[0]); err != nil {
		t.Fatal(err)
	}
	ids, _, err = l.ListPage(ctx, "", MaxPageLimit)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id == want[0] {
			t.Fatal("deleted tenant listed")
		}
	}
}

func confListDue(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	l := s.(Lister)
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	put := func(id string, mod func(*Tenant)) {
		t.Helper()
		rec := fullTenant(id)
		rec.Status, rec.Reason, rec.FlaggedAt = StatusActive, "", time.Time{}
		rec.RefreshExpiresAt = time.Time{}
		rec.CreatedAt, rec.AuthorizedAt, rec.LastRefreshAt = base, base, base
		mod(rec)
		cur, err := s.Get(ctx, id)
		var expect int64
		if err == nil {
			expect = cur.Version
		}
		if _, err := s.Put(ctx, rec, expect); err != nil {
			t.Fatal(err)
		}
	}
	put("exp-soon", func(r *Tenant) { r.RefreshExpiresAt = base.Add(time.Hour) })
	put("exp-late", func(r *Tenant) { r.RefreshExpiresAt = base.Add(100 * time.Hour) })
	put("idle-old", func(r *Tenant) {
		r.LastRefreshAt = base.Add(-48 * time.Hour)
		r.CreatedAt, r.AuthorizedAt = r.LastRefreshAt, r.LastRefreshAt
	})
	put("idle-new", func(r *Tenant) { r.LastRefreshAt = base.Add(time.Hour) })
	put("flagged", func(r *Tenant) {
		r.RefreshExpiresAt = base
		r.Status, r.Reason, r.FlaggedAt = StatusReauthorizationRequired, "x", base
	})
	put("no-rt", func(r *Tenant) { r.RefreshToken = ""; r.RefreshExpiresAt = base })

	due := func(expBy, idleBy time.Time) string {
		t.Helper()
		ids, err := l.ListDue(ctx, expBy, idleBy)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(ids)
		return fmt.Sprint(ids)
	}
	if got, want := due(base.Add(2*time.Hour), base.Add(-24*time.Hour)), "[exp-soon idle-old]"; got != want {
		t.Fatalf("ListDue = %s, want %s", got, want)
	}
	if got, want := due(base.Add(2*time.Hour), time.Time{}), "[exp-soon]"; got != want {
		t.Fatalf("ListDue without idle = %s, want %s", got, want)
	}
	// A refresh moves the tenant out; a flag removes it; a delete too.
	put("exp-soon", func(r *Tenant) { r.RefreshExpiresAt = base.Add(200 * time.Hour) })
	put("idle-old", func(r *Tenant) { r.Status, r.Reason, r.FlaggedAt = StatusReauthorizationRequired, "x", base })
	if got, want := due(base.Add(2*time.Hour), base.Add(-24*time.Hour)), "[]"; got != want {
		t.Fatalf("after refresh and flag: ListDue = %s, want %s", got, want)
	}
	if got, want := due(base.Add(150*time.Hour), base.Add(2*time.Hour)), "[exp-late idle-new]"; got != want {
		t.Fatalf("ListDue = %s, want %s", got, want)
	}
	if err := s.Delete(ctx, "exp-late"); err != nil {
		t.Fatal(err)
	}
	if got, want := due(base.Add(150*time.Hour), time.Time{}), "[]"; got != want {
		t.Fatalf("after delete: ListDue = %s, want %s", got, want)
	}
	// A re-authorization puts a flagged tenant back.
	put("idle-old", func(r *Tenant) {
		r.LastRefreshAt = base.Add(-48 * time.Hour)
		r.CreatedAt, r.AuthorizedAt = r.LastRefreshAt, r.LastRefreshAt
	})
	if got, want := due(base, base.Add(-24*time.Hour)), "[idle-old]"; got != want {
		t.Fatalf("after re-authorization: ListDue = %s, want %s", got, want)
	}
}

// A slow reader's lost ids are reported with an empty id before the next
// one it gets.
func confSubscribeReportsLoss(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := h.Peer(t, s).Subscribe(subCtx)
	if err != nil {
		t.Fatal(err)
	}
	const burst = 3 * subscribeBuffer
	for i := 0; i < burst; i++ {
		if _, err := s.Put(ctx, fullTenant(fmt.Sprintf("loss-%03d", i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, fullTenant("after"), 0); err != nil {
		t.Fatal(err)
	}
	sawLoss := false
	timeout := time.After(waitMax)
drain:
	for !sawLoss {
		select {
		case id := <-ch:
			sawLoss = id == ""
			if id == "after" {
				break drain
			}
		case <-time.After(200 * time.Millisecond):
			break drain // drained: nothing more is coming
		case <-timeout:
			break drain
		}
	}
	if !sawLoss {
		// Bolt reports at the next write after the reader made room.
		if _, err := s.Put(ctx, fullTenant("later"), 0); err != nil {
			t.Fatal(err)
		}
		for !sawLoss {
			select {
			case id := <-ch:
				sawLoss = id == ""
			case <-timeout:
				t.Fatal("ids were dropped but no empty id reported the loss")
			}
		}
	}
}
