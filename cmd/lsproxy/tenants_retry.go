package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { registerTenantsCommand(tenantsRetryCommand) }

func tenantsRetryCommand(tc *tenantsCLI) *cobra.Command {
	return &cobra.Command{
		Use:   "retry TENANT",
		Short: "Try a flagged tenant's stored refresh token once more",
		Long: `Ask lsproxy to try a flagged TENANT's stored refresh token once more
(POST /admin/tenants/{id}/retry), e.g. after fixing a configuration problem
that made many tenants fail with invalid_grant. A grant that is really revoked
stays flagged: then send an authorize link (lsproxy tenants authorize).`,
		Args:              tenantArg,
		ValidArgsFunction: tc.completeTenantIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := tc.client.do(cmd.Context(), "POST", tenantPath(args[0], "retry"), nil, nil)
			if err != nil {
				return err
			}
			if len(data) == 0 {
				fmt.Fprintf(tc.stdout, "retry of %s requested\n", args[0])
				return nil
			}
			return tc.printTenant(data)
		},
	}
}
