package store

import (
	"context"
	"net"

	"github.com/redis/go-redis/v9"
)

// newClusterClient returns a cluster client that reloads the slot map as
// soon as dialling a node fails. go-redis reloads it on MOVED replies and
// otherwise only every ClusterStateReloadInterval (60 s): after a master's
// failover every command for its slots would go on dialling the dead
// address for up to a minute (internal/testredis's failover test showed
// it).
func newClusterClient(o *redis.ClusterOptions) *redis.ClusterClient {
	c := redis.NewClusterClient(o)
	c.OnNewNode(func(node *redis.Client) { node.AddHook(reloadOnDialError{c}) })
	return c
}

type reloadOnDialError struct{ c *redis.ClusterClient }

func (h reloadOnDialError) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			h.c.ReloadState(ctx) // asynchronous, at most one at a time
		}
		return conn, err
	}
}

func (reloadOnDialError) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (reloadOnDialError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
