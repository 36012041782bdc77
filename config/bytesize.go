package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes written as a plain number or with a unit:
// 268435456, 256MiB, 512MB, 1GiB (B, KB, MB, GB, TB are powers of 1000;
// KiB, MiB, GiB, TiB of 1024; the unit is case-insensitive).
type ByteSize int64

// ErrByteSize: a size that is not a number with an optional unit.
var ErrByteSize = errors.New("config: not a size (a number of bytes, or with a unit: 256MiB, 1GiB, 512MB)")

var byteUnits = []struct {
	suffix string
	mult   float64
}{ // longest first, so "MiB" is not read as "B"
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseByteSize reads s as a ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || t == "" || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("%w: %q", ErrByteSize, s)
	}
	return ByteSize(f * mult), nil
}

// UnmarshalText reads the environment variable's or YAML value.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// String writes the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalText writes String, so a printed configuration reads back.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// The token cache's bound when cache_max_bytes is 0 (auto).
const (
	// CacheMemoryShare: the cache gets a quarter of the container's memory
	// limit when one is known.
	CacheMemoryShare = 4
	// MinCacheMaxBytes is the least bound accepted (and the least the
	// automatic one becomes).
	MinCacheMaxBytes = 1 << 20
)

// cgroupMemoryFiles are where a container's memory limit is read: cgroup v2,
// then v1. A variable so that tests can point at files of their own.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// ContainerMemoryLimit returns the memory limit of the cgroup this process
// runs in, or 0 when there is none ("max", v1's huge "unlimited" value) or
// it cannot be read.
func ContainerMemoryLimit() int64 {
	for _, f := range cgroupMemoryFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 { // v1 reports "no limit" as about 2^63
			return 0
		}
		return n
	}
	return 0
}

// EffectiveCacheMaxBytes returns CacheMaxBytes, or, when it is 0, a quarter
// of the container's memory limit (at least MinCacheMaxBytes), or without a
// known limit auth.DefaultCacheMaxBytes.
func (c Config) EffectiveCacheMaxBytes() int64 {
	if c.CacheMaxBytes > 0 {
		return int64(c.CacheMaxBytes)
	}
	return autoCacheMaxBytes(ContainerMemoryLimit())
}
