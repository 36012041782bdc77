package control

import (
	"bytes"
	"fmt"
	"unicode/utf8"

	"github.com/lsproxy/lsproxy/store"
)

// Limits of an import, shared by the server (POST /admin/import, PUT
// /admin/tenants/{id}) and the CLI (lsproxy tenants import), so that a line
// the CLI sends is a line the server accepts.
const (
	// MaxImportLine bounds one NDJSON line, in bytes, without its line
	// end: a longer line is refused with its line number.
	MaxImportLine = 64 << 10
	// MaxExpiresIn bounds expires_in (seconds): an access token living
	// longer than a year is a mistake (Lightspeed's live about an hour).
	MaxExpiresIn = 366 * 24 * 3600
	// MaxRefreshExpiresIn bounds refresh_expires_in (seconds): ten years.
	MaxRefreshExpiresIn = 10 * 366 * 24 * 3600
)

// lifetimeProblems checks the lifetimes of an import: never negative,
// never beyond the bounds above (a huge value would overflow the expiry).
func lifetimeProblems(expiresIn, refreshExpiresIn int64) []string {
	var p []string
	if expiresIn < 0 || refreshExpiresIn < 0 {
		p = append(p, "expires_in and refresh_expires_in must not be negative")
	}
	if expiresIn > MaxExpiresIn {
		p = append(p, fmt.Sprintf("expires_in must be at most %d seconds (a year)", MaxExpiresIn))
	}
	if refreshExpiresIn > MaxRefreshExpiresIn {
		p = append(p, fmt.Sprintf("refresh_expires_in must be at most %d seconds (ten years)", MaxRefreshExpiresIn))
	}
	return p
}

// locationProblems: every location id can go into the location index, so
// that a line is written whole (record and index) or not at all.
func locationProblems(locs []store.Location) []string {
	for _, l := range locs {
		if !store.ValidLocationID(l.ID) {
			return []string{"every location needs an id of 1 to 128 bytes without NUL"}
		}
	}
	return nil
}

// eachLine calls fn with every line of body (without its line end) and its
// number, from 1, without copying; it stops when fn returns false.
func eachLine(body []byte, fn func(line []byte, n int) bool) {
	for n := 1; len(body) > 0; n++ {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		if !fn(bytes.TrimSuffix(line, []byte("\r")), n) {
			return
		}
	}
}

// countLines counts the non-blank lines of an NDJSON body without decoding
// any, stopping at limit+1.
func countLines(body []byte, limit int) int {
	count := 0
	eachLine(body, func(line []byte, _ int) bool {
		if len(bytes.TrimSpace(line)) > 0 {
			count++
		}
		return count <= limit
	})
	return count
}

// lineProblem is why a raw line cannot be decoded at all, or "".
func lineProblem(line []byte) string {
	switch {
	case len(line) > MaxImportLine:
		return fmt.Sprintf("line longer than %d KiB", MaxImportLine>>10)
	case !utf8.Valid(line):
		return "not valid UTF-8"
	}
	return ""
}
