package store

import (
	"slices"
	"testing"
)

// confLocations: the location index is shared by peers, replaced per
// tenant, and rejects bad arguments without changing anything.
func confLocations(t *testing.T, h harness) {
	ctx := testCtx(t)
	s := h.Open(t, mustKeyring(t, testKeys(t, 1)...))
	idx, ok := s.(LocationIndex)
	if !ok {
		t.Fatalf("%T does not implement LocationIndex", s)
	}
	peer, _ := h.Peer(t, s).(LocationIndex)
	want := func(loc string, tenants ...string) {
		t.Helper()
		for _, x := range []LocationIndex{idx, peer} {
			got, err := x.LocationTenants(ctx, loc)
			if err != nil || !slices.Equal(got, tenants) {
				t.Errorf("LocationTenants(%s) = %v, %v; want %v", loc, got, err, tenants)
			}
		}
	}
	want("1001")
	if err := idx.SetTenantLocations(ctx, "biz-a", []string{"1001", "1002"}); err != nil {
		t.Fatal(err)
	}
	if err := peer.SetTenantLocations(ctx, "biz-b", []string{"1003", "1002"}); err != nil {
		t.Fatal(err)
	}
	want("1001", "biz-a")
	want("1002", "biz-a", "biz-b")
	want("1003", "biz-b")
	// Replace: biz-a loses 1001, keeps 1002, gains 1004.
	if err := idx.SetTenantLocations(ctx, "biz-a", []string{"1002", "1004"}); err != nil {
		t.Fatal(err)
	}
	want("1001")
	want("1002", "biz-a", "biz-b")
	want("1004", "biz-a")
	// Bad input changes nothing.
	for _, bad := range [][]string{{""}, {"1005", "x\x00y"}} {
		if err := idx.SetTenantLocations(ctx, "biz-a", bad); err == nil {
			t.Errorf("SetTenantLocations(%q) accepted", bad)
		}
	}
	if err := idx.SetTenantLocations(ctx, "", []string{"1"}); err == nil {
		t.Error("empty tenant accepted")
	}
	want("1004", "biz-a")
	want("1005")
	// None removes the tenant.
	if err := idx.SetTenantLocations(ctx, "biz-a", nil); err != nil {
		t.Fatal(err)
	}
	want("1002", "biz-b")
	want("1004")
}
