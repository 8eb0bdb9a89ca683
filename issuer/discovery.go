package issuer

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/safeconduct/safeconduct/attest"
)

// Paths the server answers.
const (
	PathToken     = "/token"
	PathJWKS      = "/jwks"
	PathOpenID    = "/.well-known/openid-configuration"
	PathOAuthMeta = "/.well-known/oauth-authorization-server"
)

// discoveryMeta is what the discovery document says of client authentication
// beyond the keys: the token endpoint's authentication methods, and whether
// client certificates are requested (tls_client_auth, and tokens bound to them).
type discoveryMeta struct {
	authMethods []string
	// mtls: the listener requests client certificates (tls.client_certificates:
	// request). Only then is tls_client_auth offered, and only then can a token
	// be bound to the certificate (cnf x5t#S256, for rules with
	// require_sender_constraint).
	mtls bool
}

// discoveryDoc renders the RFC 8414 / OpenID discovery document once. go-oidc and
// other verifiers read issuer, jwks_uri and the signing algorithms from it;
// clients the endpoints and their authentication methods. meta.authMethods are
// the token endpoint's; revocation takes the same (none: the holder of a bearer
// token), introspection all but none (admins' bearer credentials are no client
// authentication method). There is no authorization endpoint (no implicit or
// code flow), so response_types_supported is not listed.
func discoveryDoc(issuer string, ring *keyRing, meta discoveryMeta) ([]byte, error) {
	var algs []string
	for _, k := range ring.keys {
		if !slices.Contains(algs, string(k.alg)) {
			algs = append(algs, string(k.alg))
		}
	}
	clientAuth := slices.DeleteFunc(slices.Clone(meta.authMethods), func(m string) bool { return m == "none" })
	doc := map[string]any{
		"issuer":                                issuer,
		"token_endpoint":                        issuer + PathToken,
		"jwks_uri":                              issuer + PathJWKS,
		"grant_types_supported":                 []string{GrantTypeTokenExchange},
		"token_endpoint_auth_methods_supported": meta.authMethods,
		"token_endpoint_auth_signing_alg_values_supported": attest.SignatureAlgorithms(),
		// RFC 8705 §3.3: the STS binds a token to the mTLS client certificate
		// (cnf x5t#S256) when the deciding rule requires a sender constraint,
		// which needs client certificates to be requested.
		"tls_client_certificate_bound_access_tokens":               meta.mtls,
		"subject_types_supported":                                  []string{"public"},
		"id_token_signing_alg_values_supported":                    algs,
		"service_documentation":                                    "https://github.com/safeconduct/safeconduct#readme",
		"introspection_endpoint":                                   issuer + PathIntrospect,
		"introspection_endpoint_auth_methods_supported":            clientAuth,
		"introspection_endpoint_auth_signing_alg_values_supported": attest.SignatureAlgorithms(),
		"revocation_endpoint":                                      issuer + PathRevoke,
		"revocation_endpoint_auth_methods_supported":               meta.authMethods,
		"revocation_endpoint_auth_signing_alg_values_supported":    attest.SignatureAlgorithms(),
		"revocation_feed_endpoint":                                 issuer + PathRevocations,
		"revocation_stream_endpoint":                               issuer + PathRevocationFeed,
	}
	if len(clientAuth) == 0 {
		// No client can authenticate at /introspect (only admins' bearer
		// credentials, which are no client authentication method).
		delete(doc, "introspection_endpoint_auth_methods_supported")
		delete(doc, "introspection_endpoint_auth_signing_alg_values_supported")
	}
	return json.Marshal(doc)
}

// staticJSON serves a pre-rendered JSON document, cacheable for maxAge seconds,
// with a strong ETag of its content; a GET or HEAD whose If-None-Match names it
// is answered 304 without the body (RFC 9110 §13.1.2). The JWKS changes with key
// rotation, so the tag follows the document served, never a fixed value.
func staticJSON(doc []byte, cacheControl string) http.HandlerFunc {
	tag := etag(doc)
	return func(w http.ResponseWriter, r *http.Request) {
		serveJSONDoc(w, r, doc, tag, cacheControl)
	}
}

func serveJSONDoc(w http.ResponseWriter, r *http.Request, doc []byte, tag, cacheControl string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", cacheControl)
	h.Set("ETag", tag)
	if etagMatches(r.Header.Values("If-None-Match"), tag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(doc)
	}
}

// etag is the strong entity tag of a document: a quoted base64url SHA-256 prefix
// (128 bits) of its bytes.
func etag(doc []byte) string {
	sum := sha256.Sum256(doc)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// maxIfNoneMatch bounds how much of If-None-Match is read.
const maxIfNoneMatch = 4 << 10

// etagMatches reports whether If-None-Match (its field values) names tag: "*", or
// a list of entity tags compared weakly (RFC 9110 §13.1.2: W/ is ignored). A
// malformed or oversized field matches nothing, so the document is sent.
func etagMatches(values []string, tag string) bool {
	n := 0
	for _, v := range values {
		if n += len(v); n > maxIfNoneMatch {
			return false
		}
	}
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "*" {
				return true
			}
			t = strings.TrimPrefix(t, "W/")
			if len(t) >= 2 && t[0] == '"' && t[len(t)-1] == '"' && t == tag {
				return true
			}
		}
	}
	return false
}
