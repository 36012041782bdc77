package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { registerTenantsCommand(tenantsRevokeLinksCommand) }

func tenantsRevokeLinksCommand(tc *tenantsCLI) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke-links TENANT",
		Short: "Make every onboarding link sent so far for a tenant stop working",
		Long: `Revoke every authorize link issued so far for TENANT
(POST /admin/tenants/{id}/revoke-links): opening one, or finishing a sign-in
started with one, answers "link withdrawn" (410 link_revoked). Links made
afterwards (lsproxy tenants authorize) work. The tenant's grant is unchanged.`,
		Args:              tenantArg,
		ValidArgsFunction: tc.completeTenantIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := tc.client.do(cmd.Context(), "POST", tenantPath(args[0], "revoke-links"), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(tc.stdout, "onboarding links of %s revoked\n", args[0])
			return nil
		},
	}
}

func init() { registerTenantsCommand(tenantsAcceptCandidateCommand) }

func tenantsAcceptCandidateCommand(tc *tenantsCLI) *cobra.Command {
	return &cobra.Command{
		Use:   "accept-candidate TENANT",
		Short: "Serve a re-authorization's grant that awaits verification",
		Long: `Promote TENANT's candidate grant by hand
(POST /admin/tenants/{id}/accept-candidate): a re-authorization whose merchant
account could not be verified is kept beside the served grant and promoted
automatically once verified; this serves it now, vouching that it is the
tenant's account.`,
		Args:              tenantArg,
		ValidArgsFunction: tc.completeTenantIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := tc.client.do(cmd.Context(), "POST", tenantPath(args[0], "accept-candidate"), nil, nil)
			if err != nil {
				return err
			}
			return tc.printTenant(data)
		},
	}
}
