// Package testissuer is a real upstream OIDC issuer for tests: an httptest TLS server
// on 127.0.0.1 serving discovery and a JWKS, with ES256 and RS256 keys that sign
// subject tokens. Tests that verify tokens against it do so exactly as production
// does against a Kubernetes or CI issuer.
package testissuer
