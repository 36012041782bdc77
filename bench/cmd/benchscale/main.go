// Command benchscale measures the store's cost at scale on a real Redis
// (docs/benchmarks.md, "Scale"): it writes N tenants straight into Redis
// through store.Redis (index and due index included), then reports Redis
// memory, the largest keys, and the commands and time of what the
// refresher and the admin listing do, against what reading every record
// costs.
//
//	benchscale -redis 127.0.0.1:PORT -tenants 1000000 [-due 0.001] [-load=false]
//
// One JSON line on stdout. The Redis server must be empty (or hold only
// what an earlier run with the same -tenants wrote, with -load=false).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lsproxy/lsproxy/store"
)

type result struct {
	Tenants         int     `json:"tenants"`
	LoadSeconds     float64 `json:"load_s,omitempty"`
	UsedMemory      int64   `json:"redis_used_memory"`
	BytesPerTenant  float64 `json:"redis_bytes_per_tenant"`
	BiggestKey      string  `json:"biggest_key"`
	BiggestKeyBytes int64   `json:"biggest_key_bytes"`
	RecordBytes     int64   `json:"record_bytes"`

	DueIDs      int     `json:"due_ids"`
	DueCommands int64   `json:"due_commands"`
	DueMillis   float64 `json:"due_ms"`

	PageCommands int64   `json:"page_commands"`
	PageMillis   float64 `json:"page_ms"`

	ListCommands int64   `json:"list_all_paged_commands"`
	ListMillis   float64 `json:"list_all_paged_ms"`
	GetMicros    float64 `json:"get_us"` // one record read (HMGET + open), sequential
}

func main() {
	addr := flag.String("redis", "", "Redis address host:port")
	n := flag.Int("tenants", 10000, "tenants")
	dueFrac := flag.Float64("due", 0.001, "fraction of tenants whose refresh token is due")
	load := flag.Bool("load", true, "write the tenants first")
	conc := flag.Int("concurrency", 64, "concurrent writers while loading")
	flag.Parse()
	if *addr == "" {
		fmt.Fprintln(os.Stderr, "benchscale: -redis is required")
		os.Exit(2)
	}
	if err := run(*addr, *n, *dueFrac, *load, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "benchscale:", err)
		os.Exit(1)
	}
}

func run(addr string, n int, dueFrac float64, load bool, conc int) error {
	ctx := context.Background()
	keys, err := store.NewKeyring([]byte(strings.Repeat("s", 32)))
	if err != nil {
		return err
	}
	raw := redis.NewClient(&redis.Options{Addr: addr})
	defer raw.Close()
	st := store.NewRedis(redis.NewClient(&redis.Options{Addr: addr, PoolSize: conc + 4}), store.RedisOptions{Keys: keys})
	defer st.Close()
	now := time.Now()
	var res result
	res.Tenants = n
	dueEvery := int(1 / dueFrac)

	if load {
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, conc)
		for w := 0; w < conc; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					id := fmt.Sprintf("t%07d", i)
					created := now.Add(-time.Hour)
					if i%dueEvery == 0 {
						created = now.Add(-13 * 24 * time.Hour) // idle expiry (14 d) within the 48 h margin
					}
					// A 1,200-byte access token, like K-Series JWTs.
					t := &store.Tenant{ID: id, Status: store.StatusActive, AccessToken: strings.Repeat("a", 1200),
						RefreshToken: "rt-" + id, AccessExpiresAt: now.Add(time.Hour), CreatedAt: created, AuthorizedAt: created}
					if _, err := st.Put(ctx, t, 0); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			return err
		}
		res.LoadSeconds = time.Since(start).Seconds()
	}

	mem, err := raw.Info(ctx, "memory").Result()
	if err != nil {
		return err
	}
	res.UsedMemory = infoInt(mem, "used_memory")
	res.BytesPerTenant = float64(res.UsedMemory) / float64(n)
	for s := 0; s < store.IndexShards; s++ {
		tag := "{ix" + strconv.Itoa(s) + "}"
		for _, k := range []string{"lsproxy:tenants:" + tag, "lsproxy:due:e:" + tag, "lsproxy:due:i:" + tag} {
			if b, err := raw.MemoryUsage(ctx, k).Result(); err == nil && b > res.BiggestKeyBytes {
				res.BiggestKey, res.BiggestKeyBytes = k, b
			}
		}
	}
	res.RecordBytes, _ = raw.MemoryUsage(ctx, "lsproxy:tenant:{t0000001}").Result()

	// The refresher's idle-expiry scan (auth.BackgroundRefresher.ScanDue):
	// margin 48 h, idle TTL 14 d.
	c0 := commands(ctx, raw)
	t0 := time.Now()
	ids, err := st.ListDue(ctx, now.Add(48*time.Hour), now.Add(48*time.Hour-14*24*time.Hour))
	if err != nil {
		return err
	}
	res.DueMillis = ms(time.Since(t0))
	res.DueCommands = commands(ctx, raw) - c0 - 1
	res.DueIDs = len(ids)

	c0 = commands(ctx, raw)
	t0 = time.Now()
	if _, _, err := st.ListPage(ctx, "", 100); err != nil {
		return err
	}
	res.PageMillis = ms(time.Since(t0))
	res.PageCommands = commands(ctx, raw) - c0 - 1

	// Every id, page by page (what the daily full read does; List's one
	// pipeline of N EXISTS times out at 1M on a loaded machine).
	c0 = commands(ctx, raw)
	t0 = time.Now()
	var all []string
	for cursor := ""; ; {
		ids, next, err := st.ListPage(ctx, cursor, store.MaxPageLimit)
		if err != nil {
			return err
		}
		all = append(all, ids...)
		if next == "" {
			break
		}
		cursor = next
	}
	res.ListMillis = ms(time.Since(t0))
	res.ListCommands = commands(ctx, raw) - c0 - 1
	if len(all) != n {
		return fmt.Errorf("pages hold %d ids, want %d", len(all), n)
	}
	const sample = 2000
	t0 = time.Now()
	for i := 0; i < sample; i++ {
		if _, err := st.Get(ctx, all[i*len(all)/sample]); err != nil {
			return err
		}
	}
	res.GetMicros = float64(time.Since(t0).Microseconds()) / sample
	return json.NewEncoder(os.Stdout).Encode(res)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// commands is Redis's total command count (INFO stats
// total_commands_processed; the INFO call itself counts one).
func commands(ctx context.Context, c *redis.Client) int64 {
	s, err := c.Info(ctx, "stats").Result()
	if err != nil {
		return 0
	}
	return infoInt(s, "total_commands_processed")
}

func infoInt(info, field string) int64 {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
