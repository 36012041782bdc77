package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/lsproxy/lsproxy/auth"
)

// A schedule is everything a seed decides up front: how many replicas and
// tenants, each replica's clock skew, how the token endpoint answers, and
// a list of timed fault and admin events. Some events wait for a trigger
// (a process's next mark, send or lock wait) so that the narrow windows
// the protocol must close are hit often, not by luck.

type eventKind string

const (
	evPartition eventKind = "partition"    // slot's store calls fail / hang / lose their answers
	evFlaky     eventKind = "flaky"        // slot's store calls fail with probability p
	evPause     eventKind = "pause"        // the whole process stops (SIGSTOP)
	evKill      eventKind = "kill"         // SIGKILL, restarted after dur
	evShutdown  eventKind = "shutdown"     // graceful stop (FinishRefreshes), restarted after dur
	evStall     eventKind = "stall"        // replication stops; a failover follows after dur
	evFailover  eventKind = "failover"     // the replica is promoted (group: split brain for dur)
	evLostPub   eventKind = "lost-publish" // notifications lost with probability p for dur
	evProvider  eventKind = "provider"     // the token endpoint's answer mix changes for dur
	evMisconfig eventKind = "misconfig"    // slots restart with wrong credentials, fixed after dur
	evRevoke    eventKind = "revoke"       // the merchant revokes the grant
	evReauth    eventKind = "reauth"       // a flagged tenant is authorized again (onboarding)
	evPutRetry  eventKind = "put-retry"    // the import PUT of the tenant is sent again
	evForce     eventKind = "force"        // POST /admin/tenants/{id}/refresh
	evRetry     eventKind = "retry"        // POST /admin/tenants/{id}/retry
	evRekey     eventKind = "rekey"        // the record is rewritten as is (rekey)
	// evStall (trigAnswer only): the slot stops for dur right after a
	// grant's answer reached it, while another replica force-refreshes
	// that tenant (a successor waiting to take over).
	evAnswerStall eventKind = "answer-stall"
)

type trigger string

const (
	trigNone     trigger = ""
	trigMark     trigger = "mark"      // when the slot's next in-flight mark is written
	trigSend     trigger = "send"      // when the slot's next token request arrives
	trigLockHeld trigger = "lock-held" // when the slot next finds a tenant lock held
	trigMarkSeen trigger = "mark-seen" // when the slot next reads a record with a refresh in flight
	trigAnswer   trigger = "answer"    // when a grant's answer next reaches the slot
)

type event struct {
	at     time.Duration
	kind   eventKind
	slot   int
	tenant int
	dur    time.Duration
	mode   faultKind
	p      float64
	group  []int
	mix    answerMix
	trig   trigger
}

// maxSkew bounds a replica's clock skew (the skew theme's large case).
const maxSkew = 90 * time.Second

func (e event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", e.kind)
	switch e.kind {
	case evPartition, evFlaky, evPause, evKill, evShutdown, evMisconfig, evAnswerStall:
		fmt.Fprintf(&b, " r%d", e.slot)
	case evRevoke, evReauth, evPutRetry, evForce, evRetry, evRekey:
		fmt.Fprintf(&b, " t%d via r%d", e.tenant, e.slot)
	}
	if e.kind == evMisconfig || (e.kind == evFailover && len(e.group) > 0) {
		fmt.Fprintf(&b, " group %v", e.group)
	}
	if e.mode != faultNone {
		fmt.Fprintf(&b, " %s", e.mode)
	}
	if e.p > 0 {
		fmt.Fprintf(&b, " p=%.2f", e.p)
	}
	if e.kind == evProvider {
		fmt.Fprintf(&b, " %s", e.mix)
	}
	if e.dur > 0 {
		fmt.Fprintf(&b, " for %s", e.dur.Round(time.Millisecond))
	}
	if e.trig != trigNone {
		fmt.Fprintf(&b, " at the next %s", e.trig)
	}
	return b.String()
}

// answerMix weighs the token endpoint's answers (see answerNames).
type answerMix [len(answerNames)]float64

func (m answerMix) String() string {
	var parts []string
	for i, w := range m {
		if w > 0 && i != ansOK {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", answerNames[i], 100*w/m.total()))
		}
	}
	if len(parts) == 0 {
		return "all ok"
	}
	return strings.Join(parts, ", ")
}

func (m answerMix) total() float64 {
	t := 0.0
	for _, w := range m {
		t += w
	}
	return t
}

var calmMix = answerMix{ansOK: 1}

type schedule struct {
	seed     uint64
	replicas int
	tenants  int
	skews    []time.Duration
	lockTTL  time.Duration // 0: the default (derived from token_timeout)
	baseMix  answerMix
	events   []event
	themes   []string
}

