package onboard_test

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/store"
)

// hookSecret is in the Standard Webhooks form (whsec_ + base64).
var hookSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

type hookReq struct {
	event, tenant string
	body          []byte
	header        http.Header
}

// hookServer answers with status(n, tenant) for the n-th request (1-based)
// and reports every request on the returned channel.
func hookServer(t *testing.T, status func(n int, tenant string) int) (*httptest.Server, <-chan hookReq) {
	t.Helper()
	ch := make(chan hookReq, 256)
	var count atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev struct {
			Type string
			Data struct{ Tenant string }
		}
		_ = json.Unmarshal(b, &ev)
		code := status(int(count.Add(1)), ev.Data.Tenant)
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(code)
		ch <- hookReq{event: ev.Type, tenant: ev.Data.Tenant, body: b, header: r.Header.Clone()}
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func recv(t *testing.T, ch <-chan hookReq) hookReq {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no webhook request")
		return hookReq{}
	}
}

// testOutbox is a real embedded store in a temporary directory.
func testOutbox(t *testing.T) *store.Bolt {
	t.Helper()
	keys, err := store.NewKeyring(make([]byte, store.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// fastSchedule: three attempts, 1 ms apart.
var fastSchedule = []time.Duration{time.Millisecond, time.Millisecond}

// newNotifier is a Notifier on a fresh outbox with a fast schedule.
func newNotifier(url string, ob store.Outbox) *onboard.Notifier {
	return &onboard.Notifier{URL: url, Secret: hookSecret, Outbox: ob, Schedule: fastSchedule, Poll: 10 * time.Millisecond}
}

func startNotifier(t *testing.T, n *onboard.Notifier) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	n.Start(ctx)
	t.Cleanup(func() {
		cancel()
		select {
		case <-n.Done():
		case <-time.After(5 * time.Second):
			t.Error("notifier did not stop")
		}
	})
	return cancel
}

// verify checks r with the official Standard Webhooks library, and the
// deprecated X-Lsproxy-Signature.
func verify(t *testing.T, r hookReq, secret string) {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Fatalf("Standard Webhooks verification: %v (headers %v)", err, r.header)
	}
	id := r.header.Get("webhook-id")
	if !strings.HasPrefix(id, "evt_") || len(id) != 36 {
		t.Fatalf("webhook-id %q", id)
	}
	var ev struct{ ID string }
	if json.Unmarshal(r.body, &ev) != nil || ev.ID != id {
		t.Fatalf("body id %q, header %q", ev.ID, id)
	}
	ts := r.header.Get("X-Lsproxy-Timestamp")
	sig, ok := strings.CutPrefix(r.header.Get("X-Lsproxy-Signature"), "sha256=")
	if !ok || !hmac.Equal([]byte(sig), []byte(onboard.Sign(hookSecret, ts, r.body))) {
		t.Fatalf("bad legacy signature %q", r.header.Get("X-Lsproxy-Signature"))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func outboxEmpty(t *testing.T, ob store.Outbox) func() bool {
	return func() bool {
		st, err := ob.OutboxStats(context.Background())
		return err == nil && st.Queued == 0
	}
}

// TestWebhookSignedDelivery: the Standard Webhooks payload (type,
// timestamp, data) with the earlier fields kept, verified by the official
// library; queued before Start, delivered once started.
func TestWebhookSignedDelivery(t *testing.T) {
	srv, ch := hookServer(t, func(int, string) int { return http.StatusNoContent })
	ob := testOutbox(t)
	n := newNotifier(srv.URL+"/hook", ob)
	at := time.Date(2026, 11, 23, 12, 30, 0, 123000000, time.FixedZone("x", 3600))
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme", Reason: "refresh token rejected", At: at})
	startNotifier(t, n)
	r := recv(t, ch)
	verify(t, r, hookSecret)
	if r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Lsproxy-Event") != "tenant.flagged" {
		t.Fatalf("headers %v", r.header)
	}
	id := r.header.Get("webhook-id")
	want := `{"type":"tenant.flagged","timestamp":"2026-11-23T11:30:00.123Z","data":{"tenant":"acme","reason":"refresh token rejected"},` +
		`"id":"` + id + `","event":"tenant.flagged","tenant":"acme","reason":"refresh token rejected","at":"2026-11-23T11:30:00Z"}`
	if string(r.body) != want {
		t.Fatalf("body %s\nwant %s", r.body, want)
	}
	n.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: "acme", At: at})
	r = recv(t, ch)
	verify(t, r, hookSecret)
	if r.event != onboard.EventRecovered || r.tenant != "acme" || !strings.Contains(string(r.body), `"data":{"tenant":"acme"}`) {
		t.Fatalf("%s", r.body)
	}
	waitFor(t, "an empty outbox", outboxEmpty(t, ob))
	if n.Delivered() != 2 || n.Failed() != 0 {
		t.Errorf("delivered %d failed %d", n.Delivered(), n.Failed())
	}
}

