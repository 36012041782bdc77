package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/store"
)

// The in-memory store shared by the simulated replicas: one master node
// (records, locks on the store's clock, one-time values), a replica node
// that follows it (synchronously, except while replication is stalled),
// change notifications, and fault injection per replica process (conn).
//
// A failover promotes the replica node: writes the master applied since
// the replica last caught up are lost. A split brain keeps a group of
// processes on the old master for a while (it then has no replica: a
// PutAcked there falls short, unless defect ZeroReplicasAcked counts 0
// replicas as acknowledged, as the Redis store once did).
//
// The store's clock is the bubble's time (time.Now): it has no skew.

// node is one Redis server's data.
type node struct {
	name  string
	recs  map[string]*store.Tenant
	locks map[string]lockEntry
	once  map[string]onceEntry
	// unreplicated lists the refresh tokens written on this node that its
	// replica has not received (lost if it is replaced by a failover).
	unreplicated []writeRec
}

type lockEntry struct {
	owner string
	exp   time.Time
}

type onceEntry struct {
	v   []byte
	exp time.Time
}

type writeRec struct {
	tenant, refresh string
	flagged         bool // the write flagged the tenant
}

func newNode(name string) *node {
	return &node{name: name, recs: map[string]*store.Tenant{}, locks: map[string]lockEntry{}, once: map[string]onceEntry{}}
}

func (n *node) copyFrom(o *node, name string) *node {
	c := newNode(name)
	for k, v := range o.recs {
		c.recs[k] = v.Clone()
		c.recs[k].Version, c.recs[k].WriteID = v.Version, v.WriteID
	}
	for k, v := range o.locks {
		c.locks[k] = v
	}
	for k, v := range o.once {
		c.once[k] = v
	}
	return c
}

// memStore is the shared store.
type memStore struct {
	w *world

	mu          sync.Mutex
	master      *node
	replica     *node // nil: the master has no replica
	stalled     bool  // the replica does not follow the master
	oldMaster   *node // split brain: the old master, for the processes in split
	split       map[int]bool
	splitGen    int // counts split brains: a heal ends only its own
	seq         int // write ids, lock owners
	subs        map[*sub]struct{}
	lostPub     float64                    // probability a write's notification is lost (see drop)
	everStored  map[string]map[string]bool // tenant → refresh tokens ever written (any node)
	lostWrites  map[string]bool            // refresh tokens whose only writes a failover discarded
	lostFlags   map[string]bool            // refresh tokens whose flag a failover discarded
	lostActive  map[string]time.Time       // tenant → the last lost notification of a write that left it active
	activeSince map[string]time.Time       // tenant → when a write last made it active
	puts        map[string]*putStat        // "proc/refresh token" → its writes (notePut)
	// guard is the fleet's guard state (store.GuardState, SPEC §3 rule
	// 20), one for every process, as the Redis store keeps it under its
	// {guard} key. It is not part of a node: a failover does not roll it
	// back (the guard's state tolerates a lost update: at worst a trip or
	// a flag is decided again).
	guard *store.MemGuard
	// lost counts the notifications lost by a failed publish
	// (store.NotifyLosses, SPEC §3 rule 21), as the Redis store's
	// "changes:lost" counter does.
	lost uint64
}

type sub struct {
	p  *proc
	ch chan string
}

func newMemStore(w *world) *memStore {
	m := &memStore{w: w, master: newNode("m1"), subs: map[*sub]struct{}{},
		everStored: map[string]map[string]bool{}, lostWrites: map[string]bool{}, lostFlags: map[string]bool{}, lostActive: map[string]time.Time{}, activeSince: map[string]time.Time{}, puts: map[string]*putStat{}, guard: store.NewMemGuard()}
	m.replica = m.master.copyFrom(m.master, "r1")
	return m
}

// nodeFor returns the node process p talks to. Call with mu held.
func (m *memStore) nodeFor(p *proc) *node {
	if m.oldMaster != nil && m.split[p.slot] {
		return m.oldMaster
	}
	return m.master
}

