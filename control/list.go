package control

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// Paging of GET /admin/tenants.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

// listQuery is GET /admin/tenants?status=&limit=&cursor=.
type listQuery struct {
	status store.Status // "" = any
	limit  int
	after  string // the last id of the previous page; "" = from the start
}

// parseListQuery validates the query; it answers 400 and returns false
// when invalid.
func parseListQuery(w http.ResponseWriter, r *http.Request) (listQuery, bool) {
	q := r.URL.Query()
	lq := listQuery{status: store.Status(q.Get("status")), limit: defaultListLimit}
	if lq.status != "" && lq.status != store.StatusActive && lq.status != store.StatusReauthorizationRequired {
		httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: "status must be active or reauthorization_required"})
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
	if v := q.Get("cursor"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || !store.ValidTenantID(string(b)) {
			httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Detail: "cursor is not one this server handed out (use next_cursor unchanged)"})
			return lq, false
		}
		lq.after = string(b)
	}
	return lq, true
}

// encodeCursor makes the opaque next_cursor from the last id of a page.
func encodeCursor(lastID string) string { return base64.RawURLEncoding.EncodeToString([]byte(lastID)) }

// listPage returns up to q.limit tenants with q.status, in id order, after
// q.after, and the id to continue after ("" when no tenant follows). It is
// the one place the list handler reads the store: over Store.List today
// (every id, then one Get per candidate), to be replaced by store-side
// cursor paging.
func (s *Server) listPage(ctx context.Context, q listQuery) (views []TenantView, last string, err error) {
	ids, err := s.Store.List(ctx)
	if err != nil {
		return nil, "", err
	}
	start, _ := slices.BinarySearch(ids, q.after)
	if start < len(ids) && ids[start] == q.after {
		start++
	}
	views = make([]TenantView, 0, min(q.limit, len(ids)-start))
	for i := start; i < len(ids); i++ {
		if len(views) == q.limit {
			return views, ids[i-1], nil
		}
		t, err := s.Store.Get(ctx, ids[i])
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, "", err
		}
		if q.status != "" && t.Status != q.status {
			continue
		}
		views = append(views, View(t))
	}
	return views, "", nil
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
	views, last, err := s.listPage(r.Context(), q)
	if err != nil {
		adminError(w, "", err)
		return
	}
	resp := listResponse{Tenants: views}
	if last != "" {
		resp.NextCursor = encodeCursor(last)
	}
	httperr.WriteJSON(w, http.StatusOK, resp)
}
