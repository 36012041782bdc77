package sim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/ratelimit"
	"github.com/lsproxy/lsproxy/store"
)

// simOptions are the fixed settings of every schedule.
type simOptions struct {
	// TokenTimeout, like every manager setting not named here, is the
	// default.
	TokenTimeout time.Duration
	// GuardWindow is shorter than the default (5 min) so that the guard
	// trips and clears within one schedule.
	GuardWindow time.Duration
	// FaultPhase: faults happen in [0, FaultPhase); then everything heals.
	FaultPhase time.Duration
	// Settle is the bound of invariant (d): FaultPhase + Settle after the
	// start every tenant is served or flagged by every replica.
	Settle time.Duration
	// Themes, when not empty, limits the faults a schedule picks from
	// (-sim.themes).
	Themes []string
}

func defaultOptions() simOptions {
	return simOptions{TokenTimeout: auth.DefaultTokenTimeout, GuardWindow: 2 * time.Minute,
		FaultPhase: 4 * time.Minute, Settle: 4 * time.Minute}
}

const guardThreshold = auth.DefaultGuardThreshold

// violation is a broken invariant.
type violation struct {
	inv string // "a" .. "e"
	at  time.Duration
	msg string
}

func (v violation) String() string {
	return fmt.Sprintf("(%s) at %s: %s", v.inv, fmtOffset(v.at), v.msg)
}

type traceLine struct {
	at   time.Duration
	f    string
	args []any
}

// world is one schedule's run.
type world struct {
	sc          *schedule
	opts        simOptions
	start       time.Time
	store       *memStore
	prov        *provider
	rateBackend ratelimit.Backend
	tenants     []string
	mix         atomic.Pointer[answerMix]
	// retrying counts the operator retries (POST .../retry) in progress
	// per process and tenant ("r0#1/t3"): their send of a flagged tenant's token is the
	// operator's decision (rule 15), not the protocol's.
	retrying sync.Map // tenant → *atomic.Int32

	mu         sync.Mutex
	procs      []*proc // current process of each slot; nil while down
	incs       []int
	misconfig  []bool
	imports    map[string]string // tenant → the body of its import PUT
	violations []violation
	trace      []traceLine
	healed     bool
}

func newWorld(sc *schedule, o simOptions) *world {
	w := &world{sc: sc, opts: o, start: time.Now(), rateBackend: ratelimit.NewMemory(),
		procs: make([]*proc, sc.replicas), incs: make([]int, sc.replicas), misconfig: make([]bool, sc.replicas),
		imports: map[string]string{}}
	w.store = newMemStore(w)
	w.prov = newProvider(w)
	for i := range sc.tenants {
		w.tenants = append(w.tenants, fmt.Sprintf("t%d", i))
	}
	m := sc.baseMix
	w.mix.Store(&m)
	return w
}

func (w *world) elapsed() time.Duration { return time.Since(w.start) }

func (w *world) ts(t time.Time) string { return fmtOffset(t.Sub(w.start)) }

// tracef records a trace line; it is formatted only when printed.
func (w *world) tracef(f string, args ...any) {
	w.mu.Lock()
	w.trace = append(w.trace, traceLine{at: w.elapsed(), f: f, args: args})
	w.mu.Unlock()
}

func (w *world) violatef(inv, f string, args ...any) {
	msg := fmt.Sprintf(f, args...)
	w.mu.Lock()
	w.violations = append(w.violations, violation{inv: inv, at: w.elapsed(), msg: msg})
	w.trace = append(w.trace, traceLine{at: w.elapsed(), f: "VIOLATION (%s): %s", args: []any{inv, msg}})
	w.mu.Unlock()
}

// traceText is the readable trace: the schedule, then every line.
func (w *world) traceText(limit int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	b.WriteString(w.sc.String())
	lines := w.trace
	if limit > 0 && len(lines) > limit {
		fmt.Fprintf(&b, "  … %d earlier lines (-sim.trace=0 prints all)\n", len(lines)-limit)
		lines = lines[len(lines)-limit:]
	}
	for _, l := range lines {
		fmt.Fprintf(&b, "%s  %s\n", fmtOffset(l.at), fmt.Sprintf(l.f, l.args...))
	}
	return b.String()
}

// hash01 maps the seed and parts to [0, 1): decisions taken inside the
// fakes depend on what happens, not on goroutine order.
func (w *world) hash01(parts ...any) float64 {
	h := fnv.New64a()
	var b [8]byte
	put := func(u uint64) {
		for i := range 8 {
			b[i] = byte(u >> (8 * i))
		}
		_, _ = h.Write(b[:])
	}
	put(w.sc.seed)
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			_, _ = h.Write([]byte(v))
		case int:
			put(uint64(v))
		case uint64:
			put(v)
		default:
			_, _ = fmt.Fprint(h, v)
		}
		_, _ = h.Write([]byte{0})
	}
	return float64(h.Sum64()>>11) / (1 << 53)
}

func (w *world) chance(p float64, parts ...any) bool { return w.hash01(parts...) < p }

