// Package control serves lsproxy's control listener: health, readiness,
// Prometheus metrics, the admin API and the OAuth callback.
//
// Files:
//   - control.go: Server, its routes, admin authentication, adminError
//     (sentinels to the error table in internal/httperr), and the
//     Onboarding interface that package onboard implements.
//   - admin.go: the admin API's tenant endpoints and TenantView, the
//     token-free view of a tenant.
package control
