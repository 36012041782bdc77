package store

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed lua/outbox_add.lua
	outboxAddLua string
	//go:embed lua/outbox_claim.lua
	outboxClaimLua string
	//go:embed lua/outbox_done.lua
	outboxDoneLua string
	//go:embed lua/outbox_retry.lua
	outboxRetryLua string
	//go:embed lua/outbox_redeliver.lua
	outboxRedeliverLua string

	outboxAddScript       = redis.NewScript(outboxAddLua)
	outboxClaimScript     = redis.NewScript(outboxClaimLua)
	outboxDoneScript      = redis.NewScript(outboxDoneLua)
	outboxRetryScript     = redis.NewScript(outboxRetryLua)
	outboxRedeliverScript = redis.NewScript(outboxRedeliverLua)
)

// OutboxShards is how many hash-tagged shards the Redis outbox is split
// into (by tenant), so Redis Cluster spreads it over its masters.
const OutboxShards = 16

// Outbox keys of shard S (tag {obS}), with prefix P:
//
//	P outbox:ev:{obS}:<id>      hash: t tenant, y type, p payload, c created,
//	                            a attempts, n next attempt, e last error,
//	                            d buried at (ms), k claim token
//	P outbox:q:{obS}:<tenant>   list: the tenant's queued ids, in order
//	P outbox:due:{obS}          zset: each tenant's first queued id by due
//	                            time, or by lease end while claimed
//	P outbox:all:{obS}          zset: queued ids by creation time
//	P outbox:dead:{obS}         zset: dead letters by burial time
//	P outbox:recent:{obS}:<t>   list: the tenant's last outcomes (JSON), newest first
func outboxShard(tenant string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(tenant))
	return int(h.Sum32() % OutboxShards)
}

func (r *Redis) obTag(s int) string { return "{ob" + strconv.Itoa(s) + "}" }
func (r *Redis) obEv(s int, id string) string {
	return r.prefix + "outbox:ev:" + r.obTag(s) + ":" + id
}
func (r *Redis) obQueue(s int, tenant string) string {
	return r.prefix + "outbox:q:" + r.obTag(s) + ":" + tenant
}
func (r *Redis) obDue(s int) string  { return r.prefix + "outbox:due:" + r.obTag(s) }
func (r *Redis) obAll(s int) string  { return r.prefix + "outbox:all:" + r.obTag(s) }
func (r *Redis) obDead(s int) string { return r.prefix + "outbox:dead:" + r.obTag(s) }
func (r *Redis) obRecent(s int, tenant string) string {
	return r.prefix + "outbox:recent:" + r.obTag(s) + ":" + tenant
}

// obKeys are the five keys of the add, done and redeliver scripts.
func (r *Redis) obKeys(s int, id, tenant string) []string {
	return []string{r.obEv(s, id), r.obQueue(s, tenant), r.obDue(s), r.obAll(s), r.obDead(s)}
}

// OutboxAdd implements Outbox (one script in the tenant's shard).
func (r *Redis) OutboxAdd(ctx context.Context, ev OutboxEvent) error {
	if err := validOutboxEvent(ev); err != nil {
		return err
	}
	created := ev.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	s := outboxShard(ev.Tenant)
	keys := r.obKeys(s, ev.ID, ev.Tenant)
	args := []any{ev.ID, ev.Tenant, ev.Type, ev.Payload, created.UnixMilli()}
	need := r.replicaWait(ctx)
	if need == 0 {
		if err := outboxAddScript.Run(ctx, r.client, keys, args...).Err(); err != nil {
			return fmt.Errorf("store: redis outbox add: %w", err)
		}
		return nil
	}
	// With replicas, as PutAcked: the event must survive a failover (the
	// Notifier retries an add that was not acknowledged).
	node, err := r.nodeFor(ctx, keys[0])
	if err != nil {
		return fmt.Errorf("store: redis outbox add: %w", err)
	}
	conn := node.Conn()
	defer conn.Close()
	if err := outboxAddScript.Run(ctx, conn, keys, args...).Err(); err != nil {
		return fmt.Errorf("store: redis outbox add: %w", err)
	}
	acked, err := conn.Wait(ctx, need, r.waitTimeout).Result()
	if err != nil {
		return fmt.Errorf("%w: outbox event %q: WAIT: %v", ErrNotAcked, ev.ID, err)
	}
	if int(acked) < need {
		if n, err := r.readReplicas(ctx, replicaRecheckMin); err == nil && n == 0 {
			return nil
		}
		return fmt.Errorf("%w: outbox event %q: %d of %d replicas within %v", ErrNotAcked, ev.ID, acked, need, r.waitTimeout)
	}
	return nil
}