func (w *world) between(lo, hi time.Duration, parts ...any) time.Duration {
	return lo + time.Duration(w.hash01(parts...)*float64(hi-lo))
}

func (w *world) pickAnswer(rt string, attempt int) int {
	m := *w.mix.Load()
	u := w.hash01("answer", rt, attempt) * m.total()
	for k, wt := range m {
		if u < wt {
			return k
		}
		u -= wt
	}
	return ansOK
}

func (w *world) answerDelay(kind int, rt string, attempt int) time.Duration {
	tt := w.opts.TokenTimeout
	switch kind {
	case ansSlowOK:
		return w.between(tt-2*time.Second, tt-200*time.Millisecond, "delay", rt, attempt)
	case ansTooSlow:
		return w.between(tt+500*time.Millisecond, tt+5*time.Second, "delay", rt, attempt)
	case ansResetAfterCommit:
		return w.between(0, 3*time.Second, "delay", rt, attempt)
	}
	return w.between(10*time.Millisecond, 400*time.Millisecond, "delay", rt, attempt)
}

func (w *world) retryAfter(rt string, attempt int) int {
	return 1 + int(w.hash01("retry-after", rt, attempt)*8)
}

func (w *world) accessLife(rt string) time.Duration {
	return w.between(60*time.Second, 300*time.Second, "life", rt).Round(time.Second)
}

// --- processes ---

// proc fields used only by the world.
type procRuntime struct {
	conn   *conn
	m      *auth.Manager
	cancel context.CancelFunc
	ctl    http.Handler
	armed  []event
}

func rtOf(p *proc) *procRuntime { return p.rt }

// startSlot starts a new process in slot.
func (w *world) startSlot(slot int) *proc {
	w.mu.Lock()
	if q := w.procs[slot]; q != nil {
		w.mu.Unlock()
		return q
	}
	w.incs[slot]++
	p := newProc(w, slot, w.incs[slot], w.sc.skews[slot])
	p.misconfigured = w.misconfig[slot]
	ctx, cancel := context.WithCancel(context.Background())
	pr := &procRuntime{conn: &conn{s: w.store, p: p}, cancel: cancel}
	p.rt = pr
	pr.m = auth.NewManager(pr.conn, w.oauthClient(p), auth.ManagerOptions{
		TokenTimeout: w.opts.TokenTimeout, GuardWindow: w.opts.GuardWindow, Now: p.now, LockTTL: w.sc.lockTTL,
		OnGuard: func(tripped bool, tenants int) {
			w.tracef("%s: guard tripped %v (%d tenants rejected within the window)", p.name, tripped, tenants)
		},
	})
	w.procs[slot] = p
	w.mu.Unlock()
	w.tracef("%s started (clock skew %s, misconfigured %v)", p.name, p.skew, p.misconfigured)
	go func() { _ = pr.m.Run(ctx) }()
	go (&auth.BackgroundRefresher{Manager: pr.m, Store: pr.conn}).Run(ctx)
	for _, t := range w.tenants {
		go w.drive(ctx, p, t)
	}
	return p
}

func (w *world) current(slot int) *proc {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.procs[slot]
}

// kill ends p at once (SIGKILL): its goroutines end at their next contact
// with a fake, dropping their effects.
func (w *world) kill(p *proc, cause string) {
	w.mu.Lock()
	if w.procs[p.slot] == p {
		w.procs[p.slot] = nil
	}
	w.mu.Unlock()
	p.set(func() { p.dead, p.exitCause, p.diedAt = true, cause, time.Now() })
	rtOf(p).cancel()
	w.tracef("%s ended (%s)", p.name, cause)
}

// shutdown stops p gracefully as cmd/lsproxy serve does: background work
// stops, running refreshes get auth.ShutdownBudget, then the process exits.
// restart (if > 0) starts the slot again that long after the exit.
func (w *world) shutdown(p *proc, restart time.Duration) {
	w.mu.Lock()
	if w.procs[p.slot] == p {
		w.procs[p.slot] = nil
	}
	w.mu.Unlock()
	pr := rtOf(p)
	pr.cancel()
	w.tracef("%s shutting down", p.name)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), auth.ShutdownBudget(w.opts.TokenTimeout))
		err := pr.m.FinishRefreshes(ctx)
		cancel()
		if err != nil {
			w.tracef("%s: shutdown budget ended with refreshes running", p.name)
		}
		w.kill(p, "shutdown")
		if restart > 0 {
			time.Sleep(restart)
			w.startSlot(p.slot)
		}
	}()
}

// restartLater starts slot after d unless something else started it.
func (w *world) restartLater(slot int, d time.Duration) {
	go func() {
		time.Sleep(d)
		w.startSlot(slot)
	}()
}

// fire runs the events armed on p for trig (called by the fakes at that
// point, so the fault starts exactly there).
func (p *proc) fire(trig trigger) {
	pr := p.rt
	if pr == nil {
		return
	}
	p.mu.Lock()
	var due []event
	keep := pr.armed[:0]
	for _, e := range pr.armed {
		if e.trig == trig {
			due = append(due, e)
		} else {
			keep = append(keep, e)
		}
	}
	pr.armed = keep
	p.mu.Unlock()
	for _, e := range due {
		p.w.tracef("%s: trigger %s fires: %s", p.name, trig, e)
		p.w.apply(e, p)
	}
}

