package control

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// Each tenant's operator actions (store.ActionLog): recorded after every
// console action and every changing admin API call on a tenant, listed by
// GET /admin/tenants/{id}/actions and on the tenant's console page.

func init() {
	adminActions["GET /admin/tenants/{id}/actions"] = "actions"
}

func (s *Server) mountActions(admin *http.ServeMux) {
	admin.HandleFunc("GET /admin/tenants/{id}/actions", s.actions)
}

// ActionsView is GET /admin/tenants/{id}/actions.
type ActionsView struct {
	Actions []store.Action `json:"actions"`
}

func (s *Server) actions(w http.ResponseWriter, r *http.Request) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	out := ActionsView{Actions: []store.Action{}}
	if log, ok := s.Store.(store.ActionLog); ok {
		list, err := log.Actions(r.Context(), id, store.MaxActions)
		if err != nil {
			adminError(w, id, err)
			return
		}
		out.Actions = append(out.Actions, list...)
	}
	httperr.WriteJSON(w, http.StatusOK, out)
}

// recordAction appends one entry to tenant's action log; a failure is
// logged, never returned (the action itself happened).
func (s *Server) recordAction(ctx context.Context, tenant, operator, action string, status int, code, detail string) {
	log, ok := s.Store.(store.ActionLog)
	if !ok || tenant == "" {
		return
	}
	result := "ok"
	switch {
	case code != "":
		result = code
	case status >= 400:
		result = strconv.Itoa(status)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	err := log.RecordAction(ctx, tenant, store.Action{At: s.Now().UTC(), Operator: operator, Action: action, Status: status, Result: result, Detail: detail})
	if err != nil {
		s.Logger.Warn("action not recorded in the tenant's log", zap.String("tenant", tenant), zap.String("action", action), zap.Error(err))
	}
}

// actionNote carries a detail from a console action handler to its audit
// (e.g. when the link it created expires).
type actionNoteKey struct{}

func withActionNote(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), actionNoteKey{}, new(string)))
}

func setActionNote(r *http.Request, note string) {
	if p, ok := r.Context().Value(actionNoteKey{}).(*string); ok {
		*p = note
	}
}

func actionNote(r *http.Request) string {
	if p, ok := r.Context().Value(actionNoteKey{}).(*string); ok {
		return *p
	}
	return ""
}

// linkExpiry says until when an authorize link is valid, from its exp
// parameter; "" when it has none.
func linkExpiry(link string) string {
	u, err := url.Parse(link)
	if err != nil {
		return ""
	}
	sec, err := strconv.ParseInt(u.Query().Get("exp"), 10, 64)
	if err != nil || sec <= 0 {
		return ""
	}
	return "link valid until " + time.Unix(sec, 0).UTC().Format("2006-01-02 15:04 UTC")
}

// actionTenant is the tenant a console action named name acted on: the
// path's, or the import form's; "" for none (or no valid id).
func actionTenant(r *http.Request, name string) string {
	id := r.PathValue("id")
	if name == "import" {
		id = strings.TrimSpace(r.PostForm.Get("id"))
	}
	if !store.ValidTenantID(id) {
		return ""
	}
	return id
}