// TestWebhookSecretRotation: one signature per secret; a receiver knowing
// only one of them verifies.
func TestWebhookSecretRotation(t *testing.T) {
	srv, ch := hookServer(t, func(int, string) int { return http.StatusOK })
	newSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	n := newNotifier(srv.URL, testOutbox(t))
	n.Secrets = []string{newSecret}
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme"})
	r := recv(t, ch)
	if sigs := strings.Fields(r.header.Get("webhook-signature")); len(sigs) != 2 || !strings.HasPrefix(sigs[0], "v1,") || !strings.HasPrefix(sigs[1], "v1,") {
		t.Fatalf("webhook-signature %q: want two v1 signatures", r.header.Get("webhook-signature"))
	}
	verify(t, r, hookSecret)
	verify(t, r, newSecret)
	other, _ := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString([]byte("not-a-configured-secret-at-all!!")))
	if other.Verify(r.body, r.header) == nil {
		t.Fatal("an unknown secret verifies")
	}
}

// TestWebhookRetriesThenSucceeds: 503, 429, 400 are all retried (Standard
// Webhooks: any non-2xx), with the same id, each attempt signed afresh.
func TestWebhookRetriesThenSucceeds(t *testing.T) {
	codes := []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadRequest, http.StatusOK}
	srv, ch := hookServer(t, func(n int, _ string) int { return codes[min(n, len(codes))-1] })
	ob := testOutbox(t)
	n := newNotifier(srv.URL, ob)
	n.Schedule = []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme", Reason: "x"})
	var ids []string
	for i := 0; i < 4; i++ {
		r := recv(t, ch)
		verify(t, r, hookSecret)
		ids = append(ids, r.header.Get("webhook-id"))
	}
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Fatalf("ids %v: a retry has another id", ids)
		}
	}
	waitFor(t, "an empty outbox", outboxEmpty(t, ob))
	if n.Failed() != 3 || n.Delivered() != 1 || n.Dead() != 0 {
		t.Fatalf("failed %d delivered %d dead %d", n.Failed(), n.Delivered(), n.Dead())
	}
}

