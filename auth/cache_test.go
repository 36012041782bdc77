package auth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/lsproxy/lsproxy/store"
)

// cacheStore counts Get calls and can fail or end subscriptions.
type cacheStore struct {
	store.Store
	gets atomic.Int64

	mu sync.Mutex
	// subErrs: the next Subscribe calls fail with these, in order.
	subErrs []error
	// subs receives a close func for every subscription handed out.
	subs chan func()
	// inject: ids delivered on the subscription as if the store sent them.
	inject chan string
	// hold, when set, makes the next Get report on entered and wait for
	// release before reading.
	hold             atomic.Bool
	entered, release chan struct{}
}

func (c *cacheStore) Get(ctx context.Context, id string) (*store.Tenant, error) {
	c.gets.Add(1)
	if c.hold.CompareAndSwap(true, false) {
		c.entered <- struct{}{}
		<-c.release
	}
	return c.Store.Get(ctx, id)
}

func (c *cacheStore) Subscribe(ctx context.Context) (<-chan string, error) {
	c.mu.Lock()
	if len(c.subErrs) > 0 {
		err := c.subErrs[0]
		c.subErrs = c.subErrs[1:]
		c.mu.Unlock()
		c.subs <- nil
		return nil, err
	}
	c.mu.Unlock()
	inner, err := c.Store.Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	// Relay, so the test can end this one subscription.
	out := make(chan string, 64)
	stop := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(out)
		for {
			select {
			case id, ok := <-inner:
				if !ok {
					return
				}
				out <- id
			case id := <-c.inject:
				out <- id
			case <-stop:
				return
			}
		}
	}()
	c.subs <- func() { once.Do(func() { close(stop) }) }
	return out, nil
}

// cacheFixture is a fixture whose manager reads through a cacheStore.
func cacheFixture(t *testing.T, ttl time.Duration) (*fixture, *cacheStore, chan string) {
	t.Helper()
	f := newFixture(t, func(o *ManagerOptions) { o.CacheTTL = ttl })
	cs := &cacheStore{Store: f.store, subs: make(chan func(), 16), inject: make(chan string),
		entered: make(chan struct{}), release: make(chan struct{})}
	revalidated := make(chan string, 16)
	f.m = NewManager(cs, f.ref, f.m.opts)
	f.m.revalidated = func(id string) { revalidated <- id }
	return f, cs, revalidated
}

// runNotifying starts Run and returns once its subscription is live.
func runNotifying(t *testing.T, f *fixture, cs *cacheStore) {
	t.Helper()
	live := make(chan struct{}, 16)
	f.m.notifyingLive = func() { live <- struct{}{} }
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.m.Run(rctx) }()
	t.Cleanup(func() { cancel(); waitFor(t, done, "Run to return") })
	waitFor(t, cs.subs, "the subscription")
	waitFor(t, live, "notifications to be live")
}

// With live notifications a cached token is served past CacheTTL with no
// store read at all, and a change notification still replaces it.
func TestTrustedEntryServedWithoutRereads(t *testing.T) {
	f, cs, _ := cacheFixture(t, time.Minute)
	rec := f.put(t, "acme", time.Hour)
	runNotifying(t, f, cs)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(10 * time.Minute) // 10×CacheTTL; the token is still fresh
	before := cs.gets.Load()
	for i := 0; i < 20; i++ {
		if tok, err := f.m.Token(ctx, "acme"); err != nil || tok.AccessToken != "at-acme-0" {
			t.Fatalf("got %+v %v", tok, err)
		}
	}
	if n := cs.gets.Load() - before; n != 0 {
		t.Fatalf("%d store reads for a trusted entry, want 0", n)
	}
	next := rec.Clone()
	next.AccessToken = "at-acme-new"
	if _, err := f.store.Put(ctx, next, rec.Version); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok, err := f.m.Token(ctx, "acme")
		if err == nil && tok.AccessToken == "at-acme-new" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the change notification did not replace a trusted entry: %+v %v", tok, err)
		}
		time.Sleep(5 * time.Millisecond) // the notification has no other signal
	}
	// Near expiry a trusted entry is not served either: the refresh path runs.
	f.clk.Advance(49*time.Minute + 45*time.Second) // within RefreshBefore (30 s) of expiry
	before = cs.gets.Load()
	if tok, err := f.m.Token(ctx, "acme"); err != nil || tok.AccessToken == "at-acme-new" {
		t.Fatalf("near expiry: %+v %v", tok, err)
	}
	if cs.gets.Load() == before {
		t.Fatal("no store read near expiry")
	}
}

