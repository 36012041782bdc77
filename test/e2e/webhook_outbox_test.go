package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// hookReceiver is a webhook receiver on a fixed loopback port that can be
// down (connection refused) and come back on the same port. It records
// every request.
type hookReceiver struct {
	addr string

	mu      sync.Mutex
	srv     *http.Server
	got     []hookDelivery
	changed chan struct{} // closed and replaced on every request
	// hanging: requests are read and never answered (until the sender
	// gives up); their ids go to hung, not got.
	hanging bool
	hung    []string
}

type hookDelivery struct {
	id, typ, tenant string
	body            []byte
	header          http.Header
	at              time.Time
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{addr: freeAddr(t), changed: make(chan struct{})}
	t.Cleanup(h.down)
	return h
}

func (h *hookReceiver) URL() string { return "http://" + h.addr + "/hook" }

func (h *hookReceiver) up(t *testing.T) {
	t.Helper()
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger a moment after down
		if l, err = net.Listen("tcp", h.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("receiver cannot listen on %s again: %v", h.addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(h.serve), ReadHeaderTimeout: 5 * time.Second}
	h.mu.Lock()
	h.srv = srv
	h.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

func (h *hookReceiver) down() {
	h.mu.Lock()
	srv := h.srv
	h.srv, h.hanging = nil, false
	h.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// hang makes the receiver listen but never answer.
func (h *hookReceiver) hang(t *testing.T) {
	h.mu.Lock()
	h.hanging = true
	h.mu.Unlock()
	h.up(t)
}

// hungIDs are the ids of the requests left unanswered.
func (h *hookReceiver) hungIDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.hung)
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	hanging := h.hanging
	if hanging {
		h.hung = append(h.hung, r.Header.Get("webhook-id"))
	}
	h.mu.Unlock()
	if hanging {
		<-r.Context().Done() // the sender's timeout, or down()
		return
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var p struct {
		Type string
		Data struct{ Tenant string }
	}
	_ = json.Unmarshal(b, &p)
	h.mu.Lock()
	h.got = append(h.got, hookDelivery{id: r.Header.Get("webhook-id"), typ: p.Type, tenant: p.Data.Tenant, body: b, header: r.Header.Clone(), at: time.Now()})
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// deliveries returns every request so far and a channel closed on the
// next one.
func (h *hookReceiver) deliveries() ([]hookDelivery, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got), h.changed
}

// waitUnique waits until n distinct event ids arrived (bounded by
// timeout) and returns every request.
func (h *hookReceiver) waitUnique(t *testing.T, n int, timeout time.Duration) []hookDelivery {
	t.Helper()
	deadline := time.After(timeout)
	for {
		got, changed := h.deliveries()
		ids := map[string]bool{}
		for _, d := range got {
			ids[d.id] = true
		}
		if len(ids) >= n {
			return got
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%d distinct webhook events within %v, want %d", len(ids), timeout, n)
		}
	}
}

// webhookSecrets: the current secret and the next one (rotation).
var (
	webhookSecret1 = "whsec_" + base64.StdEncoding.EncodeToString([]byte("e2e-webhook-secret-one-32-bytes!"))
	webhookSecret2 = "whsec_" + base64.StdEncoding.EncodeToString([]byte("e2e-webhook-secret-two-32-bytes!"))
)

// webhookEnv are the webhook options of the tests: a fast schedule (15
// attempts over about a minute), short lease and poll.
func webhookEnv(url, schedule string) []string {
	return []string{
		"LSPROXY_WEBHOOK_URL", url,
		"LSPROXY_WEBHOOK_SECRET", webhookSecret1,
		"LSPROXY_WEBHOOK_SECRETS", webhookSecret2,
		"LSPROXY_WEBHOOK_RETRY_SCHEDULE", schedule,
		"LSPROXY_WEBHOOK_TIMEOUT", "1s",
		"LSPROXY_WEBHOOK_LEASE", "2s",
		"LSPROXY_WEBHOOK_POLL_INTERVAL", "200ms",
		"LSPROXY_INVALID_GRANT_GUARD_THRESHOLD", "-1", // many tenants are revoked on purpose
	}
}

// startSentinelRedis runs a master, a replica and a sentinel (down-after
// 1 s) and returns the master, the replica, the sentinel and a func naming
// the current master.
func startSentinelRedis(t *testing.T) (master, replica, sen *testredis.Server, masterAddr func() string) {
	t.Helper()
	ctx := context.Background()
	master = testredis.Start(t, "--repl-diskless-sync-delay", "0")
	replica = testredis.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port()))
	if !eventually(10*time.Second, func() bool {
		info, _ := replica.Client().Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	}) {
		t.Fatal("the replica did not connect to the master")
	}
	sen = testredis.StartSentinel(t, "mymaster", master)
	sc := sen.Client()
	for _, kv := range [][2]string{{"down-after-milliseconds", "1000"}, {"failover-timeout", "10000"}} {
		if err := sc.Do(ctx, "SENTINEL", "SET", "mymaster", kv[0], kv[1]).Err(); err != nil {
			t.Fatalf("SENTINEL SET %s: %v", kv[0], err)
		}
	}
	if !eventually(15*time.Second, func() bool {
		r, _ := sc.Do(ctx, "SENTINEL", "REPLICAS", "mymaster").Slice()
		return len(r) == 1
	}) {
		t.Fatal("the sentinel did not discover the replica")
	}
	masterAddr = func() string {
		r, err := sc.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster").StringSlice()
		if err != nil || len(r) != 2 {
			return ""
		}
		return r[0] + ":" + r[1]
	}
	return master, replica, sen, masterAddr
}

