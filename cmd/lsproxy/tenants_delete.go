package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { registerTenantsCommand(tenantsDeleteCommand) }

func tenantsDeleteCommand(tc *tenantsCLI) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete TENANT --yes",
		Short: "Delete a tenant and its grant (irreversible)",
		Long: `Delete TENANT's record, its refresh token included: the merchant must
authorize again to bring it back. --yes is required.`,
		Args:              tenantArg,
		ValidArgsFunction: tc.completeTenantIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if !yes {
				return fail(exitUsage, fmt.Errorf("deleting %s discards its grant (the merchant must authorize again): add --yes", id))
			}
			if _, err := tc.client.do(cmd.Context(), "DELETE", tenantPath(id, ""), nil, nil); err != nil {
				return err
			}
			if tc.output == "json" {
				return writeJSONOut(tc.stdout, map[string]any{"deleted": id})
			}
			fmt.Fprintf(tc.stdout, "deleted %s\n", id)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "confirm the deletion")
	return cmd
}
