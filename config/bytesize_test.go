package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lsproxy/lsproxy/auth"
)

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{
		"0": 0, "268435456": 256 << 20, "256MiB": 256 << 20, "256mib": 256 << 20, "1GiB": 1 << 30,
		"512MB": 512e6, "1.5GiB": 3 << 29, " 64 KiB ": 64 << 10, "10B": 10, "2g": 2 << 30, "1TB": 1e12,
	} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "12 parsecs", "1e30GiB", "NaN", "Inf", "0x10"} {
		if _, err := ParseByteSize(in); !errors.Is(err, ErrByteSize) {
			t.Errorf("ParseByteSize(%q): err %v, want ErrByteSize", in, err)
		}
	}
	for b, want := range map[ByteSize]string{256 << 20: "256MiB", 1 << 30: "1GiB", 1000: "1000", 0: "0", 3 << 10: "3KiB"} {
		if got := b.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int64(b), got, want)
		}
		if back, err := ParseByteSize(b.String()); err != nil || back != b {
			t.Errorf("%q reads back as %d, %v", b.String(), back, err)
		}
	}
}

func TestCacheMaxBytesFromFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("cache_max_bytes: 128MiB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, nil)
	if err != nil || c.CacheMaxBytes != 128<<20 || c.EffectiveCacheMaxBytes() != 128<<20 {
		t.Fatalf("file: %d, %v; want 128MiB", c.CacheMaxBytes, err)
	}
	if err := os.WriteFile(path, []byte("cache_max_bytes: 268435456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = Load(path, nil); err != nil || c.CacheMaxBytes != 256<<20 {
		t.Fatalf("file, plain number: %d, %v; want 256MiB", c.CacheMaxBytes, err)
	}
	if c, err = Load(path, []string{"LSPROXY_CACHE_MAX_BYTES=1GiB"}); err != nil || c.CacheMaxBytes != 1<<30 {
		t.Fatalf("env over file: %d, %v; want 1GiB", c.CacheMaxBytes, err)
	}
	_, err = Load("", []string{"LSPROXY_CACHE_MAX_BYTES=lots"})
	if err == nil || !strings.Contains(err.Error(), "LSPROXY_CACHE_MAX_BYTES") {
		t.Fatalf("bad env value: %v, want an error naming LSPROXY_CACHE_MAX_BYTES", err)
	}
	if err := os.WriteFile(path, []byte("cache_max_bytes: lots\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = Load(path, nil); err == nil || !errors.Is(err, ErrByteSize) && !strings.Contains(err.Error(), "cache_max_bytes") {
		t.Fatalf("bad file value: %v", err)
	}
}

func TestCacheMaxBytesValidated(t *testing.T) {
	c := validConfig()
	c.CacheMaxBytes = 1000
	errs := c.Validate(ModeServe)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "LSPROXY_CACHE_MAX_BYTES (cache_max_bytes) must be 0 (sized from the memory limit) or at least 1MiB; got 1000") {
		t.Fatalf("errors %v", errs)
	}
	c.CacheMaxBytes = 0
	if errs := c.Validate(ModeServe); len(errs) != 0 {
		t.Fatalf("auto refused: %v", errs)
	}
}

func TestContainerMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	v2, v1 := filepath.Join(dir, "memory.max"), filepath.Join(dir, "memory.limit_in_bytes")
	old := cgroupMemoryFiles
	cgroupMemoryFiles = []string{v2, v1}
	t.Cleanup(func() { cgroupMemoryFiles = old })
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := ContainerMemoryLimit(); got != 0 {
		t.Errorf("no files: %d, want 0", got)
	}
	write(v1, "1073741824\n")
	if got := ContainerMemoryLimit(); got != 1<<30 {
		t.Errorf("v1: %d, want 1GiB", got)
	}
	write(v1, "9223372036854771712\n") // v1's "no limit"
	if got := ContainerMemoryLimit(); got != 0 {
		t.Errorf("v1 unlimited: %d, want 0", got)
	}
	write(v2, "max\n")
	if got := ContainerMemoryLimit(); got != 0 {
		t.Errorf("v2 max: %d, want 0", got)
	}
	write(v2, "2147483648\n")
	if got := ContainerMemoryLimit(); got != 2<<30 {
		t.Errorf("v2: %d, want 2GiB", got)
	}
	if got := (Config{}).EffectiveCacheMaxBytes(); got != 512<<20 {
		t.Errorf("auto with 2GiB limit: %d, want a quarter (512MiB)", got)
	}
	if got := (Config{CacheMaxBytes: 64 << 20}).EffectiveCacheMaxBytes(); got != 64<<20 {
		t.Errorf("set: %d, want 64MiB", got)
	}
	write(v2, "garbage")
	if got := ContainerMemoryLimit(); got != 0 {
		t.Errorf("unreadable v2: %d, want 0", got)
	}
	if got := (Config{}).EffectiveCacheMaxBytes(); got != auth.DefaultCacheMaxBytes {
		t.Errorf("auto without a limit: %d, want %d", got, auth.DefaultCacheMaxBytes)
	}
	if got := autoCacheMaxBytes(2 << 20); got != MinCacheMaxBytes {
		t.Errorf("auto with a tiny limit: %d, want %d", got, MinCacheMaxBytes)
	}
}
