package e2e

// Shared machinery of the fault suite (fault_*_test.go): a scenario
// deployment (emulator with an event log, replicas), a load generator that
// classifies every response, and the invariant checks every scenario ends
// with. Each scenario logs one line
//
//	FAULT scenario=<name> requests=N ok=N expected503=N expected401=N failed=N refreshes=N reuse=N rejected=N wrongly_flagged=N cross_tenant=N [key=value ...]
//
// which docs/reliability.md's "Fault suite" table is made from.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// faultPath is the API path every scenario requests; the emulator answers
// it with the tenant the token belongs to.
const faultPath = "/f/data/businesses"

// ---------------------------------------------------------------------------
// Emulator events.

// emuEvents keeps the emulator's event lines (they never hold token values)
// so scenarios can count token-endpoint decisions per tenant.
type emuEvents struct {
	mu    sync.Mutex
	lines []string
}

func (e *emuEvents) logf(format string, args ...any) {
	e.mu.Lock()
	e.lines = append(e.lines, fmt.Sprintf(format, args...))
	e.mu.Unlock()
}

// count returns how many lines contain event and name tenant.
func (e *emuEvents) count(event, tenant string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, l := range e.lines {
		if strings.Contains(l, event) && strings.Contains(l, "tenant="+strconv.Quote(tenant)) {
			n++
		}
	}
	return n
}

// refreshAttempts is the number of refresh requests for tenant the emulator
// decided on: granted, or refused because the token was already used.
// (Rejections of other kinds do not name the tenant; the scenarios that
// count attempts have none.)
func (e *emuEvents) refreshAttempts(tenant string) int {
	return e.count("refresh granted", tenant) + e.count("reuse detected", tenant)
}

// ---------------------------------------------------------------------------
// Deployment.

// deployment is one scenario's system under test: the strict emulator, its
// event log, the shared environment and the running replicas.
type deployment struct {
	t      *testing.T
	name   string
	emu    *upstream
	events *emuEvents
	env    map[string]string
	procs  []*proc
	before emulator.Stats // counters when the scenario's tenants were imported
}

// newDeployment starts an emulator for cfg (with an event log) and
// replicas processes sharing baseEnv plus storeKV and kv.
func newDeployment(t *testing.T, name string, cfg emulator.Config, replicas int, kv ...string) *deployment {
	t.Helper()
	ev := &emuEvents{}
	cfg.Logf = ev.logf
	emu := startEmulator(t, cfg)
	d := &deployment{t: t, name: name, emu: emu, events: ev, env: with(baseEnv(emu), kv...)}
	for i := 0; i < replicas; i++ {
		d.procs = append(d.procs, startProxy(t, d.env))
	}
	return d
}

// importTenants imports a fresh grant for every id through p, claiming
// expiresIn seconds of access-token life (0 = the emulator's), and resets
// the emulator baseline.
func (d *deployment) importTenants(p *proc, expiresIn int, ids ...string) {
	d.t.Helper()
	for _, id := range ids {
		g := d.emu.IssueGrant(id)
		if expiresIn > 0 {
			g.ExpiresIn = expiresIn
		}
		p.importTenant(d.t, id, g)
	}
	d.before = d.emu.Stats()
}

// tenantIDs returns n ids "<prefix>-00"...
func tenantIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return ids
}

// lockOwner returns the owner token of tenant's store lock in Redis ("" when
// free).
func lockOwner(rdb *testredis.Server, tenant string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, _ := rdb.Client().Get(ctx, "lsproxy:lock:{tenant:"+tenant+"}").Result()
	return v
}

// readyStatus returns p's /readyz status (0 on a transport error).
func readyStatus(p *proc) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := do(ctx, http.MethodGet, p.ControlURL+"/readyz", nil, nil)
	if err != nil {
		return 0
	}
	return r.Status
}

