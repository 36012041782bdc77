package testredis

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStartKillRestart(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.URL(), "redis://127.0.0.1:") || !strings.HasSuffix(s.URL(), "/0") {
		t.Fatalf("URL = %q", s.URL())
	}
	if s.Port() == 6379 {
		t.Fatal("must never use the default port")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := s.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Nothing is persisted (--save ""), and Client survives the restart.
	s.Kill()
	s.Kill() // idempotent
	if ping(s.Addr) {
		t.Fatal("server answers after Kill")
	}
	s.Restart()
	n, err := c.Exists(ctx, "k").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("data survived a restart without persistence")
	}
}

func TestExtraArgs(t *testing.T) {
	s := Start(t, "--requirepass", "hunter2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Client().Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("ping without password: %v, want NOAUTH", err)
	}
}

func TestTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr == b.Addr {
		t.Fatalf("both on %s", a.Addr)
	}
}

func TestSentinel(t *testing.T) {
	master := Start(t)
	sen := StartSentinel(t, "mymaster", master)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewSentinelClient(&redis.Options{Addr: sen.Addr})
	defer c.Close()
	addr, err := c.GetMasterAddrByName(ctx, "mymaster").Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := addr[0] + ":" + addr[1]; got != master.Addr {
		t.Fatalf("sentinel reports master %s, want %s", got, master.Addr)
	}
}

// fatalTB records Fatal instead of failing the real test; it must be used
// from its own goroutine (Fatal ends it with runtime.Goexit).
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runFatal runs fn on its own goroutine and waits for it to return or Goexit.
func runFatal(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

func TestMissingBinaryFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := &fatalTB{TB: t}
	runFatal(func() { Start(f) })
	if f.msg != "redis-server not found: apt-get install -y redis-server" {
		t.Fatalf("Fatal message %q", f.msg)
	}
}

func TestBadArgsFailClearly(t *testing.T) {
	f := &fatalTB{TB: t}
	runFatal(func() { Start(f, "--no-such-option", "1") })
	if !strings.Contains(f.msg, "did not start") || !strings.Contains(f.msg, "no-such-option") {
		t.Fatalf("Fatal message %q, want the server's complaint", f.msg)
	}
}

func TestClusterFormsAndFailsOver(t *testing.T) {
	c := StartCluster(t, 3)
	cc := c.Client(t)
	cc.OnNewNode(func(n *redis.Client) { n.AddHook(reloadHook{cc}) })
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		if err := cc.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	c.FailOver(t, 1)
	// The client learns the new slot owner on its next errors; bounded.
	deadline := time.Now().Add(40 * time.Second)
	t0 := time.Now()
	for i := 0; i < 100; i++ {
		v, err := cc.Get(ctx, "k"+strconv.Itoa(i)).Int()
		if err != nil && time.Now().Before(deadline) {
			i--
			time.Sleep(50 * time.Millisecond) // no signal for the client's slot reload
			continue
		}
		if err != nil || v != i {
			t.Fatalf("k%d after failover = %d, %v", i, v, err)
		}
		if i == 0 {
			t.Logf("first read after %v", time.Since(t0))
		}
	}
}

// reloadHook reloads the slot map when dialling fails (as store's cluster
// client does): go-redis alone waits up to a minute.
type reloadHook struct{ c *redis.ClusterClient }

func (h reloadHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			h.c.ReloadState(ctx)
		}
		return conn, err
	}
}
func (reloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (reloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
