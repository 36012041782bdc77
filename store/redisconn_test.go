package store

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lsproxy/lsproxy/internal/testcert"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestDialRedis(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-pa55word"
	srv := testredis.Start(t, "--requirepass", secret)
	dead := closedPort(t)
	ctx := testCtx(t)

	ok := []RedisConfig{
		{URL: "redis://:" + secret + "@" + srv.Addr + "/0"},
		{URL: srv.URL(), Password: secret},
		{URL: "redis://default:wrong@" + srv.Addr + "/0", Password: secret}, // Password overrides
	}
	for _, cfg := range ok {
		c, err := DialRedis(ctx, cfg)
		if err != nil {
			t.Errorf("DialRedis(%s): %v", strings.ReplaceAll(cfg.URL, secret, "…"), err)
			continue
		}
		if err := c.Ping(ctx).Err(); err != nil {
			t.Error(err)
		}
		c.Close()
	}

	fail := []struct {
		name string
		cfg  RedisConfig
		want string
	}{
		{"closed port", RedisConfig{URL: "redis://:" + secret + "@" + dead, DialTimeout: time.Second}, "store: redis at " + dead + " unreachable: "},
		{"wrong password", RedisConfig{URL: srv.URL(), Password: secret + "x"}, "store: redis at " + srv.Addr + " unreachable: "},
		{"no password", RedisConfig{URL: srv.URL()}, "NOAUTH"},
		{"bad scheme", RedisConfig{URL: "http://:" + secret + "@" + srv.Addr}, "store: invalid redis URL"},
		{"bad port", RedisConfig{URL: "redis://:" + secret + "@" + "127.0.0.1:notaport"}, "store: invalid redis URL"},
		{"bad db", RedisConfig{URL: "redis://:" + secret + "@" + srv.Addr + "/x"}, "store: invalid redis URL"},
		{"nothing", RedisConfig{}, "no redis configured"},
		{"two modes", RedisConfig{URL: srv.URL(), ClusterAddrs: []string{srv.Addr}}, "exclusive"},
		{"sentinel without master", RedisConfig{SentinelAddrs: []string{srv.Addr}}, "master name"},
		{"sentinel without addrs", RedisConfig{SentinelMaster: "m"}, "master name"},
		{"CA without TLS", RedisConfig{URL: srv.URL(), CAFile: "/nonexistent"}, "not rediss://"},
		{"TLS without rediss", RedisConfig{URL: srv.URL(), TLS: true}, "not rediss://"},
		{"missing CA file", RedisConfig{URL: "rediss://" + srv.Addr, CAFile: filepath.Join(t.TempDir(), "none.pem")}, "store: redis CA file"},
		{"garbage CA file", RedisConfig{URL: "rediss://" + srv.Addr, CAFile: writeFile(t, "garbage")}, "no PEM certificate"},
		{"cluster unreachable", RedisConfig{ClusterAddrs: []string{dead}, Password: secret, DialTimeout: time.Second}, "store: redis at cluster " + dead + " unreachable"},
		{"sentinel unreachable", RedisConfig{SentinelMaster: "m", SentinelAddrs: []string{dead}, Password: secret, DialTimeout: time.Second}, "store: redis at sentinel " + dead},
		{"TLS to plain server", RedisConfig{URL: "rediss://:" + secret + "@" + srv.Addr, CAFile: writeCA(t), DialTimeout: time.Second}, "unreachable"},
	}
	for _, tc := range fail {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			c, err := DialRedis(ctx, tc.cfg)
			if err == nil {
				c.Close()
				t.Fatal("no error")
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("took %v", el)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to contain %q", msg, tc.want)
			}
			if strings.Contains(msg, secret) {
				t.Errorf("error leaks the password: %q", msg)
			}
		})
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.pem")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeCA writes a self-signed CA certificate (PEM) and returns its path.
func writeCA(t *testing.T) string {
	t.Helper()
	certFile, _ := testcert.New(t).Write(t, t.TempDir())
	return certFile
}

func TestRedactKeepsChain(t *testing.T) {
	base := errors.New("dial: user:hunter2@host")
	err := redact(fmt.Errorf("store: x: %w", base), RedisConfig{Password: "hunter2"})
	if strings.Contains(err.Error(), "hunter2") || !errors.Is(err, base) {
		t.Fatalf("redact = %q (chain kept: %v)", err, errors.Is(err, base))
	}
	plain := errors.New("nothing secret")
	if redact(plain, RedisConfig{Password: "hunter2"}) != plain {
		t.Fatal("redact rewrote an error without secrets")
	}
}

func TestDialRedisModes(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)

	t.Run("sentinel", func(t *testing.T) {
		master := testredis.Start(t, "--requirepass", "pw")
		sen := testredis.StartSentinel(t, "mymaster", master)
		c, err := DialRedis(ctx, RedisConfig{SentinelMaster: "mymaster", SentinelAddrs: []string{sen.Addr}, Password: "pw"})
		if err != nil {
			t.Fatal(err)
		}
		r := NewRedis(c, RedisOptions{Keys: mustKeyring(t, testKeys(t, 1)...)})
		defer r.Close()
		if _, err := r.Put(ctx, fullTenant("via-sentinel"), 0); err != nil {
			t.Fatal(err)
		}
		// The write landed on the master.
		direct := redis.NewClient(&redis.Options{Addr: master.Addr, Password: "pw"})
		defer direct.Close()
		if n := direct.Exists(ctx, "lsproxy:tenant:{via-sentinel}").Val(); n != 1 {
			t.Fatal("record not on the master")
		}
	})

	t.Run("cluster", func(t *testing.T) {
		srv := startCluster(t)
		c, err := DialRedis(ctx, RedisConfig{ClusterAddrs: []string{srv.Addr}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.(*redis.ClusterClient); !ok {
			t.Fatalf("client is %T, want *redis.ClusterClient", c)
		}
		c.Close()
	})

	t.Run("tls options", func(t *testing.T) {
		ca := writeCA(t)
		c, _, err := newRedisClient(RedisConfig{ClusterAddrs: []string{"127.0.0.1:1"}, CAFile: ca})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cc := c.(*redis.ClusterClient)
		if tc := cc.Options().TLSConfig; tc == nil || tc.RootCAs == nil {
			t.Fatal("CA file did not enable TLS with the CA pool")
		}
		c2, _, err := newRedisClient(RedisConfig{URL: "rediss://127.0.0.1:1", CAFile: ca})
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		if tc := c2.(*redis.Client).Options().TLSConfig; tc == nil || tc.RootCAs == nil {
			t.Fatal("rediss:// URL with CA file lacks the CA pool")
		}
		c3, _, err := newRedisClient(RedisConfig{SentinelMaster: "m", SentinelAddrs: []string{"127.0.0.1:1"}, TLS: true, DialTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c3.Close()
		o := c3.(*redis.Client).Options()
		if o.TLSConfig == nil || o.DialTimeout != 3*time.Second {
			t.Fatalf("sentinel options: TLS %v, dial timeout %v", o.TLSConfig != nil, o.DialTimeout)
		}
	})
}
