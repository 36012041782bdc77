// Package store keeps tenant records, per-tenant locks and one-time values.
//
// Two implementations share one contract (see conformance_test.go): Redis
// (distributed, for any number of replicas) and an embedded bbolt file (one
// process at a time). Access and refresh tokens are sealed with AES-256-GCM
// before they reach either backend (see seal.go).
//
// Files:
//   - store.go: the Store and Lock contracts, Tenant, the sentinel errors.
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
//   - index.go: the Lister contract (paging, due tenants) of both backends.
//   - replicas.go: AckedPutter/PutAcked, writes acknowledged by replicas
//     (WAIT).
//   - bolt.go: the bbolt backend; bolt_index.go its due index and paging;
//     bolt_lock.go its in-memory named locks.
package store
