// Package store keeps tenant records, per-tenant locks and one-time values.
//
// Two implementations share one contract (see conformance_test.go): Redis
// (distributed, for any number of replicas) and an embedded bbolt file (one
// process at a time). Access and refresh tokens are sealed with AES-256-GCM
// before they reach either backend (see seal.go).
//
// Files:
//   - store.go: the Store and Lock contracts, Tenant, the sentinel errors.
//   - codec.go: the stored record (tokens sealed), shared by both backends.
//   - seal.go: the Keyring: AES-256-GCM sealing with key rotation.
//   - rekey.go: Rekey, re-sealing every record with the primary key.
//   - redis.go: the Redis backend; its Lua scripts are in lua/.
//   - redisconn.go: connecting to Redis (URL, Sentinel, Cluster, TLS),
//     password redaction, fail-fast retries.
//   - bolt.go: the bbolt backend.
package store
