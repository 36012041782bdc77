package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
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
	return r.replicaInfoLocked().Wait
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
	n, err := r.connectedReplicas(rctx)
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
	r.rep.count, r.rep.known = n, true
	return n, nil
}

// connectedReplicas reads connected_slaves from INFO replication (the
// minimum over all masters of a cluster).
func (r *Redis) connectedReplicas(ctx context.Context) (int, error) {
	if cc, ok := r.client.(*redis.ClusterClient); ok {
		min := -1
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			n, err := replicasOf(ctx, c)
			if err == nil && (min < 0 || n < min) {
				min = n
			}
			return err
		})
		return max(min, 0), err
	}
	return replicasOf(ctx, r.client)
}

func replicasOf(ctx context.Context, c redis.Cmdable) (int, error) {
	s, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "connected_slaves:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, nil
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
		// own: a write nobody can acknowledge stands as on a master
		// without replicas (as replicaWait would have said, had it known).
		if n, err := r.readReplicas(ctx, replicaRecheckMin); err == nil && n == 0 {
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
