package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// racingStore writes the tenant named race once, right before the
// batch's writes, as a concurrent writer (a rekey) would: the batch's
// compare-and-set for it fails and the line is decided again on its own.
type racingStore struct {
	*store.Redis
	once  sync.Once
	race  string
	raced bool // under once
}

func (r *racingStore) PutMany(ctx context.Context, ts []*store.Tenant, expect []int64) ([]int64, []error) {
	for _, t := range ts {
		if t.ID != r.race {
			continue
		}
		r.once.Do(func() {
			cur, err := r.Get(ctx, r.race)
			if err != nil {
				panic(err)
			}
			if _, err := r.Put(ctx, cur, cur.Version); err != nil {
				panic(err)
			}
			r.raced = true
		})
	}
	return r.Redis.PutMany(ctx, ts, expect)
}

func importServer(t testing.TB, s store.Store) (*httptest.Server, *fakeTokens) {
	ft := &fakeTokens{}
	cs := &Server{Store: s, Tokens: ft, AdminToken: adminToken, Provider: "k-series", Logger: zap.NewNop()}
	srv := httptest.NewServer(cs.Handler())
	t.Cleanup(srv.Close)
	return srv, ft
}

func postImport(t testing.TB, srv *httptest.Server, query, body string) ImportResponse {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/admin/import"+query, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out ImportResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("import: %d, %v", resp.StatusCode, err)
	}
	return out
}