// outboxView is GET /admin/webhooks/events?state=... on p.
func outboxView(t *testing.T, p *proc, state string) (control.WebhookEventsView, int) {
	t.Helper()
	r := p.admin(t, http.MethodGet, "/admin/webhooks/events?state="+state, nil)
	var v control.WebhookEventsView
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &v); err != nil {
			t.Fatalf("outbox view: %v: %s", err, r.Body)
		}
	}
	return v, r.Status
}

// flag revokes tenant's grant at the emulator and forces a refresh through
// p: the tenant is flagged (409).
func flagThrough(t *testing.T, p *proc, emu *upstream, tenant string) {
	t.Helper()
	emu.Revoke(tenant)
	if r := p.admin(t, http.MethodPost, "/admin/tenants/"+tenant+"/refresh", nil); r.Status != http.StatusConflict {
		t.Fatalf("refresh of revoked %s: %d %s, want 409", tenant, r.Status, r.Body)
	}
}

// TestWebhookOutboxThroughBinary: three replicas on Redis behind Sentinel,
// the webhook receiver down. 20 tenants are flagged (through two
// replicas), the receiver hangs until requests are in flight, the replica
// that flagged half of them is SIGKILLed (holding claims), every
// tenant recovers by re-authorizing (through the third), 5 are flagged
// again, the Redis master is SIGKILLed and Sentinel fails over, and the 5
// recover. Then the receiver comes back: every event arrives (none
// missing, in order per tenant; duplicates allowed and counted), every
// request verifies with the official Standard Webhooks library under
// either configured secret, and the outbox drains to 0 with no dead
// letters.
func TestWebhookOutboxThroughBinary(t *testing.T) {
	master, replica, sen, masterAddr := startSentinelRedis(t)
	recv := newHookReceiver(t) // down: nothing listens yet
	// E2E_WEBHOOK_DOWN (e.g. 10m, the issue's figure) keeps the
	// receiver down that much longer; by default the scenario's own few
	// seconds (CI time). The schedule outlasts it.
	extraDown := time.Duration(0)
	if v := os.Getenv("E2E_WEBHOOK_DOWN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("E2E_WEBHOOK_DOWN=%q: %v", v, err)
		}
		extraDown = d
	}
	schedule := "200ms,500ms" + strings.Repeat(",1s", 60+int(extraDown/time.Second))

	var emu *upstream
	var env map[string]string
	b := startProxyAt(t, func(controlAddr string) map[string]string {
		redirect := "http://" + controlAddr + "/oauth/callback"
		emu = startEmulator(t, emulator.Config{RedirectURL: redirect})
		env = with(baseEnv(emu), append(webhookEnv(recv.URL(), schedule),
			"LSPROXY_REDIS_SENTINEL_MASTER", "mymaster", "LSPROXY_REDIS_SENTINEL_ADDRS", sen.Addr,
			"LSPROXY_REDIRECT_URL", redirect)...)
		return env
	})
	a, c := startProxy(t, env), startProxy(t, env)

	ids := tenantIDs("hook", 20)
	for _, id := range ids {
		b.importTenant(t, id, emu.IssueGrant(id))
	}
	want := map[string][]string{}
	note := func(id, typ string) { want[id] = append(want[id], typ) }

	// 1. Every tenant flagged, half through a, half through c.
	for i, id := range ids {
		flagThrough(t, []*proc{a, c}[i%2], emu, id)
		note(id, "tenant.flagged")
	}
	if !eventually(10*time.Second, func() bool { v, code := outboxView(t, b, "queued"); return code == 200 && v.Queued >= 20 }) {
		v, _ := outboxView(t, b, "queued")
		t.Fatalf("outbox holds %d events after 20 flags, want 20", v.Queued)
	}
	failed, _ := outboxView(t, b, "failed")
	// 2. The receiver hangs (accepts, never answers) until a has requests
	// in flight, then a dies holding their claims: the others take them
	// over once the lease (2 s) ends. Then the receiver is down.
	recv.hang(t)
	if !eventually(10*time.Second, func() bool { return len(recv.hungIDs()) > 0 }) {
		t.Fatal("no request reached the hanging receiver")
	}
	a.Kill()
	recv.down()
	inFlight := len(recv.hungIDs())
	// 3. Every tenant re-authorizes (through b).
	for _, id := range ids {
		emu.Approve(id)
		onboard(t, b, id)
		note(id, "tenant.recovered")
	}
	// 4. Five are flagged again, through c.
	for _, id := range ids[:5] {
		flagThrough(t, c, emu, id)
		note(id, "tenant.flagged")
	}
	if !eventually(10*time.Second, func() bool { v, code := outboxView(t, b, "queued"); return code == 200 && v.Queued >= 45 }) {
		v, _ := outboxView(t, b, "queued")
		t.Fatalf("outbox holds %d events, want 45", v.Queued)
	}
	// 5. The Redis master dies; Sentinel promotes the replica.
	killAt := time.Now()
	master.Kill()
	if !eventually(20*time.Second, func() bool { return masterAddr() == replica.Addr }) {
		t.Fatalf("no failover to %s within 20 s (sentinel says %q)", replica.Addr, masterAddr())
	}
	failover := time.Since(killAt)
	if !eventually(15*time.Second, func() bool { _, code := outboxView(t, b, "queued"); return code == 200 }) {
		t.Fatal("the admin API does not read the outbox after the failover")
	}
	if v, _ := outboxView(t, b, "queued"); v.Queued < 45 {
		t.Fatalf("after the failover the outbox holds %d events, want 45 (events lost with the master)", v.Queued)
	}
	// 6. The five recover, through b, on the new master (b's connections
	// may take a moment to follow the failover: the link is asked again).
	for _, id := range ids[:5] {
		emu.Approve(id)
		var link string
		if !eventually(15*time.Second, func() bool {
			r := b.admin(t, http.MethodPost, "/admin/tenants/"+id+"/authorize", nil)
			link = r.str("authorize_url")
			return r.Status == http.StatusOK && link != ""
		}) {
			t.Fatalf("no authorize link for %s after the failover", id)
		}
		if r, final := followLink(t, link); r.Status != http.StatusOK || final.Path != "/oauth/callback" {
			t.Fatalf("onboarding %s after the failover: %d at %s: %s", id, r.Status, final.Path, r.Body)
		}
		note(id, "tenant.recovered")
	}
	if got, _ := recv.deliveries(); len(got) != 0 {
		t.Fatalf("%d deliveries while the receiver was down", len(got))
	}

	time.Sleep(extraDown) // the optional longer outage (0 by default)
	// 7. The receiver is back.
	upAt := time.Now()
	recv.up(t)
	total := 0
	for _, w := range want {
		total += len(w)
	}
	got := recv.waitUnique(t, total, 30*time.Second)
	arrived := time.Since(upAt)
	var queued control.WebhookEventsView
	if !eventually(10*time.Second, func() bool {
		var code int
		queued, code = outboxView(t, b, "queued")
		return code == 200 && queued.Queued == 0
	}) {
		t.Fatalf("the outbox did not drain: %d queued", queued.Queued)
	}
	drained := time.Since(upAt)
	if queued.Dead != 0 {
		t.Errorf("%d dead letters, want 0", queued.Dead)
	}

	// Every request verifies under either secret; dedup by id; per tenant
	// in order.
	wh1, err1 := standardwebhooks.NewWebhook(webhookSecret1)
	wh2, err2 := standardwebhooks.NewWebhook(webhookSecret2)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	order := map[string][]string{}
	dups := 0
	for _, d := range got {
		if err := wh1.Verify(d.body, d.header); err != nil {
			t.Errorf("event %s: secret 1 does not verify: %v", d.id, err)
		}
		if err := wh2.Verify(d.body, d.header); err != nil {
			t.Errorf("event %s: secret 2 does not verify: %v", d.id, err)
		}
		if seen[d.id] {
			dups++
			continue
		}
		seen[d.id] = true
		order[d.tenant] = append(order[d.tenant], d.typ)
	}
	for _, id := range ids {
		if !slices.Equal(order[id], want[id]) {
			t.Errorf("tenant %s: events %v, want %v", id, order[id], want[id])
		}
	}
	if len(seen) != total {
		t.Errorf("%d distinct events, want %d", len(seen), total)
	}
	t.Logf("webhook outbox: %d events (%d failed before the receiver came back, sample; %d requests in flight when a replica was killed), "+
		"%d duplicates; failover %v; all arrived %v and the outbox drained %v after the receiver returned",
		total, len(failed.Events), inFlight, dups, failover.Round(time.Millisecond), arrived.Round(time.Millisecond), drained.Round(time.Millisecond))

	// Metrics: the outbox gauges read 0.
	r, err := do(context.Background(), http.MethodGet, b.ControlURL+"/metrics", nil, nil)
	if err != nil || !strings.Contains(string(r.Body), `lsproxy_webhook_outbox_events{state="queued"} 0`) {
		t.Errorf("metrics: %v\n%s", err, grepLines(string(r.Body), "lsproxy_webhook"))
	}
	for _, p := range []*proc{b, c} {
		if code := p.Term(30 * time.Second); code != 0 {
			t.Errorf("replica exited %d", code)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestWebhookDeadLetterRedeliverThroughBinary: with a two-retry schedule
// and the receiver down, events become dead letters; the CLI lists them
// (lsproxy webhooks list) and redelivers them (--all) once the receiver is
// back: they arrive with their original ids, and the outbox is empty.
func TestWebhookDeadLetterRedeliverThroughBinary(t *testing.T) {
	recv := newHookReceiver(t)
	emu := startEmulator(t, emulator.Config{})
	env := with(baseEnv(emu), append(webhookEnv(recv.URL(), "100ms,100ms"), "LSPROXY_DATA_DIR", t.TempDir())...)
	p := startProxy(t, env)
	ids := tenantIDs("dead", 3)
	for _, id := range ids {
		p.importTenant(t, id, emu.IssueGrant(id))
		flagThrough(t, p, emu, id)
	}
	var dead control.WebhookEventsView
	if !eventually(15*time.Second, func() bool {
		dead, _ = outboxView(t, p, "dead")
		return dead.Dead == 3
	}) {
		t.Fatalf("dead letters: %+v, want 3", dead)
	}
	for _, e := range dead.Events {
		if e.State != "dead" || e.Attempts != 3 || e.LastError == "" || e.Type != "tenant.flagged" {
			t.Errorf("dead letter %+v", e)
		}
	}
	cli := with(env, "LSPROXY_ADMIN_URL", p.ControlURL)
	code, out, errOut := runMigrateCLI(t, cli, "webhooks", "list")
	if code != 0 || strings.Count(out, "tenant.flagged") != 3 || !strings.Contains(out, "0 queued") || !strings.Contains(out, "3 dead") {
		t.Fatalf("webhooks list: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, out, _ := runMigrateCLI(t, cli, "webhooks", "redeliver", "evt_nope"); code != 3 {
		t.Errorf("redeliver of an unknown event: exit %d, want 3: %s", code, out)
	}
	if code, _, _ := runMigrateCLI(t, cli, "webhooks", "redeliver"); code != 2 {
		t.Errorf("redeliver without an id or --all: exit %d, want 2", code)
	}
	recv.up(t)
	code, out, errOut = runMigrateCLI(t, cli, "webhooks", "redeliver", "--all")
	if code != 0 || !strings.Contains(out, "3 event(s) redelivered") {
		t.Fatalf("webhooks redeliver --all: exit %d\n%s\n%s", code, out, errOut)
	}
	got := recv.waitUnique(t, 3, 15*time.Second)
	want := map[string]bool{}
	for _, e := range dead.Events {
		want[e.ID] = true
	}
	for _, d := range got {
		if !want[d.id] {
			t.Errorf("delivered %s, not one of the dead letters", d.id)
		}
	}
	if !eventually(5*time.Second, func() bool { v, _ := outboxView(t, p, "queued"); return v.Queued == 0 && v.Dead == 0 }) {
		t.Error("outbox not empty after the redelivery")
	}
}