// TestWebhookDeadLetterAndRedeliver: past the schedule the event is a dead
// letter, the tenant's next event goes ahead, and a redelivery sends the
// dead one again (same id) once the receiver is back.
func TestWebhookDeadLetterAndRedeliver(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	srv, ch := hookServer(t, func(_ int, tenant string) int {
		if down.Load() && tenant == "acme" {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	ob := testOutbox(t)
	n := newNotifier(srv.URL, ob)
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme"})
	first := recv(t, ch).header.Get("webhook-id")
	for i := 0; i < 2; i++ {
		recv(t, ch)
	}
	var dead []store.OutboxEvent
	waitFor(t, "a dead letter", func() bool {
		dead, _ = ob.OutboxList(context.Background(), true, 10)
		return len(dead) == 1
	})
	if dead[0].ID != first || dead[0].Attempts != 3 || dead[0].LastError != "500 Internal Server Error" || dead[0].Tenant != "acme" {
		t.Fatalf("dead letter %+v", dead[0])
	}
	if n.Dead() != 1 || n.Failed() != 3 {
		t.Errorf("dead %d failed %d", n.Dead(), n.Failed())
	}
	down.Store(false)
	n.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: "acme"})
	if r := recv(t, ch); r.event != onboard.EventRecovered {
		t.Fatalf("after the dead letter: %s, want the tenant's next event", r.event)
	}
	if got, err := ob.OutboxRedeliver(context.Background(), first, time.Now()); err != nil || got != 1 {
		t.Fatalf("redeliver = %d, %v", got, err)
	}
	// Poll picks it up (the redelivery came from outside the Notifier).
	r := recv(t, ch)
	verify(t, r, hookSecret)
	if r.header.Get("webhook-id") != first {
		t.Fatalf("redelivered %q, want %q", r.header.Get("webhook-id"), first)
	}
	waitFor(t, "an empty outbox", outboxEmpty(t, ob))
	if st, _ := ob.OutboxStats(context.Background()); st.Dead != 0 {
		t.Errorf("dead letters after the redelivery: %d", st.Dead)
	}
}

// TestWebhookOrderPerTenant: a tenant's second event waits for its first
// (retried), while another tenant's event goes ahead.
func TestWebhookOrderPerTenant(t *testing.T) {
	var aFails atomic.Int64
	srv, ch := hookServer(t, func(_ int, tenant string) int {
		if tenant == "a" && aFails.Add(1) <= 2 {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	n := newNotifier(srv.URL, testOutbox(t))
	n.Schedule = []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "a"})
	n.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: "a"})
	startNotifier(t, n)
	if r := recv(t, ch); r.tenant != "a" || r.event != onboard.EventFlagged {
		t.Fatalf("first request %s %s", r.tenant, r.event)
	}
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "b"})
	var got []string
	for i := 0; i < 4; i++ {
		r := recv(t, ch)
		got = append(got, r.tenant+":"+r.event)
	}
	// b's event (its own queue) arrives while a's first is still retried
	// (twice more); a's second only after a's first was delivered.
	want := "b:tenant.flagged,a:tenant.flagged,a:tenant.flagged,a:tenant.recovered"
	if strings.Join(got, ",") != want {
		t.Fatalf("requests %v, want %s", got, want)
	}
}

// TestWebhookRetriesNetworkError: a connection cut without an answer is
// retried.
func TestWebhookRetriesNetworkError(t *testing.T) {
	ch := make(chan string, 4)
	var cut atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cut.CompareAndSwap(false, true) {
			ch <- "cut"
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		ch <- "ok"
	}))
	defer srv.Close()
	n := newNotifier(srv.URL, testOutbox(t))
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme"})
	for _, want := range []string{"cut", "ok"} {
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("got %s want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s request", want)
		}
	}
}

// TestWebhookLeaseTakeover: an event claimed by a deliverer that died (its
// lease never released) is delivered once the lease ends.
func TestWebhookLeaseTakeover(t *testing.T) {
	srv, ch := hookServer(t, func(int, string) int { return http.StatusOK })
	ob := testOutbox(t)
	ctx := context.Background()
	if err := ob.OutboxAdd(ctx, store.OutboxEvent{ID: "evt_00000000000000000000000000000001", Tenant: "acme", Type: "tenant.flagged", Payload: []byte(`{"id":"evt_00000000000000000000000000000001"}`)}); err != nil {
		t.Fatal(err)
	}
	claimed, err := ob.OutboxClaim(ctx, time.Now(), 300*time.Millisecond, 1) // the replica that dies
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim = %v, %v", claimed, err)
	}
	start := time.Now()
	n := newNotifier(srv.URL, ob)
	startNotifier(t, n)
	r := recv(t, ch)
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("delivered after %v, inside the dead replica's lease", waited)
	}
	if r.header.Get("webhook-id") != "evt_00000000000000000000000000000001" {
		t.Fatalf("id %q", r.header.Get("webhook-id"))
	}
	if err := ob.OutboxDone(ctx, claimed[0]); !errors.Is(err, store.ErrLockLost) {
		t.Errorf("the dead replica's late done = %v, want ErrLockLost", err)
	}
}