// allReady reports whether every replica's /readyz answers want, asking
// them in parallel (with the store down, one probe takes seconds).
func allReady(procs []*proc, want int) bool {
	var wg sync.WaitGroup
	var bad atomic.Int32
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if readyStatus(p) != want {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	return bad.Load() == 0
}

// ---------------------------------------------------------------------------
// Load.

// policy says which non-200 answers a scenario expects. A nil field expects
// none.
type policy struct {
	// may503: a 503 token_unavailable (with Retry-After) for tenant at this
	// moment is expected.
	may503 func(tenant string, at time.Time) bool
	// may401: this 401 for tenant is expected (r may be lsproxy's
	// reauthorization_required or the upstream's own 401).
	may401 func(tenant string, r result, at time.Time) bool
	// retired: p was taken out of the route by the scenario (and stopped);
	// a transport error from it raced the retirement and is not counted.
	retired func(p *proc) bool
}

// tally counts classified requests; safe for concurrent use.
type tally struct {
	requests, ok, exp503, exp401, failed, cross atomic.Int64
	// slowest200 and slowest503 are the longest a 200 and an expected 503
	// took (nanoseconds), recorded by the load generator.
	slowest200, slowest503 atomic.Int64

	mu       sync.Mutex
	failures []string             // the first few unexpected answers
	first200 map[string]time.Time // first 200 per tenant
	last503  map[string]time.Time // last expected 503 per tenant
	last401  map[string]result    // last expected 401 per tenant
}

func newTally() *tally {
	return &tally{first200: map[string]time.Time{}, last503: map[string]time.Time{}, last401: map[string]result{}}
}

func (tl *tally) fail(format string, args ...any) {
	tl.failed.Add(1)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.failures) < 10 {
		tl.failures = append(tl.failures, fmt.Sprintf(format, args...))
	}
}

// record classifies one finished exchange.
func (tl *tally) record(pol policy, p *proc, tenant string, r result, err error) {
	at := time.Now()
	if err != nil && pol.retired != nil && pol.retired(p) {
		return
	}
	tl.requests.Add(1)
	switch {
	case err != nil:
		tl.fail("%s via %s: %v", tenant, p.ProxyURL, err)
	case r.Status == http.StatusOK:
		if got := r.str("tenant"); got != tenant {
			tl.cross.Add(1)
			tl.fail("asked for %s via %s, got the data of %q", tenant, p.ProxyURL, got)
			return
		}
		tl.ok.Add(1)
		tl.mu.Lock()
		if _, seen := tl.first200[tenant]; !seen {
			tl.first200[tenant] = at
		}
		tl.mu.Unlock()
	case r.Status == http.StatusServiceUnavailable && pol.may503 != nil && pol.may503(tenant, at):
		if r.Header.Get("X-Lsproxy-Error") != "token_unavailable" {
			tl.fail("%s via %s: 503 %q, want token_unavailable: %s", tenant, p.ProxyURL, r.Header.Get("X-Lsproxy-Error"), r.Body)
			return
		}
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
			tl.fail("%s via %s: 503 without a usable Retry-After (%q)", tenant, p.ProxyURL, r.Header.Get("Retry-After"))
			return
		}
		tl.exp503.Add(1)
		tl.mu.Lock()
		tl.last503[tenant] = at
		tl.mu.Unlock()
	case r.Status == http.StatusUnauthorized && pol.may401 != nil && pol.may401(tenant, r, at):
		tl.exp401.Add(1)
		tl.mu.Lock()
		tl.last401[tenant] = r
		tl.mu.Unlock()
	default:
		tl.fail("%s via %s: %d %s %s", tenant, p.ProxyURL, r.Status, r.Header.Get("X-Lsproxy-Error"), tail(string(r.Body), 300))
	}
}

func (tl *tally) firstOK(tenant string) (time.Time, bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	at, ok := tl.first200[tenant]
	return at, ok
}

func (tl *tally) lastExpected503() time.Time {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var last time.Time
	for _, at := range tl.last503 {
		if at.After(last) {
			last = at
		}
	}
	return last
}

// route picks, for client c's i-th request, the replica and the tenant;
// ok=false skips this turn (nothing to send to right now).
type route func(c, i int) (p *proc, tenant string, ok bool)

// loadGen runs clients until stopped.
type loadGen struct {
	*tally
	pol    policy
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time
}

// startLoad starts clients goroutines sending faultPath requests as rt
// says, each classified by pol. Stop ends them.
func startLoad(clients int, rt route, pol policy) *loadGen {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadGen{tally: newTally(), pol: pol, ctx: ctx, cancel: cancel, start: time.Now()}
	for c := 0; c < clients; c++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				p, tenant, ok := rt(c, i)
				if !ok {
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond): // pacing an idle client
					}
					continue
				}
				began := time.Now()
				r, err := faultGet(ctx, p, tenant)
				if ctx.Err() != nil {
					return // the run ended during this request
				}
				l.record(pol, p, tenant, r, err)
				took := int64(time.Since(began))
				switch {
				case err != nil:
				case r.Status == http.StatusOK:
					atomicMax(&l.slowest200, took)
				case r.Status == http.StatusServiceUnavailable:
					atomicMax(&l.slowest503, took)
				}
			}
		}()
	}
	return l
}

