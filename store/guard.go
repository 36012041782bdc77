package store

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// GuardState keeps the mass-invalid_grant guard's state for the whole
// fleet (SPEC §3 rules 15 and 20): the tenants rejected within the window,
// whether the guard is tripped, the flags a trip reverts and the reverts
// not done yet. Every replica sharing the store decides on the same state,
// so the guard trips on the fleet's distinct rejections and a restart
// forgets nothing. The decisions (GuardReject, GuardFlagged) are atomic
// across the fleet.
//
// The rules, with p.Window the window and p.Threshold the threshold:
//   - A rejection of a tenant not yet in the window adds it (a tenant
//     rejected again keeps its first time: re-sending a held tenant never
//     renews the window). Untripped, the window forgets tenants rejected
//     p.Window ago or longer.
//   - When p.Threshold distinct tenants are in the window the guard trips:
//     every flag recorded by GuardFlagged within the window becomes a
//     pending revert, and no rejection is flagged while it is tripped; the
//     tenants in the window are held (not sent again).
//   - The guard clears when no new tenant was rejected for p.Window. The
//     tenants it held are then acquitted until their grant or their flag:
//     their rejection does not count towards a new trip (it is old news,
//     not a new tenant). Whether it was theirs or the configuration's only a grant
//     tells: once a grant succeeded in the scope after the clear
//     (GuardGranted), an acquitted tenant's rejection flags it; before,
//     it stays held, and the fleet sends one acquitted tenant at a time,
//     one every GuardProbeEvery, as a probe (GuardStatus with p.Probe).
//   - A pending revert stays until GuardReverted acknowledges it.
//
// The guard blames a configuration: the state is kept per p.Scope (the
// configuration's fingerprint: client id, secret, token URL), so replicas started
// with a fixed configuration begin with an untripped guard and send the
// held tenants' refresh tokens again at once, while replicas still running
// the old one stay tripped. Pending reverts are the fleet's, whatever the
// scope: any replica does them. Redis lets a scope's state expire two
// windows after its last change (nothing in it counts any longer).
//
// now is the caller's clock; replicas' clocks differ by their skew, which
// moves the window's ends by as much (and nothing else). All methods are
// safe for concurrent use by many processes; ctx bounds the store call.
type GuardState interface {
	// GuardReject records that tenant's refresh token was rejected at now
	// and decides whether the tenant may be flagged.
	GuardReject(ctx context.Context, tenant string, now time.Time, p GuardParams) (GuardVerdict, error)
	// GuardFlagged records that tenant was flagged at at after a verdict
	// that saw trip count trips, so that a trip within the window reverts
	// it. When the guard is tripped or tripped since (that trip's reverts
	// were taken without this flag) it records the flag as a pending
	// revert instead and returns false: the caller reverts it at once
	// (and acknowledges it with GuardReverted); if that fails, whoever
	// does the pending reverts retries it.
	GuardFlagged(ctx context.Context, tenant string, at time.Time, trips uint64, p GuardParams) (bool, error)
	// GuardStatus returns the guard's state at now (clearing it when no
	// new tenant was rejected for the window) and, when tenant is not
	// empty, whether that tenant is held and its pending revert. At most
	// MaxGuardReverts pending reverts are listed.
	GuardStatus(ctx context.Context, tenant string, now time.Time, p GuardParams) (GuardStatus, error)
	// GuardReverted acknowledges the pending revert of tenant's flag set at
	// at (done, or moot because the tenant changed since); a revert of
	// another flag time is left alone.
	GuardReverted(ctx context.Context, tenant string, at time.Time) error
	// GuardGranted records a successful grant of tenant: it leaves p's
	// window, its revertible flag, its acquittal and its pending revert,
	// and the grant proves the configuration to acquitted tenants.
	GuardGranted(ctx context.Context, tenant string, now time.Time, p GuardParams) error
}

// MaxGuardReverts bounds the pending reverts GuardStatus lists.
const MaxGuardReverts = 100

