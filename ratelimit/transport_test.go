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
)

// TestTokenTransportPacesAfter429: after the token endpoint answered 429
// with Retry-After, the next token request waits for it (no refresh token
// is spent into the limit), and one whose deadline comes first is not sent.
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
	client := &http.Client{Transport: &TokenTransport{Governor: g}}
	post := func(timeout time.Duration) (*http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/token", strings.NewReader("grant_type=refresh_token"))
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	if resp, err := post(5 * time.Second); err != nil || resp.StatusCode != 429 {
		t.Fatalf("first: %v %v", resp, err)
	}
	if !g.Governed("token@" + strings.TrimPrefix(srv.URL, "http://")) {
		t.Fatal("the token host is not governed after its 429")
	}
	// A request whose deadline ends before the block is not sent.
	if _, err := post(300 * time.Millisecond); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("short deadline: err = %v, want ErrRateLimited", err)
	}
	if resp, err := post(5 * time.Second); err != nil || resp.StatusCode != 200 {
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