// An entry read before notifications were live is not trusted: past
// CacheTTL it is re-read once, and that re-read makes it trusted.
func TestEntryReadBeforeNotificationsIsRereadOnce(t *testing.T) {
	f, cs, revalidated := cacheFixture(t, time.Minute)
	f.put(t, "acme", time.Hour)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	runNotifying(t, f, cs)
	f.clk.Advance(90 * time.Second)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, revalidated, "the background re-read")
	f.clk.Advance(10 * time.Minute)
	before := cs.gets.Load()
	if tok, err := f.m.Token(ctx, "acme"); err != nil || tok.AccessToken != "at-acme-0" {
		t.Fatalf("got %+v %v", tok, err)
	}
	if n := cs.gets.Load() - before; n != 0 {
		t.Fatalf("%d store reads after the trusted re-read, want 0", n)
	}
}

// A read that overlaps a change notification (of any tenant) is not
// trusted: the notification may have been for a write the read missed.
func TestReadOverlappingNotificationNotTrusted(t *testing.T) {
	f, cs, revalidated := cacheFixture(t, time.Minute)
	f.put(t, "acme", time.Hour)
	runNotifying(t, f, cs)
	cs.hold.Store(true)
	got := make(chan error, 1)
	go func() { _, err := f.m.Token(ctx, "acme"); got <- err }()
	waitFor(t, cs.entered, "the held read")
	f.m.Invalidate("acme") // the notification arrives while the read is out
	cs.release <- struct{}{}
	if err := waitFor(t, got, "Token"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(90 * time.Second)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, revalidated, "the re-read of an untrusted entry")
}

// After a gap in notifications nothing is trusted until read again.
func TestGapTakesTrustAway(t *testing.T) {
	f, cs, _ := cacheFixture(t, time.Minute)
	rec := f.put(t, "acme", time.Hour)
	live := make(chan struct{}, 16)
	f.m.notifyingLive = func() { live <- struct{}{} }
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go f.m.Run(rctx)
	end := waitFor(t, cs.subs, "the subscription")
	waitFor(t, live, "notifications to be live")
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	end()
	next := rec.Clone()
	next.AccessToken = "at-acme-gap"
	if _, err := f.store.Put(ctx, next, rec.Version); err != nil {
		t.Fatal(err)
	}
	waitFor(t, cs.subs, "the resubscription")
	waitFor(t, live, "notifications to be live again")
	f.clk.Advance(10 * time.Minute)
	if tok, err := f.m.Token(ctx, "acme"); err != nil || tok.AccessToken != "at-acme-gap" {
		t.Fatalf("after the gap: %+v %v", tok, err)
	}
}

func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestStaleTokenServedWhileOneReread(t *testing.T) {
	f, cs, revalidated := cacheFixture(t, time.Minute)
	rec := f.put(t, "acme", time.Hour)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// Another writer changes the token; no notification reaches us (Run is
	// not running), so only the re-read can see it.
	next := rec.Clone()
	next.AccessToken = "at-acme-new"
	if _, err := f.store.Put(ctx, next, rec.Version); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(90 * time.Second) // past CacheTTL, within 2×CacheTTL
	before := cs.gets.Load()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := f.m.Token(ctx, "acme")
			if err != nil || (tok.AccessToken != "at-acme-0" && tok.AccessToken != "at-acme-new") {
				t.Errorf("got %+v %v", tok, err)
			}
		}()
	}
	wg.Wait()
	waitFor(t, revalidated, "the background re-read")
	if n := cs.gets.Load() - before; n != 1 {
		t.Fatalf("%d store reads for 20 stale hits, want 1 (in the background)", n)
	}
	tok, err := f.m.Token(ctx, "acme")
	if err != nil || tok.AccessToken != "at-acme-new" {
		t.Fatalf("after the re-read: %+v %v", tok, err)
	}
	if n := cs.gets.Load() - before; n != 1 {
		t.Fatalf("%d store reads, want 1", n)
	}
	if f.ref.count() != 0 {
		t.Fatal("a fresh token was refreshed")
	}
}