// GuardParams are the guard's settings, given with every call (each
// replica's configuration; they should agree).
type GuardParams struct {
	Threshold int           // distinct tenants that trip the guard (>= 1)
	Window    time.Duration // see GuardState
	// Scope names the configuration the state is kept for (letters,
	// digits, '-', '_'; at most 64; "" is a scope too).
	Scope string
	// Renew (tests only: defect.GuardRenewedByResend) brings back the
	// window renewed by every rejection of a tenant already in it.
	Renew bool
	// Probe (GuardStatus only): the caller sends the tenant's refresh
	// token unless it is held, so an acquitted tenant may take the
	// fleet's probe slot (see GuardState).
	Probe bool
}

// GuardProbeEvery: after a clear, the fleet sends at most one acquitted
// tenant's refresh token this often until a grant succeeds.
const GuardProbeEvery = 10 * time.Second

// GuardVerdict is what GuardReject decided.
type GuardVerdict struct {
	Flag    bool   // flag the tenant now
	Tripped bool   // the guard is tripped after the call
	Changed bool   // it tripped or cleared with this call
	Tenants int    // distinct tenants in the window
	Trips   uint64 // how often it tripped so far (give it to GuardFlagged)
}

// GuardStatus is the guard's state.
type GuardStatus struct {
	Tripped bool
	Changed bool // it cleared with this call
	Tenants int
	Trips   uint64
	// Held: the tenant asked about was rejected while the guard is
	// tripped; HeldSince is when it was rejected first (last, with Renew).
	Held      bool
	HeldSince time.Time
	// Revert is the tenant's pending revert (the flag time), zero if none.
	Revert time.Time
	// Pending counts every pending revert; Reverts lists some of them.
	Pending int
	Reverts []GuardRevert
	// Acquitted counts the tenants a clear acquitted and not yet granted
	// or flagged.
	Acquitted int
}

// GuardRevert is one flag a trip reverts: the tenant and when it was
// flagged (a flag set at another time is not this one).
type GuardRevert struct {
	Tenant    string
	FlaggedAt time.Time
}

// guardMachine is the guard's rules on plain maps, shared by the embedded
// store (which persists every change it journals) and MemGuard. Times are
// Unix nanoseconds. The caller serialises calls.
type guardMachine struct {
	tripped   bool
	trips     uint64
	lastNew   int64            // the last new tenant's rejection
	lastGrant int64            // the last grant (GuardGranted)
	lastProbe int64            // the last probe slot taken
	rejected  map[string]int64 // tenant → first rejection in the window
	flags     map[string]int64 // tenant → when flagged (revertible)
	reverts   map[string]int64 // tenant → the flag time to revert
	acquitted map[string]int64 // tenant → when the guard that held it cleared

	journal func(kind, tenant string, val int64, del bool) // nil: none
}

// Guard map kinds, as journalled (and the bolt buckets' names).
const (
	guardKindRejected  = "rejected"
	guardKindFlags     = "flags"
	guardKindReverts   = "reverts"
	guardKindAcquitted = "acquitted"
	guardKindState     = "state" // tenant: "tripped", "trips", "last_new", "last_grant", "last_probe"
)

// newGuardMachine returns the empty state of one scope; reverts is the
// fleet's map of pending reverts, shared by every scope.
func newGuardMachine(reverts map[string]int64) *guardMachine {
	return &guardMachine{rejected: map[string]int64{}, flags: map[string]int64{}, reverts: reverts, acquitted: map[string]int64{}}
}

// guardScopes is every scope's state and the shared reverts.
type guardScopes struct {
	scopes  map[string]*guardMachine
	reverts map[string]int64
}

func newGuardScopes() *guardScopes {
	return &guardScopes{scopes: map[string]*guardMachine{}, reverts: map[string]int64{}}
}

func (s *guardScopes) of(scope string) *guardMachine {
	g := s.scopes[scope]
	if g == nil {
		g = newGuardMachine(s.reverts)
		s.scopes[scope] = g
	}
	return g
}

func (g *guardMachine) mapOf(kind string) map[string]int64 {
	switch kind {
	case guardKindRejected:
		return g.rejected
	case guardKindFlags:
		return g.flags
	case guardKindReverts:
		return g.reverts
	case guardKindAcquitted:
		return g.acquitted
	}
	return nil
}