func (s *schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d replicas, %d tenants, themes %v\n", s.seed, s.replicas, s.tenants, s.themes)
	for i, sk := range s.skews {
		if sk != 0 {
			fmt.Fprintf(&b, "  r%d clock skew %s\n", i, sk)
		}
	}
	if s.lockTTL > 0 {
		fmt.Fprintf(&b, "  lock_ttl %s\n", s.lockTTL)
	}
	fmt.Fprintf(&b, "  token endpoint: %s\n", s.baseMix)
	for _, e := range s.events {
		fmt.Fprintf(&b, "  %8s  %s\n", fmtOffset(e.at), e)
	}
	return b.String()
}

var themes = []string{"partition", "flaky", "pause", "kill", "shutdown", "failover", "split-brain",
	"lost-publish", "skew", "slow-provider", "rate-limited", "lost-answers", "misconfig", "revoke", "admin"}

// extraThemes are drawn from the second stream (x), each in one schedule
// of extraEvery, so that adding one left the schedules of themes as they
// were; -sim.themes may name them too.
var extraThemes = []string{"short-lease", "misconfig-flaky", "lost-reauth"}

const extraEvery = 6

// allThemes is every theme -sim.themes accepts.
func allThemes() []string { return append(slices.Clone(themes), extraThemes...) }

