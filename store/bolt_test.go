package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/lsproxy/lsproxy/internal/testclock"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

type boltHarness struct{ dir string }

func (h *boltHarness) Open(t *testing.T, keys *Keyring) Store {
	t.Helper()
	b, err := OpenBolt(h.dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func (h *boltHarness) Peer(_ *testing.T, s Store) Store { return s }

func (h *boltHarness) Raw(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(h.dir, BoltFile))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestBoltConformance(t *testing.T) {
	runConformance(t, func(t *testing.T) harness { return &boltHarness{dir: t.TempDir()} })
}

func openBoltClock(t *testing.T, dir string) (*Bolt, *testclock.Clock) {
	t.Helper()
	b, err := OpenBolt(dir, mustKeyring(t, testKeys(t, 1)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	clock := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b.now = clock.Now
	return b, clock
}

func TestBoltLockExpiryClock(t *testing.T) {
	ctx := testCtx(t)
	b, clock := openBoltClock(t, t.TempDir())
	l, err := b.TryLock(ctx, "x", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * time.Second)
	if _, err := b.TryLock(ctx, "x", time.Minute); !errors.Is(err, ErrLockHeld) {
		t.Fatalf("before expiry: %v", err)
	}
	if err := l.Refresh(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * time.Second)
	if _, err := b.TryLock(ctx, "x", time.Minute); !errors.Is(err, ErrLockHeld) {
		t.Fatalf("Refresh did not extend: %v", err)
	}
	clock.Advance(time.Second) // exactly at expiry: free
	if err := l.Refresh(ctx, time.Minute); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Refresh at expiry: %v, want ErrLockLost", err)
	}
	l2, err := b.TryLock(ctx, "x", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("stale Release: %v", err)
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBoltLockSweep(t *testing.T) {
	ctx := testCtx(t)
	b, clock := openBoltClock(t, t.TempDir())
	for i := range maxIdleLocks {
		if _, err := b.TryLock(ctx, fmt.Sprintf("l%d", i), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	held, err := b.TryLock(ctx, "held", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if _, err := b.TryLock(ctx, "new", time.Second); err != nil {
		t.Fatal(err)
	}
	b.lockMu.Lock()
	n := len(b.locks)
	b.lockMu.Unlock()
	if n != 2 {
		t.Fatalf("%d lock entries after sweep, want 2 (held, new)", n)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func onceKeys(t *testing.T, b *Bolt) []string {
	t.Helper()
	var keys []string
	err := b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketOnce).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestBoltOnceExpiryAndPurge(t *testing.T) {
	ctx := testCtx(t)
	b, clock := openBoltClock(t, t.TempDir())
	if err := b.PutOnce(ctx, "short", []byte("1"), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.PutOnce(ctx, "long", []byte("2"), time.Hour); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if _, err := b.TakeOnce(ctx, "short"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TakeOnce at expiry: %v, want ErrNotFound", err)
	}
	if err := b.PutOnce(ctx, "short2", []byte("3"), time.Second); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	// Not yet purged: the last sweep was less than a minute ago.
	if got := onceKeys(t, b); len(got) != 2 {
		t.Fatalf("once keys = %v", got)
	}
	clock.Advance(oncePurgeInterval)
	if err := b.PutOnce(ctx, "trigger", []byte("4"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(onceKeys(t, b), ","); got != "long,trigger" {
		t.Fatalf("once keys after sweep = %s, want long,trigger", got)
	}
}

func TestBoltReopenSurvivesRestart(t *testing.T) {
	ctx := testCtx(t)
	dir := filepath.Join(t.TempDir(), "nested", "data")
	keys := mustKeyring(t, testKeys(t, 1)...)
	b, err := OpenBolt(dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	tn := fullTenant("persist")
	if _, err := b.Put(ctx, tn, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, tn, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.PutOnce(ctx, "state", []byte("s"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, BoltFile): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}

	b, err = OpenBolt(dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := b.Get(ctx, "persist")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 || got.RefreshToken != tn.RefreshToken {
		t.Fatalf("after reopen: version %d", got.Version)
	}
	if v, err := b.Put(ctx, got, 2); err != nil || v != 3 {
		t.Fatalf("Put after reopen = %d, %v", v, err)
	}
	if v, err := b.TakeOnce(ctx, "state"); err != nil || string(v) != "s" {
		t.Fatalf("TakeOnce after reopen = %q, %v", v, err)
	}
}

const helperDirEnv = "LSPROXY_STORE_TEST_BOLT_DIR"

// TestBoltHelperProcess is not a test: TestBoltLockedByOtherProcess runs
// the test binary again with only this test and helperDirEnv set. It
// tries to open the directory and reports the outcome on stdout.
func TestBoltHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process only")
	}
	keys := mustKeyring(t, make([]byte, KeySize))
	start := time.Now()
	b, err := OpenBolt(dir, keys)
	switch {
	case errors.Is(err, ErrLocked):
		os.Stdout.WriteString("RESULT locked after " + time.Since(start).String() + ": " + err.Error() + "\n")
	case err != nil:
		os.Stdout.WriteString("RESULT error: " + err.Error() + "\n")
	default:
		_ = b.Close()
		os.Stdout.WriteString("RESULT opened\n")
	}
}

func TestBoltLockedByOtherProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b, err := OpenBolt(dir, mustKeyring(t, testKeys(t, 1)...))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	run := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBoltHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper process: %v\n%s", err, out)
		}
		// The lock timeout is 1s; allow for process start-up under -race.
		if el := time.Since(start); el > 10*time.Second {
			t.Fatalf("helper took %v", el)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "RESULT ") {
				return strings.TrimPrefix(line, "RESULT ")
			}
		}
		t.Fatalf("helper printed no result:\n%s", out)
		return ""
	}

	got := run()
	if !strings.HasPrefix(got, "locked after ") || !strings.Contains(got, filepath.Join(dir, BoltFile)) {
		t.Fatalf("second process: %q, want locked naming the file", got)
	}
	if !strings.Contains(got, ErrLocked.Error()) {
		t.Fatalf("message %q lacks %q", got, ErrLocked)
	}

	// Once this process lets go, the other one opens.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := run(); got != "opened" {
		t.Fatalf("after Close: %q, want opened", got)
	}
}

func TestOpenBoltErrors(t *testing.T) {
	keys := mustKeyring(t, testKeys(t, 1)...)
	if _, err := OpenBolt(t.TempDir(), nil); err == nil {
		t.Error("nil keyring: no error")
	}
	if _, err := OpenBolt("", keys); err == nil {
		t.Error("empty dir: no error")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBolt(file, keys); err == nil {
		t.Error("dir is a file: no error")
	}
	notDB := t.TempDir()
	if err := os.WriteFile(filepath.Join(notDB, BoltFile), []byte(strings.Repeat("garbage!", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBolt(notDB, keys); err == nil || errors.Is(err, ErrLocked) {
		t.Errorf("corrupt file: %v, want an open error", err)
	}
}

func TestBoltCorruptRecord(t *testing.T) {
	ctx := testCtx(t)
	b, _ := openBoltClock(t, t.TempDir())
	put := func(id string, v []byte) {
		t.Helper()
		if err := b.db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketTenants).Put([]byte(id), v)
		}); err != nil {
			t.Fatal(err)
		}
	}
	put("short", []byte{1, 2})
	put("json", append(make([]byte, 8), "{not json"...))
	for _, id := range []string{"short", "json"} {
		_, err := b.Get(ctx, id)
		if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrDecrypt) {
			t.Errorf("Get %s: %v, want a corruption error", id, err)
		}
		if _, err := b.Put(ctx, fullTenant(id), 1); err == nil {
			t.Errorf("Put over corrupt %s: no error", id)
		}
	}
}

func TestBoltSlowSubscriberDoesNotBlock(t *testing.T) {
	ctx := testCtx(t)
	b, _ := openBoltClock(t, t.TempDir())
	ch, err := b.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tn := fullTenant("busy")
	for v := range int64(subscribeBuffer + 10) {
		if _, err := b.Put(ctx, tn, v); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(ch); n != subscribeBuffer {
		t.Fatalf("%d ids buffered, want %d (the rest dropped)", n, subscribeBuffer)
	}
}

// A data file of an earlier version (no due index) gets one when opened.
func TestBoltBuildsDueIndexOnOpen(t *testing.T) {
	dir := t.TempDir()
	keys := mustKeyring(t, testKeys(t, 1)...)
	ctx := testCtx(t)
	b, err := OpenBolt(dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	rec := fullTenant("legacy")
	rec.Status = StatusActive
	if _, err := b.Put(ctx, rec, 0); err != nil {
		t.Fatal(err)
	}
	err = b.db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bucketDue); err != nil {
			return err
		}
		return tx.DeleteBucket(bucketDueOf)
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	b, err = OpenBolt(dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	due, err := b.ListDue(ctx, rec.RefreshExpiresAt, time.Time{})
	if err != nil || len(due) != 1 || due[0] != "legacy" {
		t.Fatalf("ListDue = %v, %v", due, err)
	}
}

// An existing data directory and bolt file with loose modes are tightened
// to 0700 and 0600 when the store opens.
func TestBoltTightensExistingPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // past the umask
		t.Fatal(err)
	}
	keys := mustKeyring(t, testKeys(t, 1)...)
	s, err := OpenBolt(dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Chmod(filepath.Join(dir, BoltFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err = OpenBolt(dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, BoltFile): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", path, got, want)
		}
	}
}