// --- events ---

// apply carries out e on p (nil: the slot's current process).
func (w *world) apply(e event, p *proc) {
	if p == nil && e.slot >= 0 && e.slot < len(w.procs) {
		p = w.current(e.slot)
	}
	switch e.kind {
	case evPartition:
		if p == nil {
			return
		}
		p.set(func() { p.part, p.nParts = e.mode, p.nParts+1 })
		w.store.mu.Lock()
		w.store.dropSubsLocked(func(s *sub) bool { return s.p == p })
		w.store.mu.Unlock()
		w.tracef("%s cut off from the store (%s) for %s", p.name, e.mode, e.dur)
		go func() {
			time.Sleep(e.dur)
			p.set(func() {
				if p.nParts--; p.nParts <= 0 {
					p.part, p.nParts = faultNone, 0
				}
			})
			w.tracef("%s: store partition healed", p.name)
		}()
	case evFlaky:
		if p == nil {
			return
		}
		p.set(func() { p.flaky = e.p })
		go func() {
			time.Sleep(e.dur)
			p.set(func() { p.flaky = 0 })
		}()
	case evPause:
		if p == nil {
			return
		}
		p.mu.Lock()
		recent := time.Since(p.stalledUntil) < stallGap
		p.mu.Unlock()
		if recent {
			// An answer stall ends within the cover on purpose; another
			// pause on top of it would hold the holder past any lease.
			w.tracef("%s: pause left out (an answer stall ended less than %s ago)", p.name, stallGap)
			return
		}
		w.pause(p, e.dur)
	case evAnswerStall:
		if p == nil {
			return
		}
		p.mu.Lock()
		tenant, sent, recent := p.answered, p.answeredSent, time.Since(p.stalledUntil) < stallGap
		p.mu.Unlock()
		if recent {
			// One stall at a time: a second right after the first would
			// hold a holder past any lease (a pause theme's business).
			w.tracef("%s: answer stall left out (stalled %s ago)", p.name, stallGap)
			return
		}
		// Resumed e.dur before the end of sendCover: after a lease of
		// lock_ttl and the grace, within the one rule 17 gives.
		stall := max(time.Until(sent.Add(w.sendCover()-e.dur)), 100*time.Millisecond)
		p.set(func() { p.stalledUntil = time.Now().Add(stall) })
		w.pause(p, stall)
		if q := w.current((p.slot + 1) % len(w.procs)); q != nil && q != p && tenant != "" {
			w.tracef("%s: force-refreshes %s while %s stalls", q.name, tenant, p.name)
			go w.admin(q, evForce, tenant)
		}
	case evKill:
		if p == nil {
			return
		}
		w.kill(p, "kill")
		w.restartLater(p.slot, e.dur)
	case evShutdown:
		if p == nil {
			return
		}
		w.shutdown(p, e.dur)
	case evStall:
		w.store.stallReplication(true)
		w.tracef("store: replication stalled")
		go func() {
			time.Sleep(e.dur)
			w.store.failover(nil)
		}()
	case evFailover:
		gen := w.store.failover(e.group)
		if len(e.group) > 0 {
			go func() {
				time.Sleep(e.dur)
				w.store.healSplit(gen)
			}()
		}
	case evLostPub:
		w.store.mu.Lock()
		w.store.lostPub = e.p
		w.store.mu.Unlock()
		go func() {
			time.Sleep(e.dur)
			w.store.mu.Lock()
			w.store.lostPub = 0
			w.store.mu.Unlock()
		}()
	case evProvider:
		m := e.mix
		w.mix.Store(&m)
		w.tracef("token endpoint now answers: %s", m)
		go func() {
			time.Sleep(e.dur)
			w.mu.Lock()
			healed := w.healed
			w.mu.Unlock()
			if !healed {
				b := w.sc.baseMix
				w.mix.Store(&b)
				w.tracef("token endpoint calm again")
			}
		}()
	case evMisconfig:
		for _, s := range e.group {
			w.mu.Lock()
			w.misconfig[s] = true
			w.mu.Unlock()
			if q := w.current(s); q != nil {
				w.shutdown(q, 500*time.Millisecond)
			}
		}
		go func() {
			time.Sleep(e.dur)
			w.fixConfig(e.group)
		}()
	case evRevoke:
		w.prov.revoke(w.tenants[e.tenant])
		w.tracef("provider: merchant of %s revoked the grant", w.tenants[e.tenant])
	case evReauth:
		w.reauth(p, w.tenants[e.tenant])
	case evPutRetry, evForce, evRetry, evRekey:
		if p == nil {
			return
		}
		go w.admin(p, e.kind, w.tenants[e.tenant])
	}
}

// fixConfig restarts misconfigured slots with the right credentials.
func (w *world) fixConfig(slots []int) {
	for _, s := range slots {
		w.mu.Lock()
		was := w.misconfig[s]
		w.misconfig[s] = false
		w.mu.Unlock()
		if !was {
			continue
		}
		if q := w.current(s); q != nil {
			w.tracef("r%d: configuration fixed: restart", s)
			w.shutdown(q, 500*time.Millisecond)
		}
	}
}

