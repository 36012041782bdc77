package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// Bulk import (POST /admin/import): tenants whose tokens another system
// holds, many per request, each line on its own. See docs/migration.md.
const (
	// maxImportBody bounds one request (the CLI sends batches).
	maxImportBody = 16 << 20
	// MaxImportLines bounds the tenants of one request.
	MaxImportLines = 5000
	// importBatchSize tenants of a request are locked, read and written
	// together (importBatch); importWorkers batches run at once.
	importBatchSize = 250
	importWorkers   = 4
	// importLockTTL holds a tenant's refresh lock while its import is
	// written, so no refresh can start in between.
	importLockTTL = 10 * time.Second
)

// ImportLine is one tenant to import: SPEC §8's NDJSON line.
type ImportLine struct {
	ID               string `json:"id"`
	RefreshToken     string `json:"refresh_token"`
	AccessToken      string `json:"access_token,omitempty"`
	ExpiresIn        int64  `json:"expires_in,omitempty"`
	RefreshExpiresIn int64  `json:"refresh_expires_in,omitempty"`
	Scope            string `json:"scope,omitempty"`
	DomainPrefix     string `json:"domain_prefix,omitempty"`
	// Status, Reason, Account and Locations carry what `lsproxy tenants
	// export` writes, so that export → import keeps every record: a
	// flagged tenant stays flagged, the merchant identity stays known.
	Status    store.Status     `json:"status,omitempty"`
	Reason    string           `json:"reason,omitempty"`
	Account   *store.Account   `json:"account,omitempty"`
	Locations []store.Location `json:"locations,omitempty"`
}

