package main

import "github.com/spf13/cobra"

func init() { registerTenantsCommand(tenantsRefreshCommand) }

func tenantsRefreshCommand(tc *tenantsCLI) *cobra.Command {
	return &cobra.Command{
		Use:   "refresh TENANT",
		Short: "Refresh the tenant's access token now",
		Long: `Force a refresh of TENANT's access token now (under the same lock as every
other refresh) and show the tenant afterwards. Exit 6 when the tenant needs
re-authorization, 5 when the token endpoint or store is unavailable.`,
		Args:              tenantArg,
		ValidArgsFunction: tc.completeTenantIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := tc.client.do(cmd.Context(), "POST", tenantPath(args[0], "refresh"), nil, nil)
			if err != nil {
				return err
			}
			return tc.printTenant(data)
		},
	}
}
