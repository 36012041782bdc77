package testredis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of masters with one replica each, on loopback.
//
//	c := testredis.StartCluster(t, 3)  // 3 masters, 3 replicas, slots split evenly
//	client := c.Client()               // go-redis ClusterClient, closed at cleanup
//	c.FailOver(t, 0)                   // SIGKILL master 0; its replica takes over
type Cluster struct {
	Masters  []*Server
	Replicas []*Server // Replicas[i] replicates Masters[i]

	ids     map[*Server]string // cluster node ids
	clients map[*Server]*redis.Client
}

// clusterTimeout bounds forming the cluster and each failover.
const clusterTimeout = 30 * time.Second

// StartCluster runs masters redis-servers in cluster mode, each with one
// replica, splits the 16384 slots evenly among the masters, and waits until
// every node reports cluster_state:ok and every replica is in sync. Node
// timeout is 1 s, so a killed master is replaced within a few seconds.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 1 {
		t.Fatal("testredis: a cluster needs at least one master")
	}
	c := &Cluster{ids: make(map[*Server]string), clients: make(map[*Server]*redis.Client)}
	start := func() *Server {
		busPort, err := freePort()
		if err != nil {
			t.Fatalf("testredis: finding a free port: %v", err)
		}
		return Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000", "--cluster-port", strconv.Itoa(busPort),
			"--cluster-replica-validity-factor", "0", "--repl-diskless-sync", "yes",
			"--repl-diskless-sync-delay", "0")
	}
	for i := 0; i < masters; i++ {
		c.Masters = append(c.Masters, start())
		c.Replicas = append(c.Replicas, start())
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	all := c.nodes()
	for _, s := range all {
		id, err := c.admin(s).Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatalf("testredis: CLUSTER MYID on %s: %v", s.Addr, err)
		}
		c.ids[s] = id
	}
	per := 16384 / masters
	for i, m := range c.Masters {
		lo, hi := i*per, (i+1)*per-1
		if i == masters-1 {
			hi = 16383
		}
		if err := c.admin(m).Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			t.Fatalf("testredis: CLUSTER ADDSLOTSRANGE on %s: %v", m.Addr, err)
		}
	}
	first := c.Masters[0]
	for _, s := range all[1:] {
		if err := c.admin(s).Do(ctx, "CLUSTER", "MEET", "127.0.0.1", first.Port(), c.busPort(t, ctx, first)).Err(); err != nil {
			t.Fatalf("testredis: CLUSTER MEET from %s: %v", s.Addr, err)
		}
	}
	for i, r := range c.Replicas {
		master := c.ids[c.Masters[i]]
		c.poll(t, ctx, "replica "+r.Addr+" to learn its master", func() bool {
			return c.admin(r).Do(ctx, "CLUSTER", "REPLICATE", master).Err() == nil
		})
	}
	c.WaitHealthy(t)
	return c
}

// busPortOf returns s's cluster bus port.
func (c *Cluster) busPort(t testing.TB, ctx context.Context, s *Server) int {
	t.Helper()
	v, err := c.admin(s).ConfigGet(ctx, "cluster-port").Result()
	if err != nil {
		t.Fatalf("testredis: CONFIG GET cluster-port on %s: %v", s.Addr, err)
	}
	p, err := strconv.Atoi(v["cluster-port"])
	if err != nil || p == 0 {
		return s.Port() + 10000
	}
	return p
}

func (c *Cluster) nodes() []*Server {
	var all []*Server
	for _, s := range append(append([]*Server{}, c.Masters...), c.Replicas...) {
		if s != nil {
			all = append(all, s)
		}
	}
	return all
}

// admin returns a client for s, one per server, closed at s's cleanup.
func (c *Cluster) admin(s *Server) *redis.Client {
	if cl := c.clients[s]; cl != nil {
		return cl
	}
	cl := s.Client()
	c.clients[s] = cl
	return cl
}

// Addrs returns the seed addresses of every node.
func (c *Cluster) Addrs() []string {
	var a []string
	for _, s := range c.nodes() {
		a = append(a, s.Addr)
	}
	return a
}

// Client returns a go-redis cluster client seeded with every node, closed
// at cleanup of t.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// WaitHealthy waits until every live node reports cluster_state:ok, every
// slot is served, and every live replica's link to its master is up.
func (c *Cluster) WaitHealthy(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	c.poll(t, ctx, "cluster_state:ok on every node", func() bool {
		for _, s := range c.live() {
			info, err := c.admin(s).ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				return false
			}
			repl, err := c.admin(s).Info(ctx, "replication").Result()
			if err != nil {
				return false
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return false
			}
		}
		return true
	})
}

func (c *Cluster) live() []*Server {
	var l []*Server
	for _, s := range c.nodes() {
		s.mu.Lock()
		up := s.proc != nil
		s.mu.Unlock()
		if up {
			l = append(l, s)
		}
	}
	return l
}

// FailOver kills master i with SIGKILL and waits until its replica has
// taken over its slots and the cluster is ok again; the replica then
// counts as master i, without a replica (Replicas[i] is nil).
func (c *Cluster) FailOver(t testing.TB, i int) {
	t.Helper()
	m, r := c.Masters[i], c.Replicas[i]
	m.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	c.poll(t, ctx, "replica "+r.Addr+" to be promoted", func() bool {
		repl, err := c.admin(r).Info(ctx, "replication").Result()
		return err == nil && strings.Contains(repl, "role:master")
	})
	c.Masters[i], c.Replicas[i] = r, nil
	c.waitOK(t)
}

// waitOK waits for cluster_state:ok on every live node.
func (c *Cluster) waitOK(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	c.poll(t, ctx, "cluster_state:ok after failover", func() bool {
		for _, s := range c.live() {
			info, err := c.admin(s).ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	})
}

// poll calls ok every 50 ms until it reports true or ctx ends (t.Fatal).
func (c *Cluster) poll(t testing.TB, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("testredis: timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond): // the cluster gives no signal to wait on
		}
	}
}
