package ratelimit

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/defect"
)

// TestTokenTransportPacesAfter429: after the token endpoint answered 429
// with Retry-After, PaceToken (run before the request's own timeout starts)
// waits for it (no refresh token is spent into the limit), one whose wait is
// shorter than the block is refused, and a request that was not paced is
// refused at once rather than held inside its timeout (SPEC §3 rule 18).
func TestTokenTransportPacesAfter429(t *testing.T) {
	var mu sync.Mutex
	var hits []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits = append(hits, time.Now())
		n := len(hits)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	g := &Governor{Backend: NewMemory()}
	tt := &TokenTransport{Governor: g}
	client := &http.Client{Transport: tt}
	host := strings.TrimPrefix(srv.URL, "http://")
	post := func(ctx context.Context, timeout time.Duration) (*http.Response, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/token", strings.NewReader("grant_type=refresh_token"))
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	if resp, err := post(context.Background(), 5*time.Second); err != nil || resp.StatusCode != 429 {
		t.Fatalf("first: %v %v", resp, err)
	}
	if !g.Governed("token@" + host) {
		t.Fatal("the token host is not governed after its 429")
	}
	// Not paced first: refused at once, however long its timeout.
	start := time.Now()
	if _, err := post(context.Background(), 5*time.Second); !errors.Is(err, ErrRateLimited) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("unpaced: err = %v after %v, want ErrRateLimited at once", err, time.Since(start))
	}
	// A pacing wait shorter than the block is refused.
	if _, err := tt.PaceToken(context.Background(), host, 300*time.Millisecond); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("short wait: err = %v, want ErrRateLimited", err)
	}
	pctx, err := tt.PaceToken(context.Background(), host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The request's own timeout starts after the wait: all of it is left.
	if resp, err := post(pctx, 5*time.Second); err != nil || resp.StatusCode != 200 {
		t.Fatalf("second: %v %v", resp, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hits) != 2 {
		t.Fatalf("token endpoint hits = %d, want 2", len(hits))
	}
	if d := hits[1].Sub(hits[0]); d < 900*time.Millisecond {
		t.Fatalf("second token request came %v after the 429, want ≥ the 1 s Retry-After", d)
	}
}

// tokenServer answers every token request with status and headers h.
func tokenServer(t *testing.T, status int, h http.Header) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, strings.TrimPrefix(srv.URL, "http://")
}

func postToken(t *testing.T, client *http.Client, url string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/token", strings.NewReader("grant_type=refresh_token"))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestTokenTransportLearnsOnlyFromOwn429 (security review, rule 18): window
// or bucket headers on a token endpoint's answers (an absolute
// X-RateLimit-Reset of 9000000000, a drip rate of 1e-12) teach nothing; a
// 429 teaches only its Retry-After, capped at the governor's MaxBlock.
func TestTokenTransportLearnsOnlyFromOwn429(t *testing.T) {
	h := http.Header{}
	h.Set("X-RateLimit-Limit", "10")
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Reset", "9000000000")
	h.Set("X-LS-API-Bucket-Level", "60/60")
	h.Set("X-LS-API-Drip-Rate", "1e-12")
	srv, host := tokenServer(t, http.StatusOK, h)
	g := &Governor{Backend: NewMemory()}
	tt := &TokenTransport{Governor: g}
	postToken(t, &http.Client{Transport: tt}, srv.URL)
	if g.Governed("token@" + host) {
		t.Fatal("a 200 with window and bucket headers taught the token host a budget")
	}

	h.Set("Retry-After", "86400") // one day
	srv429, host429 := tokenServer(t, http.StatusTooManyRequests, h)
	g429 := &Governor{Backend: NewMemory(), MaxBlock: 2 * time.Second}
	tt429 := &TokenTransport{Governor: g429}
	postToken(t, &http.Client{Transport: tt429}, srv429.URL)
	b, ok, err := g429.Budget(context.Background(), "token@"+host429)
	if err != nil || !ok || b.BlockedUntil == nil {
		t.Fatalf("after the 429: budget %+v, %v, %v", b, ok, err)
	}
	if b.Kind != "" || b.ResetAt != nil {
		t.Errorf("the 429's window/bucket headers were learned: %+v", b)
	}
	if left := time.Until(*b.BlockedUntil); left > 2*time.Second {
		t.Errorf("Retry-After: 86400 blocks for %v, want at most MaxBlock 2s", left)
	}
}

// TestTokenTransportBudgetPerHost: one token host's 429 (one X-Series store)
// never holds the refreshes of another host.
func TestTokenTransportBudgetPerHost(t *testing.T) {
	h := http.Header{}
	h.Set("Retry-After", "60")
	blocked, blockedHost := tokenServer(t, http.StatusTooManyRequests, h)
	_, otherHost := tokenServer(t, http.StatusOK, nil)
	g := &Governor{Backend: NewMemory()}
	tt := &TokenTransport{Governor: g}
	postToken(t, &http.Client{Transport: tt}, blocked.URL)
	if _, err := tt.PaceToken(context.Background(), blockedHost, 0); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("the 429's host: %v, want ErrRateLimited", err)
	}
	start := time.Now()
	if _, err := tt.PaceToken(context.Background(), otherHost, time.Second); err != nil || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("another host: %v after %v, want admitted at once", err, time.Since(start))
	}
}

// TestDefectPacingInsideTimeout: with defect 1 switched on, a request that
// was not paced first waits for the block inside its own deadline again.
func TestDefectPacingInsideTimeout(t *testing.T) {
	defer defect.Enable(defect.PacingInsideTimeout)()
	h := http.Header{}
	h.Set("Retry-After", "1")
	srv, _ := tokenServer(t, http.StatusTooManyRequests, h)
	tt := &TokenTransport{Governor: &Governor{Backend: NewMemory()}}
	client := &http.Client{Transport: tt}
	postToken(t, client, srv.URL)
	start := time.Now()
	postToken(t, client, srv.URL) // waits ~1 s inside its (absent) deadline
	if took := time.Since(start); took < 800*time.Millisecond {
		t.Fatalf("with the defect on, the unpaced request went after %v, want it held for the block", took)
	}
}
