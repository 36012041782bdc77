package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/ratelimit"
)

// TestRateLimitedAnswer: once the upstream reported a full bucket, lsproxy
// answers its own 429 rate_limited with Retry-After and none of the
// upstream's headers, without reaching the upstream.
func TestRateLimitedAnswer(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("X-LS-API-Bucket-Level", "20/20")
		w.Header().Set("X-LS-API-Drip-Rate", "0.5")
		w.Header().Set("X-Upstream-Secret-ish", "x")
		w.WriteHeader(http.StatusOK)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	h := &Handler{
		Upstream: u,
		Tokens:   &fakeTokens{tokens: map[string]string{"t1": "tok-t1"}},
		Pacer:    &ratelimit.Governor{Backend: ratelimit.NewMemory()},
	}
	if err := h.Init(); err != nil {
		t.Fatal(err)
	}
	do := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/API/Account.json", nil)
		r.Header.Set("X-Tenant", "t1")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do(); w.Code != http.StatusOK {
		t.Fatalf("first request: %d", w.Code)
	}
	w := do()
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("second request: %d, want 429", w.Code)
	}
	if hits.Load() != 1 {
		t.Fatalf("upstream hits = %d, want 1", hits.Load())
	}
	var body httperr.Body
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != httperr.RateLimited.Code || body.Tenant != "t1" {
		t.Fatalf("body = %s", w.Body.String())
	}
	if w.Header().Get("X-Lsproxy-Error") != httperr.RateLimited.Code {
		t.Fatalf("X-Lsproxy-Error = %q", w.Header().Get("X-Lsproxy-Error"))
	}
	if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra != 2 {
		t.Fatalf("Retry-After = %q, want 2 (one unit at 0.5/s)", w.Header().Get("Retry-After"))
	}
	for k := range w.Header() {
		switch k {
		case "Content-Type", "X-Lsproxy-Error", "Cache-Control", "Retry-After", "X-Request-Id": // lsproxy's own
		default:
			t.Errorf("lsproxy's own 429 carries header %s", k)
		}
	}
}

// TestPacerSeesEveryAnswer: each forwarded request is admitted and its answer observed.
func TestPacerSeesEveryAnswer(t *testing.T) {
	var seen atomic.Int64
	p := &recordingPacer{seen: &seen}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	h := &Handler{Upstream: u, Tokens: &fakeTokens{tokens: map[string]string{"t1": "tok"}}, Pacer: p}
	if err := h.Init(); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.Header.Set("X-Tenant", "t1")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if seen.Load() != 1 || p.admitted.Load() != 1 {
		t.Fatalf("observed %d, admitted %d", seen.Load(), p.admitted.Load())
	}
}

type recordingPacer struct {
	seen     *atomic.Int64
	admitted atomic.Int64
}

func (p *recordingPacer) Admit(*http.Request, string) error               { p.admitted.Add(1); return nil }
func (p *recordingPacer) ObserveSent(string, time.Time, int, http.Header) { p.seen.Add(1) }
