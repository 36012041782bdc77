package control

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
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
	if st, _, raw := importCall(t, f, "", b.String()); st != 413 || !strings.Contains(raw, "too_large") || !strings.Contains(raw, "5000") {
		t.Errorf("too many lines: %d %s", st, raw)
	}
	if st, _, _ := f.call(t, "POST", "/admin/import", "", `{"id":"x","refresh_token":"r"}`); st != 401 {
		t.Errorf("without admin token: %d", st)
	}
}

// A body of many tiny lines is refused whole (413) after counting, before
// any line is decoded: 1.4 million "{}" lines (4 MB) once took the process
// to 1.6 GB. The bound is on bytes allocated while the request is served
// (client and server share this process; the body itself is 4 MB).
func TestBulkImportCountsLinesBeforeDecoding(t *testing.T) {
	f := newFixture(t, adminToken)
	body := strings.Repeat("{}\n", 1_400_000)
	for _, b := range []string{body, "[" + strings.TrimSuffix(strings.Repeat("{},", 1_400_000), ",") + "]"} {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		st, _, raw := importCall(t, f, "", b)
		runtime.ReadMemStats(&after)
		if st != 413 || !strings.Contains(raw, "too_large") {
			t.Errorf("1.4M tenants in one request (%.10s...): %d %.200s", b, st, raw)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 96<<20 {
			t.Errorf("refusing 1.4M tenants (%.10s...) allocated %d MiB: lines were decoded before counting", b, alloc>>20)
		}
	}
	if ids, _ := f.store.List(context.Background()); len(ids) != 0 {
		t.Fatalf("a refused request wrote %v", ids)
	}
}

// A line over MaxImportLine (also one of exactly 64 KiB plus one byte) or
// with invalid UTF-8 fails alone with its line number; the other lines of
// the batch are imported. Nothing is stored as U+FFFD.
func TestBulkImportBadLinesFailAlone(t *testing.T) {
	f := newFixture(t, adminToken)
	pad := func(n int) string {
		base := `{"id":"long","refresh_token":"r","scope":""}`
		return strings.Replace(base, `"scope":""`, `"scope":"`+strings.Repeat("s", n-len(base))+`"`, 1)
	}
	exact, over := pad(MaxImportLine), pad(MaxImportLine+1)
	if len(exact) != MaxImportLine || len(over) != MaxImportLine+1 {
		t.Fatalf("padding: %d %d", len(exact), len(over))
	}
	body := strings.Join([]string{
		`{"id":"ok1","refresh_token":"RT-1"}`,
		over,
		"{\"id\":\"utf\",\"refresh_token\":\"RT-\xff\xfe\"}",
		`{"id":"ok2","refresh_token":"RT-2"}`,
		exact,
	}, "\n")
	st, resp, raw := importCall(t, f, "", body)
	if st != 200 {
		t.Fatalf("import: %d %.300s", st, raw)
	}
	want := map[int]string{1: "created", 2: "error", 3: "error", 4: "created", 5: "created"}
	for _, r := range resp.Results {
		if want[r.Line] != r.Status {
			t.Errorf("line %d: %+v, want %s", r.Line, r, want[r.Line])
		}
		switch r.Line {
		case 2:
			if !strings.Contains(r.Error, "64 KiB") {
				t.Errorf("line 2: %q, want the 64 KiB limit", r.Error)
			}
		case 3:
			if !strings.Contains(r.Error, "UTF-8") {
				t.Errorf("line 3: %q, want UTF-8", r.Error)
			}
		}
	}
	if _, err := f.store.Get(context.Background(), "utf"); err == nil {
		t.Error("the invalid UTF-8 line was stored")
	}
	if _, err := f.store.Get(context.Background(), "long"); err != nil {
		t.Errorf("a line of exactly 64 KiB was not imported: %v", err)
	}
}

// A bad location id or an absurd lifetime refuses the whole line before
// anything is written (the record is not written without its index), and
// PUT refuses the same lifetimes.
func TestBulkImportRefusesBadLocationsAndLifetimes(t *testing.T) {
	f := newFixture(t, adminToken)
	body := strings.Join([]string{
		`{"id":"loc","refresh_token":"RT-1","locations":[{"id":"L1"},{"id":""}]}`,
		`{"id":"exp","refresh_token":"RT-2","access_token":"AT","expires_in":9300000000000}`,
		`{"id":"rexp","refresh_token":"RT-3","refresh_expires_in":9300000000000}`,
		`{"id":"fine","refresh_token":"RT-4","access_token":"AT","expires_in":3600,"locations":[{"id":"L2"}]}`,
	}, "\n")
	st, resp, raw := importCall(t, f, "", body)
	if st != 200 || resp.Counts["error"] != 3 || resp.Counts["created"] != 1 {
		t.Fatalf("import: %d %s", st, raw)
	}
	for _, id := range []string{"loc", "exp", "rexp"} {
		if _, err := f.store.Get(context.Background(), id); err == nil {
			t.Errorf("tenant %s was written from a refused line", id)
		}
	}
	if st, raw, _ := f.call(t, "PUT", "/admin/tenants/p", adminToken, `{"refresh_token":"RT","access_token":"AT","expires_in":9300000000000}`); st != 400 || !strings.Contains(raw, "expires_in must be at most") {
		t.Errorf("PUT with expires_in 9.3e12: %d %s", st, raw)
	}
	if st, _, _ := f.call(t, "PUT", "/admin/tenants/p", adminToken, `{"refresh_token":"RT","access_token":"AT","expires_in":3600}`); st != 201 {
		t.Errorf("PUT with expires_in 3600: %d", st)
	}
}
