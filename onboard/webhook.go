package onboard

import (
	"bytes"
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/internal/httperr"
)

// Webhook event names.
const (
	EventFlagged   = "tenant.flagged"
	EventRecovered = "tenant.recovered"
	// EventConnected: a pending tenant's first authorization.
	EventConnected = "tenant.connected"
	// EventCandidateDropped: a re-authorization's grant was discarded
	// because identification showed another merchant account (Reason
	// says so; the served grant stays).
	EventCandidateDropped = "tenant.candidate_dropped"
)

// Webhook defaults for Notifier fields left zero.
const (
	DefaultWebhookAttempts  = 5
	DefaultWebhookQueueSize = 1024
	webhookTimeout          = 10 * time.Second
	maxRetryAfter           = 60 * time.Second
)

// Event is one webhook notification. Its JSON form is
// {"id": ..., "event": ..., "tenant": ..., "reason": ..., "at": RFC 3339 UTC}.
type Event struct {
	// ID identifies the event across retries (also the webhook-id
	// header), so a receiver can drop duplicates; Notify sets a random
	// "evt_..." id when it is "".
	ID     string
	Event  string    // EventFlagged or EventRecovered
	Tenant string    // tenant id
	Reason string    // why the tenant was flagged; "" for recoveries
	At     time.Time // when it happened
}

// MarshalJSON renders the event with "at" in RFC 3339 (seconds, UTC).
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ID     string `json:"id"`
		Event  string `json:"event"`
		Tenant string `json:"tenant"`
		Reason string `json:"reason"`
		At     string `json:"at"`
	}{e.ID, e.Event, e.Tenant, e.Reason, e.At.UTC().Format(time.RFC3339)})
}

// Notifier delivers tenant events to a webhook URL, in order, from one
// background goroutine. Each POST carries the JSON event and the Standard
// Webhooks headers (https://www.standardwebhooks.com)
//
//	webhook-id:        the event id, the same on every retry
//	webhook-timestamp: Unix seconds when the attempt was sent
//	webhook-signature: v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>
//
// where key is the base64-decoded part after "whsec_" of a Secret in the
// Standard Webhooks form, else Secret's bytes; and, for receivers of
// earlier versions (deprecated), X-Lsproxy-Event, X-Lsproxy-Timestamp and
// X-Lsproxy-Signature: sha256=<hex HMAC-SHA256(Secret, timestamp + "." +
// body)>. Signatures only when Secret is set. A receiver verifies the
// signature over the raw body, rejects stale timestamps and drops ids it
// has seen. A 2xx answer is delivered; 5xx, 429 and network errors are
// retried with Backoff (jittered) up to MaxAttempts; any other status is
// final. An event that cannot be delivered
// is logged and dropped: webhooks are a notification, not a queue of record.
//
// Set the fields, then call Start once. Notify is safe for concurrent use,
// also before Start (events wait in the queue) and after the context ends
// (events are dropped).
type Notifier struct {
	// URL receives the POSTs. Required.
	URL string
	// Secret keys the signature; "" = unsigned (not recommended).
	Secret string
	// Client sends the requests; nil = a client with a 10 s timeout. Its
	// redirects are not followed.
	Client *http.Client
	// Logger; nil = no logging. Logs name the event and tenant, never the
	// secret, the signature or the URL's query.
	Logger *zap.Logger
	// MaxAttempts per event; 0 = DefaultWebhookAttempts (5).
	MaxAttempts int
	// QueueSize bounds undelivered events; when full, Notify drops the
	// event (and logs it). 0 = DefaultWebhookQueueSize (1024).
	QueueSize int
	// Backoff is the wait after failed attempt n (1-based); nil =
	// exponential from 1 s, doubling, capped at 30 s, each wait drawn at
	// random from its upper half (so that many replicas' retries spread
	// out). A 429's Retry-After (up to 60 s) is honoured when longer.
	Backoff func(attempt int) time.Duration
	// Now stamps X-Lsproxy-Timestamp; nil = time.Now.
	Now func() time.Time

	once    sync.Once
	queue   chan Event
	log     *zap.Logger
	started atomic.Bool
	done    chan struct{}

	dropped   atomic.Int64
	delivered atomic.Int64
	failed    atomic.Int64
}

func (n *Notifier) init() {
	n.once.Do(func() {
		size := n.QueueSize
		if size <= 0 {
			size = DefaultWebhookQueueSize
		}
		n.queue = make(chan Event, size)
		n.done = make(chan struct{})
		n.log = n.Logger
		if n.log == nil {
			n.log = zap.NewNop()
		}
		n.log = n.log.With(zap.String("webhook_host", hostOf(n.URL)))
	})
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "invalid-url"
	}
	return u.Host
}

// Start runs the delivery goroutine until ctx is done; events still queued
// then are dropped. Calls after the first do nothing.
func (n *Notifier) Start(ctx context.Context) {
	n.init()
	if !n.started.CompareAndSwap(false, true) {
		return
	}
	if n.Secret == "" {
		n.log.Warn("webhook secret is empty: notifications are not signed")
	}
	go n.run(ctx)
}

// Done is closed when the delivery goroutine has stopped (after Start's
// context ended). It never closes when Start was not called.
func (n *Notifier) Done() <-chan struct{} {
	n.init()
	return n.done
}

// Notify queues ev without blocking. When the queue is full the event is
// dropped and logged.
func (n *Notifier) Notify(ev Event) {
	n.init()
	if ev.ID == "" {
		ev.ID = newEventID()
	}
	select {
	case n.queue <- ev:
	default:
		n.dropped.Add(1)
		n.log.Warn("webhook queue full: event dropped", zap.String("event", ev.Event), zap.String("tenant", ev.Tenant))
	}
}