func TestStaleTokenNotServedNearExpiry(t *testing.T) {
	f, cs, _ := cacheFixture(t, time.Minute)
	f.put(t, "acme", 100*time.Second)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(75 * time.Second) // stale, and within RefreshBefore (30s) of expiry
	before := cs.gets.Load()
	tok, err := f.m.Token(ctx, "acme")
	if err != nil || tok.AccessToken != "at-acme-1" {
		t.Fatalf("want a synchronous refresh, got %+v %v", tok, err)
	}
	if cs.gets.Load() == before {
		t.Fatal("no synchronous store read")
	}
}

func TestStaleTokenNotServedAfterInvalidate(t *testing.T) {
	f, cs, _ := cacheFixture(t, time.Minute)
	rec := f.put(t, "acme", time.Hour)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	flagged := rec.Clone()
	flagged.Status = store.StatusReauthorizationRequired
	flagged.Reason = "test"
	if _, err := f.store.Put(ctx, flagged, rec.Version); err != nil {
		t.Fatal(err)
	}
	f.m.Invalidate("acme") // the notification
	f.clk.Advance(90 * time.Second)
	before := cs.gets.Load()
	if _, err := f.m.Token(ctx, "acme"); !errors.Is(err, ErrReauthorizationRequired) {
		t.Fatalf("served after the flag notification: %v", err)
	}
	if cs.gets.Load() == before {
		t.Fatal("no synchronous store read")
	}
}

func TestStaleTokenNotServedPastTwiceCacheTTL(t *testing.T) {
	f, cs, _ := cacheFixture(t, time.Minute)
	f.put(t, "acme", time.Hour)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(121 * time.Second)
	before := cs.gets.Load()
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if cs.gets.Load() == before {
		t.Fatal("an entry older than 2×CacheTTL was served without a read")
	}
}

func TestRereadSeesFlag(t *testing.T) {
	f, _, revalidated := cacheFixture(t, time.Minute)
	rec := f.put(t, "acme", time.Hour)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	flagged := rec.Clone()
	flagged.Status = store.StatusReauthorizationRequired
	flagged.Reason = "test"
	if _, err := f.store.Put(ctx, flagged, rec.Version); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(61 * time.Second)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatalf("stale hit: %v", err)
	}
	waitFor(t, revalidated, "the background re-read")
	if _, err := f.m.Token(ctx, "acme"); !errors.Is(err, ErrReauthorizationRequired) {
		t.Fatalf("after the re-read: %v", err)
	}
}

func TestRereadFailureKeepsServingOnce(t *testing.T) {
	f, cs, revalidated := cacheFixture(t, time.Minute)
	f.put(t, "acme", time.Hour)
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	f.store.Close() // every read fails from now on
	f.clk.Advance(61 * time.Second)
	before := cs.gets.Load()
	for i := 0; i < 5; i++ {
		if tok, err := f.m.Token(ctx, "acme"); err != nil || tok.AccessToken != "at-acme-0" {
			t.Fatalf("got %+v %v", tok, err)
		}
	}
	waitFor(t, revalidated, "the background re-read")
	if tok, err := f.m.Token(ctx, "acme"); err != nil || tok.AccessToken != "at-acme-0" {
		t.Fatalf("got %+v %v", tok, err)
	}
	if n := cs.gets.Load() - before; n != 1 {
		t.Fatalf("%d reads after a failed re-read, want 1 (no retry storm)", n)
	}
}