// OutboxClaim implements Outbox: per shard (from a random one), the due
// ids, then one claim script per id.
func (r *Redis) OutboxClaim(ctx context.Context, now time.Time, lease time.Duration, max int) ([]OutboxEvent, error) {
	if max <= 0 || lease <= 0 {
		return nil, errors.New("store: outbox claim needs max > 0 and lease > 0")
	}
	var out []OutboxEvent
	nowMS := strconv.FormatInt(now.UnixMilli(), 10)
	until := now.Add(lease).UnixMilli()
	first := rand.IntN(OutboxShards)
	for i := 0; i < OutboxShards && len(out) < max; i++ {
		s := (first + i) % OutboxShards
		ids, err := r.client.ZRangeByScore(ctx, r.obDue(s), &redis.ZRangeBy{Min: "-inf", Max: nowMS, Count: int64(max - len(out))}).Result()
		if err != nil {
			return out, fmt.Errorf("store: redis outbox claim: %w", err)
		}
		for _, id := range ids {
			token := newClaimToken()
			vals, err := outboxClaimScript.Run(ctx, r.client, []string{r.obDue(s), r.obEv(s, id)}, id, nowMS, until, token).StringSlice()
			if errors.Is(err, redis.Nil) {
				continue // claimed by another caller first
			}
			if err != nil {
				return out, fmt.Errorf("store: redis outbox claim: %w", err)
			}
			ev := parseOutboxHash(id, pairs(vals))
			out = append(out, ev)
		}
	}
	return out, nil
}

func pairs(vals []string) map[string]string {
	m := make(map[string]string, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		m[vals[i]] = vals[i+1]
	}
	return m
}

func parseOutboxHash(id string, m map[string]string) OutboxEvent {
	num := func(k string) int64 { n, _ := strconv.ParseInt(m[k], 10, 64); return n }
	return OutboxEvent{
		ID:        id,
		Tenant:    m["t"],
		Type:      m["y"],
		Payload:   []byte(m["p"]),
		CreatedAt: fromMillis(num("c")),
		Attempts:  int(num("a")),
		NextAt:    fromMillis(num("n")),
		LastError: m["e"],
		DeadAt:    fromMillis(num("d")),
		Claim:     m["k"],
	}
}