// stallReplication stops (on) or resumes (off, by a full resync) the
// replica's following.
func (m *memStore) stallReplication(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stalled = on
	if !on && m.replica != nil {
		m.replica = m.replica.copyFrom(m.master, m.replica.name)
		m.master.unreplicated = nil
	}
}

// failover promotes the replica; the processes in group stay on the old
// master (split brain) until healSplit.
func (m *memStore) failover(group []int) (gen int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// A failover during a split brain demotes its old master too: its
	// writes since that split are lost (the newer promotion wins).
	m.healSplitLocked()
	old := m.master
	for _, w := range old.unreplicated {
		m.loseLocked(m.replica, w)
	}
	m.seq++
	m.master = m.replica
	m.master.name = fmt.Sprintf("m%d", m.seq)
	m.master.unreplicated = nil
	m.replica = m.master.copyFrom(m.master, fmt.Sprintf("r%d", m.seq))
	m.stalled = false
	m.w.tracef("store: failover: %s promoted (%d writes of %s not replicated are lost)", m.master.name, len(old.unreplicated), old.name)
	if len(group) > 0 {
		m.oldMaster = old
		m.oldMaster.unreplicated = nil
		m.split = map[int]bool{}
		for _, r := range group {
			m.split[r] = true
		}
		m.w.tracef("store: split brain: replicas %v still write to the old master %s", group, old.name)
	}
	m.splitGen++
	m.dropSubsLocked(func(*sub) bool { return true })
	return m.splitGen
}

// healSplit ends the split brain failover returned gen for (none if it
// ended already): the old master is demoted and its writes since the
// split are lost. gen 0 ends any.
func (m *memStore) healSplit(gen int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if gen != 0 && gen != m.splitGen {
		return
	}
	m.healSplitLocked()
}

func (m *memStore) healSplitLocked() {
	if m.oldMaster == nil {
		return
	}
	for _, w := range m.oldMaster.unreplicated {
		m.loseLocked(m.master, w)
	}
	m.w.tracef("store: split brain healed: %s demoted (%d writes lost)", m.oldMaster.name, len(m.oldMaster.unreplicated))
	m.oldMaster, m.split = nil, nil
	m.dropSubsLocked(func(*sub) bool { return true })
}

// splitNode reports whether p talks to the old master of a split brain.
func (m *memStore) splitNode(p *proc) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.oldMaster != nil && m.split[p.slot]
}

// loseLocked records what losing w (not on n, the node that now serves)
// loses: the refresh token it stored, or the flag it set.
func (m *memStore) loseLocked(n *node, w writeRec) {
	if !m.writtenOn(n, w) {
		m.lostWrites[w.refresh] = true
	}
	// A lost flag write may have been set again since, on n, by the very
	// re-send it let through: the loss counts whatever n holds now.
	if w.flagged {
		m.lostFlags[w.refresh] = true
	}
}

func (m *memStore) writtenOn(n *node, w writeRec) bool {
	r := n.recs[w.tenant]
	return r != nil && r.RefreshToken == w.refresh
}

// dropSubsLocked ends the subscriptions that match (a dropped
// connection): their readers see the end and resubscribe.
func (m *memStore) dropSubsLocked(match func(*sub) bool) {
	for s := range m.subs {
		if match(s) {
			delete(m.subs, s)
			close(s.ch)
		}
	}
}

// notifyLocked delivers id to the subscribers on node n, unless this
// write's notification is lost: its publish failed, which the Redis store
// counts (LostNotifications). (A writer killed between its write and its
// publish loses a notification without a trace: a failure mode that
// remains, docs/reliability.md; the fake does not inject it.)
func (m *memStore) notifyLocked(n *node, id string, writer *proc, wid string) {
	if m.lostPub > 0 && m.w.chance(m.lostPub, "publish", id, wid) {
		if r := n.recs[id]; r != nil && r.Status == store.StatusActive {
			m.lostActive[id] = time.Now()
		}
		m.lost++
		m.w.tracef("store: notification of %s's write %s lost (lost notifications: %d)", id, wid, m.lost)
		return
	}
	for s := range m.subs {
		if m.nodeFor(s.p) != n {
			continue
		}
		select {
		case s.ch <- id:
		default: // a slow reader: the connection is dropped, as Redis does
			delete(m.subs, s)
			close(s.ch)
		}
	}
}