// reauth is the merchant authorizing again (what onboarding writes): only
// for a flagged tenant without a refresh in flight.
func (w *world) reauth(p *proc, tenant string) {
	if p == nil {
		return
	}
	pr := rtOf(p)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cur, err := pr.conn.Get(ctx, tenant)
		if err != nil || cur.Status != store.StatusReauthorizationRequired || cur.RefreshInFlight {
			return
		}
		life := w.between(60*time.Second, 300*time.Second, "reauth", tenant, w.elapsed())
		rt, at := w.prov.newChain(tenant, life)
		_, err = store.Update(ctx, pr.conn, tenant, func(t *store.Tenant) error {
			if t.Status != store.StatusReauthorizationRequired || t.RefreshInFlight {
				return store.ErrSkip
			}
			t.Authorize(store.Tokens{Access: at, AccessExpiry: p.now().Add(life), Refresh: rt}, p.now())
			return nil
		})
		w.tracef("%s: %s authorized again (new grant %s): %v", p.name, tenant, rt, errText(err))
	}()
}

const adminToken = "sim-admin"

func (w *world) handler(p *proc) http.Handler {
	pr := rtOf(p)
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr.ctl == nil {
		cs := &control.Server{Store: pr.conn, Tokens: pr.m, AdminToken: adminToken, Provider: "sim",
			Gatherer: prometheus.NewRegistry(), Now: p.now}
		pr.ctl = cs.Handler()
	}
	return pr.ctl
}

