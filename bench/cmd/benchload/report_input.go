package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The report's inputs: result lines, run metadata, `go test -bench` output.

func readResults(path string) ([]Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("no results in " + path)
	}
	return out, sc.Err()
}

type kv struct{ k, v string }

func readMeta(path string) ([]kv, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []kv
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out = append(out, kv{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	return out, nil
}

type goBench struct {
	name    string
	metrics []kv // value, unit in order
}

func parseGoBench(s string) []goBench {
	var out []goBench
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		b := goBench{name: strings.TrimPrefix(f[0], "Benchmark")}
		// Drop the -GOMAXPROCS suffix.
		if i := strings.LastIndexByte(b.name, '-'); i > 0 {
			if _, err := strconv.Atoi(b.name[i+1:]); err == nil {
				b.name = b.name[:i]
			}
		}
		for i := 2; i+1 < len(f); i += 2 {
			b.metrics = append(b.metrics, kv{f[i+1], f[i]})
		}
		out = append(out, b)
	}
	return out
}

func (b goBench) metric(unit string) (string, bool) {
	for _, m := range b.metrics {
		if m.k == unit {
			return m.v, true
		}
	}
	return "", false
}
