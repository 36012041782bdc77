package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { registerTenantsCommand(tenantsResetRateLimitCommand) }

func tenantsResetRateLimitCommand(tc *tenantsCLI) *cobra.Command {
	return &cobra.Command{
		Use:   "reset-rate-limit TENANT",
		Short: "Clear a tenant's learned Lightspeed rate-limit budget",
		Long: `Clear what lsproxy learned about TENANT's Lightspeed budget, a block
included (DELETE /admin/tenants/{id}/rate-limit), in the shared store: its
requests go unpaced until Lightspeed reports a budget again. Use it when a
mistaken or hostile header taught a block (every block is capped by
LSPROXY_RATE_LIMIT_MAX_BLOCK anyway).`,
		Args:              tenantArg,
		ValidArgsFunction: tc.completeTenantIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if _, err := tc.client.do(cmd.Context(), "DELETE", tenantPath(id, "rate-limit"), nil, nil); err != nil {
				return err
			}
			if tc.output == "json" {
				return writeJSONOut(tc.stdout, map[string]any{"rate_limit_reset": id})
			}
			fmt.Fprintf(tc.stdout, "rate-limit budget of %s cleared\n", id)
			return nil
		},
	}
}
