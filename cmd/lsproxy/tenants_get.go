package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func init() { registerTenantsCommand(tenantsGetCommand) }

func tenantsGetCommand(tc *tenantsCLI) *cobra.Command {
	return &cobra.Command{
		Use:               "get TENANT",
		Short:             "Show one tenant (never a token value)",
		Args:              tenantArg,
		ValidArgsFunction: tc.completeTenantIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := tc.client.do(cmd.Context(), "GET", tenantPath(args[0], ""), nil, nil)
			if err != nil {
				return err
			}
			return tc.printTenant(data)
		},
	}
}

// tenantFieldOrder is the order of the known fields in a table; fields a
// newer server adds follow, sorted.
var tenantFieldOrder = []string{"id", "status", "reason", "flagged_at", "provider", "account", "locations",
	"access_token_expires_at", "refresh_token_expires_at", "last_refresh_at", "refresh_count", "failure_count",
	"refresh_in_flight", "has_refresh_token", "scope", "created_at", "updated_at", "version"}

// printTenant prints one tenant object as "key  value" lines, or JSON.
func (tc *tenantsCLI) printTenant(data []byte) error {
	if tc.output == "json" {
		return printJSON(tc.stdout, data)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return fail(exitFailure, fmt.Errorf("the admin API answered invalid JSON: %w", err))
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !slices.Contains(tenantFieldOrder, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	w := tabwriter.NewWriter(tc.stdout, 0, 4, 2, ' ', 0)
	for _, k := range append(slices.Clone(tenantFieldOrder), keys...) {
		raw, ok := m[k]
		if !ok {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			s = string(raw) // numbers, booleans, objects as JSON
		}
		fmt.Fprintf(w, "%s\t%s\n", k, s)
	}
	if err := w.Flush(); err != nil {
		return fail(exitFailure, err)
	}
	return nil
}