func (g *guardMachine) set(kind, tenant string, v int64) {
	g.mapOf(kind)[tenant] = v
	if g.journal != nil {
		g.journal(kind, tenant, v, false)
	}
}

func (g *guardMachine) del(kind, tenant string) {
	m := g.mapOf(kind)
	if _, ok := m[tenant]; !ok {
		return
	}
	delete(m, tenant)
	if g.journal != nil {
		g.journal(kind, tenant, 0, true)
	}
}

func (g *guardMachine) setState(tripped bool, trips uint64, lastNew int64) {
	g.tripped, g.trips, g.lastNew = tripped, trips, lastNew
	if g.journal != nil {
		b := int64(0)
		if tripped {
			b = 1
		}
		g.journal(guardKindState, "tripped", b, false)
		g.journal(guardKindState, "trips", int64(trips), false)
		g.journal(guardKindState, "last_new", lastNew, false)
	}
}

// settle clears a guard whose window passed without a new tenant and
// forgets what the window no longer covers. It reports a clear.
func (g *guardMachine) settle(now int64, p GuardParams) (cleared bool) {
	w := int64(p.Window)
	if g.tripped && now-g.lastNew >= w {
		for id, at := range g.rejected {
			// Acquitted as of its rejection: a grant since (also one
			// during the trip) proves the configuration worked while
			// this tenant's token did not.
			g.set(guardKindAcquitted, id, at)
			g.del(guardKindRejected, id)
		}
		g.setState(false, g.trips, g.lastNew)
		cleared = true
	}
	// An acquittal is not forgotten with the window: it lasts until the
	// tenant's grant or its flag (GuardGranted, GuardFlagged). Forgotten,
	// three revoked tenants still held would count as new again and trip
	// the guard once more, for ever, while a valid tenant's grant that
	// came during a trip proved nothing (found by the simulation,
	// auth/sim).
	for id, at := range g.flags {
		if now-at >= w {
			g.del(guardKindFlags, id)
		}
	}
	if !g.tripped {
		for id, at := range g.rejected {
			if now-at >= w {
				g.del(guardKindRejected, id)
			}
		}
	}
	return cleared
}

func (g *guardMachine) setInt(name string, v *int64, val int64) {
	*v = val
	if g.journal != nil {
		g.journal(guardKindState, name, val, false)
	}
}

// proven reports whether a grant succeeded since tenant was acquitted (at
// the same instant counts: the clear comes first on one clock).
func (g *guardMachine) proven(tenant string) bool {
	at, ok := g.acquitted[tenant]
	return ok && g.lastGrant >= at
}

func (g *guardMachine) reject(tenant string, now time.Time, p GuardParams) GuardVerdict {
	n := now.UnixNano()
	v := GuardVerdict{Changed: g.settle(n, p)}
	if _, ok := g.acquitted[tenant]; ok && !g.tripped {
		// Held by a trip that cleared: not counted; its own rejection once
		// a grant proved the configuration works.
		return GuardVerdict{Flag: g.proven(tenant), Changed: v.Changed, Tenants: len(g.rejected), Trips: g.trips}
	}
	if _, ok := g.rejected[tenant]; !ok || p.Renew {
		g.set(guardKindRejected, tenant, n)
		g.setState(g.tripped, g.trips, n)
	}
	if !g.tripped && len(g.rejected) >= p.Threshold {
		g.setState(true, g.trips+1, g.lastNew)
		for id, at := range g.flags {
			g.set(guardKindReverts, id, at)
			g.del(guardKindFlags, id)
		}
		v.Changed = true
	}
	v.Tripped, v.Flag, v.Tenants, v.Trips = g.tripped, !g.tripped, len(g.rejected), g.trips
	return v
}

func (g *guardMachine) flagged(tenant string, at time.Time, trips uint64, now time.Time, p GuardParams) bool {
	g.settle(now.UnixNano(), p)
	if g.tripped || g.trips != trips {
		g.set(guardKindReverts, tenant, at.UnixNano())
		return false
	}
	g.set(guardKindFlags, tenant, at.UnixNano())
	g.del(guardKindAcquitted, tenant) // flagged: its acquittal is decided
	return true
}

