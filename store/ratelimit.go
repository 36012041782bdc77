package store

import "github.com/redis/go-redis/v9"

// Client returns the Redis client, for components that keep their own keys
// next to the store's under Prefix (the rate-limit governor). The Store
// still owns it: do not close it.
func (r *Redis) Client() redis.UniversalClient { return r.client }

// Prefix returns the key prefix.
func (r *Redis) Prefix() string { return r.prefix }
