package issuer

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/safeconduct/safeconduct/attest"
)

// Paths the server answers.
const (
	PathToken     = "/token"
	PathJWKS      = "/jwks"
	PathOpenID    = "/.well-known/openid-configuration"
	PathOAuthMeta = "/.well-known/oauth-authorization-server"
)

// discoveryDoc renders the RFC 8414 / OpenID discovery document once. go-oidc and
// other verifiers read issuer, jwks_uri and the signing algorithms from it;
// clients the endpoints and their authentication methods. authMethods are the
// token endpoint's; revocation takes the same (none: the holder of a bearer
// token), introspection all but none (admins' bearer credentials are no client
// authentication method).
func discoveryDoc(issuer string, ring *keyRing, authMethods []string) ([]byte, error) {
	var algs []string
	for _, k := range ring.keys {
		if !slices.Contains(algs, string(k.alg)) {
			algs = append(algs, string(k.alg))
		}
	}
	clientAuth := slices.DeleteFunc(slices.Clone(authMethods), func(m string) bool { return m == "none" })
	return json.Marshal(map[string]any{
		"issuer":                                issuer,
		"token_endpoint":                        issuer + PathToken,
		"jwks_uri":                              issuer + PathJWKS,
		"grant_types_supported":                 []string{GrantTypeTokenExchange},
		"token_endpoint_auth_methods_supported": authMethods,
		"token_endpoint_auth_signing_alg_values_supported":         attest.SignatureAlgorithms(),
		"response_types_supported":                                 []string{"token"},
		"subject_types_supported":                                  []string{"public"},
		"id_token_signing_alg_values_supported":                    algs,
		"service_documentation":                                    "https://github.com/safeconduct/safeconduct#readme",
		"introspection_endpoint":                                   issuer + PathIntrospect,
		"introspection_endpoint_auth_methods_supported":            clientAuth,
		"introspection_endpoint_auth_signing_alg_values_supported": attest.SignatureAlgorithms(),
		"revocation_endpoint":                                      issuer + PathRevoke,
		"revocation_endpoint_auth_methods_supported":               authMethods,
		"revocation_endpoint_auth_signing_alg_values_supported":    attest.SignatureAlgorithms(),
		"revocation_feed_endpoint":                                 issuer + PathRevocations,
		"revocation_stream_endpoint":                               issuer + PathRevocationFeed,
	})
}

// staticJSON serves a pre-rendered JSON document, cacheable for maxAge seconds.
func staticJSON(doc []byte, cacheControl string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", cacheControl)
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(doc)
		}
	}
}
