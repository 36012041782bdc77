package auth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestWaitRefusesNewAcquisitions: once Wait was called, a token that needs
// a refresh is refused with *UnavailableError and nothing is sent, while a
// cached valid token keeps being served. (A refresh that started after
// Wait returned would be abandoned by the exiting process.)
func TestWaitRefusesNewAcquisitions(t *testing.T) {
	f := newFixture(t)
	f.put(t, "cached", time.Hour)
	f.put(t, "expired", -time.Second)
	if _, err := f.m.Token(context.Background(), "cached"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.m.FinishRefreshes(wctx); err != nil {
		t.Fatal(err)
	}

	_, err := f.m.Token(context.Background(), "expired")
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Tenant != "expired" || ue.RetryAfter <= 0 || !errors.Is(err, errShuttingDown) {
		t.Fatalf("after Wait: %v, want *UnavailableError for the tenant", err)
	}
	if n := f.ref.count(); n != 0 {
		t.Fatalf("%d refreshes sent after Wait", n)
	}
	if tok, err := f.m.Token(context.Background(), "cached"); err != nil || tok.AccessToken != "at-cached-0" {
		t.Fatalf("cached token after Wait: %+v %v", tok, err)
	}
}

// TestWaitConcurrentWithAcquisitions: acquisitions starting while Wait runs
// either finish before Wait returns or are refused (go test -race checks
// that counting them does not race with Wait).
func TestWaitConcurrentWithAcquisitions(t *testing.T) {
	f := newFixture(t)
	const n = 20
	for i := range n {
		f.put(t, "t"+string(rune('a'+i)), -time.Second)
	}
	var wg sync.WaitGroup
	var refreshedAfter sync.Map
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			id := "t" + string(rune('a'+i))
			if _, err := f.m.Token(context.Background(), id); err != nil && !errors.Is(err, ErrTokenUnavailable) {
				t.Errorf("%s: %v", id, err)
			}
		}()
	}
	close(start)
	wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.m.FinishRefreshes(wctx); err != nil {
		t.Fatal(err)
	}
	done := f.ref.count() // every refresh counted here finished its write
	for i := range n {
		id := "t" + string(rune('a'+i))
		if rec := f.get(t, id); rec.RefreshInFlight {
			refreshedAfter.Store(id, true)
		}
	}
	wg.Wait()
	refreshedAfter.Range(func(k, _ any) bool {
		t.Errorf("%v: a refresh was still in flight when Wait returned", k)
		return true
	})
	if f.ref.count() != done {
		t.Errorf("%d refreshes started after Wait returned", f.ref.count()-done)
	}
}