// Dropped, Delivered and Failed count events dropped by a full queue,
// delivered, and given up after MaxAttempts or a final status.
func (n *Notifier) Dropped() int64   { return n.dropped.Load() }
func (n *Notifier) Delivered() int64 { return n.delivered.Load() }
func (n *Notifier) Failed() int64    { return n.failed.Load() }

func (n *Notifier) run(ctx context.Context) {
	defer close(n.done)
	for {
		select {
		case <-ctx.Done():
			if left := len(n.queue); left > 0 {
				n.log.Warn("webhook stopped with undelivered events", zap.Int("events", left))
			}
			return
		case ev := <-n.queue:
			n.deliver(ctx, ev)
		}
	}
}

func (n *Notifier) attempts() int {
	if n.MaxAttempts > 0 {
		return n.MaxAttempts
	}
	return DefaultWebhookAttempts
}

func (n *Notifier) backoff(attempt int) time.Duration {
	if n.Backoff != nil {
		return n.Backoff(attempt)
	}
	d := min(time.Second<<min(attempt-1, 5), 30*time.Second)
	return d/2 + rand.N(d/2+1)
}

// newEventID returns "evt_" and 16 random bytes in hex.
func newEventID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return "evt_" + hex.EncodeToString(b[:])
}

func (n *Notifier) client() *http.Client {
	c := n.Client
	if c == nil {
		c = &http.Client{Timeout: webhookTimeout}
	}
	nr := *c
	nr.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &nr
}

// deliver sends ev until delivered, final, out of attempts or ctx ends.
func (n *Notifier) deliver(ctx context.Context, ev Event) {
	body, err := json.Marshal(ev)
	if err != nil {
		n.failed.Add(1)
		n.log.Error("webhook event not encodable", zap.Error(err))
		return
	}
	log := n.log.With(zap.String("event", ev.Event), zap.String("tenant", ev.Tenant))
	client := n.client()
	maxAttempts := n.attempts()
	for attempt := 1; ; attempt++ {
		status, retryAfter, err := n.send(ctx, client, ev, body)
		switch {
		case err == nil && status >= 200 && status < 300:
			n.delivered.Add(1)
			log.Debug("webhook delivered", zap.Int("attempt", attempt), zap.Int("status", status))
			return
		case err == nil && status != http.StatusTooManyRequests && status < 500:
			n.failed.Add(1)
			log.Warn("webhook refused: not retried", zap.Int("status", status))
			return
		}
		if ctx.Err() != nil {
			n.failed.Add(1)
			log.Warn("webhook abandoned: shutting down", zap.Int("attempt", attempt))
			return
		}
		if attempt >= maxAttempts {
			n.failed.Add(1)
			log.Warn("webhook failed: giving up", zap.Int("attempts", attempt), zap.Int("status", status), zap.String("error", errText(err)))
			return
		}
		wait := max(n.backoff(attempt), retryAfter)
		log.Info("webhook attempt failed: retrying", zap.Int("attempt", attempt), zap.Int("status", status),
			zap.String("error", errText(err)), zap.Duration("wait", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			n.failed.Add(1)
			log.Warn("webhook abandoned: shutting down", zap.Int("attempt", attempt))
			return
		case <-t.C:
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return httperr.NetReason(err)
}

// send makes one attempt. status is 0 when no answer arrived.
func (n *Notifier) send(ctx context.Context, client *http.Client, ev Event, body []byte) (status int, retryAfter time.Duration, err error) {
	now := time.Now
	if n.Now != nil {
		now = n.Now
	}
	ts := strconv.FormatInt(now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "lsproxy-webhook/1")
	req.Header.Set("webhook-id", ev.ID)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("X-Lsproxy-Event", ev.Event)
	req.Header.Set("X-Lsproxy-Timestamp", ts)
	if n.Secret != "" {
		req.Header.Set("webhook-signature", "v1,"+SignStandard(n.Secret, ev.ID, ts, body))
		req.Header.Set("X-Lsproxy-Signature", "sha256="+Sign(n.Secret, ts, body))
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusTooManyRequests {
		if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
			retryAfter = min(time.Duration(s)*time.Second, maxRetryAfter)
		}
	}
	return resp.StatusCode, retryAfter, nil
}

// SignStandard returns the Standard Webhooks signature (the part of
// webhook-signature after "v1,"): base64 of HMAC-SHA256(key, id + "." +
// timestamp + "." + body), key being the base64-decoded rest of a "whsec_"
// secret, else the secret's bytes. Receivers compare it with hmac.Equal.
func SignStandard(secret, id, timestamp string, body []byte) string {
	key := []byte(secret)
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if k, err := base64.StdEncoding.DecodeString(rest); err == nil && len(k) > 0 {
			key = k
		}
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + timestamp + "."))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Sign returns the hex HMAC-SHA256 of timestamp + "." + body under secret:
// the value of the deprecated X-Lsproxy-Signature after "sha256=".
func Sign(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Webhook events of the mass-invalid_grant guard (Event.Tenant is empty).
const (
	EventGuardTripped = "invalid_grant_guard.tripped"
	EventGuardCleared = "invalid_grant_guard.cleared"
)

// GuardEvent is the webhook event for a guard that tripped or cleared.
func GuardEvent(tripped bool, tenants int, window time.Duration, at time.Time) Event {
	if !tripped {
		return Event{Event: EventGuardCleared, Reason: "invalid_grant answers back to normal", At: at}
	}
	return Event{Event: EventGuardTripped, At: at, Reason: fmt.Sprintf(
		"%d tenants rejected with invalid_grant within %s: flagging stopped, refresh tokens kept; check client id, secret, environment and token URL", tenants, window)}
}
