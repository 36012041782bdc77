package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/lsproxy/lsproxy/control"
)

// importBatch is a run of file lines sent in one request.
type importBatch struct {
	lines   [][]byte
	numbers []int // file line numbers
}

// tenantsImport is `lsproxy tenants import FILE`: it sends the NDJSON
// lines of FILE ({"id","refresh_token","access_token"?,"expires_in"?, ...})
// to the admin API's bulk import in batches, a few batches at once, and
// reports every line that failed (by file line number) and the counts.
// Safe to re-run: lines already imported are "unchanged". Exit 0 when
// every line was imported (or would be, with --dry-run), 1 otherwise.
func tenantsImport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("lsproxy tenants import", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	dry := fs.Bool("dry-run", false, "check every line and report what would change; write nothing")
	overwrite := fs.Bool("overwrite", false, "replace tenants that hold another refresh token (careful: see docs/migration.md)")
	conc := fs.Int("concurrency", 4, "batches in flight at once (1-32)")
	batch := fs.Int("batch", 500, "lines per request (1-5000)")
	output := fs.String("output", "table", "table (failed lines and counts) or json (one result per line)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: lsproxy tenants import [--dry-run] [--overwrite] [--concurrency N] [--batch N] [--output table|json] FILE\n\n"+
			"FILE holds one JSON object per line: {\"id\", \"refresh_token\", \"access_token\"?, \"expires_in\"?}.\n"+
			"Admin API: LSPROXY_ADMIN_URL (default http://127.0.0.1:8081), LSPROXY_ADMIN_TOKEN.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(longFlags(fs, args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "lsproxy tenants import:", err)
		return 2
	}
	if fs.NArg() != 1 || *conc < 1 || *conc > 32 || *batch < 1 || *batch > control.MaxImportLines || (*output != "table" && *output != "json") {
		fs.Usage()
		return 2
	}
	client, err := newImportClient()
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy tenants import:", err)
		return 2
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy tenants import:", err)
		return 1
	}
	defer f.Close()

	batches, local, total, err := readImportFile(f, *batch)
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy tenants import:", err)
		return 1
	}
	start := time.Now()
	progress := newProgress(stderr, total)
	results := append([]control.ImportResult(nil), local...)
	var (
		mu    sync.Mutex
		fatal error
		wg    sync.WaitGroup
	)
	work := make(chan importBatch)
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				res, err := client.importBatch(ctx, b, *dry, *overwrite)
				mu.Lock()
				if err != nil && fatal == nil {
					fatal = err
				}
				results = append(results, res...)
				progress.add(len(b.lines))
				mu.Unlock()
			}
		}()
	}
	for _, b := range batches {
		mu.Lock()
		stop := fatal != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		work <- b
	}
	close(work)
	wg.Wait()
	progress.done()
	sort.Slice(results, func(i, j int) bool { return results[i].Line < results[j].Line })

	counts := map[string]int{}
	for _, r := range results {
		counts[r.Status]++
	}
	enc := json.NewEncoder(stdout)
	for _, r := range results {
		switch {
		case *output == "json":
			_ = enc.Encode(r)
		case r.Status == "error":
			id := r.ID
			if id == "" {
				id = "-"
			}
			fmt.Fprintf(stdout, "line %d: %s: %s\n", r.Line, id, r.Error)
		}
	}
	var parts []string
	for _, k := range []string{"created", "updated", "unchanged", "would_create", "would_update", "error"} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
		}
	}
	fmt.Fprintf(stderr, "import: %d lines in %s: %s\n", len(results), time.Since(start).Round(time.Millisecond), strings.Join(parts, ", "))
	if fatal != nil {
		fmt.Fprintf(stderr, "lsproxy tenants import: stopped: %v (lines not reported were not sent; re-running is safe)\n", fatal)
		return 1
	}
	if counts["error"] > 0 || len(results) < total {
		return 1
	}
	return 0
}

