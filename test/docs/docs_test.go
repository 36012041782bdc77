// Package docs checks the repository's own documentation against the
// code: every package's file list (its doc comment) names exactly the
// files the package has, and every relative link and #anchor in README.md,
// CONTRIBUTING.md and docs/ resolves. It has no code of its own: only
// these tests.
package docs

import (
	"bufio"
	"bytes"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// root is the repository root, two levels up from test/docs.
func root(t *testing.T) string {
	t.Helper()
	r, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", r, err)
	}
	return r
}

// minFilesListed is the number of non-test Go files from which a
// package's doc comment lists its files.
const minFilesListed = 3

// goFileName is a file name in a doc comment, not part of a path into
// another package (store/tenantstate.go).
var goFileName = regexp.MustCompile(`(?:^|[^/\w.])([a-z0-9_]+\.go)\b`)

// TestPackageFileLists: the doc comment of a package with minFilesListed or
// more non-test Go files names every one of them (doc.go aside), and no
// package's doc comment names a file of its own that does not exist.
func TestPackageFileLists(t *testing.T) {
	t.Parallel()
	r := root(t)
	dirs := map[string][]string{}
	err := filepath.WalkDir(r, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != r && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dir, _ := filepath.Rel(r, filepath.Dir(path))
			dirs[dir] = append(dirs[dir], d.Name())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for dir, files := range dirs {
		doc := ""
		fset := token.NewFileSet()
		for _, f := range files {
			af, err := parser.ParseFile(fset, filepath.Join(r, dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil {
				doc += af.Doc.Text()
			}
		}
		named := map[string]bool{}
		for _, m := range goFileName.FindAllStringSubmatch(doc, -1) {
			named[m[1]] = true
		}
		for f := range named {
			if _, err := os.Stat(filepath.Join(r, dir, f)); err != nil {
				t.Errorf("%s: the package comment names %s, which is not a file of the package", dir, f)
			}
		}
		if len(files) < minFilesListed {
			continue
		}
		checked++
		for _, f := range files {
			if f != "doc.go" && !named[f] {
				t.Errorf("%s: the package comment does not name %s: add it to the package's file list (CONTRIBUTING.md, \"Packages\")", dir, f)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages with several files found: the walk is broken", checked)
	}
}

// markdownFiles are the documents whose links are checked.
func markdownFiles(t *testing.T, r string) []string {
	t.Helper()
	files := []string{"README.md", "CONTRIBUTING.md", "CHANGELOG.md", "SECURITY.md"}
	for _, dir := range []string{"docs", "docs/design"} {
		m, err := filepath.Glob(filepath.Join(r, dir, "*.md"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m {
			rel, _ := filepath.Rel(r, f)
			files = append(files, rel)
		}
	}
	return files
}

var (
	linkRE    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingRE = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
	mdLinkRE  = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// slug is GitHub's anchor for a heading: markup removed, lower case,
// every character other than a letter, digit, space, hyphen or underscore
// dropped, spaces turned into hyphens.
func slug(heading string) string {
	h := mdLinkRE.ReplaceAllString(heading, "$1")
	h = strings.ToLower(h)
	var b strings.Builder
	for _, r := range h {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// scan returns a document's anchors and its links outside code blocks.
func scan(src []byte) (anchors map[string]bool, links []string) {
	anchors = map[string]bool{}
	seen := map[string]int{}
	fence := false
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fence = !fence
			continue
		}
		if fence {
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			s := slug(m[2])
			if n := seen[s]; n > 0 {
				anchors[s+"-"+itoa(n)] = true
			} else {
				anchors[s] = true
			}
			seen[s]++
		}
		// Inline code spans hold no links.
		parts := strings.Split(line, "`")
		for i := 0; i < len(parts); i += 2 {
			for _, m := range linkRE.FindAllStringSubmatch(parts[i], -1) {
				links = append(links, m[1])
			}
		}
	}
	return anchors, links
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestSlugFollowsGitHub(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"14. Rate limits":                                      "14-rate-limits",
		"4. The chart's configuration":                         "4-the-charts-configuration",
		"The way out: `lsproxy tenants export`":                "the-way-out-lsproxy-tenants-export",
		"K-Series (Lightspeed Restaurant) — preset `k-series`": "k-series-lightspeed-restaurant--preset-k-series",
		"The mass-invalid_grant guard (rule 15)":               "the-mass-invalid_grant-guard-rule-15",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLinksAndAnchors: every relative link of the documents resolves to a
// file of the repository, and every #anchor to a heading of its target.
func TestLinksAndAnchors(t *testing.T) {
	t.Parallel()
	r := root(t)
	anchorsOf := map[string]map[string]bool{}
	load := func(rel string) (map[string]bool, []string, error) {
		src, err := os.ReadFile(filepath.Join(r, rel))
		if err != nil {
			return nil, nil, err
		}
		a, l := scan(src)
		anchorsOf[rel] = a
		return a, l, nil
	}
	total := 0
	for _, doc := range markdownFiles(t, r) {
		_, links, err := load(doc)
		if err != nil {
			t.Errorf("%s: %v", doc, err)
			continue
		}
		for _, link := range links {
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			total++
			target, anchor, _ := strings.Cut(link, "#")
			targetRel := doc
			if target != "" {
				targetRel = filepath.Clean(filepath.Join(filepath.Dir(doc), target))
				if strings.HasPrefix(targetRel, "..") {
					t.Errorf("%s: link %q leaves the repository", doc, link)
					continue
				}
				if _, err := os.Stat(filepath.Join(r, targetRel)); err != nil {
					t.Errorf("%s: link %q: %s does not exist", doc, link, targetRel)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(targetRel, ".md") {
				t.Errorf("%s: link %q: an anchor into a file that is not Markdown", doc, link)
				continue
			}
			anchors, ok := anchorsOf[targetRel]
			if !ok {
				anchors, _, err = load(targetRel)
				if err != nil {
					t.Errorf("%s: %v", doc, err)
					continue
				}
			}
			if !anchors[anchor] {
				t.Errorf("%s: link %q: %s has no heading with the anchor #%s", doc, link, targetRel, anchor)
			}
		}
	}
	if total < 30 {
		t.Fatalf("only %d relative links found: the scan is broken", total)
	}
}

// repoFiles lists the files git tracks (or would: untracked but not
// ignored), relative to r; without git it walks the tree.
func repoFiles(t *testing.T, r string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard")
	cmd.Dir = r
	if out, err := cmd.Output(); err == nil {
		var files []string
		for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f != "" {
				if _, err := os.Stat(filepath.Join(r, f)); err == nil { // deleted but not yet committed
					files = append(files, f)
				}
			}
		}
		return files
	}
	var files []string
	err := filepath.WalkDir(r, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != r && strings.HasPrefix(d.Name(), ".") && d.Name() != ".ci" {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(r, path)
		files = append(files, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestNoPathOutsideTheRepository: no file of the repository names a path
// outside it (a sibling checkout, a machine's work folder) or a working
// notes folder.
func TestNoPathOutsideTheRepository(t *testing.T) {
	t.Parallel()
	r := root(t)
	bad := []string{"../shared", "/work/", ".notes/"}
	files := repoFiles(t, r)
	if len(files) < 100 {
		t.Fatalf("only %d files found", len(files))
	}
	for _, rel := range files {
		base := filepath.Base(rel)
		if base == "docs_test.go" || base == "go.sum" || strings.HasSuffix(rel, ".png") || strings.HasSuffix(rel, ".svg") {
			continue
		}
		src, err := os.ReadFile(filepath.Join(r, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bad {
			if bytes.Contains(src, []byte(b)) {
				t.Errorf("%s names %q, a path outside the repository or a working-notes folder", rel, b)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(r, ".notes")); err == nil {
		t.Errorf(".notes/ exists: working notes belong in the issue tracker, decisions in docs/design/")
	}
}
