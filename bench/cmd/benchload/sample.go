package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// What a run samples beside the load: CPU seconds and peak RSS of the
// processes under test, machine CPU, Redis command counts, emulator stats.

func parsePids(s string) ([]int, error) {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("bad pid %q", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

// cpuSeconds sums utime+stime of pids (fields 14 and 15 of /proc/PID/stat).
func cpuSeconds(pids []int) (float64, error) {
	if runtime.GOOS != "linux" {
		return 0, nil
	}
	var ticks int64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return 0, err
		}
		s := string(b)
		// The command name (field 2) may contain spaces: count from ")".
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: unexpected format", p)
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + k
	}
	return float64(ticks) / clockTicks, nil
}

// peakRSS sums VmHWM (KiB) of pids.
func peakRSS(pids []int) int64 { return procStatusKiB(pids, "VmHWM:") }

// procStatusKiB sums one "Name: N kB" field of /proc/PID/status over pids.
func procStatusKiB(pids []int, field string) int64 {
	var sum int64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, field); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				sum += n
			}
		}
	}
	return sum
}

// machineTicks returns busy and total jiffies of all CPUs from /proc/stat.
func machineTicks() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// commandStats returns calls per command from INFO commandstats, speaking
// RESP directly so that the bench needs no Redis client.
func commandStats(addr string) (map[string]int64, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n"); err != nil {
		return nil, err
	}
	var buf []byte
	tmp := make([]byte, 64<<10)
	for {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if hdr, rest, ok := strings.Cut(string(buf), "\r\n"); ok && strings.HasPrefix(hdr, "$") {
			want, _ := strconv.Atoi(hdr[1:])
			if len(rest) >= want {
				return parseCommandStats(rest[:want]), nil
			}
		}
		if err != nil {
			return nil, fmt.Errorf("INFO commandstats: %w", err)
		}
	}
}

func parseCommandStats(s string) map[string]int64 {
	out := map[string]int64{}
	for _, line := range strings.Split(s, "\r\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return out
}

type emuStats struct {
	TokenRequests   int64
	RefreshGrants   int64
	RefreshRejected int64
	ReuseDetected   int64
	GrantsIssued    int64
}

func fetchEmuStats(base string) (emuStats, error) {
	var s emuStats
	resp, err := http.Get(strings.TrimRight(base, "/") + "/stats")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&s)
	return s, err
}
