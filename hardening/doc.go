// Package hardening holds no production code: its tests play the attacker against
// the real STS. TestMain builds the real `sts` binary once into a temporary
// directory; each test writes a configuration and policy into its own temporary
// directory and starts `sts serve` over real HTTPS on a free 127.0.0.1 port, with
// real upstream OIDC issuers (httptest TLS servers serving discovery and a JWKS,
// from package internal/testissuer) and hostile servers where a case needs one: a
// jku target, a decoy issuer, slow, huge, redirecting and malformed key sets.
//
// Every refusal is checked for its exact HTTP status and error code, and for what
// its body must not reveal: key IDs, key material, upstream names, URLs and bodies,
// policy rule names, stack traces, Go error text, and what the caller sent. The
// cases follow the project's threat list (THREATS.md, "Threats and faults
// safeconduct must survive"). A case the server gets wrong is kept, written for
// the correct behaviour, and skipped with a "BUG:" reason; HARDENING_BUGS=1 runs
// those cases too, e.g. to check a fix.
//
// Run the package alone (it starts several STS processes):
//
//	go test -race -count=1 ./hardening/
//	HARDENING_BUGS=1 go test -count=1 -run TestAdminAPI ./hardening/
package hardening