// putLocked is Put on node n.
func (m *memStore) putLocked(n *node, t *store.Tenant, expect int64, writer *proc) (int64, error) {
	cur := n.recs[t.ID]
	switch {
	case expect == 0 && cur != nil:
		return 0, fmt.Errorf("%w: tenant exists", store.ErrConflict)
	case expect != 0 && (cur == nil || cur.Version != expect || (t.WriteID != "" && cur.WriteID != t.WriteID)):
		return 0, fmt.Errorf("%w: tenant %s", store.ErrConflict, t.ID)
	}
	if t.Status == store.StatusActive && (cur == nil || cur.Status != store.StatusActive) {
		m.activeSince[t.ID] = time.Now()
	}
	m.seq++
	c := t.Clone()
	c.Version, c.WriteID = expect+1, fmt.Sprintf("w%d", m.seq)
	n.recs[t.ID] = c
	t.Version, t.WriteID = c.Version, c.WriteID
	if m.everStored[t.ID] == nil {
		m.everStored[t.ID] = map[string]bool{}
	}
	m.everStored[t.ID][t.RefreshToken] = true
	m.replicateLocked(n, writeRec{t.ID, t.RefreshToken, t.Status == store.StatusReauthorizationRequired}, func(r *node) {
		rc := c.Clone()
		rc.Version, rc.WriteID = c.Version, c.WriteID
		r.recs[t.ID] = rc
	})
	m.notifyLocked(n, t.ID, writer, c.WriteID)
	return c.Version, nil
}

// replicateLocked applies a write of node n to its replica, or remembers
// it as unreplicated.
func (m *memStore) replicateLocked(n *node, w writeRec, apply func(r *node)) {
	if n == m.master && m.replica != nil && !m.stalled {
		apply(m.replica)
		return
	}
	if w.tenant != "" {
		n.unreplicated = append(n.unreplicated, w)
	}
}

// acked reports whether node n's writes so far are acknowledged by a
// replica. Call with mu held.
func (m *memStore) ackedLocked(n *node) bool {
	return n == m.master && (m.replica == nil || !m.stalled)
}

// conn is one process's view of the store, with its faults. It implements
// store.Store and store.AckedPutter.
type conn struct {
	s *memStore
	p *proc
	// gets counts Get attempts per tenant: a request that made none was
	// answered from the cache (invariant f).
	gets sync.Map // tenant → *atomic.Int64
}