// flakyOutbox fails the first adds (the store unreachable).
type flakyOutbox struct {
	store.Outbox
	fail atomic.Int64
}

func (f *flakyOutbox) OutboxAdd(ctx context.Context, ev store.OutboxEvent) error {
	if f.fail.Add(-1) >= 0 {
		return errors.New("store: redis: connection refused")
	}
	return f.Outbox.OutboxAdd(ctx, ev)
}

// TestWebhookWriteRetried: events whose outbox write fails are written
// once the store answers, in order.
func TestWebhookWriteRetried(t *testing.T) {
	srv, ch := hookServer(t, func(int, string) int { return http.StatusOK })
	ob := &flakyOutbox{Outbox: testOutbox(t)}
	ob.fail.Store(3)
	n := newNotifier(srv.URL, ob)
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme"})
	n.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: "acme"})
	if r := recv(t, ch); r.event != onboard.EventFlagged {
		t.Fatalf("first %s", r.event)
	}
	if r := recv(t, ch); r.event != onboard.EventRecovered {
		t.Fatalf("second %s", r.event)
	}
	if n.Dropped() != 0 {
		t.Errorf("dropped %d", n.Dropped())
	}
}

// TestWebhookNotifyNeverBlocks: with the writer stuck, Notify drops
// beyond the queue instead of blocking.
func TestWebhookNotifyNeverBlocks(t *testing.T) {
	ob := &flakyOutbox{Outbox: testOutbox(t)}
	ob.fail.Store(1 << 40)
	n := newNotifier("http://127.0.0.1:1/", ob)
	n.QueueSize = 2
	startNotifier(t, n)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "t"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Notify blocked")
	}
	if d := n.Dropped(); d < 97 || d > 98 {
		t.Fatalf("dropped %d, want 97 or 98 (queue of 2, one held by the writer)", d)
	}
}

func TestWebhookUnsignedWithoutSecret(t *testing.T) {
	srv, ch := hookServer(t, func(int, string) int { return http.StatusOK })
	n := newNotifier(srv.URL, testOutbox(t))
	n.Secret = ""
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: "acme"})
	r := recv(t, ch)
	if r.header.Get("X-Lsproxy-Signature") != "" || r.header.Get("webhook-signature") != "" || r.header.Get("X-Lsproxy-Timestamp") == "" {
		t.Fatalf("headers %v", r.header)
	}
}

// TestSignStandardRawSecret: a secret not in the whsec_ form keys the
// signature with its bytes (the library's raw form verifies it).
func TestSignStandardRawSecret(t *testing.T) {
	body := []byte(`{"type":"x"}`)
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	h := http.Header{}
	h.Set("webhook-id", "evt_1")
	h.Set("webhook-timestamp", ts)
	h.Set("webhook-signature", onboard.Signatures([]string{"plain-secret"}, "evt_1", ts, body))
	wh, err := standardwebhooks.NewWebhookRaw([]byte("plain-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(body, h); err != nil {
		t.Fatal(err)
	}
}

// TestWebhookInvalidEventDropped: an event the outbox refuses (a tenant
// id with a NUL byte) is dropped, and the next one is not held up.
func TestWebhookInvalidEventDropped(t *testing.T) {
	srv, ch := hookServer(t, func(int, string) int { return http.StatusOK })
	n := newNotifier(srv.URL, testOutbox(t))
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "bad\x00id"})
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme"})
	if r := recv(t, ch); r.tenant != "acme" {
		t.Fatalf("delivered %q", r.tenant)
	}
	if n.Dropped() != 1 {
		t.Errorf("dropped %d, want 1", n.Dropped())
	}
}
