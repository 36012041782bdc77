package onboard_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/onboard"
)

const hookSecret = "whsec-test"

type hookReq struct {
	event, tenant string
	body          []byte
	header        http.Header
}

// hookServer answers with status(n, tenant) for the n-th request (1-based)
// and reports every request on the returned channel.
func hookServer(t *testing.T, status func(n int, tenant string) int) (*httptest.Server, <-chan hookReq) {
	t.Helper()
	ch := make(chan hookReq, 64)
	var count atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev struct{ Event, Tenant string }
		_ = json.Unmarshal(b, &ev)
		code := status(int(count.Add(1)), ev.Tenant)
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "0")
		}
		w.WriteHeader(code)
		ch <- hookReq{event: ev.Event, tenant: ev.Tenant, body: b, header: r.Header.Clone()}
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

func verifySignature(t *testing.T, r hookReq) {
	t.Helper()
	verifyStandard(t, r, hookSecret)
	ts := r.header.Get("X-Lsproxy-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		t.Fatalf("timestamp %q", ts)
	}
	sig, ok := strings.CutPrefix(r.header.Get("X-Lsproxy-Signature"), "sha256=")
	if !ok || !hmac.Equal([]byte(sig), []byte(onboard.Sign(hookSecret, ts, r.body))) {
		t.Fatalf("bad signature %q", r.header.Get("X-Lsproxy-Signature"))
	}
	if onboard.Sign("other-secret", ts, r.body) == sig {
		t.Fatal("signature does not depend on the secret")
	}
}

func fastBackoff(int) time.Duration { return time.Millisecond }

func TestWebhookSignedDelivery(t *testing.T) {
	srv, ch := hookServer(t, func(int, string) int { return http.StatusNoContent })
	n := &onboard.Notifier{URL: srv.URL + "/hook", Secret: hookSecret}
	at := time.Date(2026, 11, 23, 12, 30, 0, 123, time.FixedZone("x", 3600))
	// Queued before Start: delivered once started.
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme", Reason: "refresh token rejected", At: at})
	startNotifier(t, n)
	r := recv(t, ch)
	verifySignature(t, r)
	if r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Lsproxy-Event") != "tenant.flagged" {
		t.Fatalf("headers %v", r.header)
	}
	id := r.header.Get("webhook-id")
	want := `{"id":"` + id + `","event":"tenant.flagged","tenant":"acme","reason":"refresh token rejected","at":"2026-11-23T11:30:00Z"}`
	if string(r.body) != want {
		t.Fatalf("body %s\nwant %s", r.body, want)
	}

	n.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: "acme", At: at})
	r = recv(t, ch)
	verifySignature(t, r)
	if r.event != onboard.EventRecovered || r.tenant != "acme" || !strings.Contains(string(r.body), `"reason":""`) {
		t.Fatalf("%s", r.body)
	}
}

func TestWebhookRetriesThenSucceeds(t *testing.T) {
	codes := []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusOK}
	srv, ch := hookServer(t, func(n int, _ string) int { return codes[min(n, len(codes))-1] })
	n := &onboard.Notifier{URL: srv.URL, Secret: hookSecret, Backoff: fastBackoff}
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme", Reason: "x", At: time.Now()})
	for i := 0; i < 3; i++ {
		r := recv(t, ch)
		verifySignature(t, r) // every attempt is signed afresh
	}
	// A sentinel proves the first event is finished (one goroutine, in order).
	n.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: "sentinel", At: time.Now()})
	if r := recv(t, ch); r.tenant != "sentinel" {
		t.Fatalf("fourth request was for %q", r.tenant)
	}
	if n.Failed() != 0 {
		t.Fatalf("failed %d", n.Failed())
	}
}

func TestWebhookBoundedAttempts(t *testing.T) {
	srv, ch := hookServer(t, func(int, string) int { return http.StatusInternalServerError })
	n := &onboard.Notifier{URL: srv.URL, Secret: hookSecret, MaxAttempts: 3, Backoff: fastBackoff}
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "first", At: time.Now()})
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "second", At: time.Now()})
	var got []string
	for i := 0; i < 6; i++ {
		got = append(got, recv(t, ch).tenant)
	}
	if strings.Join(got, ",") != "first,first,first,second,second,second" {
		t.Fatalf("attempts %v", got)
	}
}