func (g *guardMachine) status(tenant string, now time.Time, p GuardParams) GuardStatus {
	s := GuardStatus{Changed: g.settle(now.UnixNano(), p)}
	n := now.UnixNano()
	s.Tripped, s.Tenants, s.Trips, s.Pending, s.Acquitted = g.tripped, len(g.rejected), g.trips, len(g.reverts), len(g.acquitted)
	if tenant != "" {
		if at, ok := g.rejected[tenant]; ok && g.tripped {
			s.Held, s.HeldSince = true, time.Unix(0, at)
		}
		if at, ok := g.acquitted[tenant]; ok && !g.tripped && !g.proven(tenant) {
			if p.Probe && n-g.lastProbe >= int64(GuardProbeEvery) {
				g.setInt("last_probe", &g.lastProbe, n) // this caller probes
			} else {
				s.Held, s.HeldSince = true, time.Unix(0, at)
			}
		}
		if at, ok := g.reverts[tenant]; ok {
			s.Revert = time.Unix(0, at)
		}
	}
	ids := make([]string, 0, len(g.reverts))
	for id := range g.reverts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids[:min(len(ids), MaxGuardReverts)] {
		s.Reverts = append(s.Reverts, GuardRevert{Tenant: id, FlaggedAt: time.Unix(0, g.reverts[id])})
	}
	return s
}

func (g *guardMachine) reverted(tenant string, at time.Time) {
	if v, ok := g.reverts[tenant]; ok && v == at.UnixNano() {
		g.del(guardKindReverts, tenant)
	}
}

func (g *guardMachine) granted(tenant string, now time.Time) {
	for _, kind := range []string{guardKindRejected, guardKindFlags, guardKindAcquitted, guardKindReverts} {
		g.del(kind, tenant)
	}
	g.setInt("last_grant", &g.lastGrant, now.UnixNano())
}

// MemGuard is a GuardState in one process's memory: for tests, and for
// stores that keep no guard state (each process then has its own guard,
// forgotten on restart). The zero value is not usable; see NewMemGuard.
type MemGuard struct {
	mu sync.Mutex
	s  *guardScopes
}

var _ GuardState = (*MemGuard)(nil)

// NewMemGuard returns an empty in-memory GuardState.
func NewMemGuard() *MemGuard { return &MemGuard{s: newGuardScopes()} }

// GuardReject implements GuardState.
func (m *MemGuard) GuardReject(ctx context.Context, tenant string, now time.Time, p GuardParams) (GuardVerdict, error) {
	if err := memCheck(ctx, p.Scope); err != nil {
		return GuardVerdict{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.of(p.Scope).reject(tenant, now, p), nil
}

// GuardFlagged implements GuardState.
func (m *MemGuard) GuardFlagged(ctx context.Context, tenant string, at time.Time, trips uint64, p GuardParams) (bool, error) {
	if err := memCheck(ctx, p.Scope); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.of(p.Scope).flagged(tenant, at, trips, at, p), nil
}

// GuardStatus implements GuardState.
func (m *MemGuard) GuardStatus(ctx context.Context, tenant string, now time.Time, p GuardParams) (GuardStatus, error) {
	if err := memCheck(ctx, p.Scope); err != nil {
		return GuardStatus{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.of(p.Scope).status(tenant, now, p), nil
}

// GuardReverted implements GuardState.
func (m *MemGuard) GuardReverted(ctx context.Context, tenant string, at time.Time) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s.of("").reverted(tenant, at) // reverts are every scope's
	return nil
}

// GuardGranted implements GuardState.
func (m *MemGuard) GuardGranted(ctx context.Context, tenant string, now time.Time, p GuardParams) error {
	if err := memCheck(ctx, p.Scope); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s.of(p.Scope).granted(tenant, now)
	return nil
}

// memCheck is MemGuard's check of a call's arguments.
func memCheck(ctx context.Context, scope string) error {
	if !validGuardScope(scope) {
		return fmt.Errorf("store: invalid guard scope %q", scope)
	}
	return errCtx(ctx)
}

// validGuardScope reports whether scope may name a guard scope.
func validGuardScope(scope string) bool {
	if len(scope) > 64 {
		return false
	}
	for i := 0; i < len(scope); i++ {
		c := scope[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
