package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lsproxy/lsproxy/internal/defect"
)

// ErrNotAcked: a write was applied on the master but not acknowledged by
// the required number of replicas within the bound (SPEC §3 rule 14).
var ErrNotAcked = errors.New("store: write not acknowledged by enough replicas")

// AckedPutter is implemented by stores whose backend may have replicas
// (Redis). PutAcked is Put that returns only once the write, and every
// write the master applied before it (such as a lock taken earlier), is
// acknowledged by the configured number of replicas. When the master has no
// replicas it is Put. Safe for concurrent use.
//
// Errors: as for Put; an error wrapping ErrNotAcked when the write was
// applied but not acknowledged in time (the returned version and t's
// Version and WriteID are then the written ones).
type AckedPutter interface {
	PutAcked(ctx context.Context, t *Tenant, expect int64) (int64, error)
}

var _ AckedPutter = (*Redis)(nil)

// replicaCheckInterval: how often the number of connected replicas is read
// again (INFO replication), so a replica added or lost is noticed.
// replicaRecheckMin: how often, at most, a WAIT with too few
// acknowledgements has it read again at once (a failover may have made a
// master without replicas). replicaReadTimeout bounds each read.
const (
	replicaCheckInterval = 30 * time.Second
	replicaRecheckMin    = time.Second
	replicaReadTimeout   = time.Second
)

// replicaState is the master's replication state as PutAcked knows it.
type replicaState struct {
	readMu sync.Mutex // one INFO replication read at a time; taken before mu
	mu     sync.Mutex // guards the fields below
	count  int        // connected replicas at the last successful read
	readAt time.Time  // last read attempt
	known  bool       // a read succeeded
	// replid is the master's replication id at the last read; hadReplicas
	// is the replication id under which replicas were last seen connected
	// ("" when none were seen since this process started). A master that
	// lost its replicas keeps its replication id; a promoted one gets a
	// new one (SPEC §3 rule 14).
	replid, hadReplicas string
}

// ReplicaInfo is what DetectReplicas found.
type ReplicaInfo struct {
	// Connected is the smallest number of replicas connected to a master
	// (INFO replication connected_slaves; for a cluster, over all masters).
	Connected int
	// Wait is how many acknowledgements PutAcked waits for: 0 when the
	// master has no replicas or waiting is off.
	Wait int
	// Timeout bounds each wait.
	Timeout time.Duration
}

// DetectReplicas reads the master's replication state now and remembers it
// for PutAcked (which re-reads it every 30 s on its own, and at once when
// a WAIT falls short). Call it at startup to log what was found.
func (r *Redis) DetectReplicas(ctx context.Context) (ReplicaInfo, error) {
	if _, err := r.readReplicas(ctx, 0); err != nil {
		return ReplicaInfo{}, fmt.Errorf("store: redis replication info: %w", err)
	}
	r.rep.mu.Lock()
	defer r.rep.mu.Unlock()
	return r.replicaInfoLocked(), nil
}

func (r *Redis) replicaInfoLocked() ReplicaInfo {
	info := ReplicaInfo{Connected: r.rep.count, Timeout: r.waitTimeout}
	if r.rep.count > 0 {
		info.Wait = r.waitReplicas
	}
	return info
}

// replicaWait returns how many acknowledgements to wait for, re-reading
// the replication state when it is older than replicaCheckInterval. A
// failed read keeps the previous answer; with none, it waits for
// waitReplicas (the safe side: a refresh is refused rather than sent
// unacknowledged).
func (r *Redis) replicaWait(ctx context.Context) int {
	if r.waitReplicas <= 0 {
		return 0
	}
	r.readReplicas(ctx, replicaCheckInterval)
	r.rep.mu.Lock()
	defer r.rep.mu.Unlock()
	if !r.rep.known {
		return r.waitReplicas
	}
	if r.rep.count == 0 && !r.promotedLocked() {
		// The master that had replicas lost them: unacknowledged means
		// nothing is sent, not "a master without replicas".
		return r.waitReplicas
	}
	return r.replicaInfoLocked().Wait
}

// promotedLocked reports whether a master with no connected replicas may
// take writes without WAIT: it never had replicas while this process
// watched, or its replication id changed since it had (it was promoted, or
// is another master). A master whose replicas merely dropped away keeps
// its replication id and does not qualify. Call with rep.mu held.
func (r *Redis) promotedLocked() bool {
	if r.rep.count != 0 {
		return false
	}
	if defect.On(defect.ZeroReplicasAcked) {
		return true // the old rule: 0 replicas read back = acknowledged
	}
	return r.rep.hadReplicas == "" || r.rep.replid != r.rep.hadReplicas
}

// promoted re-reads the replication state (at most every
// replicaRecheckMin) after a WAIT fell short and reports promotedLocked.
func (r *Redis) promoted(ctx context.Context) bool {
	if _, err := r.readReplicas(ctx, replicaRecheckMin); err != nil {
		return false
	}
	r.rep.mu.Lock()
	defer r.rep.mu.Unlock()
	return r.promotedLocked()
}

