// Package store keeps tenant records, per-tenant locks, one-time values and
// the webhook outbox.
//
// Two implementations share one contract (see conformance_test.go): Redis
// (distributed, for any number of replicas) and an embedded bbolt file (one
// process at a time). Access and refresh tokens are sealed with AES-256-GCM
// before they reach either backend (see seal.go).
//
// Files:
//   - store.go: the Store and Lock contracts, NotifyLosses (lost change
//     notifications, rule 21), Tenant, the sentinel errors.
//   - tenantstate.go: every state transition of a Tenant (mark, grant,
//     flag, undo, authorize, import) as one method each.
//   - identify.go: pending tenants, background identification state and
//     the candidate grant of a re-authorization (SPEC §8), link
//     generations; their transitions.
//   - codec.go: the stored record (tokens sealed), shared by both backends.
//   - seal.go: the Keyring: AES-256-GCM sealing with key rotation.
//   - rekey.go: Rekey, re-sealing every record with the primary key.
//   - redis.go: the Redis backend; its Lua scripts are in lua/.
//     redis_lock.go: its named locks (TryLock, PeekLock, renewal, release).
//   - redisconn.go: connecting to Redis (URL, Sentinel, Cluster, TLS),
//     password redaction, fail-fast retries.
//   - redis_index.go: the Redis tenant index over 256 hash-tagged shards,
//     the due index beside it, ListPage and ListDue (lua/index_*.lua).
//   - redis_cluster.go: the cluster client that reloads its slot map on
//     a failed dial (after a master's failover).
//   - batch.go: Batcher and BatchLocker (GetMany, PutMany, TryLockMany,
//     ReleaseMany: pipelined on Redis, one transaction on bolt) for bulk
//     imports, and helpers that fall back to one call per item.
//   - index.go: the Lister contract (paging, due tenants) of both backends.
//   - replicas.go: AckedPutter/PutAcked, writes acknowledged by replicas
//     (WAIT).
//   - session.go: Sessions, renewable shared values (console sessions).
//   - history.go: Tenant.History, its event kinds and bound.
//   - locations.go: LocationIndex, business location ids to tenants.
//   - ratelimit.go: the Redis client and key prefix shared with the
//     rate-limit governor.
//   - outbox.go: the Outbox contract (the durable webhook queue: per-tenant
//     order, leased claims, dead letters) and OutboxEvent;
//     outbox_redis.go its Redis side (16 hash-tagged shards,
//     lua/outbox_*.lua), outbox_bolt.go its bbolt side.
//   - actions.go: ActionLog, each tenant's last operator actions, on both
//     backends.
//   - bolt.go: the bbolt backend; bolt_index.go its due index and paging;
//     bolt_lock.go its in-memory named locks; bolt_guard.go its guard state.
//   - guard.go: GuardState, the mass-invalid_grant guard's fleet-wide state
//     (SPEC §3 rule 20): its rules as one state machine (bolt, MemGuard);
//     redis_guard.go the same rules on Redis (lua/guard.lua).
package store