func TestWebhookNoRetryOnClientError(t *testing.T) {
	srv, ch := hookServer(t, func(_ int, tenant string) int {
		if tenant == "sentinel" {
			return http.StatusOK
		}
		return http.StatusBadRequest
	})
	n := &onboard.Notifier{URL: srv.URL, Secret: hookSecret, Backoff: fastBackoff}
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme", At: time.Now()})
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "sentinel", At: time.Now()})
	if r := recv(t, ch); r.tenant != "acme" {
		t.Fatal(r.tenant)
	}
	if r := recv(t, ch); r.tenant != "sentinel" {
		t.Fatalf("a 400 was retried (got %q)", r.tenant)
	}
	if n.Failed() != 1 {
		t.Fatalf("failed %d", n.Failed())
	}
}

func TestWebhookRetriesNetworkError(t *testing.T) {
	ch := make(chan string, 4)
	var cut atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cut.CompareAndSwap(false, true) { // cut the connection without an answer
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
	n := &onboard.Notifier{URL: srv.URL, Secret: hookSecret, Backoff: fastBackoff}
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme", At: time.Now()})
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

func TestWebhookNotifyNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select { // the receiver hangs
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	n := &onboard.Notifier{URL: srv.URL, Secret: hookSecret, QueueSize: 2, Backoff: fastBackoff}
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "t0", At: time.Now()})
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("first delivery did not start")
	}
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "t", At: time.Now()})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Notify blocked on a hanging receiver")
	}
	if d := n.Dropped(); d != 98 {
		t.Fatalf("dropped %d, want 98 (queue of 2)", d)
	}
}

func TestWebhookUnsignedWithoutSecret(t *testing.T) {
	srv, ch := hookServer(t, func(int, string) int { return http.StatusOK })
	n := &onboard.Notifier{URL: srv.URL}
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: "acme", At: time.Now()})
	r := recv(t, ch)
	if r.header.Get("X-Lsproxy-Signature") != "" || r.header.Get("X-Lsproxy-Timestamp") == "" {
		t.Fatalf("headers %v", r.header)
	}
}

// verifyStandard checks the Standard Webhooks headers the way a receiver
// library does: v1,base64(HMAC-SHA256(key, id.timestamp.body)).
func verifyStandard(t *testing.T, r hookReq, secret string) {
	t.Helper()
	id, ts := r.header.Get("webhook-id"), r.header.Get("webhook-timestamp")
	if !strings.HasPrefix(id, "evt_") || len(id) != 36 {
		t.Fatalf("webhook-id %q", id)
	}
	if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		t.Fatalf("webhook-timestamp %q", ts)
	}
	key := []byte(secret)
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		key, _ = base64.StdEncoding.DecodeString(rest)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(r.body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	if got := r.header.Get("webhook-signature"); !hmac.Equal([]byte(got), []byte(want)) {
		t.Fatalf("webhook-signature %q, want %q", got, want)
	}
	var ev struct{ ID string }
	if json.Unmarshal(r.body, &ev) != nil || ev.ID != id {
		t.Fatalf("body id %q, header %q", ev.ID, id)
	}
}

// TestWebhookStandardSecret: a whsec_ secret keys the signature with its
// decoded bytes (what Standard Webhooks libraries expect), and the event
// id stays the same across retries.
func TestWebhookStandardSecret(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	codes := []int{http.StatusBadGateway, http.StatusOK}
	srv, ch := hookServer(t, func(n int, _ string) int { return codes[min(n, len(codes))-1] })
	n := &onboard.Notifier{URL: srv.URL, Secret: secret, Backoff: fastBackoff}
	startNotifier(t, n)
	n.Notify(onboard.Event{Event: onboard.EventFlagged, Tenant: "acme", At: time.Now()})
	first, second := recv(t, ch), recv(t, ch)
	verifyStandard(t, first, secret)
	verifyStandard(t, second, secret)
	if first.header.Get("webhook-id") != second.header.Get("webhook-id") {
		t.Fatalf("the retry has another id: %q, %q", first.header.Get("webhook-id"), second.header.Get("webhook-id"))
	}
	n.Notify(onboard.Event{Event: onboard.EventRecovered, Tenant: "acme", At: time.Now()})
	if third := recv(t, ch); third.header.Get("webhook-id") == first.header.Get("webhook-id") {
		t.Fatal("two events share an id")
	}
}
