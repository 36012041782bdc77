package control

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// Paging of GET /admin/tenants.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
	// listReadLimit bounds the records one filtered page reads; a page
	// that reaches it ends early with a next_cursor to continue from.
	listReadLimit = 2000
	// listPageLimit bounds the store pages one request lists, for a
	// match that rejects ids before any record is read.
	listPageLimit = 100
)

// listQuery is GET /admin/tenants?status=&limit=&cursor=.
type listQuery struct {
	status store.Status // "" = any
	limit  int
	cursor string // the decoded cursor of the previous page; "" = from the start
	// match, when not nil, is checked on each id before its record is
	// read (the console's id search); nil takes every id.
	match func(id string) bool
	// maxReads bounds the records one page reads; 0 = listReadLimit.
	maxReads int
}

// filtered says whether some ids read may not make the page.
func (q listQuery) filtered() bool { return q.status != "" || q.match != nil }

// errBadCursor: a list cursor this server did not hand out.
var errBadCursor = errors.New("control: invalid list cursor")

const badCursorDetail = "cursor is not one this server handed out (use next_cursor unchanged)"

// parseListQuery validates the query; it answers 400 and returns false
// when invalid.
func parseListQuery(w http.ResponseWriter, r *http.Request) (listQuery, bool) {
	q := r.URL.Query()
	lq := listQuery{status: store.Status(q.Get("status")), limit: defaultListLimit}
	if lq.status != "" && !store.ValidStatus(lq.status) {
		httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: "status must be active, pending or reauthorization_required"})
		return lq, false
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: "limit must be an integer from 1 to " + strconv.Itoa(maxListLimit)})
			return lq, false
		}
		lq.limit = n
	}
	c, err := decodeCursor(q.Get("cursor"))
	if err != nil {
		httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: badCursorDetail})
		return lq, false
	}
	lq.cursor = c
	return lq, true
}

// encodeCursor makes an opaque cursor for clients from the position a
// page ended at.
func encodeCursor(pos string) string { return base64.RawURLEncoding.EncodeToString([]byte(pos)) }

// decodeCursor undoes encodeCursor; it returns errBadCursor for text it
// did not make. What the position means is checked where it is used.
func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !utf8.Valid(b) {
		return "", errBadCursor
	}
	return string(b), nil
}

// listPage returns up to q.limit rows and the position to continue from
// ("" at the end). read turns a candidate id (one q.match takes) into a
// row; it returns false to leave the id out (gone meanwhile, or not in
// q.status). A page that reads q.maxReads records ends early with
// cut=true. It is the one loop both the admin list and the console page
// with: over store.Lister cursor paging when the store has it, else over
// Store.List. A position this server did not hand out returns an error
// wrapping errBadCursor.
func listPage[R any](ctx context.Context, st store.Store, q listQuery, read func(ctx context.Context, id string) (R, bool, error)) (rows []R, pos string, cut bool, err error) {
	if q.maxReads == 0 {
		q.maxReads = listReadLimit
	}
	if l, ok := st.(store.Lister); ok {
		return listLister(ctx, l, q, read)
	}
	return listAll(ctx, st, q, read)
}

// listLister pages with store.Lister. A position is "size.skip.cursor":
// the store page at cursor read with size, of which the first skip ids
// were taken. Resuming re-reads that page, so an id deleted from its
// taken part meanwhile shifts the rest by one (the Lister contract allows
// missing an id changed meanwhile).
func listLister[R any](ctx context.Context, l store.Lister, q listQuery, read func(context.Context, string) (R, bool, error)) ([]R, string, bool, error) {
	size, skip, cur, err := parseListerPos(q.cursor)
	if err != nil {
		return nil, "", false, err
	}
	f := filler[R]{q: q, read: read, rows: make([]R, 0, min(q.limit, 64))}
	for pages := 0; ; pages++ {
		if skip == 0 {
			// A fresh page: exactly what is missing when every id
			// makes the page, else a bigger read to save round trips.
			size = q.limit - len(f.rows)
			if q.filtered() {
				size = min(store.MaxPageLimit, max(4*size, 100))
			}
		}
		if pages == listPageLimit {
			return f.rows, listerPos(size, skip, cur), true, nil
		}
		ids, next, err := l.ListPage(ctx, cur, size)
		if errors.Is(err, store.ErrInvalidCursor) {
			return nil, "", false, fmt.Errorf("%w: %w", errBadCursor, err)
		}
		if err != nil {
			return nil, "", false, err
		}
		for i := skip; i < len(ids); i++ {
			if f.full() {
				return f.rows, listerPos(size, i, cur), f.cut(), nil
			}
			if err := f.add(ctx, ids[i]); err != nil {
				return nil, "", false, err
			}
		}
		if next == "" {
			return f.rows, "", false, nil
		}
		cur, skip = next, 0
		if f.full() {
			return f.rows, listerPos(size, 0, cur), f.cut(), nil
		}
	}
}

