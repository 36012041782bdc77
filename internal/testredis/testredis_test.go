package testredis

import (
	"context"
	"strings"
	"testing"
	"time"
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
