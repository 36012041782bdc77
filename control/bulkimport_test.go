package control

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

func importCall(t *testing.T, f *fixture, query, body string) (int, ImportResponse, string) {
	t.Helper()
	st, raw, _ := f.call(t, "POST", "/admin/import"+query, adminToken, body)
	var resp ImportResponse
	if st == 200 {
		if err := json.Unmarshal([]byte(raw), &resp); err != nil {
			t.Fatalf("%v: %s", err, raw)
		}
	}
	return st, resp, raw
}

func TestBulkImport(t *testing.T) {
	f := newFixture(t, adminToken)
	ctx := context.Background()
	body := strings.Join([]string{
		`{"id":"t1","refresh_token":"RT-ONE-SECRET"}`,
		`{"id":"t2","refresh_token":"RT-TWO-SECRET","access_token":"AT-TWO-SECRET","expires_in":3600}`,
		``,
		`{"id":"bad id","refresh_token":"RT-X-SECRET"}`,
		`{"id":"t3"}`,
		`{"id":"t4","refresh_token":"RT-FOUR-SECRET","access_token":"AT-FOUR-SECRET"}`,
		`{"id":"t5","refresh_token":"RT-FIVE-SECRET","domain_prefix":"a.b"}`,
		`not json RT-LEAK-SECRET`,
		`{"id":"t1","refresh_token":"RT-AGAIN-SECRET"}`,
		`{"id":"t6","refresh_token":"RT-SIX-SECRET","extra_field":1}`,
	}, "\n")

	// Dry run: per-line results, nothing written.
	st, resp, raw := importCall(t, f, "?dry_run=true", body)
	if st != 200 || !resp.DryRun || resp.Counts["would_create"] != 2 || resp.Counts["error"] != 7 {
		t.Fatalf("dry run: %d %s", st, raw)
	}
	if ids, _ := f.store.List(ctx); len(ids) != 0 {
		t.Fatalf("dry run wrote %v", ids)
	}

	st, resp, raw = importCall(t, f, "", body)
	if st != 200 || resp.Counts["created"] != 2 || resp.Counts["error"] != 7 {
		t.Fatalf("import: %d %s", st, raw)
	}
	if strings.Contains(raw, "SECRET") {
		t.Fatalf("a token is echoed: %s", raw)
	}
	want := map[int]string{4: "id must match", 5: "refresh_token is required", 6: "expires_in", 7: "domain_prefix must be one DNS label",
		8: "not a JSON object", 9: "appears again (first on line 1)", 10: "unknown field"}
	for _, r := range resp.Results {
		if w, ok := want[r.Line]; ok {
			if r.Status != "error" || !strings.Contains(r.Error, w) {
				t.Errorf("line %d: %+v, want error %q", r.Line, r, w)
			}
			delete(want, r.Line)
		}
	}
	if len(want) != 0 {
		t.Errorf("lines without their error: %v", want)
	}
	t2, err := f.store.Get(ctx, "t2")
	if err != nil || t2.RefreshToken != "RT-TWO-SECRET" || t2.AccessToken != "AT-TWO-SECRET" || t2.Status != store.StatusActive {
		t.Fatalf("t2 %+v %v", t2, err)
	}

	// Re-run: unchanged, nothing written.
	before, _ := f.store.Get(ctx, "t1")
	_, resp, raw = importCall(t, f, "", `{"id":"t1","refresh_token":"RT-ONE-SECRET"}`)
	if resp.Counts["unchanged"] != 1 {
		t.Fatalf("re-run: %s", raw)
	}
	if after, _ := f.store.Get(ctx, "t1"); after.Version != before.Version {
		t.Fatal("re-run wrote")
	}
	// Another refresh token (refreshed since export): refused, unless overwrite.
	_, resp, raw = importCall(t, f, "", `{"id":"t1","refresh_token":"RT-OLD-SECRET"}`)
	if resp.Counts["error"] != 1 || !strings.Contains(raw, "another refresh token") {
		t.Fatalf("stale token: %s", raw)
	}
	if after, _ := f.store.Get(ctx, "t1"); after.RefreshToken != "RT-ONE-SECRET" {
		t.Fatal("stale token replaced a live one")
	}
	_, resp, _ = importCall(t, f, "?overwrite=true", `{"id":"t1","refresh_token":"RT-NEW-SECRET"}`)
	if after, _ := f.store.Get(ctx, "t1"); resp.Counts["updated"] != 1 || after.RefreshToken != "RT-NEW-SECRET" {
		t.Fatalf("overwrite: %+v", resp)
	}
	// A JSON array works too.
	_, resp, raw = importCall(t, f, "", `[{"id":"a1","refresh_token":"r1"},{"id":"a2","refresh_token":"r2"}]`)
	if resp.Counts["created"] != 2 {
		t.Fatalf("array: %s", raw)
	}
	// A body that is neither: 400.
	if st, _, _ := importCall(t, f, "", `[{"id":`); st != 400 {
		t.Errorf("broken array: %d", st)
	}
}

// A tenant whose refresh is in flight (lock held, or the in-flight mark
// set) is refused by name; the other lines are imported.
func TestBulkImportRefusesRefreshInFlight(t *testing.T) {
	f := newFixture(t, adminToken)
	ctx := context.Background()
	lock, err := f.store.TryLock(ctx, "tenant:busy", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release(ctx)
	marked := &store.Tenant{ID: "marked", RefreshToken: "rt-m", Status: store.StatusActive, RefreshInFlight: true}
	if _, err := f.store.Put(ctx, marked, 0); err != nil {
		t.Fatal(err)
	}
	body := `{"id":"busy","refresh_token":"r"}` + "\n" + `{"id":"marked","refresh_token":"r2"}` + "\n" + `{"id":"free","refresh_token":"r3"}`
	_, resp, raw := importCall(t, f, "?overwrite=true", body)
	if resp.Counts["created"] != 1 || resp.Counts["error"] != 2 {
		t.Fatalf("%s", raw)
	}
	for _, r := range resp.Results[:2] {
		if !strings.Contains(r.Error, "tenant "+r.ID) || !strings.Contains(r.Error, "in flight") {
			t.Errorf("line %d: %+v", r.Line, r)
		}
	}
	if _, err := f.store.Get(ctx, "busy"); err == nil {
		t.Error("busy tenant was written")
	}
	if m, _ := f.store.Get(ctx, "marked"); m.RefreshToken != "rt-m" || !m.RefreshInFlight {
		t.Error("marked tenant was written")
	}
}

func TestBulkImportLimits(t *testing.T) {
	f := newFixture(t, adminToken)
	var b strings.Builder
	for i := 0; i <= MaxImportLines; i++ {
		fmt.Fprintf(&b, `{"id":"t%d","refresh_token":"r"}`+"\n", i)
	}
	if st, _, raw := importCall(t, f, "", b.String()); st != 400 || !strings.Contains(raw, "batches") {
		t.Errorf("too many lines: %d %s", st, raw)
	}
	if st, _, _ := f.call(t, "POST", "/admin/import", "", `{"id":"x","refresh_token":"r"}`); st != 401 {
		t.Errorf("without admin token: %d", st)
	}
}