// adminCall sends one admin request to p's control handler (no socket).
func (w *world) adminCall(p *proc, method, path, body string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	w.handler(p).ServeHTTP(rec, req)
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

func (w *world) admin(p *proc, kind eventKind, tenant string) {
	var code int
	switch kind {
	case evPutRetry:
		w.mu.Lock()
		body := w.imports[tenant]
		w.mu.Unlock()
		code, _ = w.adminCall(p, http.MethodPut, "/admin/tenants/"+tenant, body)
	case evForce:
		code, _ = w.adminCall(p, http.MethodPost, "/admin/tenants/"+tenant+"/refresh", "")
	case evRetry:
		if p.misconfigured {
			return // an operator retries on a correctly configured replica
		}
		n, _ := w.retrying.LoadOrStore(p.name+"/"+tenant, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		code, _ = w.adminCall(p, http.MethodPost, "/admin/tenants/"+tenant+"/retry", "")
		n.(*atomic.Int32).Add(-1)
	case evRekey:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := store.Update(ctx, rtOf(p).conn, tenant, func(*store.Tenant) error { return nil })
		w.tracef("%s: rekey rewrote %s: %v", p.name, tenant, errText(err))
		return
	}
	w.tracef("%s: admin %s %s: HTTP %d", p.name, kind, tenant, code)
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// drive is one tenant's traffic through p: a request every 1–8 s, and a
// Recover when the upstream would answer 401.
func (w *world) drive(ctx context.Context, p *proc, tenant string) {
	m := rtOf(p).m
	last := ""
	for i := 0; ; i++ {
		d := w.between(time.Second, 8*time.Second, "traffic", p.name, tenant, i)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		reads := rtOf(p).conn.getCount(tenant)
		tok, err := m.Token(rctx, tenant)
		if errors.Is(err, auth.ErrReauthorizationRequired) && rtOf(p).conn.getCount(tenant) == reads {
			w.checkTrust(p, tenant)
		}
		if err == nil && !w.served(p, tenant, tok.AccessToken) {
			tok, err = m.Recover(rctx, tenant, tok.AccessToken)
			if err == nil {
				w.served(p, tenant, tok.AccessToken)
			}
		}
		cancel()
		if e := errText(err); e != last {
			last = e
			w.tracef("%s: %s now answers: %s", p.name, tenant, e)
		}
	}
}

// trustSlack: how much later than cache_ttl after a lost notification a
// cached answer may still be served (timers, the answer in progress).
const trustSlack = 2 * time.Second

// checkTrust is invariant (f), bounded trust (rule 21): p answered that
// tenant requires reauthorization from its cache (no read of the record)
// although the record p's store holds is active and a notification that
// would have told p was lost more than cache_ttl ago.
func (w *world) checkTrust(p *proc, tenant string) {
	ms := w.store
	ms.mu.Lock()
	rec := ms.nodeFor(p).recs[tenant]
	lostAt, lost := ms.lostActive[tenant]
	since := ms.activeSince[tenant]
	ms.mu.Unlock()
	// The lost notification is of this active period's writes.
	if rec == nil || rec.Status != store.StatusActive || !lost || lostAt.Before(since) {
		return
	}
	if d := time.Since(lostAt); d > auth.DefaultCacheTTL+trustSlack {
		w.violatef("f", "%s answered %s requires reauthorization from its cache %s after the notification of its re-activation was lost (cache_ttl %s)",
			p.name, tenant, d.Round(time.Millisecond), auth.DefaultCacheTTL)
	}
}

// served checks a token p served for tenant (invariant e) and reports
// whether the upstream accepts it.
func (w *world) served(p *proc, tenant, at string) bool {
	owner, ok := w.prov.accessOK(at)
	switch {
	case owner == "":
		w.violatef("e", "%s served %s a token the provider never issued", p.name, tenant)
	case owner != tenant:
		w.violatef("e", "%s served %s a token of %s", p.name, tenant, owner)
	}
	return ok
}

// --- the run ---

// run plays the schedule inside the caller's synctest bubble and returns
// the violations found.
func (w *world) run() []violation {
	// Tenants are imported through the admin API of the first replica.
	first := w.startSlot(0)
	for _, t := range w.tenants {
		life := w.between(20*time.Second, 300*time.Second, "initial", t).Round(time.Second)
		rt, at := w.prov.newChain(t, life)
		body := fmt.Sprintf(`{"refresh_token":%q,"access_token":%q,"expires_in":%d}`, rt, at, int(life/time.Second))
		w.mu.Lock()
		w.imports[t] = body
		w.mu.Unlock()
		if code, msg := w.adminCall(first, http.MethodPut, "/admin/tenants/"+t, body); code != http.StatusCreated {
			panic(fmt.Sprintf("sim: import of %s: HTTP %d %s", t, code, msg))
		}
	}
	for s := 1; s < w.sc.replicas; s++ {
		w.startSlot(s)
	}
	for _, e := range w.sc.events {
		if d := e.at - w.elapsed(); d > 0 {
			time.Sleep(d)
		}
		w.tracef("event: %s", e)
		if e.trig != trigNone {
			if p := w.current(e.slot); p != nil {
				pr := rtOf(p)
				p.mu.Lock()
				pr.armed = append(pr.armed, e)
				p.mu.Unlock()
			}
			continue
		}
		w.apply(e, nil)
	}
	if d := w.opts.FaultPhase - w.elapsed(); d > 0 {
		time.Sleep(d)
	}
	w.heal()
	time.Sleep(w.opts.Settle)
	w.finalCheck()
	w.teardown()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]violation(nil), w.violations...)
}

// heal ends every fault: partitions, pauses, flaky calls, stalled
// replication and split brain, lost publishes, the endpoint's trouble,
// wrong configuration; armed triggers are dropped; stopped slots restart.
func (w *world) heal() {
	w.mu.Lock()
	w.healed = true
	procs := append([]*proc(nil), w.procs...)
	w.mu.Unlock()
	w.tracef("heal: every fault ends")
	calm := calmMix
	w.mix.Store(&calm)
	w.store.mu.Lock()
	w.store.lostPub = 0
	w.store.mu.Unlock()
	w.store.healSplit(0)
	w.store.stallReplication(false)
	for _, p := range procs {
		if p == nil {
			continue
		}
		p.set(func() { p.part, p.flaky, p.paused, p.nParts, p.nPauses = faultNone, 0, false, 0, 0 })
		pr := rtOf(p)
		p.mu.Lock()
		pr.armed = nil
		p.mu.Unlock()
	}
	all := make([]int, w.sc.replicas)
	for s := range all {
		all[s] = s
	}
	w.fixConfig(all)
	// Slots left down (a kill or shutdown whose restart is pending) come
	// back within the restart delays of the schedule (≤ 20 s).
	go func() {
		time.Sleep(25 * time.Second)
		for s := range w.sc.replicas {
			w.startSlot(s)
		}
	}()
}

// finalCheck is invariant (d): every replica serves every tenant, or
// answers reauthorization_required for a tenant the store has flagged.
func (w *world) finalCheck() {
	for s := range w.sc.replicas {
		p := w.current(s)
		if p == nil {
			w.violatef("d", "slot r%d has no running process at the end", s)
			continue
		}
		m := rtOf(p).m
		for _, t := range w.tenants {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			tok, err := m.Token(ctx, t)
			if _, ok := w.prov.accessOK(tok.AccessToken); err == nil && !ok {
				// The upstream answers 401: the proxy calls Recover (rule 8).
				tok, err = m.Recover(ctx, t, tok.AccessToken)
			}
			cancel()
			rec := w.store.masterRecord(t)
			var re *auth.ReauthError
			switch {
			case err == nil:
				owner, ok := w.prov.accessOK(tok.AccessToken)
				if owner != t {
					w.violatef("e", "%s served %s a token of %q", p.name, t, owner)
				} else if !ok {
					w.violatef("d", "%s served %s an expired token %s after the faults healed", p.name, t, fmtOffset(w.opts.Settle))
				}
			case errors.As(err, &re):
				if rec == nil || rec.Status != store.StatusReauthorizationRequired {
					w.violatef("d", "%s answers reauthorization_required for %s, which the store has active", p.name, t)
				}
			case w.heldUnprovable(rec, err):
				// Rules 15 and 20: the guard holds a rejected tenant (no
				// flag, token kept) until a grant proves the configuration;
				// with no grant at all there is nothing to prove it by.
			default:
				w.violatef("d", "%s neither serves nor flags %s %s after the faults healed: %v", p.name, t, fmtOffset(w.opts.Settle), err)
			}
		}
	}
}

// teardown stops traffic, lets running refreshes finish and store, then
// ends every process.
func (w *world) teardown() {
	w.mu.Lock()
	procs := append([]*proc(nil), w.procs...)
	w.mu.Unlock()
	for _, p := range procs {
		if p != nil {
			rtOf(p).cancel()
		}
	}
	time.Sleep(30 * time.Second)
	w.checkState()
	w.mu.Lock()
	procs = append([]*proc(nil), w.procs...)
	w.mu.Unlock()
	for _, p := range procs {
		if p != nil {
			w.kill(p, "end")
		}
	}
}

func (m *memStore) masterRecord(id string) *store.Tenant {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.master.recs[id]
	if r == nil {
		return nil
	}
	return r.Clone()
}

// checkState is invariants (a), (b), (c) and (e) on the final state.
func (w *world) checkState() {
	pv, ms := w.prov, w.store
	pv.mu.Lock()
	grants := append([]*grant(nil), pv.grants...)
	resends := append([]*resend(nil), pv.resends...)
	rejections := append([]rejection(nil), pv.rejections...)
	pv.mu.Unlock()
	ms.mu.Lock()
	stored := map[string]map[string]bool{}
	for t, set := range ms.everStored {
		stored[t] = set
	}
	lost, lostFlag := ms.lostWrites, ms.lostFlags
	ms.mu.Unlock()

	var vs []violation
	defer func() {
		w.mu.Lock()
		w.violations = append(w.violations, vs...)
		for _, v := range vs {
			w.trace = append(w.trace, traceLine{at: v.at, f: "VIOLATION (%s): %s", args: []any{v.inv, v.msg}})
		}
		w.mu.Unlock()
	}()
	pv.mu.Lock()
	defer pv.mu.Unlock()
	// (a) a refresh token is never sent after a grant that rotated it was
	// committed, except once after a lost answer, and the tenant then ends
	// flagged, never active on the dead chain.
	allowedResend := map[string]bool{}
	prevLost := map[string]bool{} // token → every earlier re-send's answer was lost too
	for _, rs := range resends {
		g := rs.g
		if rs.byRetry {
			// POST .../retry sends a flagged tenant's token once more
			// because the operator asked (rule 15): not the protocol's
			// re-send. The tenant is flagged again on its rejection; if
			// its answer is lost, the next takeover may send it again.
			prevLost[rs.tok] = excusedLoss(rs.outcome) || rs.outcome == "delivered" &&
				rs.proc.cutThrough(rs.outcomeAt, rs.at.Add(w.opts.TokenTimeout+writeRetryInterval))
			continue
		}
		excused := g.lostExcused() || lost[g.to] || w.cutOff(g) || w.killedWithin(g)
		if excused && (rs.nth == 1 || prevLost[rs.tok]) {
			allowedResend[rs.tok] = true
			// The next takeover may send it again when this one's
			// answer was lost, or reached a process that could not
			// store the flag: cut off from the store (or killed) from
			// the answer until its lease ran out (as cutOff for (b)).
			// So may it when a failover lost the flag its rejection set.
			prevLost[rs.tok] = excusedLoss(rs.outcome) || lostFlag[rs.tok] || rs.outcome == "delivered" &&
				rs.proc.cutThrough(rs.outcomeAt, rs.at.Add(w.opts.TokenTimeout+writeRetryInterval))
			continue
		}
		prevLost[rs.tok] = false
		if excused && w.guardPlausiblyTrippedLocked(rs.at, rejections) {
			// The guard held the first re-send's rejection back (it
			// keeps the token): once it clears, the token is sent again.
			continue
		}
		why := fmt.Sprintf("its answer was %s", g.outcome)
		if g.outcome == "delivered" {
			why = fmt.Sprintf("its answer reached %s at %s", g.proc.name, w.ts(g.outcomeAt))
		}
		if rs.nth > 1 {
			why += fmt.Sprintf("; send number %d of the spent token", rs.nth)
		}
		vs = append(vs, violation{inv: "a", at: rs.at.Sub(w.start), msg: fmt.Sprintf(
			"%s sent %s's refresh token %s after %s's grant %s → %s was committed at %s (%s)",
			rs.proc.name, rs.tenant, rs.tok, g.proc.name, g.from, g.to, w.ts(g.at), why)})
	}
	for _, t := range w.tenants {
		rec := ms.masterRecord(t)
		if rec == nil {
			continue
		}
		if allowedResend[rec.RefreshToken] && rec.Status == store.StatusActive {
			vs = append(vs, violation{inv: "a", at: w.elapsed(), msg: fmt.Sprintf(
				"%s ends active on the refresh token %s the provider rejected after the takeover's send", t, rec.RefreshToken)})
		}
		// (e) records hold only the tenant's own tokens.
		if tk := pv.toks[rec.RefreshToken]; tk == nil || tk.tenant != t {
			vs = append(vs, violation{inv: "e", at: w.elapsed(), msg: fmt.Sprintf("%s's record holds a refresh token not issued to it", t)})
		}
		// (c) no tenant ends flagged while its grant is alive.
		if rec.Status == store.StatusReauthorizationRequired {
			if tk := pv.toks[rec.RefreshToken]; tk != nil && tk.state == tokValid && !w.guardAllowanceLocked(t, rejections, rejections) &&
				!interruptedByMisconfigLocked(rec, rejections) {
				vs = append(vs, violation{inv: "c", at: w.elapsed(), msg: fmt.Sprintf(
					"%s ends flagged (%q, at %s) although its stored refresh token %s is alive", t, rec.Reason, rec.FlaggedAt.Format("15:04:05.000"), rec.RefreshToken)})
			}
		}
	}
	// (b) a committed grant's new refresh token is stored whenever its
	// holder lived.
	for _, g := range grants {
		switch g.outcome {
		case "lost:early", "lost:shutdown":
			vs = append(vs, violation{inv: "b", at: g.outcomeAt.Sub(w.start), msg: fmt.Sprintf(
				"%s abandoned grant %s → %s (%s) %s after sending it with %s of token_timeout left",
				g.proc.name, g.from, g.to, g.outcome, g.outcomeAt.Sub(g.at).Round(time.Millisecond), g.timeout.Round(time.Millisecond))})
		case "delivered":
			if stored[g.tenant][g.to] || lost[g.to] || w.cutOff(g) {
				continue
			}
			if dead, cause := g.proc.isDead(); dead && cause == "kill" {
				continue // killed before it could write
			}
			vs = append(vs, violation{inv: "b", at: g.outcomeAt.Sub(w.start), msg: fmt.Sprintf(
				"grant %s → %s reached %s at %s and was never stored", g.from, g.to, g.proc.name, w.ts(g.outcomeAt))})
		}
	}
}

// heldUnprovable reports whether err is the guard holding a tenant back
// (rule 15: "rejects the refresh tokens of many tenants") whose stored
// refresh token the provider really rejects, while no grant of any tenant
// was committed since that token's first rejection. Rule 20: a tenant the
// guard held stays held (acquitted, not flagged) until a grant since its
// rejection proves the configuration works; with none (every tenant
// rejected, or the others not due for a refresh) a mass revocation looks
// exactly like a wrong configuration and holding is right. A held tenant
// whose token is valid, or held although a grant came after its
// rejection, is still a violation of (d).
func (w *world) heldUnprovable(rec *store.Tenant, err error) bool {
	if err == nil || rec == nil || !strings.Contains(err.Error(), "rejects the refresh tokens of many tenants") || w.prov.valid(rec.RefreshToken) {
		return false
	}
	w.prov.mu.Lock()
	defer w.prov.mu.Unlock()
	// Rule 15: a trip holds its tenants until no new tenant was rejected
	// for a window. A revocation is not a fault that heals: its rejection
	// comes when the token is next refreshed, possibly after the heal, so
	// a trip may rightly still hold at the check (seed 1311).
	// Only a token's first rejection is new to the guard (re-sends of a
	// held token renew nothing: defect 11 must stay visible).
	recent, seenTok := map[string]bool{}, map[string]bool{}
	for _, r := range w.prov.rejections {
		if !r.delivered || seenTok[r.tok] {
			continue
		}
		seenTok[r.tok] = true
		if time.Since(r.at) < 2*w.opts.GuardWindow {
			recent[r.tenant] = true
		}
	}
	if len(recent) >= guardThreshold {
		return true
	}
	var own time.Time // the tenant's last grant: its token's rejections come after
	for _, g := range w.prov.grants {
		if g.tenant == rec.ID && g.at.After(own) {
			own = g.at
		}
	}
	var first time.Time
	for _, r := range w.prov.rejections {
		if r.tenant == rec.ID && r.at.After(own) && (first.IsZero() || r.at.Before(first)) {
			first = r.at
		}
	}
	// No grant since the later of its first rejection and two guard
	// windows ago (clocks and re-trips move the guard's acquittal time).
	since := time.Now().Add(-2 * w.opts.GuardWindow)
	if first.After(since) {
		since = first
	}
	for _, g := range w.prov.grants {
		if g.at.After(since) {
			return false
		}
	}
	return true
}

// interruptedByMisconfigLocked: a tenant flagged "interrupted" whose
// takeover was rejected by a misconfigured process. An interrupted
// refresh's rejection is flagged whatever the guard says (auth's
// rejected: held, the spent token would be sent again and again); when the
// lost answer in fact committed nothing and the rejection was the
// configuration's, the flag is a mistake that POST .../retry undoes
// (docs/reliability.md, "Failure modes that remain"). Call with the
// provider's lock held.
func interruptedByMisconfigLocked(rec *store.Tenant, rej []rejection) bool {
	if rec.Reason != auth.ReasonInterrupted {
		return false
	}
	for _, r := range rej {
		// FlaggedAt is on the flagging process's clock (skew up to 90 s).
		if d := r.at.Sub(rec.FlaggedAt); r.tenant == rec.ID && r.cause == "misconfig" && d > -3*time.Minute && d < 3*time.Minute {
			return true
		}
	}
	return false
}

// guardAllowanceLocked: a tenant flagged for a configuration mistake
// while fewer than the guard's threshold of tenants were rejected within
// any window that could trip the guard (and so revert the flag) is a flag
// the spec accepts (one rejected tenant looks like one revoked merchant).
// The rejections counted (seen) are the provider's answers that reached
// their process, on that process's clock. (Counting the guard's own
// inputs, the fake's GuardReject calls, would trust the code under test:
// defect 8's per-process guard then hides from (c).) Call with the
// provider's lock held. Only the wrong configuration's rejections count:
// the guard is kept per configuration (auth.GuardScope includes the
// secret), so a revoked merchant's rejection, seen by the right one, is
// not in the window that a misconfigured replica's flag could be reverted
// by.
func (w *world) guardAllowanceLocked(tenant string, rej, seen []rejection) bool {
	var last time.Time
	for _, r := range rej {
		if r.tenant == tenant && r.cause == "misconfig" && r.at.After(last) {
			last = r.at
		}
	}
	if last.IsZero() {
		return false
	}
	// A tenant the wrong configuration rejected before counts as old news
	// (the guard acquits a cleared trip's tenants until a grant of that
	// configuration, which never comes): only first rejections count.
	first := map[string]time.Time{}
	for _, r := range seen {
		if f, ok := first[r.tenant]; r.cause == "misconfig" && (!ok || r.at.Before(f)) {
			first[r.tenant] = r.at
		}
	}
	for _, from := range seen {
		// A trip reverts flags recorded within its window: only a
		// window that ends after the flag could have reverted it.
		if from.at.After(last.Add(w.opts.TokenTimeout)) || last.Sub(from.at) >= w.opts.GuardWindow {
			continue
		}
		distinct := map[string]bool{}
		for _, r := range seen {
			if d := r.localDelivered.Sub(from.localDelivered); r.delivered && r.cause == "misconfig" && d >= 0 && d < w.opts.GuardWindow && !first[r.tenant].Before(from.at) {
				distinct[r.tenant] = true
			}
		}
		if len(distinct) >= guardThreshold {
			return false
		}
	}
	return true
}

// writeRetryInterval is the holder's write-retry interval (a backoff of at
// most 1 s plus one 1 s store call: auth's writeRetryMax and
// storeCallTimeout).
const writeRetryInterval = 2 * time.Second

// cutOff reports whether g's holder could not reach the store (no call
// answered: partitioned, paused, or every call failing) from the answer's
// arrival until no lease could cover it any longer (sendCover): a
// successor may then take over, and the grant is lost although its holder
// lives (docs/reliability.md, "Failure modes that remain").
func (w *world) cutOff(g *grant) bool {
	return g.outcome == "delivered" && (g.proc.cutThrough(g.outcomeAt, g.at.Add(w.sendCover())) ||
		w.store.putsFailed(g.proc, g.to)) // it tried to store the grant; every attempt failed
}

// pause stops p (SIGSTOP) for d.
func (w *world) pause(p *proc, d time.Duration) {
	p.set(func() { p.paused, p.nPauses = true, p.nPauses+1 })
	w.tracef("%s paused for %s", p.name, d)
	go func() {
		time.Sleep(d)
		p.set(func() {
			if p.nPauses--; p.nPauses <= 0 {
				p.paused, p.nPauses = false, 0
			}
		})
		w.tracef("%s resumed", p.name)
	}()
}

// stallGap: an answer stall, or any pause, within this long after an
// answer stall's end is left out.
const stallGap = 5 * time.Second

// killedWithin reports whether g's holder was killed (SIGKILL) after its
// answer arrived and before no lease could cover it any longer: it may
// have had no moment to write the grant, which a successor then takes
// over (as a kill before the answer, "lost:kill").
func (w *world) killedWithin(g *grant) bool {
	if g.outcome != "delivered" {
		return false
	}
	g.proc.mu.Lock()
	defer g.proc.mu.Unlock()
	return g.proc.dead && g.proc.exitCause == "kill" && g.proc.diedAt.Before(g.at.Add(w.sendCover()))
}

// sendCover is how long after a send no successor can take the holder's
// mark over, whatever the schedule: the lease renewed right before the
// send (at most sendRenewFresh earlier) covers max(lock_ttl, token_timeout
// + 1.25 s), and a successor then sees the mark unchanged for the grace
// (rule 17). A holder that reaches the store within it writes its grant.
func (w *world) sendCover() time.Duration {
	return max(w.sc.lockTTL, auth.LockTTLFor(w.opts.TokenTimeout)) + auth.DefaultTakeoverGrace - 500*time.Millisecond
}

// guardPlausiblyTrippedLocked reports whether threshold distinct tenants
// were rejected within the guard's window before at.
func (w *world) guardPlausiblyTrippedLocked(at time.Time, rej []rejection) bool {
	distinct := map[string]bool{}
	for _, r := range rej {
		if d := at.Sub(r.at); d >= 0 && d <= w.opts.GuardWindow {
			distinct[r.tenant] = true
		}
	}
	return len(distinct) >= guardThreshold
}

func dieNow() { runtime.Goexit() }