func listerPos(size, skip int, cursor string) string {
	return strconv.Itoa(size) + "." + strconv.Itoa(skip) + "." + cursor
}

// parseListerPos reads a listerPos; "" is the start.
func parseListerPos(pos string) (size, skip int, cursor string, err error) {
	if pos == "" {
		return 0, 0, "", nil
	}
	parts := strings.SplitN(pos, ".", 3)
	if len(parts) != 3 {
		return 0, 0, "", errBadCursor
	}
	size, err1 := strconv.Atoi(parts[0])
	skip, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || size < 1 || size > store.MaxPageLimit || skip < 0 || skip >= size {
		return 0, 0, "", errBadCursor
	}
	return size, skip, parts[2], nil
}

// listAll is listPage over Store.List (every id, sorted), for a store
// without store.Lister. A position is the last id taken.
func listAll[R any](ctx context.Context, st store.Store, q listQuery, read func(context.Context, string) (R, bool, error)) ([]R, string, bool, error) {
	if q.cursor != "" && !store.ValidTenantID(q.cursor) {
		return nil, "", false, errBadCursor
	}
	ids, err := st.List(ctx)
	if err != nil {
		return nil, "", false, err
	}
	start, _ := slices.BinarySearch(ids, q.cursor)
	if start < len(ids) && ids[start] == q.cursor {
		start++
	}
	f := filler[R]{q: q, read: read, rows: make([]R, 0, min(q.limit, len(ids)-start))}
	for i := start; i < len(ids); i++ {
		if f.full() {
			return f.rows, ids[i-1], f.cut(), nil
		}
		if err := f.add(ctx, ids[i]); err != nil {
			return nil, "", false, err
		}
	}
	return f.rows, "", false, nil
}

// filler fills one page: it reads the ids q.match takes until q.limit
// rows were kept or q.maxReads records were read.
type filler[R any] struct {
	q     listQuery
	read  func(context.Context, string) (R, bool, error)
	rows  []R
	reads int
}

// full says whether the page is done.
func (f *filler[R]) full() bool { return len(f.rows) == f.q.limit || f.reads == f.q.maxReads }

// cut says whether the read bound ended the page before q.limit rows.
func (f *filler[R]) cut() bool { return f.reads == f.q.maxReads && len(f.rows) < f.q.limit }

// add reads id when q.match takes it and keeps its row when read does;
// it returns read's error.
func (f *filler[R]) add(ctx context.Context, id string) error {
	if f.q.match != nil && !f.q.match(id) {
		return nil
	}
	f.reads++
	r, keep, err := f.read(ctx, id)
	if err == nil && keep {
		f.rows = append(f.rows, r)
	}
	return err
}

// readView is the admin list's read: the tenant's view when it has
// q.status.
func (s *Server) readView(status store.Status) func(context.Context, string) (TenantView, bool, error) {
	return func(ctx context.Context, id string) (TenantView, bool, error) {
		t, err := s.Store.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return TenantView{}, false, nil // deleted meanwhile
		}
		if err != nil {
			return TenantView{}, false, err
		}
		if status != "" && t.Status != status {
			return TenantView{}, false, nil
		}
		return View(t), true, nil
	}
}

// listResponse is the body of GET /admin/tenants.
type listResponse struct {
	Tenants []TenantView `json:"tenants"`
	// NextCursor continues the listing; "" on the last page.
	NextCursor string `json:"next_cursor"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q, ok := parseListQuery(w, r)
	if !ok {
		return
	}
	views, pos, _, err := listPage(r.Context(), s.Store, q, s.readView(q.status))
	if errors.Is(err, errBadCursor) {
		httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: badCursorDetail})
		return
	}
	if err != nil {
		adminError(w, "", err)
		return
	}
	resp := listResponse{Tenants: views}
	if pos != "" {
		resp.NextCursor = encodeCursor(pos)
	}
	httperr.WriteJSON(w, http.StatusOK, resp)
}
