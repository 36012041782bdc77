package main

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// rekeyBackend opens the store the rekey command will use, with the given
// keys (first seals), for seeding and checking.
type rekeyBackend struct {
	name   string
	config []string // YAML lines selecting the store
	open   func(t *testing.T, keys ...string) store.Store
}

func boltBackend(t *testing.T) rekeyBackend {
	dir := t.TempDir()
	return rekeyBackend{
		name:   "bolt",
		config: []string{"data_dir: " + dir},
		open: func(t *testing.T, keys ...string) store.Store {
			s, err := store.OpenBolt(dir, mustKeys(t, keys...))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

func redisBackend(t *testing.T) rekeyBackend {
	srv := testredis.Start(t)
	return rekeyBackend{
		name:   "redis",
		config: []string{"redis_url: " + srv.URL(), "redis_key_prefix: 'rk:'"},
		open: func(t *testing.T, keys ...string) store.Store {
			return store.NewRedis(srv.Client(), store.RedisOptions{Prefix: "rk:", Keys: mustKeys(t, keys...)})
		},
	}
}

func mustKeys(t *testing.T, keys ...string) *store.Keyring {
	t.Helper()
	kr, err := store.ParseKeys(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestRekeyCommand(t *testing.T) {
	for _, mk := range []func(*testing.T) rekeyBackend{boltBackend, redisBackend} {
		b := mk(t)
		t.Run(b.name, func(t *testing.T) { testRekeyCommand(t, b) })
	}
}

func testRekeyCommand(t *testing.T, b rekeyBackend) {
	cleanEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	oldKey, newKey, lostKey := randomKey(t), randomKey(t), randomKey(t)

	// Seed: three tenants sealed with the old key, one without tokens.
	s := b.open(t, oldKey)
	for _, id := range []string{"acme", "beta", "gamma"} {
		if _, err := s.Put(ctx, &store.Tenant{ID: id, AccessToken: "AT-" + id, RefreshToken: "RT-" + id, Status: store.StatusActive}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, &store.Tenant{ID: "empty", Status: store.StatusActive}, 0); err != nil {
		t.Fatal(err)
	}
	if b.name == "bolt" {
		s.Close() // one process at a time
	}

	rekey := func(lines ...string) (int, string, string) {
		t.Helper()
		file := writeYAML(t, append(append([]string{}, b.config...), lines...)...)
		var stdout, stderr strings.Builder
		code := run([]string{"rekey", "--config", file}, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	code, out, errOut := rekey("encryption_key: "+newKey, "encryption_keys: ['"+oldKey+"']")
	if code != 0 || !strings.Contains(out, "4 records, 3 re-encrypted, 1 already current, 0 failed") {
		t.Fatalf("first run: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	newID := mustKeys(t, newKey).PrimaryID()
	if !strings.Contains(out, "encrypting with key "+newID) || !strings.Contains(out, "older keys can be removed") {
		t.Errorf("stdout %s", out)
	}
	code, out, _ = rekey("encryption_key: "+newKey, "encryption_keys: ['"+oldKey+"']")
	if code != 0 || !strings.Contains(out, "4 records, 0 re-encrypted, 4 already current, 0 failed") {
		t.Fatalf("second run: exit %d %s", code, out)
	}

	// The old key is no longer needed.
	s = b.open(t, newKey)
	for _, id := range []string{"acme", "beta", "gamma"} {
		tn, err := s.Get(ctx, id)
		if err != nil || tn.AccessToken != "AT-"+id || tn.RefreshToken != "RT-"+id {
			t.Fatalf("%s after rekey: %+v %v", id, tn, err)
		}
	}
	// A record sealed with a key nobody configured: a clear failure.
	if b.name == "bolt" {
		s.Close()
	}
	lost := b.open(t, lostKey)
	if _, err := lost.Put(ctx, &store.Tenant{ID: "orphan", AccessToken: "AT-ORPHAN-SECRET", RefreshToken: "RT-ORPHAN-SECRET"}, 0); err != nil {
		t.Fatal(err)
	}
	if b.name == "bolt" {
		lost.Close()
	}
	code, out, errOut = rekey("encryption_key: " + newKey)
	if code != 1 || !strings.Contains(out, "5 records, 0 re-encrypted, 4 already current, 1 failed") {
		t.Fatalf("unknown key: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	lostID := mustKeys(t, lostKey).PrimaryID()
	for _, want := range []string{`tenant "orphan"`, lostID, newID, "cannot decrypt"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	for _, secret := range []string{"ORPHAN-SECRET", newKey, lostKey, oldKey} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("output holds a secret %q", secret)
		}
	}
}

func TestRekeyCommandErrors(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	var stdout, stderr strings.Builder
	run1 := func(args ...string) int {
		stdout.Reset()
		stderr.Reset()
		return run(append([]string{"rekey"}, args...), &stdout, &stderr)
	}
	if code := run1("--config", writeYAML(t, "data_dir: "+dir)); code != 1 || !strings.Contains(stderr.String(), "LSPROXY_ENCRYPTION_KEY (encryption_key) is required") {
		t.Errorf("no key: %d %s", code, stderr.String())
	}
	short := base64.StdEncoding.EncodeToString([]byte("short"))
	if code := run1("--config", writeYAML(t, "data_dir: "+dir, "encryption_key: "+short)); code != 1 || strings.Contains(stderr.String(), short) {
		t.Errorf("bad key: %d %s", code, stderr.String())
	}
	if code := run1("extra"); code != 2 {
		t.Errorf("extra argument: %d", code)
	}
	// The embedded store in use by a running serve: a clear message.
	key := randomKey(t)
	held, err := store.OpenBolt(dir, mustKeys(t, key))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if code := run1("--config", writeYAML(t, "data_dir: "+dir, "encryption_key: "+key)); code != 1 || !strings.Contains(stderr.String(), "stop lsproxy serve") {
		t.Errorf("locked store: %d %s", code, stderr.String())
	}
	// Redis unreachable.
	if code := run1("--config", writeYAML(t, "redis_url: redis://127.0.0.1:"+strconv.Itoa(freePort(t)), "encryption_key: "+key)); code != 1 || !strings.Contains(stderr.String(), "opening the store") {
		t.Errorf("redis down: %d %s", code, stderr.String())
	}
}