// getCount returns how often tenant's record was asked for.
func (c *conn) getCount(tenant string) int64 {
	if n, ok := c.gets.Load(tenant); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

var (
	_ store.Store        = (*conn)(nil)
	_ store.AckedPutter  = (*conn)(nil)
	_ store.GuardState   = (*conn)(nil)
	_ store.NotifyLosses = (*conn)(nil)
)

var errNet = errors.New("sim: connection to the store failed")

// call runs apply against the process's node under the store's lock, with
// the process's faults: a pause holds the call before and after; a
// partition fails it, makes it hang until ctx ends or the partition heals
// (not applied), or applies it and loses the answer; a dead process's
// call ends its goroutine (its effects after death are dropped).
func (c *conn) call(ctx context.Context, op, key string, apply func(n *node) error) error {
	return c.callThen(ctx, op, key, apply, nil)
}

// callThen is call; then (if not nil) runs after apply, before the
// answer returns: where a trigger fires.
func (c *conn) callThen(ctx context.Context, op, key string, apply func(n *node) error, then func(error)) error {
	p := c.p
	p.gate()
	switch f := p.storeFault(op, key); f {
	case faultFail:
		return fmt.Errorf("%s: %w", op, errNet)
	case faultHang:
		if err := p.waitHealed(ctx); err != nil {
			return fmt.Errorf("%s: %w (%w)", op, err, errNet) // the fault's: notePut counts it
		}
		return fmt.Errorf("%s: %w (after the partition healed)", op, errNet)
	case faultLoseReply:
		c.s.mu.Lock()
		_ = apply(c.s.nodeFor(p))
		c.s.mu.Unlock()
		if err := p.waitHealed(ctx); err != nil {
			return fmt.Errorf("%s: %w (%w)", op, err, errNet)
		}
		return fmt.Errorf("%s: %w (answer lost)", op, errNet)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.s.mu.Lock()
	err := apply(c.s.nodeFor(p))
	c.s.mu.Unlock()
	if then != nil {
		then(err)
	}
	p.gate()
	p.contact()
	return err
}

func (c *conn) Get(ctx context.Context, id string) (*store.Tenant, error) {
	n, _ := c.gets.LoadOrStore(id, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	var out *store.Tenant
	err := c.callThen(ctx, "get", id, func(n *node) error {
		r := n.recs[id]
		if r == nil {
			return fmt.Errorf("%w: tenant %s", store.ErrNotFound, id)
		}
		out = r.Clone()
		out.Version, out.WriteID = r.Version, r.WriteID
		return nil
	}, func(err error) {
		if err == nil && out.RefreshInFlight {
			c.p.fire(trigMarkSeen)
		}
	})
	return out, err
}

func (c *conn) List(ctx context.Context) ([]string, error) {
	var ids []string
	err := c.call(ctx, "list", "", func(n *node) error {
		for id := range n.recs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return nil
	})
	return ids, err
}

func (c *conn) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	var v int64
	err := c.call(ctx, "put", t.ID, func(n *node) error {
		var err error
		v, err = c.s.putLocked(n, t, expect, c.p)
		return err
	})
	c.s.notePut(c.p, t.RefreshToken, err)
	return v, err
}

// putStat counts one process's writes of records holding one refresh
// token: attempts that the store's faults failed, and successes.
type putStat struct{ failed, ok int }

// notePut records a write of a record holding refresh token rt by p.
// Only the store's faults count as failures (a conflict is the protocol's
// answer, a deadline the caller's own: a stalled holder's).
func (m *memStore) notePut(p *proc, rt string, err error) {
	if rt == "" || err != nil && !errors.Is(err, errNet) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := p.name + "/" + rt
	st := m.puts[k]
	if st == nil {
		st = &putStat{}
		m.puts[k] = st
	}
	if err == nil {
		st.ok++
	} else {
		st.failed++
	}
}

// putsFailed reports whether p tried to write a record holding rt and the
// store's faults failed every attempt.
func (m *memStore) putsFailed(p *proc, rt string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.puts[p.name+"/"+rt]
	return st != nil && st.failed > 0 && st.ok == 0
}

// ackWait is the fake WAIT's timeout.
const ackWait = time.Second

// PutAcked is Put, acknowledged by the replica: while replication is
// stalled, or on an old master cut off by a split brain, it waits ackWait
// and answers ErrNotAcked (the write stays applied).
func (c *conn) PutAcked(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	var v int64
	acked := true
	split := false
	err := c.callThen(ctx, "put_acked", t.ID, func(n *node) error {
		var err error
		v, err = c.s.putLocked(n, t, expect, c.p)
		acked = c.s.ackedLocked(n)
		split = n == c.s.oldMaster
		return err
	}, func(err error) {
		if err == nil && t.RefreshInFlight && t.RefreshMark != "" {
			c.p.fire(trigMark)
		}
	})
	if err != nil || acked {
		return v, err
	}
	if split && defect.On(defect.ZeroReplicasAcked) {
		// The old master now reports 0 connected replicas: the defect
		// counts the write as acknowledged.
		return v, nil
	}
	timer := time.NewTimer(ackWait)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	c.p.gate()
	return v, fmt.Errorf("%w: 0 of 1 replicas", store.ErrNotAcked)
}

func (c *conn) Delete(ctx context.Context, id string) error {
	return c.call(ctx, "delete", id, func(n *node) error {
		if n.recs[id] == nil {
			return fmt.Errorf("%w: tenant %s", store.ErrNotFound, id)
		}
		delete(n.recs, id)
		c.s.notifyLocked(n, id, c.p, "delete")
		return nil
	})
}

func (c *conn) TryLock(ctx context.Context, name string, ttl time.Duration) (store.Lock, error) {
	var l *memLock
	err := c.callThen(ctx, "trylock", name, func(n *node) error {
		now := time.Now()
		if e, ok := n.locks[name]; ok && now.Before(e.exp) {
			return store.ErrLockHeld
		}
		c.s.seq++
		owner := fmt.Sprintf("o%d", c.s.seq)
		e := lockEntry{owner: owner, exp: now.Add(ttl)}
		n.locks[name] = e
		c.s.replicateLocked(n, writeRec{}, func(r *node) { r.locks[name] = e })
		l = &memLock{c: c, name: name, owner: owner}
		return nil
	}, func(err error) {
		if errors.Is(err, store.ErrLockHeld) {
			c.p.fire(trigLockHeld)
		}
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (c *conn) PeekLock(ctx context.Context, name string) (bool, error) {
	var held bool
	err := c.call(ctx, "peeklock", name, func(n *node) error {
		e, ok := n.locks[name]
		held = ok && time.Now().Before(e.exp)
		return nil
	})
	return held, err
}

func (c *conn) PutOnce(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return c.call(ctx, "putonce", key, func(n *node) error {
		if e, ok := n.once[key]; ok && time.Now().Before(e.exp) {
			return store.ErrConflict
		}
		n.once[key] = onceEntry{v: append([]byte(nil), value...), exp: time.Now().Add(ttl)}
		return nil
	})
}

func (c *conn) TakeOnce(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := c.call(ctx, "takeonce", key, func(n *node) error {
		e, ok := n.once[key]
		if !ok || !time.Now().Before(e.exp) {
			return store.ErrNotFound
		}
		delete(n.once, key)
		v = e.v
		return nil
	})
	return v, err
}

// Subscribe delivers the ids written on the process's node. A partition
// or failover drops the subscription (the channel closes).
func (c *conn) Subscribe(ctx context.Context) (<-chan string, error) {
	s := &sub{p: c.p, ch: make(chan string, 256)}
	err := c.call(ctx, "subscribe", "", func(*node) error {
		c.s.subs[s] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(chan string)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				c.s.mu.Lock()
				if _, ok := c.s.subs[s]; ok {
					delete(c.s.subs, s)
				}
				c.s.mu.Unlock()
				return
			case id, ok := <-s.ch:
				if !ok {
					return
				}
				select {
				case out <- id:
				case <-ctx.Done():
				}
			}
		}
	}()
	return out, nil
}

func (c *conn) Ping(ctx context.Context) error {
	return c.call(ctx, "ping", "", func(*node) error { return nil })
}

func (c *conn) Close() error { return nil }

// memLock is a lock on the store's clock.
type memLock struct {
	c     *conn
	name  string
	owner string
}

var _ store.AckedLock = (*memLock)(nil)

// Refresh extends the lock to ttl from now on the store's clock;
// store.ErrLockLost when it is not held by this owner (expired, taken).
func (l *memLock) Refresh(ctx context.Context, ttl time.Duration) error {
	_, err := l.refresh(ctx, "renew", ttl)
	return err
}

// RefreshAcked is Refresh acknowledged by the replica (store.AckedLock),
// as PutAcked: while replication is stalled, or on an old master cut off
// by a split brain, the extension is applied but the call waits ackWait
// and answers ErrNotAcked (a failover could bring the lock back with its
// earlier expiry).
func (l *memLock) RefreshAcked(ctx context.Context, ttl time.Duration) error {
	acked, err := l.refresh(ctx, "renew_acked", ttl)
	if err != nil || acked {
		return err
	}
	if l.c.s.splitNode(l.c.p) && defect.On(defect.ZeroReplicasAcked) {
		return nil // the old master reports 0 replicas: counted as acknowledged
	}
	timer := time.NewTimer(ackWait)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	l.c.p.gate()
	return fmt.Errorf("%w: lock renewal: 0 of 1 replicas", store.ErrNotAcked)
}

func (l *memLock) refresh(ctx context.Context, op string, ttl time.Duration) (acked bool, err error) {
	err = l.c.call(ctx, op, l.name, func(n *node) error {
		acked = l.c.s.ackedLocked(n)
		e, ok := n.locks[l.name]
		now := time.Now()
		if !ok || e.owner != l.owner || !now.Before(e.exp) {
			return store.ErrLockLost
		}
		e.exp = now.Add(ttl)
		n.locks[l.name] = e
		l.c.s.replicateLocked(n, writeRec{}, func(r *node) { r.locks[l.name] = e })
		return nil
	})
	return acked, err
}

func (l *memLock) Release(ctx context.Context) error {
	return l.c.call(ctx, "release", l.name, func(n *node) error {
		e, ok := n.locks[l.name]
		if !ok || e.owner != l.owner || !time.Now().Before(e.exp) {
			return store.ErrLockLost
		}
		delete(n.locks, l.name)
		l.c.s.replicateLocked(n, writeRec{}, func(r *node) { delete(r.locks, l.name) })
		return nil
	})
}

// LostNotifications implements store.NotifyLosses: the fleet's count of
// lost publishes, read through the process's faults.
func (c *conn) LostNotifications(ctx context.Context) (uint64, error) {
	var n uint64
	err := c.call(ctx, "lost", "", func(*node) error {
		n = c.s.lost
		return nil
	})
	return n, err
}

// The guard state (store.GuardState) is the store's shared MemGuard, each
// call through the process's faults (a lost answer applies the call).

func (c *conn) GuardReject(ctx context.Context, tenant string, now time.Time, p store.GuardParams) (store.GuardVerdict, error) {
	var v store.GuardVerdict
	err := c.call(ctx, "guard_reject", tenant, func(*node) error {
		var err error
		v, err = c.s.guard.GuardReject(ctx, tenant, now, p)
		return err
	})
	return v, err
}

func (c *conn) GuardFlagged(ctx context.Context, tenant string, at time.Time, trips uint64, p store.GuardParams) (bool, error) {
	var ok bool
	err := c.call(ctx, "guard_flagged", tenant, func(*node) error {
		var err error
		ok, err = c.s.guard.GuardFlagged(ctx, tenant, at, trips, p)
		return err
	})
	return ok, err
}

func (c *conn) GuardStatus(ctx context.Context, tenant string, now time.Time, p store.GuardParams) (store.GuardStatus, error) {
	var st store.GuardStatus
	err := c.call(ctx, "guard_status", tenant, func(*node) error {
		var err error
		st, err = c.s.guard.GuardStatus(ctx, tenant, now, p)
		return err
	})
	return st, err
}

func (c *conn) GuardReverted(ctx context.Context, tenant string, at time.Time) error {
	return c.call(ctx, "guard_reverted", tenant, func(*node) error {
		return c.s.guard.GuardReverted(ctx, tenant, at)
	})
}

func (c *conn) GuardGranted(ctx context.Context, tenant string, now time.Time, p store.GuardParams) error {
	return c.call(ctx, "guard_granted", tenant, func(*node) error {
		return c.s.guard.GuardGranted(ctx, tenant, now, p)
	})
}
