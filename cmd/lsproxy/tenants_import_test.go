package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/lsproxy/lsproxy/control"
)

// zeros is an endless line (like /dev/zero) that counts what was read.
type zeros struct{ n int }

func (z *zeros) Read(p []byte) (int, error) {
	clear(p)
	z.n += len(p)
	return len(p), nil
}

// An endless line is refused after at most the server's line limit has
// been read, with its line number; nothing is sent.
func TestImportFileEndlessLineBounded(t *testing.T) {
	z := &zeros{}
	_, _, _, err := readImportFile(io.MultiReader(strings.NewReader("{\"id\":\"a\",\"refresh_token\":\"r\"}\n"), z), 10)
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "64 KiB") {
		t.Fatalf("endless line: %v, want a line 2 error naming the limit", err)
	}
	if z.n > 2*control.MaxImportLine {
		t.Fatalf("read %d bytes of an endless line, want at most about %d", z.n, control.MaxImportLine)
	}
}

// The CLI and the server count a line the same way: exactly
// control.MaxImportLine bytes (after trimming) is sent; one more byte is
// refused with its line number.
func TestImportFileLineLimitMatchesServer(t *testing.T) {
	line := func(n int) string {
		base := `{"id":"x","refresh_token":"r","scope":""}`
		return strings.Replace(base, `"scope":""`, `"scope":"`+strings.Repeat("s", n-len(base))+`"`, 1)
	}
	b, _, total, err := readImportFile(strings.NewReader("  "+line(control.MaxImportLine)+" \r\n\n"), 10)
	if err != nil || total != 1 || len(b) != 1 || len(b[0].lines[0]) != control.MaxImportLine {
		t.Fatalf("a line of exactly the limit: %v (total %d)", err, total)
	}
	_, _, _, err = readImportFile(strings.NewReader("\n"+line(control.MaxImportLine+1)+"\n"), 10)
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a line one byte over the limit: %v, want a line 2 error", err)
	}
}

// `lsproxy tenants import /dev/zero` fails at once with a clear message,
// sends nothing (the admin URL points nowhere) and exits 1.
func TestTenantsImportDevZero(t *testing.T) {
	cleanEnv(t)
	t.Setenv("LSPROXY_ADMIN_TOKEN", strings.Repeat("a", 32))
	t.Setenv("LSPROXY_ADMIN_URL", "http://127.0.0.1:1")
	var out, errs bytes.Buffer
	code := tenantsImport(context.Background(), []string{"/dev/zero"}, &out, &errs)
	if code != 1 || !strings.Contains(errs.String(), "line 1 is longer than 64 KiB") {
		t.Fatalf("import /dev/zero: exit %d, %s", code, errs.String())
	}
}

// Without a terminal, a long import prints a progress line every
// progressEvery lines (and none for the last batch: the summary follows).
func TestImportProgressWithoutTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, 2*progressEvery+3000)
	for range 2*progressEvery/5000 + 1 {
		p.add(5000)
	}
	p.done()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], fmt.Sprintf("import: %d/%d lines (", progressEvery, 2*progressEvery+3000)) ||
		!strings.HasPrefix(lines[1], fmt.Sprintf("import: %d/", 2*progressEvery)) {
		t.Fatalf("progress output %q", buf.String())
	}
	buf.Reset()
	short := newProgress(&buf, 4000)
	short.add(4000)
	short.done()
	if buf.Len() != 0 {
		t.Fatalf("a short import printed progress: %q", buf.String())
	}
}