func (r *Redis) obFinish(ctx context.Context, ev OutboxEvent, mode string, at time.Time, lastErr string) error {
	if err := validClaim(ev); err != nil {
		return err
	}
	s := outboxShard(ev.Tenant)
	keys := append(r.obKeys(s, ev.ID, ev.Tenant), r.obRecent(s, ev.Tenant))
	rec := newRecentEntry(ev, at, mode == "bury", lastErr)
	n, err := outboxDoneScript.Run(ctx, r.client, keys, ev.ID, ev.Claim, at.UnixMilli(), mode, lastErr, rec, OutboxRecentMax).Int()
	if err != nil {
		return fmt.Errorf("store: redis outbox %s: %w", mode, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: outbox event %q claimed by another caller", ErrLockLost, ev.ID)
	}
	return nil
}

// OutboxDone implements Outbox.
func (r *Redis) OutboxDone(ctx context.Context, ev OutboxEvent) error {
	return r.obFinish(ctx, ev, "done", time.Now(), "")
}

// OutboxBury implements Outbox.
func (r *Redis) OutboxBury(ctx context.Context, ev OutboxEvent, at time.Time, lastErr string) error {
	return r.obFinish(ctx, ev, "bury", at, lastErr)
}

// OutboxRetry implements Outbox.
func (r *Redis) OutboxRetry(ctx context.Context, ev OutboxEvent, next time.Time, lastErr string) error {
	if err := validClaim(ev); err != nil {
		return err
	}
	s := outboxShard(ev.Tenant)
	n, err := outboxRetryScript.Run(ctx, r.client, []string{r.obEv(s, ev.ID), r.obDue(s)}, ev.ID, ev.Claim, next.UnixMilli(), lastErr).Int()
	if err != nil {
		return fmt.Errorf("store: redis outbox retry: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w: outbox event %q claimed by another caller", ErrLockLost, ev.ID)
	}
	return nil
}

type obRef struct {
	shard int
	id    string
	score float64
}

// obRange returns up to limit ids of every shard's zset key(s), merged by
// score (descending when rev).
func (r *Redis) obRange(ctx context.Context, key func(int) string, limit int, rev bool) ([]obRef, error) {
	cmds := make([]*redis.ZSliceCmd, OutboxShards)
	stop := int64(limit - 1)
	if limit <= 0 {
		stop = -1
	}
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := 0; s < OutboxShards; s++ {
			if rev {
				cmds[s] = p.ZRevRangeWithScores(ctx, key(s), 0, stop)
			} else {
				cmds[s] = p.ZRangeWithScores(ctx, key(s), 0, stop)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var refs []obRef
	for s, c := range cmds {
		for _, z := range c.Val() {
			id, _ := z.Member.(string)
			refs = append(refs, obRef{s, id, z.Score})
		}
	}
	sort.SliceStable(refs, func(i, j int) bool {
		if rev {
			return refs[i].score > refs[j].score
		}
		return refs[i].score < refs[j].score
	})
	if limit > 0 && len(refs) > limit {
		refs = refs[:limit]
	}
	return refs, nil
}

func (r *Redis) obRead(ctx context.Context, refs []obRef) ([]OutboxEvent, error) {
	cmds := make([]*redis.MapStringStringCmd, len(refs))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, ref := range refs {
			cmds[i] = p.HGetAll(ctx, r.obEv(ref.shard, ref.id))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]OutboxEvent, 0, len(refs))
	for i, c := range cmds {
		if m := c.Val(); len(m) > 0 {
			out = append(out, parseOutboxHash(refs[i].id, m))
		}
	}
	return out, nil
}

// OutboxList implements Outbox.
func (r *Redis) OutboxList(ctx context.Context, dead bool, limit int) ([]OutboxEvent, error) {
	if limit <= 0 {
		return nil, errors.New("store: outbox list needs limit > 0")
	}
	key := r.obAll
	if dead {
		key = r.obDead
	}
	refs, err := r.obRange(ctx, key, limit, dead)
	if err != nil {
		return nil, fmt.Errorf("store: redis outbox list: %w", err)
	}
	out, err := r.obRead(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("store: redis outbox list: %w", err)
	}
	return out, nil
}

// OutboxRedeliver implements Outbox.
func (r *Redis) OutboxRedeliver(ctx context.Context, id string, now time.Time) (int, error) {
	var refs []obRef
	if id != "" {
		// The shard follows the tenant, which only the event knows: look in
		// every shard.
		dead := make([]*redis.FloatCmd, OutboxShards)
		queued := make([]*redis.FloatCmd, OutboxShards)
		_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for s := 0; s < OutboxShards; s++ {
				dead[s] = p.ZScore(ctx, r.obDead(s), id)
				queued[s] = p.ZScore(ctx, r.obAll(s), id)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, fmt.Errorf("store: redis outbox redeliver: %w", err)
		}
		for s := 0; s < OutboxShards; s++ {
			if dead[s].Err() == nil || queued[s].Err() == nil {
				refs = append(refs, obRef{shard: s, id: id})
			}
		}
		if len(refs) == 0 {
			return 0, fmt.Errorf("%w: outbox event %q", ErrNotFound, id)
		}
	} else {
		dead, err := r.obRange(ctx, r.obDead, 0, false)
		if err != nil {
			return 0, fmt.Errorf("store: redis outbox redeliver: %w", err)
		}
		queued, err := r.obRange(ctx, r.obAll, 0, false)
		if err != nil {
			return 0, fmt.Errorf("store: redis outbox redeliver: %w", err)
		}
		refs = append(dead, queued...)
	}
	moved := 0
	for _, ref := range refs {
		tenant, err := r.client.HGet(ctx, r.obEv(ref.shard, ref.id), "t").Result()
		if errors.Is(err, redis.Nil) {
			continue // delivered meanwhile
		}
		if err != nil {
			return moved, fmt.Errorf("store: redis outbox redeliver: %w", err)
		}
		n, err := outboxRedeliverScript.Run(ctx, r.client, r.obKeys(ref.shard, ref.id, tenant), ref.id, now.UnixMilli()).Int()
		if err != nil {
			return moved, fmt.Errorf("store: redis outbox redeliver: %w", err)
		}
		if n == 1 {
			moved++
		}
	}
	return moved, nil
}

// OutboxStats implements Outbox (one pipeline over the shards).
func (r *Redis) OutboxStats(ctx context.Context) (OutboxStats, error) {
	queued := make([]*redis.IntCmd, OutboxShards)
	dead := make([]*redis.IntCmd, OutboxShards)
	oldest := make([]*redis.ZSliceCmd, OutboxShards)
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := 0; s < OutboxShards; s++ {
			queued[s] = p.ZCard(ctx, r.obAll(s))
			dead[s] = p.ZCard(ctx, r.obDead(s))
			oldest[s] = p.ZRangeWithScores(ctx, r.obAll(s), 0, 0)
		}
		return nil
	})
	if err != nil {
		return OutboxStats{}, fmt.Errorf("store: redis outbox stats: %w", err)
	}
	var st OutboxStats
	for s := 0; s < OutboxShards; s++ {
		st.Queued += queued[s].Val()
		st.Dead += dead[s].Val()
		if z := oldest[s].Val(); len(z) > 0 {
			at := fromMillis(int64(z[0].Score))
			if st.Oldest.IsZero() || at.Before(st.Oldest) {
				st.Oldest = at
			}
		}
	}
	return st, nil
}

// OutboxRecent implements Outbox.
func (r *Redis) OutboxRecent(ctx context.Context, tenant string, limit int) ([]OutboxEvent, error) {
	if limit <= 0 {
		return nil, errors.New("store: outbox recent needs limit > 0")
	}
	limit = min(limit, OutboxRecentMax)
	raws, err := r.client.LRange(ctx, r.obRecent(outboxShard(tenant), tenant), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis outbox recent: %w", err)
	}
	out := make([]OutboxEvent, 0, len(raws))
	for _, raw := range raws {
		if ev, ok := parseRecent(tenant, []byte(raw)); ok {
			out = append(out, ev)
		}
	}
	return out, nil
}