// newSchedule derives the schedule of seed.
func newSchedule(seed uint64, o simOptions) *schedule {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// x draws what later themes' variants add, so that adding one leaves
	// the schedules drawn from r (and the seeds the docs cite) as they were.
	x := rand.New(rand.NewPCG(seed^0x5851f42d4c957f2d, seed))
	s := &schedule{seed: seed, replicas: 2 + r.IntN(3), tenants: 3 + r.IntN(4)}
	s.skews = make([]time.Duration, s.replicas)
	s.baseMix = answerMix{ansOK: 1, ans503: 0.01}
	span := o.FaultPhase - 30*time.Second
	at := func() time.Duration { return 5*time.Second + time.Duration(r.Int64N(int64(span))) }
	xAt := func(within time.Duration) time.Duration {
		return 5*time.Second + time.Duration(x.Int64N(int64(within)))
	}
	dur := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo))) }
	slot := func() int { return r.IntN(s.replicas) }
	tenant := func() int { return r.IntN(s.tenants) }
	trig := func(choices ...trigger) trigger { return choices[r.IntN(len(choices))] }
	group := func(proper bool) []int {
		var g []int
		for i := range s.replicas {
			if r.IntN(2) == 0 {
				g = append(g, i)
			}
		}
		if len(g) == 0 {
			g = []int{slot()}
		}
		if proper && len(g) == s.replicas {
			g = g[1:]
		}
		return g
	}
	add := func(e event) { s.events = append(s.events, e) }

	pool := themes
	if len(o.Themes) > 0 {
		pool = o.Themes
	}
	n := min(2+r.IntN(4), len(pool))
	picked := map[string]bool{}
	for len(picked) < n {
		picked[pool[r.IntN(len(pool))]] = true
	}
	for _, th := range themes {
		if !picked[th] {
			continue
		}
		s.themes = append(s.themes, th)
		times := 1 + r.IntN(3)
		for range times {
			switch th {
			case "partition":
				d := dur(2*time.Second, 40*time.Second)
				if r.IntN(2) == 0 { // around lease + grace: where takeover and holder meet
					d = dur(8*time.Second, 14*time.Second)
				}
				add(event{at: at(), kind: evPartition, slot: slot(), mode: faultKind(1 + r.IntN(3)), dur: d,
					trig: trig(trigNone, trigMark, trigSend, trigSend)})
			case "flaky":
				add(event{at: at(), kind: evFlaky, slot: slot(), p: 0.2 + 0.5*r.Float64(), dur: dur(10*time.Second, 60*time.Second)})
			case "pause":
				add(event{at: at(), kind: evPause, slot: slot(), dur: dur(2*time.Second, 25*time.Second), trig: trig(trigNone, trigMark, trigMark)})
			case "kill":
				add(event{at: at(), kind: evKill, slot: slot(), dur: dur(time.Second, 20*time.Second), trig: trig(trigNone, trigSend, trigMark)})
			case "shutdown":
				e, sl := at(), slot()
				add(event{at: e, kind: evShutdown, slot: sl, dur: dur(time.Second, 10*time.Second), trig: trig(trigNone, trigLockHeld, trigMarkSeen, trigMarkSeen)})
				if r.IntN(2) == 0 { // a holder dies first, so a successor waits, then sends late
					add(event{at: e - dur(0, 5*time.Second), kind: evKill, slot: (sl + 1) % s.replicas, dur: dur(time.Second, 20*time.Second), trig: trigSend})
					// Answers lost after the commit leave marks to take over
					// (late sends); slow ones outlast a short budget.
					add(event{at: max(e-10*time.Second, 0), kind: evProvider, dur: o.FaultPhase, // until the heal: the trigger may fire late
						mix: answerMix{ansOK: 1, ansSlowOK: 1 + r.Float64(), ansTooSlow: 0.5 * r.Float64(), ansHang: 0.5 + 0.5*r.Float64(), ansResetAfterCommit: 0.3 * r.Float64()}})
					add(event{at: e, kind: evFlaky, slot: sl, p: 0.03 + 0.07*r.Float64(), dur: dur(20*time.Second, 60*time.Second)})
				}
				if x.IntN(3) == 0 {
					// A refresh already marked when the shutdown begins, then
					// the process stalls (CPU starved, stopped) for most of the
					// shutdown budget: resumed, it must not send with less than
					// a token request's time left (rule 16; defect 5). Slow
					// answers outlast what is left.
					e, sl := xAt(span), x.IntN(s.replicas)
					// Resumed with 9–10.25 s of the 20 s budget left: less
					// than token_timeout plus a write, within the lease.
					stall := auth.ShutdownBudget(o.TokenTimeout) - o.TokenTimeout - 250*time.Millisecond
					add(event{at: e, kind: evShutdown, slot: sl, dur: time.Second + time.Duration(x.Int64N(int64(5*time.Second))), trig: trigMark})
					add(event{at: e, kind: evPause, slot: sl, dur: stall + time.Duration(x.Int64N(int64(1250*time.Millisecond))), trig: trigMark})
					add(event{at: e, kind: evProvider, dur: o.FaultPhase,
						mix: answerMix{ansOK: 0.3, ansSlowOK: 1, ansTooSlow: 1}})
				}
			case "failover":
				e := at()
				if r.IntN(2) == 0 {
					add(event{at: e, kind: evStall, dur: dur(500*time.Millisecond, 8*time.Second)})
				} else {
					add(event{at: e, kind: evFailover})
				}
			case "split-brain":
				add(event{at: at(), kind: evFailover, group: group(true), dur: dur(2*time.Second, 20*time.Second)})
			case "lost-publish":
				e := at()
				add(event{at: e, kind: evLostPub, p: 0.3 + 0.7*r.Float64(), dur: dur(20*time.Second, 90*time.Second)})
				t := tenant()
				add(event{at: e + dur(0, 5*time.Second), kind: evRevoke, tenant: t, slot: slot()})
				add(event{at: e + dur(10*time.Second, 20*time.Second), kind: evReauth, tenant: t, slot: slot()})
			case "skew":
				big := r.IntN(3) == 0
				for i := range s.skews {
					lim := 3 * time.Second
					if big {
						lim = maxSkew
					}
					s.skews[i] = time.Duration(r.Int64N(int64(2*lim))) - lim
				}
			case "slow-provider":
				add(event{at: at(), kind: evProvider, dur: dur(20*time.Second, 120*time.Second),
					mix: answerMix{ansOK: 1, ansSlowOK: 0.3 + r.Float64(), ansTooSlow: 0.2 * r.Float64(), ans503: 0.1 * r.Float64()}})
			case "rate-limited":
				add(event{at: at(), kind: evProvider, dur: dur(20*time.Second, 120*time.Second),
					mix: answerMix{ansOK: 1, ans429: 0.3 + r.Float64(), ansSlowOK: 0.3 + r.Float64()}})
			case "lost-answers":
				add(event{at: at(), kind: evProvider, dur: dur(20*time.Second, 120*time.Second),
					mix: answerMix{ansOK: 1, ansResetAfterCommit: 0.2 + 0.5*r.Float64(), ansHang: 0.2 * r.Float64(), ansTooSlow: 0.2 * r.Float64()}})
			case "misconfig":
				e := at()
				g := group(false)
				add(event{at: e, kind: evMisconfig, group: g, dur: dur(10*time.Second, 90*time.Second)})
				if r.IntN(2) == 0 {
					add(event{at: e + time.Second, kind: evFlaky, slot: g[0], p: 0.3 + 0.4*r.Float64(), dur: dur(20*time.Second, 100*time.Second)})
				}
			case "revoke":
				e := at()
				k := 1 + r.IntN(3)
				for _, t := range r.Perm(s.tenants)[:min(k, s.tenants)] {
					add(event{at: e, kind: evRevoke, tenant: t, slot: slot()})
					if r.IntN(2) == 0 {
						add(event{at: e + dur(20*time.Second, 90*time.Second), kind: evReauth, tenant: t, slot: slot()})
					}
				}
			case "admin":
				for range 2 + r.IntN(6) {
					k := []eventKind{evPutRetry, evPutRetry, evForce, evRetry, evRekey}[r.IntN(5)]
					add(event{at: at(), kind: k, tenant: tenant(), slot: slot()})
				}
			}
		}
	}
	for _, th := range extraThemes {
		if len(o.Themes) > 0 && !slices.Contains(o.Themes, th) || len(o.Themes) == 0 && x.IntN(extraEvery) != 0 {
			continue
		}
		s.themes = append(s.themes, th)
		switch th {
		case "short-lease":
			// The shortest lock_ttl the configuration accepts (just above
			// token_timeout): only the renewal right before the send makes
			// the lease cover the token request and the write (rule 17;
			// defect 2). Slow answers come late in the request, and the
			// holder stalls after the answer, so its write lands after a
			// lease that covered only lock_ttl but within one that covered
			// the send (token_timeout + 1.25 s) and the grace.
			s.lockTTL = o.TokenTimeout + 100*time.Millisecond + time.Duration(x.Int64N(int64(150*time.Millisecond)))
			add(event{at: 5 * time.Second, kind: evProvider, dur: o.FaultPhase,
				mix: answerMix{ansOK: 0.2, ansSlowOK: 1}})
			for range 3 + x.IntN(4) {
				add(event{at: xAt(span), kind: evAnswerStall, slot: x.IntN(s.replicas),
					dur: 100*time.Millisecond + time.Duration(x.Int64N(int64(200*time.Millisecond))), trig: trigAnswer})
			}
		case "lost-reauth":
			// A revoked merchant is flagged (an operator forces the
			// refresh), every replica caches the flag, the merchant
			// authorizes again and that write's notification is lost;
			// then one replica's store calls nearly all fail for minutes
			// while its subscription still delivers (commands time out,
			// pushes arrive): it cannot read the count of lost
			// notifications, so its cached flag must not be trusted past
			// cache_ttl (rule 21; defect 10).
			e, t := xAt(span-60*time.Second), x.IntN(s.tenants)
			via := x.IntN(s.replicas)
			cut := (via + 1 + x.IntN(s.replicas-1)) % s.replicas
			add(event{at: e, kind: evRevoke, tenant: t, slot: via})
			add(event{at: e + time.Second, kind: evForce, tenant: t, slot: via})
			add(event{at: e + 12*time.Second, kind: evLostPub, p: 1, dur: 4 * time.Second})
			add(event{at: e + 14*time.Second, kind: evReauth, tenant: t, slot: via})
			add(event{at: e + 17*time.Second, kind: evFlaky, slot: cut, p: 0.99, dur: 90*time.Second + time.Duration(x.Int64N(int64(60*time.Second)))})
		case "misconfig-flaky":
			// A wrong configuration: the first tenants are flagged by one
			// replica while the store answers; the rejection that trips
			// the guard comes on another, whose store calls start failing
			// right as it sends: the trip's reverts fail there and must
			// stay pending until one is done (rule 20; defect 9).
			e := xAt(span)
			a := x.IntN(s.replicas)
			b := (a + 1 + x.IntN(s.replicas-1)) % s.replicas
			g := []int{a, b}
			for i := range s.replicas {
				if i != a && i != b && x.IntN(2) == 0 {
					g = append(g, i)
				}
			}
			add(event{at: e, kind: evMisconfig, group: g, dur: 30*time.Second + time.Duration(x.Int64N(int64(60*time.Second)))})
			step := 2 * time.Second
			for i, t := range x.Perm(s.tenants) {
				via := a
				if i >= guardThreshold-1 {
					via = b
				}
				add(event{at: e + time.Second + time.Duration(i)*step, kind: evForce, tenant: t, slot: via})
			}
			add(event{at: e + time.Second, kind: evFlaky, slot: b, p: 0.5 + 0.3*x.Float64(), dur: 20*time.Second + time.Duration(x.Int64N(int64(20*time.Second))), trig: trigSend})
		}
	}
	slices.SortStableFunc(s.events, func(a, b event) int { return int(a.at - b.at) })
	return s
}

func fmtOffset(d time.Duration) string {
	ms := d.Milliseconds()
	return fmt.Sprintf("%02d:%02d.%03d", ms/60000, ms/1000%60, ms%1000)
}
