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
	"errors"
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
	"github.com/lsproxy/lsproxy/store"
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
	// DefaultWebhookTimeout bounds one delivery attempt (Standard
	// Webhooks: 15 s).
	DefaultWebhookTimeout = 15 * time.Second
	// DefaultWebhookLease is how long a replica holds a claimed event
	// before any other may take it over.
	DefaultWebhookLease = time.Minute
	// DefaultWebhookPoll is how often every replica looks for due events
	// (an event written by this process is tried at once).
	DefaultWebhookPoll = time.Second
	// DefaultWebhookConcurrency bounds parallel deliveries per process
	// (events of different tenants).
	DefaultWebhookConcurrency = 8
	// DefaultWebhookQueueSize bounds events waiting to be written to the
	// outbox (the store unreachable); when full, Notify drops the event.
	DefaultWebhookQueueSize = 1024
	maxRetryAfter           = time.Hour
)

// DefaultWebhookSchedule is the wait after each failed attempt, the
// Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h:
// 8 attempts over about 27.5 h); each wait is drawn within ±20 %. After
// the last wait's attempt fails the event is a dead letter.
var DefaultWebhookSchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

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

// EventData is the "data" object of a webhook payload.
type EventData struct {
	Tenant string `json:"tenant,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Payload is the JSON body of a webhook POST: the Standard Webhooks
// fields type, timestamp (RFC 3339, UTC) and data, and the fields of
// earlier versions (id, event, tenant, reason, at), deprecated, sent for
// one more release.
type Payload struct {
	Type      string    `json:"type"`
	Timestamp string    `json:"timestamp"`
	Data      EventData `json:"data"`

	ID     string `json:"id"`
	Event  string `json:"event"`
	Tenant string `json:"tenant"`
	Reason string `json:"reason"`
	At     string `json:"at"`
}

// NewPayload is ev's body.
func NewPayload(ev Event) Payload {
	at := ev.At.UTC()
	return Payload{
		Type: ev.Event, Timestamp: at.Format(time.RFC3339Nano), Data: EventData{Tenant: ev.Tenant, Reason: ev.Reason},
		ID: ev.ID, Event: ev.Event, Tenant: ev.Tenant, Reason: ev.Reason, At: at.Format(time.RFC3339),
	}
}

// Notifier delivers tenant events to a webhook URL through the store's
// outbox (store.Outbox): Notify writes the event there (retrying while the
// store is unreachable), and every replica's Notifier claims due events,
// POSTs them and records the outcome, so an event survives a receiver
// that is down for a day, a deploy and the death of the replica that saw
// it. Delivery is at least once (the event id is the webhook-id: receivers
// drop ids they have seen) and, per tenant, in the order Notify was
// called: a tenant's next event waits until the one before it was
// delivered or became a dead letter.
//
// Each POST carries the Payload and the Standard Webhooks headers
// (https://www.standardwebhooks.com)
//
//	webhook-id:        the event id, the same on every attempt
//	webhook-timestamp: Unix seconds when the attempt was sent
//	webhook-signature: v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>
//
// with one space-separated v1 signature per secret (Secret, then Secrets:
// rotation), key being the base64-decoded part after "whsec_" of a secret
// in the Standard Webhooks form, else the secret's bytes; and, for
// receivers of earlier versions (deprecated), X-Lsproxy-Event,
// X-Lsproxy-Timestamp and X-Lsproxy-Signature: sha256=<hex
// HMAC-SHA256(Secret, timestamp + "." + body)>. Signatures only when a
// secret is set. A 2xx answer is delivered; anything else (and no answer
// within Timeout) is retried after the next wait of Schedule (a 429's
// Retry-After, up to an hour, when longer); once Schedule is used up the
// event is buried in the dead-letter list, from which an operator
// redelivers it (admin API, CLI, console).
//
// Set the fields, then call Start once. Notify is safe for concurrent use,
// also before Start (events wait in memory) and after the context ends
// (events are dropped).
type Notifier struct {
	// URL receives the POSTs. Required.
	URL string
	// Secret keys the first signature and the deprecated
	// X-Lsproxy-Signature; "" = unsigned (not recommended).
	Secret string
	// Secrets are further secrets, each adding a signature (a receiver
	// accepts any one it knows: rotate by adding the new secret here,
	// switching receivers, then dropping the old one).
	Secrets []string
	// Outbox keeps the events. Required.
	Outbox store.Outbox
	// Client sends the requests; nil = a client with Timeout. Its
	// redirects are not followed.
	Client *http.Client
	// Timeout bounds one attempt; 0 = DefaultWebhookTimeout (15 s).
	Timeout time.Duration
	// Schedule is the wait after failed attempt n (1-based); nil =
	// DefaultWebhookSchedule. Each wait is drawn within ±20 %.
	Schedule []time.Duration
	// Lease, Poll, Concurrency: see the Default* constants.
	Lease       time.Duration
	Poll        time.Duration
	Concurrency int
	// QueueSize bounds events not yet written to the outbox; 0 =
	// DefaultWebhookQueueSize.
	QueueSize int
	// Logger; nil = no logging. Logs name the event and tenant, never a
	// secret, a signature or the URL's query.
	Logger *zap.Logger
	// Now is the clock; nil = time.Now.
	Now func() time.Time

	once    sync.Once
	queue   chan Event
	wake    chan struct{}
	log     *zap.Logger
	started atomic.Bool
	done    chan struct{}

	dropped   atomic.Int64
	delivered atomic.Int64
	failed    atomic.Int64
	dead      atomic.Int64
}

func (n *Notifier) init() {
	n.once.Do(func() {
		size := n.QueueSize
		if size <= 0 {
			size = DefaultWebhookQueueSize
		}
		n.queue = make(chan Event, size)
		n.wake = make(chan struct{}, 1)
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

func (n *Notifier) now() time.Time {
	if n.Now != nil {
		return n.Now()
	}
	return time.Now()
}

// Start runs the outbox writer and the deliverer until ctx is done.
// Calls after the first do nothing. It panics without an Outbox.
func (n *Notifier) Start(ctx context.Context) {
	n.init()
	if n.Outbox == nil {
		panic("onboard: Notifier without an Outbox")
	}
	if !n.started.CompareAndSwap(false, true) {
		return
	}
	if n.Secret == "" && len(n.Secrets) == 0 {
		n.log.Warn("webhook secret is empty: notifications are not signed")
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); n.write(ctx) }()
	go func() { defer wg.Done(); n.deliverLoop(ctx) }()
	go func() { wg.Wait(); close(n.done) }()
}

// Done is closed when both goroutines have stopped (after Start's context
// ended). It never closes when Start was not called.
func (n *Notifier) Done() <-chan struct{} {
	n.init()
	return n.done
}

// Notify hands ev to the outbox writer without blocking (ID set to a
// random "evt_..." id when "", At to now when zero). When the in-memory
// queue is full (the store unreachable for long) the event is dropped and
// logged.
func (n *Notifier) Notify(ev Event) {
	n.init()
	if ev.ID == "" {
		ev.ID = newEventID()
	}
	if ev.At.IsZero() {
		ev.At = n.now()
	}
	select {
	case n.queue <- ev:
	default:
		n.dropped.Add(1)
		n.log.Warn("webhook queue full: event dropped", zap.String("event", ev.Event), zap.String("tenant", ev.Tenant))
	}
}

// Dropped, Delivered, Failed and Dead count events dropped before reaching
// the outbox, events delivered, failed attempts, and events buried, by
// this process.
func (n *Notifier) Dropped() int64   { return n.dropped.Load() }
func (n *Notifier) Delivered() int64 { return n.delivered.Load() }
func (n *Notifier) Failed() int64    { return n.failed.Load() }
func (n *Notifier) Dead() int64      { return n.dead.Load() }

// newEventID returns "evt_" and 16 random bytes in hex.
func newEventID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return "evt_" + hex.EncodeToString(b[:])
}

// write moves queued events into the outbox, in order, retrying each
// until the store takes it. When ctx ends, what is still queued gets one
// more try within a few seconds.
func (n *Notifier) write(ctx context.Context) {
	var held *Event // taken from the queue, not written yet when ctx ended
	defer func() {
		flush, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		lost := func(ev Event, err error) {
			n.dropped.Add(1)
			n.log.Error("webhook event lost at shutdown: not written to the outbox", zap.String("event", ev.Event),
				zap.String("tenant", ev.Tenant), zap.Error(err))
		}
		if held != nil {
			if err := n.add(flush, *held); err != nil {
				lost(*held, err)
			}
		}
		for {
			select {
			case ev := <-n.queue:
				if err := n.add(flush, ev); err != nil {
					lost(ev, err)
				}
			default:
				return
			}
		}
	}()
	for {
		var ev Event
		select {
		case <-ctx.Done():
			return
		case ev = <-n.queue:
		}
		wait := 100 * time.Millisecond
		for attempt := 1; ; attempt++ {
			err := n.add(ctx, ev)
			if err == nil {
				break
			}
			if errors.Is(err, store.ErrOutboxInvalid) { // retrying cannot help; the next event must not wait
				n.dropped.Add(1)
				n.log.Error("webhook event dropped: the outbox refuses it", zap.String("event", ev.Event), zap.Error(err))
				break
			}
			if ctx.Err() != nil {
				held = &ev
				return
			}
			if attempt == 1 || attempt%20 == 0 {
				n.log.Warn("webhook event not written to the outbox yet; retrying", zap.String("event", ev.Event),
					zap.String("tenant", ev.Tenant), zap.Int("attempt", attempt), zap.Error(err))
			}
			if !sleep(ctx, wait) {
				held = &ev
				return
			}
			wait = min(wait*2, 5*time.Second)
		}
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

func (n *Notifier) add(ctx context.Context, ev Event) error {
	body, err := json.Marshal(NewPayload(ev))
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return n.Outbox.OutboxAdd(actx, store.OutboxEvent{ID: ev.ID, Tenant: ev.Tenant, Type: ev.Event, Payload: body, CreatedAt: ev.At})
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (n *Notifier) lease() time.Duration {
	if n.Lease > 0 {
		return n.Lease
	}
	return DefaultWebhookLease
}

func (n *Notifier) poll() time.Duration {
	if n.Poll > 0 {
		return n.Poll
	}
	return DefaultWebhookPoll
}

func (n *Notifier) concurrency() int {
	if n.Concurrency > 0 {
		return n.Concurrency
	}
	return DefaultWebhookConcurrency
}

func (n *Notifier) schedule() []time.Duration {
	if n.Schedule != nil {
		return n.Schedule
	}
	return DefaultWebhookSchedule
}

// backoff is the wait after failed attempt (1-based), within ±20 % of the
// schedule's; ok false when the schedule is used up.
func (n *Notifier) backoff(attempt int) (time.Duration, bool) {
	s := n.schedule()
	if attempt < 1 || attempt > len(s) {
		return 0, false
	}
	d := s[attempt-1]
	if d <= 0 {
		return 0, true
	}
	return d - d/5 + rand.N(2*d/5+1), true
}

func (n *Notifier) client() *http.Client {
	timeout := n.Timeout
	if timeout <= 0 {
		timeout = DefaultWebhookTimeout
	}
	c := n.Client
	if c == nil {
		c = &http.Client{Timeout: timeout}
	}
	nr := *c
	nr.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &nr
}

// deliverLoop claims due events (on every Poll, and at once after this
// process wrote one) and delivers them, Concurrency at a time.
func (n *Notifier) deliverLoop(ctx context.Context) {
	client := n.client()
	tick := time.NewTicker(n.poll())
	defer tick.Stop()
	for {
		for {
			claimed := n.round(ctx, client)
			if ctx.Err() != nil {
				return
			}
			if claimed < n.concurrency() {
				break // nothing more due now
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.wake:
		}
	}
}

// round claims up to Concurrency events and delivers them in parallel.
// It returns how many it claimed.
func (n *Notifier) round(ctx context.Context, client *http.Client) int {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	evs, err := n.Outbox.OutboxClaim(cctx, n.now(), n.lease(), n.concurrency())
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("webhook outbox unavailable", zap.Error(err))
		}
		return 0
	}
	var wg sync.WaitGroup
	for _, ev := range evs {
		wg.Add(1)
		go func(ev store.OutboxEvent) {
			defer wg.Done()
			n.attempt(ctx, client, ev)
		}(ev)
	}
	wg.Wait()
	return len(evs)
}

// attempt sends ev once and records the outcome in the outbox.
func (n *Notifier) attempt(ctx context.Context, client *http.Client, ev store.OutboxEvent) {
	log := n.log.With(zap.String("event", ev.Type), zap.String("tenant", ev.Tenant), zap.String("id", ev.ID))
	status, retryAfter, err := n.send(ctx, client, ev)
	if ctx.Err() != nil {
		return // shutting down: the lease ends and a replica tries again
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	now := n.now()
	if err == nil && status >= 200 && status < 300 {
		n.delivered.Add(1)
		if derr := n.Outbox.OutboxDone(rctx, ev); derr != nil {
			log.Warn("webhook delivered but not recorded: it may be sent again", zap.Error(derr))
		}
		log.Debug("webhook delivered", zap.Int("attempt", ev.Attempts+1), zap.Int("status", status))
		return
	}
	n.failed.Add(1)
	why := errText(err)
	if err == nil {
		why = strconv.Itoa(status) + " " + http.StatusText(status)
	}
	wait, ok := n.backoff(ev.Attempts + 1)
	if !ok {
		n.dead.Add(1)
		if berr := n.Outbox.OutboxBury(rctx, ev, now, why); berr != nil {
			n.dead.Add(-1)
			log.Warn("webhook failed: not recorded", zap.Error(berr))
			return
		}
		log.Warn("webhook failed: dead letter (redeliver from the admin API)", zap.Int("attempts", ev.Attempts+1), zap.String("error", why))
		return
	}
	wait = max(wait, retryAfter)
	if rerr := n.Outbox.OutboxRetry(rctx, ev, now.Add(wait), why); rerr != nil {
		log.Warn("webhook attempt failed: not recorded", zap.Error(rerr))
		return
	}
	log.Info("webhook attempt failed: retrying", zap.Int("attempt", ev.Attempts+1), zap.String("error", why), zap.Duration("wait", wait))
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return httperr.NetReason(err)
}

// Signatures returns the webhook-signature value for body: one
// "v1,<signature>" per non-empty secret, space-separated.
func Signatures(secrets []string, id, timestamp string, body []byte) string {
	var sigs []string
	for _, s := range secrets {
		if s != "" {
			sigs = append(sigs, "v1,"+SignStandard(s, id, timestamp, body))
		}
	}
	return strings.Join(sigs, " ")
}

// send makes one attempt. status is 0 when no answer arrived.
func (n *Notifier) send(ctx context.Context, client *http.Client, ev store.OutboxEvent) (status int, retryAfter time.Duration, err error) {
	ts := strconv.FormatInt(n.now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(ev.Payload))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "lsproxy-webhook/2")
	req.Header.Set("webhook-id", ev.ID)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("X-Lsproxy-Event", ev.Type)
	req.Header.Set("X-Lsproxy-Timestamp", ts)
	if sig := Signatures(append([]string{n.Secret}, n.Secrets...), ev.ID, ts, ev.Payload); sig != "" {
		req.Header.Set("webhook-signature", sig)
	}
	if n.Secret != "" {
		req.Header.Set("X-Lsproxy-Signature", "sha256="+Sign(n.Secret, ts, ev.Payload))
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

// ParseSchedule parses a retry schedule, comma-separated durations
// ("5s,5m,30m"); "" is DefaultWebhookSchedule. Every wait must be
// positive.
func ParseSchedule(s string) ([]time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultWebhookSchedule, nil
	}
	var out []time.Duration
	for _, part := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("onboard: retry schedule entry %q is not a positive duration", part)
		}
		out = append(out, d)
	}
	return out, nil
}
