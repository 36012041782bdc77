package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/store"
)

func init() { registerTenantsCommand(tenantsListCommand) }

// listPageSize is the page size the CLI asks for.
const listPageSize = 500

// tenantRow is one tenant of a list answer: the decoded view for tables,
// the raw JSON for --output json (fields a newer server adds survive).
type tenantRow struct {
	control.TenantView
	raw json.RawMessage
}

func tenantsListCommand(tc *tenantsCLI) *cobra.Command {
	var status string
	var limit int
	cmd := &cobra.Command{
		Use:   "list [--status STATUS] [--limit N]",
		Short: "List tenants (every page), optionally only those with a status",
		Example: `  lsproxy tenants list
  lsproxy tenants list --status reauthorization_required
  lsproxy tenants list --status pending
  lsproxy tenants list -o json | jq -r '.tenants[].id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if status != "" && !store.ValidStatus(store.Status(status)) {
				return fail(exitUsage, fmt.Errorf("--status %q: want %s, %s or %s", status, store.StatusActive, store.StatusPending, store.StatusReauthorizationRequired))
			}
			if limit < 0 {
				return fail(exitUsage, fmt.Errorf("--limit %d: want 0 (all) or more", limit))
			}
			var rows []tenantRow
			err := tc.eachTenant(cmd.Context(), status, limit, func(r tenantRow) error {
				rows = append(rows, r)
				return nil
			})
			if err != nil {
				return err
			}
			if tc.output == "json" {
				raws := make([]json.RawMessage, len(rows))
				for i, r := range rows {
					raws[i] = r.raw
				}
				return writeJSONOut(tc.stdout, map[string]any{"tenants": raws})
			}
			return tc.printTable(rows)
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only tenants with this status: active, pending or reauthorization_required")
	cmd.Flags().IntVar(&limit, "limit", 0, "show at most N tenants (0: all)")
	_ = cmd.RegisterFlagCompletionFunc("status", cobra.FixedCompletions(
		[]string{string(store.StatusActive), string(store.StatusPending), string(store.StatusReauthorizationRequired)}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// eachTenant calls fn for every tenant with status ("" = any), following
// next_cursor, stopping after limit tenants (0 = no limit).
func (tc *tenantsCLI) eachTenant(ctx context.Context, status string, limit int, fn func(tenantRow) error) error {
	cursor, n := "", 0
	for page := 0; page < 1_000_000; page++ {
		q := url.Values{}
		if status != "" {
			q.Set("status", status)
		}
		size := listPageSize
		if limit > 0 && limit-n < size {
			size = limit - n
		}
		q.Set("limit", strconv.Itoa(size))
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		data, err := tc.client.do(ctx, "GET", "/admin/tenants", q, nil)
		if err != nil {
			return err
		}
		var body struct {
			Tenants    []json.RawMessage `json:"tenants"`
			NextCursor string            `json:"next_cursor"`
		}
		if err := json.Unmarshal(data, &body); err != nil {
			return fail(exitFailure, fmt.Errorf("the admin API answered invalid JSON: %w", err))
		}
		for _, raw := range body.Tenants {
			r := tenantRow{raw: raw}
			if err := json.Unmarshal(raw, &r.TenantView); err != nil {
				return fail(exitFailure, fmt.Errorf("the admin API answered an invalid tenant: %w", err))
			}
			if status != "" && string(r.Status) != status {
				continue // an older server without the filter
			}
			if err := fn(r); err != nil {
				return err
			}
			if n++; limit > 0 && n >= limit {
				return nil
			}
		}
		if body.NextCursor == "" || body.NextCursor == cursor {
			return nil
		}
		cursor = body.NextCursor
	}
	return nil
}

func (tc *tenantsCLI) printTable(rows []tenantRow) error {
	w := tabwriter.NewWriter(tc.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TENANT\tSTATUS\tACCESS TOKEN EXPIRES\tLAST REFRESH\tREFRESHES\tREASON")
	now := time.Now()
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", r.ID, r.Status, relTime(r.AccessTokenExpiresAt, now),
			relTime(r.LastRefreshAt, now), r.RefreshCount, shorten(r.Reason, 60))
	}
	if err := w.Flush(); err != nil {
		return fail(exitFailure, err)
	}
	if len(rows) == 0 {
		fmt.Fprintln(tc.stderr, "no tenants")
	}
	return nil
}

// relTime renders t as "in 4m" / "12s ago" ("-" when unset).
func relTime(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	d := t.Sub(now)
	switch {
	case d >= 0:
		return "in " + roundDur(d)
	default:
		return roundDur(-d) + " ago"
	}
}

func roundDur(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Round(time.Second)/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Round(time.Minute)/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Round(time.Hour)/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