// longFlags accepts the single-dash spelling of fs's long flags (-dry-run,
// -config FILE) that earlier versions documented, as --dry-run.
func longFlags(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if name, _, _ := strings.Cut(a, "="); len(name) > 2 && name[0] == '-' && name[1] != '-' && fs.Lookup(name[1:]) != nil {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}

// readImportFile splits r into batches of non-blank lines. A line is read
// at most to the server's limit (control.MaxImportLine, after trimming
// white space, as the server counts): a longer one stops the reading with
// its line number before anything is sent, so reading never holds more than
// one line's limit (an endless line, such as /dev/zero, fails at once).
// local holds results decided here (none at present: a line is either sent
// or the file is refused); total counts every non-blank line.
func readImportFile(r io.Reader, size int) (batches []importBatch, local []control.ImportResult, total int, err error) {
	br := bufio.NewReaderSize(r, control.MaxImportLine+4<<10) // the line and up to 4 KiB of white space around it
	cur := importBatch{}
	for n := 1; ; n++ {
		line, rerr := br.ReadSlice('\n')
		trimmed := bytes.TrimSpace(line)
		if errors.Is(rerr, bufio.ErrBufferFull) || len(trimmed) > control.MaxImportLine {
			return nil, nil, 0, fmt.Errorf("line %d is longer than %d KiB (the server's limit for one tenant); nothing was sent", n, control.MaxImportLine>>10)
		}
		if len(trimmed) > 0 {
			total++
			cur.lines = append(cur.lines, bytes.Clone(trimmed))
			cur.numbers = append(cur.numbers, n)
			if len(cur.lines) == size {
				batches, cur = append(batches, cur), importBatch{}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, nil, 0, fmt.Errorf("reading line %d: %w", n, rerr)
		}
	}
	if len(cur.lines) > 0 {
		batches = append(batches, cur)
	}
	return batches, local, total, nil
}

// importClient calls the admin API's bulk import (LSPROXY_ADMIN_URL, LSPROXY_ADMIN_TOKEN).
type importClient struct {
	base, token string
	http        *http.Client
}

func newImportClient() (*importClient, error) {
	base := strings.TrimSuffix(os.Getenv("LSPROXY_ADMIN_URL"), "/")
	if base == "" {
		base = "http://127.0.0.1:8081"
	}
	token, err := adminToken("")
	if err != nil {
		return nil, err
	}
	if token == "" {
		return nil, errNoAdminToken
	}
	return &importClient{base: base, token: token, http: &http.Client{Timeout: 5 * time.Minute}}, nil
}

// importBatch posts one batch and maps the server's per-request line
// numbers back to file line numbers.
func (c *importClient) importBatch(ctx context.Context, b importBatch, dry, overwrite bool) ([]control.ImportResult, error) {
	body := bytes.Join(b.lines, []byte("\n"))
	u := c.base + "/admin/import"
	var q []string
	if dry {
		q = append(q, "dry_run=true")
	}
	if overwrite {
		q = append(q, "overwrite=true")
	}
	if len(q) > 0 {
		u += "?" + strings.Join(q, "&")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("admin URL: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API unreachable at %s", c.base)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Message string }
		_ = json.Unmarshal(raw, &e)
		if proxyListenerCode(e.Error) {
			return nil, wrongListener(c.base, e.Error)
		}
		return nil, fmt.Errorf("admin API answered %d %s: %s", resp.StatusCode, e.Error, e.Message)
	}
	var out control.ImportResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("admin API answer is not an import response")
	}
	for i := range out.Results {
		if l := out.Results[i].Line; l >= 1 && l <= len(b.numbers) {
			out.Results[i].Line = b.numbers[l-1]
		}
	}
	return out.Results, nil
}

// progress shows "import: N/M lines (R/s)" on a terminal, rewritten in
// place at most every 200 ms; elsewhere (a log, a pipe) one line each time
// another progressEvery lines are done, so a long import run by a job still
// shows it is moving.
type progress struct {
	w           io.Writer
	tty         bool
	total, seen int
	next        int // non-terminal: the count that prints the next line
	start, last time.Time
}

// progressEvery lines between two progress lines when stderr is not a
// terminal.
const progressEvery = 50000

func newProgress(w io.Writer, total int) *progress {
	return &progress{w: w, tty: isTerminal(w), total: total, next: progressEvery, start: time.Now()}
}

func (p *progress) rate() float64 {
	if el := time.Since(p.start).Seconds(); el > 0 {
		return float64(p.seen) / el
	}
	return 0
}

func (p *progress) add(n int) {
	p.seen += n
	switch {
	case p.tty && time.Since(p.last) > 200*time.Millisecond:
		p.last = time.Now()
		fmt.Fprintf(p.w, "\rimport: %d/%d lines (%.0f/s)", p.seen, p.total, p.rate())
	case !p.tty && p.seen >= p.next && p.seen < p.total:
		fmt.Fprintf(p.w, "import: %d/%d lines (%.0f/s)\n", p.seen, p.total, p.rate())
		for p.next <= p.seen {
			p.next += progressEvery
		}
	}
}

func (p *progress) done() {
	if p.tty {
		fmt.Fprintf(p.w, "\rimport: %d/%d lines (%.0f/s)\n", p.seen, p.total, p.rate())
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
