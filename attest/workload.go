package attest

import "time"

// Token types of RFC 8693 §3 that a subject or actor token may be presented as.
const (
	TypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
	TypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// Workload is an attested upstream identity: who presented the credential, which
// trusted upstream vouched for it, and the runtime attributes it carried. A Workload
// is only ever produced by a Verifier after every check passed.
type Workload struct {
	// Upstream is the configured name of the upstream that verified the credential.
	Upstream string
	// Issuer is the upstream's issuer identifier (the verified `iss`).
	Issuer string
	// Subject is the verified `sub` of the upstream credential.
	Subject string
	// ID is the identity the STS mints tokens for (the minted `sub`).
	ID string
	// TokenID is the upstream credential's `jti`, when it has one.
	TokenID string
	// Audience is the verified `aud` of the upstream credential.
	Audience []string
	// IssuedAt and Expiry are the upstream credential's `iat` (zero when absent) and
	// `exp` (always set: a credential without `exp` is refused).
	IssuedAt time.Time
	Expiry   time.Time
	// Attributes are string attributes derived from the verified claims, for policy
	// and for copying into minted tokens: "sub" and "iss" always, and those of the
	// upstream's attribute mapping (package attest/attrs: namespace,
	// service_account, repository, ...). Every value is non-empty: an attribute whose
	// claim is missing, or whose expression failed, is absent from the map, and an
	// absent attribute matches no attribute pattern (not even "*"). Read-only.
	Attributes map[string]string
	// Claims are all verified claims of the credential, decoded from JSON. Read-only.
	// ActChain and MayAct read the delegation claims `act` and `may_act`.
	Claims map[string]any
}
