// Package fetch is the bounded HTTP client every fetch of verification keys goes
// through (OIDC discovery and JWKS and SPIFFE bundle endpoints in package attest,
// the STS's JWKS in package verify), whose results internal/keycache holds:
//
//   - a deadline per request, body included;
//   - responses larger than a cap fail (reading stops one byte past it);
//   - only 200 is accepted: any other status, redirects included, fails before the
//     body is read, so no upstream body ever reaches an error message. Redirects
//     are refused rather than followed, which keeps the origin of keys exactly what
//     was configured.
package fetch