// faultClient is the load generator's client. Its timeout is longer than
// the harness's (20 s) so that a slow answer is measured (slowest_200,
// slowest_503 in the FAULT line) rather than cut; an answer slower than
// this still counts as failed.
var faultClient = &http.Client{
	Timeout:       45 * time.Second,
	Transport:     httpClient.Transport,
	CheckRedirect: httpClient.CheckRedirect,
}

// faultGet is p.get(ctx, tenant, faultPath) through faultClient.
func faultGet(ctx context.Context, p *proc, tenant string) (result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.ProxyURL+faultPath, nil)
	if err != nil {
		return result{}, err
	}
	req.Header.Set("X-Tenant", tenant)
	resp, err := faultClient.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return result{}, err
	}
	return result{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

func atomicMax(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if x <= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}

// Stop ends the load and waits for the clients.
func (l *loadGen) Stop() time.Duration {
	l.cancel()
	l.wg.Wait()
	return time.Since(l.start)
}

// spread routes every request to a random replica of procs and a random
// tenant of tenants (independent picks: no tenant sticks to a replica, and
// blocked clients do not march through the tenants in step).
func spread(procs []*proc, tenants []string) route {
	return func(int, int) (*proc, string, bool) {
		return procs[rand.IntN(len(procs))], tenants[rand.IntN(len(tenants))], true
	}
}

// ---------------------------------------------------------------------------
// Figures and invariants.

// figures is one scenario's measured line.
type figures struct {
	scenario                                    string
	requests, ok, exp503, exp401, failed, cross int64
	refreshes, reuse, rejected                  int64
	wronglyFlagged                              int
	extra                                       []string // "key=value", in order
}

func (f *figures) note(key string, val any) {
	s := fmt.Sprint(val)
	if d, ok := val.(time.Duration); ok {
		s = d.Round(10 * time.Millisecond).String()
	}
	f.extra = append(f.extra, key+"="+s)
}

func (f *figures) String() string {
	s := fmt.Sprintf("FAULT scenario=%s requests=%d ok=%d expected503=%d expected401=%d failed=%d refreshes=%d reuse=%d rejected=%d wrongly_flagged=%d cross_tenant=%d",
		f.scenario, f.requests, f.ok, f.exp503, f.exp401, f.failed, f.refreshes, f.reuse, f.rejected, f.wronglyFlagged, f.cross)
	if len(f.extra) > 0 {
		s += " " + strings.Join(f.extra, " ")
	}
	return s
}

// expectations are what a scenario allows beyond "everything fine".
type expectations struct {
	// flagged: tenant → a substring its flag reason must contain. Every
	// other tenant must end active, with no refresh in flight and exactly
	// one live grant at the emulator.
	flagged map[string]string
	// reuse is the number of refresh-token reuses the emulator may detect
	// (the documented lost-response case); rejected is the number of
	// rejected refreshes.
	reuse, rejected int64
	// minRefreshes: at least this many successful refreshes.
	minRefreshes int64
}

// conclude checks the invariants after the load stopped (once running
// refreshes wrote their results): tenants' states read through p, the emulator's reuse and rejection counters, no failed
// and no cross-tenant request. It logs and returns the figures.
func (d *deployment) conclude(p *proc, ids []string, tl *tally, exp expectations, f *figures) *figures {
	t := d.t
	t.Helper()
	f.scenario = d.name
	if tl != nil {
		f.requests, f.ok, f.exp503, f.exp401 = tl.requests.Load(), tl.ok.Load(), tl.exp503.Load(), tl.exp401.Load()
		f.failed, f.cross = tl.failed.Load(), tl.cross.Load()
		tl.mu.Lock()
		for _, s := range tl.failures {
			t.Errorf("unexpected answer: %s", s)
		}
		tl.mu.Unlock()
	}
	// Refreshes the load started may still be running (a takeover among
	// them): let them finish before the emulator's counters are read.
	eventually(15*time.Second, func() bool {
		for _, id := range ids {
			if p.getTenant(t, id).RefreshInFlight {
				return false
			}
		}
		return true
	})
	st := d.emu.Stats()
	f.refreshes = st.RefreshGrants - d.before.RefreshGrants
	f.reuse = st.ReuseDetected - d.before.ReuseDetected
	f.rejected = st.RefreshRejected - d.before.RefreshRejected
	for _, id := range ids {
		// Replicas keep running (and the background refresher may start a
		// new refresh at any moment): read each tenant at a moment when no
		// refresh is in flight, bounded.
		v := p.getTenant(t, id)
		eventually(5*time.Second, func() bool {
			v = p.getTenant(t, id)
			return !v.RefreshInFlight
		})
		want, expectFlag := exp.flagged[id]
		switch {
		case expectFlag && v.Status != store.StatusReauthorizationRequired:
			t.Errorf("tenant %s: status %s, want reauthorization_required (%s)", id, v.Status, want)
		case expectFlag && !strings.Contains(v.Reason, want):
			t.Errorf("tenant %s: flag reason %q does not contain %q", id, v.Reason, want)
		case expectFlag && v.RefreshInFlight:
			t.Errorf("tenant %s: flagged but refresh_in_flight still set", id)
		case expectFlag:
		case v.Status != store.StatusActive:
			f.wronglyFlagged++
			t.Errorf("tenant %s wrongly flagged: %s (%s)", id, v.Status, v.Reason)
		case v.RefreshInFlight:
			t.Errorf("tenant %s: refresh_in_flight left set", id)
		case d.emu.ActiveGrants(id) != 1:
			t.Errorf("tenant %s: %d live grants at the emulator, want 1", id, d.emu.ActiveGrants(id))
		}
	}
	if tl != nil {
		f.note("slowest_200", time.Duration(tl.slowest200.Load()))
		f.note("slowest_503", time.Duration(tl.slowest503.Load()))
	}
	t.Log(f.String())
	if f.failed != 0 {
		t.Errorf("%d requests failed unexpectedly", f.failed)
	}
	if f.cross != 0 {
		t.Errorf("%d responses carried another tenant's data", f.cross)
	}
	if f.reuse != exp.reuse {
		t.Errorf("emulator detected %d refresh-token reuses, want %d", f.reuse, exp.reuse)
	}
	if f.rejected != exp.rejected {
		t.Errorf("emulator rejected %d refreshes, want %d", f.rejected, exp.rejected)
	}
	if f.refreshes < exp.minRefreshes {
		t.Errorf("%d refreshes, want at least %d", f.refreshes, exp.minRefreshes)
	}
	if tl != nil && f.ok == 0 {
		t.Errorf("no request succeeded")
	}
	if t.Failed() {
		d.dumpLogs()
	}
	return f
}

// dumpLogs logs, for a failed scenario, what the replicas said besides
// successful requests (the harness shows only each log's tail).
func (d *deployment) dumpLogs() {
	const maxLines = 300
	n := 0
	for i, p := range d.procs {
		for _, l := range strings.Split(p.Logs(), "\n") {
			if l == "" || strings.Contains(l, `"msg":"request"`) && strings.Contains(l, `"status":200`) {
				continue
			}
			if n++; n > maxLines {
				d.t.Logf("(more log lines left out)")
				return
			}
			d.t.Logf("replica %d: %s", i, l)
		}
	}
}

// termAll stops every live replica with SIGTERM and expects exit 0.
func (d *deployment) termAll() {
	d.t.Helper()
	for i, p := range d.procs {
		select {
		case <-p.done:
			continue // killed by the scenario
		default:
		}
		if code := p.Term(30 * time.Second); code != 0 {
			d.t.Errorf("replica %d exited %d", i, code)
		}
	}
}

// ---------------------------------------------------------------------------
// A token endpoint that can be made unreachable.

// tokenGate serves the emulator's token endpoint on its own loopback port
// and can stop listening (connection refused) and listen again on the same
// port.
type tokenGate struct {
	u    *upstream
	addr string

	mu  sync.Mutex
	srv *http.Server
}

func startTokenGate(t testing.TB, u *upstream) *tokenGate {
	t.Helper()
	g := &tokenGate{u: u}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = l.Addr().String()
	g.serve(l)
	t.Cleanup(g.close)
	return g
}

// URL is the token URL to configure.
func (g *tokenGate) URL() string { return "http://" + g.addr + g.u.Paths().Token }

func (g *tokenGate) serve(l net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(g.u.serve), ReadHeaderTimeout: 5 * time.Second}
	g.mu.Lock()
	g.srv = srv
	g.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// close stops listening and drops every connection.
func (g *tokenGate) close() {
	g.mu.Lock()
	srv := g.srv
	g.srv = nil
	g.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// reopen listens again on the same port (retrying briefly while the port is
// released).
func (g *tokenGate) reopen(t testing.TB) {
	t.Helper()
	var err error
	for i := 0; i < 20; i++ {
		var l net.Listener
		if l, err = net.Listen("tcp", g.addr); err == nil {
			g.serve(l)
			return
		}
		time.Sleep(50 * time.Millisecond) // the port is being released: no signal for that
	}
	t.Fatalf("reopening the token endpoint on %s: %v", g.addr, err)
}
