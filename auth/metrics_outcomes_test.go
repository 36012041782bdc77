package auth

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
)

// Every outcome the code records is in RefreshOutcomes (and so exists at 0
// from the start), and every listed outcome is recorded somewhere.
func TestRefreshOutcomesListed(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`Metrics\.refresh\("([a-z_]+)"\)`)
	used := map[string]bool{}
	for _, f := range files {
		if matched, _ := filepath.Match("*_test.go", f); matched {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
		}
	}
	if len(used) < 5 {
		t.Fatalf("found only %v: the scan is broken", used)
	}
	for o := range used {
		if !slices.Contains(RefreshOutcomes, o) {
			t.Errorf("outcome %q is recorded but not in RefreshOutcomes (not pre-initialised)", o)
		}
	}
	for _, o := range RefreshOutcomes {
		if !used[o] {
			t.Errorf("RefreshOutcomes lists %q, which no code records", o)
		}
	}
}