// readReplicas reads connected_slaves again when the last attempt is
// older than maxAge (without a successful read yet: replicaRecheckMin),
// reporting a changed count. Concurrent callers wait for one read. It
// returns the count known after it; an error only when the read was due
// and failed.
func (r *Redis) readReplicas(ctx context.Context, maxAge time.Duration) (int, error) {
	r.rep.readMu.Lock()
	defer r.rep.readMu.Unlock()
	r.rep.mu.Lock()
	age := time.Since(r.rep.readAt)
	due := age >= maxAge || !r.rep.known && age >= replicaRecheckMin
	count := r.rep.count
	r.rep.mu.Unlock()
	if !due {
		return count, nil
	}
	rctx, cancel := context.WithTimeout(ctx, replicaReadTimeout)
	n, replid, err := r.connectedReplicas(rctx)
	cancel()
	r.rep.mu.Lock()
	defer r.rep.mu.Unlock()
	r.rep.readAt = time.Now()
	if err != nil {
		return r.rep.count, err
	}
	if r.rep.known && n != r.rep.count {
		r.report("replicas", fmt.Errorf("store: redis master now has %d connected replicas (was %d)", n, r.rep.count))
	}
	r.rep.count, r.rep.known, r.rep.replid = n, true, replid
	if n > 0 {
		r.rep.hadReplicas = replid
	}
	return n, nil
}

// connectedReplicas reads connected_slaves and master_replid from INFO
// replication (for a cluster: the minimum count over all masters, and
// their replication ids joined in a stable order).
func (r *Redis) connectedReplicas(ctx context.Context) (int, string, error) {
	if cc, ok := r.client.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		min := -1
		var ids []string
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			n, id, err := replicasOf(ctx, c)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && (min < 0 || n < min) {
				min = n
			}
			ids = append(ids, id)
			return err
		})
		sort.Strings(ids)
		return max(min, 0), strings.Join(ids, ","), err
	}
	return replicasOf(ctx, r.client)
}

func replicasOf(ctx context.Context, c redis.Cmdable) (n int, replid string, err error) {
	s, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return 0, "", err
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "connected_slaves:"); ok {
			if n, err = strconv.Atoi(v); err != nil {
				return 0, "", err
			}
		} else if v, ok := strings.CutPrefix(line, "master_replid:"); ok {
			replid = v
		}
	}
	return n, replid, nil
}

// PutAcked is Put followed by WAIT on the same connection (WAIT covers the
// writes its connection made, and the replication stream is ordered, so it
// also covers a lock the master applied earlier). See AckedPutter.
func (r *Redis) PutAcked(ctx context.Context, t *Tenant, expect int64) (int64, error) {
	need := r.replicaWait(ctx)
	if need == 0 || expect == 0 {
		return r.Put(ctx, t, expect)
	}
	blob, writeID, err := encodeTenant(r.keys, t)
	if err != nil {
		return 0, err
	}
	id := t.ID
	key := r.tenantKey(id)
	node, err := r.nodeFor(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("store: redis put tenant %q: %w", id, err)
	}
	conn := node.Conn()
	defer conn.Close()
	res, err := casPutScript.Run(ctx, conn, []string{key}, expect, blob, t.WriteID, writeID).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("store: redis put tenant %q: %w", id, err)
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("store: redis put tenant %q: unexpected script reply %v", id, res)
	}
	if res[0] != 1 {
		return 0, fmt.Errorf("%w: tenant %q is at version %d, expected %d", ErrConflict, id, res[1], expect)
	}
	t.Version, t.WriteID = res[1], writeID
	if err := r.index(ctx, t); err != nil { // as Put does (due index)
		r.report("index", err)
	}
	r.publish(ctx, id)
	acked, err := conn.Wait(ctx, need, r.waitTimeout).Result()
	if err != nil {
		return res[1], fmt.Errorf("%w: tenant %q: WAIT: %v", ErrNotAcked, id, err)
	}
	if int(acked) < need {
		// A failover may have promoted a replica that has none of its
		// own: only then (a new replication id) does a write nobody can
		// acknowledge stand as on a master without replicas. A master
		// that merely lost its replicas may be on the losing side of a
		// partition: nothing is sent (rule 14).
		if r.promoted(ctx) {
			return res[1], nil
		}
		return res[1], fmt.Errorf("%w: tenant %q: %d of %d replicas within %v", ErrNotAcked, id, acked, need, r.waitTimeout)
	}
	return res[1], nil
}

// nodeFor returns the client of the master that holds key.
func (r *Redis) nodeFor(ctx context.Context, key string) (*redis.Client, error) {
	switch c := r.client.(type) {
	case *redis.Client:
		return c, nil
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	}
	return nil, fmt.Errorf("unsupported client %T", r.client)
}
