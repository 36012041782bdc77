// Package layering pins which lsproxy packages each package may import
// (the arrows of README.md's layout) and keeps test code out of the
// production binaries. It has no code of its own: only this test.
package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/lsproxy/lsproxy"

// allowed lists, for every package of the module with non-test Go files,
// the packages of the module its non-test files may import directly
// (paths relative to the module). A package missing here fails the test:
// place a new package in the layering before it is imported.
//
//	store ← auth ← onboard ← control ← cmd/lsproxy
//	             ← proxy   ←
//
// internal/httperr, internal/emulator, internal/tracing, internal/logging,
// internal/gcheadroom, ratelimit and the test helpers import nothing of ours
// (proxy writes its access line through internal/logging); config takes its
// defaults from the packages that own them.
var allowed = map[string][]string{
	"store":               {"internal/defect"},
	"internal/httperr":    {},
	"internal/emulator":   {},
	"internal/logging":    {},
	"internal/gcheadroom": {},
	"internal/testcert":   {},
	"internal/testclock":  {},
	"internal/testredis":  {},
	"internal/tracing":    {},
	"internal/defect":     {},
	"ratelimit":           {"internal/defect"},

	"auth":    {"store", "internal/httperr", "internal/defect"},
	"onboard": {"store", "auth", "internal/httperr", "internal/defect"},
	"proxy":   {"store", "auth", "internal/httperr", "internal/logging", "ratelimit"},
	"control": {"store", "auth", "onboard", "internal/httperr", "ratelimit", "internal/defect"},
	"config":  {"store", "auth", "onboard", "ratelimit"},

	"cmd/lsproxy": {"store", "auth", "onboard", "proxy", "control", "config", "ratelimit",
		"internal/httperr", "internal/emulator", "internal/logging", "internal/tracing", "internal/gcheadroom"},
	"cmd/lsemulator": {"internal/emulator"},

	"bench/internal/benchsrv": {},
	"bench/cmd/benchbaseline": {"bench/internal/benchsrv"},
	"bench/cmd/benchload":     {"bench/internal/benchsrv"},
	"bench/cmd/benchupstream": {"bench/internal/benchsrv"},
	"bench/cmd/benchscale":    {"store"},
	"deploy":                  {}, // holds no Go code
}

// binaries are the programs we ship; nothing they link may be test code.
var binaries = []string{"cmd/lsproxy", "cmd/lsemulator"}

// testOnly reports whether a module package is test or benchmark code,
// which a shipped binary must not link.
func testOnly(rel string) bool {
	return rel == "test" || strings.HasPrefix(rel, "test/") ||
		rel == "internal/testcert" || rel == "internal/testclock" || rel == "internal/testredis" ||
		strings.HasPrefix(rel, "bench/")
}

type pkg struct {
	ImportPath string
	GoFiles    []string
	Imports    []string
	Deps       []string
	Error      *struct{ Err string }
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "list", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding go list: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs[rel(p.ImportPath)] = p
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// rel is path relative to the module, or "" for a path outside it.
func rel(path string) string {
	if path == module {
		return "."
	}
	if r, ok := strings.CutPrefix(path, module+"/"); ok {
		return r
	}
	return ""
}

func TestImportsFollowTheLayering(t *testing.T) {
	t.Parallel()
	pkgs := listPackages(t)
	names := slices.Sorted(maps.Keys(pkgs))
	for _, name := range names {
		p := pkgs[name]
		if len(p.GoFiles) == 0 {
			continue // test-only or empty: never imported by product code
		}
		ok, known := allowed[name]
		if !known {
			t.Errorf("package %s is not in the layering table (test/layering): add it with the packages it may import", name)
			continue
		}
		for _, imp := range p.Imports {
			r := rel(imp)
			if r == "" {
				continue
			}
			if !slices.Contains(ok, r) {
				t.Errorf("%s imports %s: not allowed by the layering (README layout; table in test/layering)", name, r)
			}
		}
	}
}

func TestBinariesLinkNoTestCode(t *testing.T) {
	t.Parallel()
	pkgs := listPackages(t)
	for _, bin := range binaries {
		p, ok := pkgs[bin]
		if !ok {
			t.Errorf("binary %s not found", bin)
			continue
		}
		for _, dep := range p.Deps {
			if r := rel(dep); r != "" && testOnly(r) {
				t.Errorf("%s links %s: test or benchmark code in a shipped binary", bin, r)
			}
		}
		if slices.Contains(p.Deps, "testing") {
			t.Errorf("%s links package testing", bin)
		}
	}
}