func TestRunResubscribes(t *testing.T) {
	f, cs, _ := cacheFixture(t, time.Hour)
	cs.subErrs = []error{errors.New("redis down"), errors.New("redis down")}
	rec := f.put(t, "acme", time.Hour)
	rctx, cancel := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- f.m.Run(rctx) }()
	for i := 0; i < 2; i++ {
		if waitFor(t, cs.subs, "a failing subscription") != nil {
			t.Fatal("subscription should have failed")
		}
	}
	end := waitFor(t, cs.subs, "the first subscription")
	if end == nil {
		t.Fatal("third subscription failed")
	}
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// The subscription ends; a write during the gap is not notified.
	end()
	next := rec.Clone()
	next.AccessToken = "at-acme-gap"
	if _, err := f.store.Put(ctx, next, rec.Version); err != nil {
		t.Fatal(err)
	}
	end2 := waitFor(t, cs.subs, "the resubscription")
	if end2 == nil {
		t.Fatal("resubscription failed")
	}
	// After the gap the cached entry is read again before it is served.
	if tok, err := f.m.Token(ctx, "acme"); err != nil || tok.AccessToken != "at-acme-gap" {
		t.Fatalf("after the gap: %+v %v", tok, err)
	}
	// Notifications flow on the new subscription.
	cur := f.get(t, "acme")
	next = cur.Clone()
	next.AccessToken = "at-acme-notified"
	if _, err := f.store.Put(ctx, next, cur.Version); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok, err := f.m.Token(ctx, "acme")
		if err == nil && tok.AccessToken == "at-acme-notified" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("notification on the new subscription not applied: %+v %v", tok, err)
		}
		time.Sleep(5 * time.Millisecond) // the notification has no other signal
	}
	cancel()
	if err := waitFor(t, runDone, "Run to return"); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// An empty id from the store (ids lost) makes every entry be read again.
func TestLostNotificationsDistrustCache(t *testing.T) {
	f, cs, _ := cacheFixture(t, time.Hour)
	rec := f.put(t, "acme", time.Hour)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go f.m.Run(rctx)
	waitFor(t, cs.subs, "the subscription")
	if _, err := f.m.Token(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	next := rec.Clone()
	next.AccessToken = "at-acme-unnotified"
	if _, err := f.store.Put(ctx, next, rec.Version); err != nil {
		t.Fatal(err)
	}
	// The Put's own notification may arrive too; drain it by sending the
	// loss report through the same relay (delivered after it).
	cs.inject <- ""
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok, err := f.m.Token(ctx, "acme")
		if err == nil && tok.AccessToken == "at-acme-unnotified" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cache not re-read after a loss report: %+v %v", tok, err)
		}
		time.Sleep(5 * time.Millisecond) // Run applies it asynchronously
	}
}

// A cached token's Authorization value is built once and always carries
// the token it is read with, also after the token field was changed.
func TestTokenAuthorization(t *testing.T) {
	if got := (Token{AccessToken: "abc"}).Authorization(); got != "Bearer abc" {
		t.Fatalf("plain token: %q", got)
	}
	tok := newEntry(nil, Token{AccessToken: "at-1"}, time.Now(), time.Time{}, nil).tok
	if tok.AccessToken != "at-1" || tok.Authorization() != "Bearer at-1" {
		t.Fatalf("cached token %q: Authorization %q", tok.AccessToken, tok.Authorization())
	}
	a1, a2 := tok.Authorization(), tok.Authorization()
	if unsafe.StringData(a1) != unsafe.StringData(a2) {
		t.Fatal("a cached token's Authorization value is built per call")
	}
	for _, changed := range []string{"at-2", "at-10", ""} {
		c := tok
		c.AccessToken = changed
		if got := c.Authorization(); got != "Bearer "+changed {
			t.Fatalf("token changed to %q: Authorization %q", changed, got)
		}
	}
	if e := newEntry(nil, Token{}, time.Now(), time.Time{}, nil); e.tok.Authorization() != "Bearer " || e.tok.authorization != "" {
		t.Fatalf("an empty token got a built value %q", e.tok.authorization)
	}
}