// On Redis a request's lines are locked, read and written in batches, with
// every line's own result and every check of the one-tenant path: a held
// lock and the in-flight mark refuse, the same refresh token is
// unchanged, another refuses without overwrite, a lost compare-and-set is
// decided again.
func TestBulkImportBatchedRedis(t *testing.T) {
	ctx := context.Background()
	rs := &racingStore{Redis: store.NewRedis(testredis.Start(t).Client(), store.RedisOptions{Keys: batchKeys(t)}), race: "race"}
	srv, ft := importServer(t, rs)
	for _, tn := range []*store.Tenant{
		{ID: "marked", RefreshToken: "rt-m", Status: store.StatusActive, RefreshInFlight: true},
		{ID: "same", RefreshToken: "rt-same", Status: store.StatusActive},
		{ID: "other", RefreshToken: "rt-other", Status: store.StatusActive},
		{ID: "race", Status: store.StatusReauthorizationRequired, Reason: "invalid_grant"}, // no refresh token: an import writes it
	} {
		if _, err := rs.Put(ctx, tn, 0); err != nil {
			t.Fatal(err)
		}
	}
	lock, err := rs.TryLock(ctx, "tenant:busy", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release(ctx)
	const fresh = 2*importBatchSize + 17 // three batches
	var b strings.Builder
	for i := range fresh {
		fmt.Fprintf(&b, `{"id":"new-%04d","refresh_token":"rt-new-%04d","access_token":"at-%04d","expires_in":3600}`+"\n", i, i, i)
	}
	b.WriteString(`{"id":"busy","refresh_token":"r"}` + "\n")
	b.WriteString(`{"id":"marked","refresh_token":"r2"}` + "\n")
	b.WriteString(`{"id":"same","refresh_token":"rt-same"}` + "\n")
	b.WriteString(`{"id":"other","refresh_token":"rt-file"}` + "\n")
	b.WriteString(`{"id":"race","refresh_token":"rt-race-new"}` + "\n")

	dry := postImport(t, srv, "?dry_run=true&overwrite=true", b.String())
	if dry.Counts["would_create"] != fresh || dry.Counts["would_update"] != 2 || dry.Counts["unchanged"] != 1 || dry.Counts["error"] != 2 {
		t.Fatalf("dry run counts %v", dry.Counts)
	}
	if _, err := rs.Get(ctx, "new-0000"); err == nil {
		t.Fatal("dry run wrote")
	}

	resp := postImport(t, srv, "", b.String())
	if resp.Counts["created"] != fresh || resp.Counts["updated"] != 1 || resp.Counts["unchanged"] != 1 || resp.Counts["error"] != 3 {
		t.Fatalf("counts %v", resp.Counts)
	}
	for i, r := range resp.Results {
		if r.Line != i+1 {
			t.Fatalf("result %d is for line %d: results out of order", i, r.Line)
		}
	}
	byID := map[string]ImportResult{}
	for _, r := range resp.Results {
		byID[r.ID] = r
	}
	for id, want := range map[string]string{"busy": "a refresh is in flight; nothing changed", "marked": "in flight (its outcome is not yet stored)", "other": "another refresh token"} {
		if r := byID[id]; r.Status != "error" || !strings.Contains(r.Error, want) || !strings.Contains(r.Error, "tenant "+id) {
			t.Errorf("%s: %+v, want an error with %q", id, r, want)
		}
	}
	if !rs.raced {
		t.Fatal("the race tenant's batch write never happened")
	}
	if r := byID["race"]; r.Status != "updated" {
		t.Errorf("race: %+v, want updated after its compare-and-set was decided again", r)
	}
	if got, _ := rs.Get(ctx, "race"); got.RefreshToken != "rt-race-new" {
		t.Errorf("race holds %q", got.RefreshToken)
	}
	if got, _ := rs.Get(ctx, "other"); got.RefreshToken != "rt-other" {
		t.Error("other's live token replaced without overwrite")
	}
	if got, _ := rs.Get(ctx, "marked"); got.RefreshToken != "rt-m" || !got.RefreshInFlight {
		t.Error("marked tenant written")
	}
	if _, err := rs.Get(ctx, "busy"); err == nil {
		t.Error("busy tenant written")
	}
	recs, errs := store.GetMany(ctx, rs, []string{"new-0000", fmt.Sprintf("new-%04d", fresh-1)})
	for i, rec := range recs {
		if errs[i] != nil || !strings.HasPrefix(rec.RefreshToken, "rt-new-") || rec.AccessToken == "" {
			t.Fatalf("imported record %d: %+v, %v", i, rec, errs[i])
		}
	}
	ids, err := rs.List(ctx)
	if err != nil || len(ids) != fresh+4 {
		t.Fatalf("List: %d ids, %v; want %d", len(ids), err, fresh+4)
	}
	// Every lock was given back: the tenants can be locked again.
	for _, id := range []string{"new-0000", "race", "same", "other"} {
		l, err := rs.TryLock(ctx, "tenant:"+id, time.Second)
		if err != nil {
			t.Fatalf("%s still locked after the import: %v", id, err)
		}
		_ = l.Release(ctx)
	}
	ft.mu.Lock()
	n := len(ft.invalidated)
	ft.mu.Unlock()
	if n != fresh+1 {
		t.Errorf("%d cache invalidations, want one per written tenant (%d)", n, fresh+1)
	}
}

// The import rate through POST /admin/import (indicative on a shared
// machine): go test -run XXX -bench BenchmarkImport -benchtime 1x ./control/
func BenchmarkImport(b *testing.B) {
	body := func(run, n int) string {
		var sb bytes.Buffer
		for i := range n {
			fmt.Fprintf(&sb, `{"id":"r%d-%05d","refresh_token":"rt-%d-%05d","access_token":"%s","expires_in":3600}`+"\n", run, i, run, i, strings.Repeat("a", 1200))
		}
		return sb.String()
	}
	for _, backend := range []string{"redis", "bolt"} {
		b.Run(backend, func(b *testing.B) {
			var s store.Store
			if backend == "redis" {
				s = store.NewRedis(testredis.Start(b).Client(), store.RedisOptions{Keys: batchKeys(b)})
			} else {
				bs, err := store.OpenBolt(b.TempDir(), batchKeys(b))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { bs.Close() })
				s = bs
			}
			srv, _ := importServer(b, s)
			total, run := 0, 0
			var spent time.Duration
			for b.Loop() {
				run++
				in := body(run, MaxImportLines)
				start := time.Now()
				resp := postImport(b, srv, "", in)
				spent += time.Since(start)
				if resp.Counts["created"] != MaxImportLines {
					b.Fatalf("counts %v", resp.Counts)
				}
				total += MaxImportLines
			}
			b.ReportMetric(float64(total)/spent.Seconds(), "tenants/s")
		})
	}
}

func batchKeys(t testing.TB) *store.Keyring {
	t.Helper()
	k, err := store.NewKeyring([]byte(strings.Repeat("b", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
