package store

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// confActions: the action log keeps the newest MaxActions per tenant,
// newest first, shared by peers; bad entries change nothing.
func confActions(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	log, ok := s.(ActionLog)
	if !ok {
		t.Fatalf("%T does not implement ActionLog", s)
	}
	peer := h.Peer(t, s).(ActionLog)
	base := time.Now().UTC().Truncate(time.Millisecond)
	for i := 0; i < MaxActions+5; i++ {
		a := Action{At: base.Add(time.Duration(i) * time.Second), Operator: "alice", Action: "refresh", Status: 200, Result: "ok", Detail: fmt.Sprint(i)}
		if err := log.RecordAction(ctx, "acme", a); err != nil {
			t.Fatal(err)
		}
	}
	if err := log.RecordAction(ctx, "bolt", Action{At: base, Operator: "bob", Action: "authorize", Status: 200, Result: "ok", Detail: "link valid until x"}); err != nil {
		t.Fatal(err)
	}
	got, err := peer.Actions(ctx, "acme", 100)
	if err != nil || len(got) != MaxActions || got[0].Detail != fmt.Sprint(MaxActions+4) || got[MaxActions-1].Detail != "5" ||
		!got[0].At.Equal(base.Add(time.Duration(MaxActions+4)*time.Second)) || got[0].Operator != "alice" || got[0].Status != 200 {
		t.Fatalf("acme actions: %d, %v; first %+v", len(got), err, got)
	}
	if got, err := peer.Actions(ctx, "bolt", 1); err != nil || len(got) != 1 || got[0].Action != "authorize" {
		t.Fatalf("bolt actions %+v, %v", got, err)
	}
	if got, err := log.Actions(ctx, "nobody", 5); err != nil || len(got) != 0 {
		t.Fatalf("unknown tenant's actions %+v, %v", got, err)
	}
	for _, bad := range []struct {
		tenant string
		a      Action
	}{{"", Action{Action: "x"}}, {"acme", Action{}}, {"acme", Action{Action: "x", Detail: strings.Repeat("d", 513)}}} {
		if err := log.RecordAction(ctx, bad.tenant, bad.a); err == nil {
			t.Errorf("RecordAction(%q, %+v): no error", bad.tenant, bad.a)
		}
	}
	if _, err := log.Actions(ctx, "acme", 0); err == nil {
		t.Error("Actions with limit 0: no error")
	}
	if got, _ := log.Actions(ctx, "acme", 100); len(got) != MaxActions {
		t.Errorf("bad entries changed the log: %d", len(got))
	}
}