// ImportResult is the outcome of one line. Status is one of created,
// updated, unchanged (the same refresh token is stored already: a re-run),
// would_create / would_update (dry run) or error (Error says why; nothing
// was changed for this line).
type ImportResult struct {
	Line   int    `json:"line"`
	ID     string `json:"id,omitempty"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// ImportResponse answers POST /admin/import.
type ImportResponse struct {
	DryRun  bool           `json:"dry_run"`
	Counts  map[string]int `json:"counts"`
	Results []ImportResult `json:"results"`
}

func (l *ImportLine) problems() []string {
	var p []string
	if !store.ValidTenantID(l.ID) {
		p = append(p, "id must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
	}
	if strings.TrimSpace(l.RefreshToken) == "" {
		p = append(p, "refresh_token is required")
	}
	if len(l.RefreshToken) > 4096 || len(l.AccessToken) > 8192 {
		p = append(p, "token too long")
	}
	if l.AccessToken != "" && l.ExpiresIn <= 0 {
		p = append(p, "expires_in (seconds, > 0) is required with access_token")
	}
	p = append(p, lifetimeProblems(l.ExpiresIn, l.RefreshExpiresIn)...)
	p = append(p, locationProblems(l.Locations)...)
	if l.Status != "" && l.Status != store.StatusActive && l.Status != store.StatusReauthorizationRequired {
		p = append(p, "status must be active or reauthorization_required")
	}
	if len(l.Reason) > 512 || len(l.Locations) > 10000 {
		p = append(p, "reason or locations too long")
	}
	if l.DomainPrefix != "" && !auth.ValidDomainPrefix(l.DomainPrefix) {
		p = append(p, "domain_prefix must be one DNS label (letters, digits, inner hyphens)")
	}
	return p
}

// errTooManyLines: the request holds more than MaxImportLines tenants,
// counted before any is decoded.
var errTooManyLines = fmt.Errorf("control: more than %d tenants in one request; send batches", MaxImportLines)

// parseImport reads an NDJSON body or a JSON array. It counts the tenants
// before it decodes any (errTooManyLines), so memory stays bounded by the
// body. Lines that do not parse, are longer than MaxImportLine or are not
// valid UTF-8 become error results (never echoing their content); blank
// lines are skipped but counted.
func parseImport(body []byte) (lines []ImportLine, numbers []int, bad []ImportResult, err error) {
	trimmed := bytes.TrimSpace(body)
	decodeOne := func(raw []byte, n int) {
		if p := lineProblem(raw); p != "" {
			bad = append(bad, ImportResult{Line: n, Status: "error", Error: p})
			return
		}
		var l ImportLine
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if derr := dec.Decode(&l); derr != nil {
			bad = append(bad, ImportResult{Line: n, Status: "error", Error: "not a JSON object with id and refresh_token: " + jsonProblem(derr)})
			return
		}
		if dec.More() {
			bad = append(bad, ImportResult{Line: n, Status: "error", Error: "more than one JSON value on the line"})
			return
		}
		lines, numbers = append(lines, l), append(numbers, n)
	}
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if !utf8.Valid(trimmed) {
			return nil, nil, nil, errors.New("the body is not valid UTF-8")
		}
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		_, _ = dec.Token() // '['
		var arr []json.RawMessage
		for dec.More() {
			if len(arr) == MaxImportLines {
				return nil, nil, nil, errTooManyLines
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, nil, nil, fmt.Errorf("the body is not a JSON array: %s", jsonProblem(err))
			}
			arr = append(arr, raw)
		}
		if _, err := dec.Token(); err != nil || dec.More() {
			return nil, nil, nil, errors.New("the body is not a JSON array: it does not end with ]")
		}
		for i, raw := range arr {
			decodeOne(raw, i+1)
		}
		return lines, numbers, bad, nil
	}
	if countLines(body, MaxImportLines) > MaxImportLines {
		return nil, nil, nil, errTooManyLines
	}
	eachLine(body, func(line []byte, n int) bool {
		if len(bytes.TrimSpace(line)) > 0 {
			decodeOne(bytes.TrimSpace(line), n)
		}
		return true
	})
	return lines, numbers, bad, nil
}

// bulkImport is POST /admin/import[?dry_run=true][&overwrite=true].
//
// Each line is checked and written on its own, under the tenant's refresh
// lock: a tenant whose refresh is in flight is refused (retry it), so an
// import never races a refresh. Re-running a file is safe: a tenant that
// already holds the line's refresh token is "unchanged"; one that holds
// another refresh token (lsproxy refreshed it since, or another import)
// is refused unless overwrite=true, because the file's token is then
// probably spent and would replace a live one.
func (s *Server) bulkImport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dry, overwrite := q.Get("dry_run") == "true", q.Get("overwrite") == "true"
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxImportBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		httperr.Write(w, httperr.Error{Kind: httperr.TooLarge, Detail: "the body is larger than 16 MiB"})
		return
	}
	if err != nil {
		httperr.Write(w, httperr.Error{Kind: httperr.BadRequest, Detail: "body unreadable"})
		return
	}
	lines, numbers, results, err := parseImport(body)
	if errors.Is(err, errTooManyLines) {
		httperr.Write(w, httperr.Error{Kind: httperr.TooLarge, Detail: fmt.Sprintf("at most %d tenants per request", MaxImportLines)})
		return
	}
	if err != nil {
		httperr.Write(w, httperr.Error{Kind: httperr.BadRequest, Detail: err.Error()})
		return
	}
	seen := make(map[string]int, len(lines))
	type job struct {
		line ImportLine
		n    int
	}
	jobs := make([]job, 0, len(lines))
	for i, l := range lines {
		if p := l.problems(); len(p) > 0 {
			results = append(results, ImportResult{Line: numbers[i], ID: safeID(l.ID), Status: "error", Error: strings.Join(p, "; ")})
			continue
		}
		if first, dup := seen[l.ID]; dup {
			results = append(results, ImportResult{Line: numbers[i], ID: l.ID, Status: "error", Error: fmt.Sprintf("tenant %s appears again (first on line %d)", l.ID, first)})
			continue
		}
		seen[l.ID] = numbers[i]
		jobs = append(jobs, job{l, numbers[i]})
	}
	out := make([]ImportResult, len(jobs))
	var wg sync.WaitGroup
	next := make(chan int) // the first job of a batch
	for range min(importWorkers, (len(jobs)+importBatchSize-1)/importBatchSize) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for first := range next {
				batch := jobs[first:min(first+importBatchSize, len(jobs))]
				lines := make([]ImportLine, len(batch))
				for i, j := range batch {
					lines[i] = j.line
				}
				for i, res := range s.importBatch(r.Context(), lines, dry, overwrite) {
					out[first+i] = ImportResult{Line: batch[i].n, ID: batch[i].line.ID, Status: res.out.status}
					if res.no != nil {
						out[first+i].Status, out[first+i].Error = "error", res.no.line
					}
				}
			}
		}()
	}
	for first := 0; first < len(jobs); first += importBatchSize {
		next <- first
	}
	close(next)
	wg.Wait()
	results = append(results, out...)
	sortResults(results)
	resp := ImportResponse{DryRun: dry, Counts: map[string]int{}, Results: results}
	for _, res := range results {
		resp.Counts[res.Status]++
	}
	httperr.WriteJSON(w, http.StatusOK, resp)
}

func sortResults(rs []ImportResult) {
	// Insertion sort by line: results are nearly sorted already.
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].Line < rs[j-1].Line; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// safeID returns id when it is a valid tenant id, else "" (never echo
// input that may be a token pasted into the wrong field).
func safeID(id string) string {
	if store.ValidTenantID(id) {
		return id
	}
	return ""
}

// importOutcome is what importTenant did with one tenant.
type importOutcome struct {
	// status is created, updated, unchanged, would_create or would_update.
	status string
	// rec is the tenant as stored afterwards (for unchanged: as found);
	// nil for a dry run.
	rec *store.Tenant
}

// importRefusal says why importTenant changed nothing: kind for the
// admin API's answer, line for a bulk import's result (fixed texts and
// the validated tenant id only).
type importRefusal struct {
	kind   *httperr.Kind
	detail string
	line   string
}

// importTenant is the one write path of an import, shared by PUT
// /admin/tenants/{id} and every line of POST /admin/import (SPEC §3 rule
// 19). Under the tenant's refresh lock it re-reads the record and:
//   - refuses while a refresh is in flight (lock held, or the record
//     carries the in-flight mark): its holder may be writing a new
//     refresh token, and an import would make it discard it (an
//     interrupted refresh is resolved by the next refresh, which sends
//     the stored token once: POST /admin/tenants/{id}/refresh);
//   - changes nothing when the record already holds l's refresh token
//     (a retried or re-run import: "unchanged");
//   - refuses a record holding another refresh token unless overwrite
//     (the import's token is then probably spent and would replace a
//     live one);
//   - otherwise writes, fenced on the version and write id read, and
//     retries a lost compare-and-set on a fresh read.
//
// legacy (tests only: defect.AdminPutIgnoresMark) brings back the admin
// PUT of before rule 19: no lock, no look at the mark, always overwrite.
// Safe for concurrent use.
func (s *Server) importTenant(ctx context.Context, l ImportLine, dry, overwrite, legacy bool) (importOutcome, *importRefusal) {
	if !legacy {
		lock, err := s.Store.TryLock(ctx, "tenant:"+l.ID, importLockTTL)
		if err != nil {
			return importOutcome{}, lockRefusal(l.ID, err)
		}
		defer func() { _ = lock.Release(context.WithoutCancel(ctx)) }()
	}
	return s.importLocked(ctx, l, dry, overwrite, legacy)
}

// refusal builds an importRefusal.
func refusal(kind *httperr.Kind, format string, args ...any) *importRefusal {
	return &importRefusal{kind: kind, line: fmt.Sprintf(format, args...)}
}

// lockRefusal is the answer when the tenant's refresh lock was not taken.
func lockRefusal(id string, err error) *importRefusal {
	if errors.Is(err, store.ErrLockHeld) {
		return refusal(httperr.RefreshInFlight, "tenant %s: a refresh is in flight; nothing changed, retry this line later", id)
	}
	return refusal(httperr.StoreUnavailable, "tenant %s: store unavailable; nothing changed", id)
}

// importDecision applies importTenant's rules to the record read for l
// (cur, or the read's error): done or no answer the line without a write;
// otherwise the write is fenced on expect (0: a new tenant).
func importDecision(l ImportLine, cur *store.Tenant, err error, overwrite, ignoreMark bool) (expect int64, done *importOutcome, no *importRefusal) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return 0, nil, nil
	case errors.Is(err, store.ErrDecrypt):
		return 0, nil, refusal(httperr.DecryptFailed, "tenant %s: the stored record cannot be decrypted with the configured keys; nothing changed", l.ID)
	case err != nil:
		return 0, nil, refusal(httperr.StoreUnavailable, "tenant %s: store unavailable; nothing changed", l.ID)
	case cur.RefreshInFlight && !ignoreMark:
		return 0, nil, refusal(httperr.RefreshInFlight, "tenant %s: a refresh is in flight (its outcome is not yet stored); nothing changed, retry this line later", l.ID)
	case cur.RefreshToken == l.RefreshToken && !ignoreMark:
		return 0, &importOutcome{status: "unchanged", rec: cur}, nil
	case cur.RefreshToken != "" && cur.RefreshToken != l.RefreshToken && !overwrite && !ignoreMark:
		return 0, nil, refusal(httperr.RefreshTokenDiffers, "tenant %s exists with another refresh token (refreshed since it was exported?); nothing changed. Delete it first or import with overwrite", l.ID)
	default:
		return cur.Version, nil, nil
	}
}

// dryOutcome is a dry run's answer for a write fenced on expect.
func dryOutcome(expect int64) importOutcome {
	if expect != 0 {
		return importOutcome{status: "would_update"}
	}
	return importOutcome{status: "would_create"}
}

// wrote finishes a written import: the cache entry dropped, the location
// index updated.
func (s *Server) wrote(ctx context.Context, l ImportLine, cur, next *store.Tenant, expect int64) importOutcome {
	s.Tokens.Invalidate(l.ID)
	s.indexLocations(ctx, l.ID, cur, next)
	if expect != 0 {
		return importOutcome{status: "updated", rec: next}
	}
	return importOutcome{status: "created", rec: next}
}

// importLocked is importTenant once the tenant's lock is held (or, for
// legacy, not taken).
func (s *Server) importLocked(ctx context.Context, l ImportLine, dry, overwrite, legacy bool) (importOutcome, *importRefusal) {
	for attempt := 1; ; attempt++ {
		cur, err := s.Store.Get(ctx, l.ID)
		if errors.Is(err, store.ErrNotFound) {
			cur = nil
		}
		expect, done, no := importDecision(l, cur, err, overwrite, legacy)
		if no != nil {
			return importOutcome{}, no
		}
		if done != nil {
			return *done, nil
		}
		if dry {
			return dryOutcome(expect), nil
		}
		next := s.imported(cur, l)
		_, err = s.Store.Put(ctx, next, expect)
		if errors.Is(err, store.ErrConflict) {
			if attempt < store.UpdateAttempts {
				continue // written meanwhile (a rekey, a heartbeat): decide again
			}
			return importOutcome{}, refusal(httperr.Conflict, "tenant %s changed during the import; nothing changed, retry this line", l.ID)
		}
		if err != nil {
			return importOutcome{}, refusal(httperr.StoreUnavailable, "tenant %s: store unavailable; nothing changed", l.ID)
		}
		return s.wrote(ctx, l, cur, next, expect), nil
	}
}

// importBatch imports lines (valid, distinct ids) with importTenant's
// rules and results, in a few store round trips for the whole batch: the
// locks taken together, the records read together, the writes done
// together (store.TryLockMany, GetMany, PutMany). A write that lost its
// compare-and-set is decided again on its own (importLocked), still under
// its lock.
func (s *Server) importBatch(ctx context.Context, lines []ImportLine, dry, overwrite bool) []importResultOf {
	out := make([]importResultOf, len(lines))
	names := make([]string, len(lines))
	for i, l := range lines {
		names[i] = "tenant:" + l.ID
	}
	locks, lerrs := store.TryLockMany(ctx, s.Store, names, importLockTTL)
	defer store.ReleaseMany(context.WithoutCancel(ctx), s.Store, locks)
	var held []int
	for i := range lines {
		if lerrs[i] != nil {
			out[i].no = lockRefusal(lines[i].ID, lerrs[i])
			continue
		}
		held = append(held, i)
	}
	ids := make([]string, len(held))
	for k, i := range held {
		ids[k] = lines[i].ID
	}
	recs, gerrs := store.GetMany(ctx, s.Store, ids)
	var writes []int // indexes into held
	var nexts []*store.Tenant
	var expects []int64
	for k, i := range held {
		cur, err := recs[k], gerrs[k]
		if errors.Is(err, store.ErrNotFound) {
			cur, recs[k] = nil, nil
		}
		expect, done, no := importDecision(lines[i], cur, err, overwrite, false)
		switch {
		case no != nil:
			out[i].no = no
		case done != nil:
			out[i].out = *done
		case dry:
			out[i].out = dryOutcome(expect)
		default:
			writes = append(writes, k)
			nexts = append(nexts, s.imported(cur, lines[i]))
			expects = append(expects, expect)
		}
	}
	_, perrs := store.PutMany(ctx, s.Store, nexts, expects)
	for w, k := range writes {
		i := held[k]
		switch err := perrs[w]; {
		case errors.Is(err, store.ErrConflict):
			out[i].out, out[i].no = s.importLocked(ctx, lines[i], dry, overwrite, false)
		case err != nil:
			out[i].no = refusal(httperr.StoreUnavailable, "tenant %s: store unavailable; nothing changed", lines[i].ID)
		default:
			out[i].out = s.wrote(ctx, lines[i], recs[k], nexts[w], expects[w])
		}
	}
	return out
}

// importResultOf is one line's importTenant answer.
type importResultOf struct {
	out importOutcome
	no  *importRefusal
}

// imported returns the record an import of l writes over cur (nil: a new
// tenant): identity and history kept, tokens replaced (store.Tenant.Import).
func (s *Server) imported(cur *store.Tenant, l ImportLine) *store.Tenant {
	now := s.Now()
	next := &store.Tenant{ID: l.ID, CreatedAt: now}
	if cur != nil {
		next = cur.Clone() // keep identity and history; fenced on its write id
	}
	next.Provider = s.Provider
	tokens := store.Tokens{Access: l.AccessToken, Refresh: l.RefreshToken, Scope: l.Scope}
	if l.AccessToken != "" {
		tokens.AccessExpiry = now.Add(time.Duration(l.ExpiresIn) * time.Second)
	}
	if l.RefreshExpiresIn > 0 {
		tokens.RefreshExpiry = now.Add(time.Duration(l.RefreshExpiresIn) * time.Second)
	}
	next.Import(tokens, now) // the shared state change of an import (store/tenantstate.go)
	if l.DomainPrefix != "" {
		next.Extra = mergeExtra(next.Extra, "domain_prefix", l.DomainPrefix)
	}
	if l.Status == store.StatusReauthorizationRequired {
		next.Flag(l.Reason, now)
		next.FailureCount = 0
	}
	if l.Account != nil {
		a := *l.Account
		next.Account = &a
	}
	if l.Locations != nil {
		next.Locations = append([]store.Location(nil), l.Locations...)
		next.LocationsAt = now
	}
	return next
}

// indexLocations updates the location index after an import wrote next
// over cur (nil: created).
func (s *Server) indexLocations(ctx context.Context, id string, cur, next *store.Tenant) {
	idx, ok := s.Store.(store.LocationIndex)
	if !ok || len(next.Locations) == 0 && (cur == nil || len(cur.Locations) == 0) {
		return
	}
	ids := make([]string, len(next.Locations))
	for i, loc := range next.Locations {
		ids[i] = loc.ID
	}
	if err := idx.SetTenantLocations(ctx, id, ids); err != nil {
		s.Logger.Warn("location index not updated after import", zap.String("tenant", id), zap.Error(err))
	}
}

func mergeExtra(extra map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(extra)+1)
	for a, b := range extra {
		out[a] = b
	}
	out[k] = v
	return out
}

// refreshLocations is POST /admin/tenants/{id}/locations: re-read the
// merchant account and K-Series locations of the tenant's grant now.
func (s *Server) refreshLocations(w http.ResponseWriter, r *http.Request) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	if s.Locations == nil {
		httperr.Write(w, httperr.Error{Kind: httperr.OnboardingDisabled, Tenant: id, Detail: "no identity lookup configured"})
		return
	}
	t, err := s.Locations.RefreshLocations(r.Context(), id)
	switch {
	case errors.Is(err, auth.ErrLocationsBusy):
		httperr.Write(w, httperr.Error{Kind: httperr.Conflict, Tenant: id, Detail: "a refresh is in flight"})
	case errors.Is(err, auth.ErrIdentify):
		httperr.Write(w, httperr.Error{Kind: httperr.IdentifyFailed, Tenant: id})
	case err != nil:
		adminError(w, id, err)
	default:
		httperr.WriteJSON(w, http.StatusOK, View(t))
	}
}
