// Package oidc verifies the JWTs of an OpenID Connect upstream (a Kubernetes
// cluster's service account issuer, GitHub Actions, a corporate IdP) and attests the
// Workload they describe. A Verifier implements attest.Verifier for one issuer.
//
// Keys come from one of three sources: OIDC discovery (go-oidc, which refuses a
// discovery document whose `issuer` differs from the configured one), a fixed
// jwks_uri, or a JWKS file read at New (air-gapped clusters). Remote keys are
// fetched lazily on first use, so the STS starts while an upstream is down, and
// cached as parsed public keys:
//
//   - an unknown kid triggers at most one refresh per RefreshMinInterval, shared by
//     all concurrent requests that miss;
//   - keys older than CacheTTL are refreshed in the background while in use;
//   - when refreshes fail the last good keys stay in use up to MaxStale after their
//     fetch, then Verify fails closed with attest.ErrUnavailable;
//   - a key set with duplicate kids, private or symmetric material, RSA under 2048
//     bits, unsupported curves or no usable key is refused and the last good set
//     kept;
//   - fetches are bounded (FetchTimeout, MaxResponseBytes), accept only 200 and
//     never follow redirects.
//
// Tokens are verified with go-jose directly against the cached keys, with every check
// go-oidc's IDTokenVerifier makes and more: exactly one signature, an algorithm from
// the upstream's list that fits the key, the signature before any claim, then `iss`
// (exact), `aud` (one of Audiences), `exp` (required), `nbf`, `iat`, MaxTokenAge,
// with at most ClockSkew of leeway, and a sane `sub`.
//
// Then the upstream's own limits, so that no policy ever sees what it may not
// assert:
//
//   - issuer breadth: with Subjects set, a `sub` matching none of its glob patterns
//     is refused ("subject outside the upstream's allowed subjects"). Empty Subjects
//     means any subject; say so explicitly in the STS configuration (e.g. "*");
//   - RequiredClaims: each named claim must be a string matching its glob pattern
//     (e.g. repository_owner: my-org); a missing or non-string claim is refused.
//
// All of these refusals wrap attest.ErrInvalid.
//
// # Attributes
//
// Workload.Attributes always holds "sub" and "iss". Config.Attributes, a Mapping
// compiled once with package attest/attrs (presets for Kubernetes projected service
// account tokens and GitHub Actions, CEL expressions for the rest), adds the mapped
// attributes. An attribute whose claim is missing, or whose expression fails on a
// claim of the wrong type, is absent, never empty, and never refuses the token;
// an absent attribute matches no policy attribute pattern. Absences and failures are
// counted in Stats, and failures logged at debug level with the token's jti.
//
// Usage:
//
//	gha, err := attrs.Compile(attrs.PresetGitHubActions, nil)
//	if err != nil {
//		return err
//	}
//	v, err := oidc.New(ctx, oidc.Config{
//		Name:           "github-actions",
//		Issuer:         "https://token.actions.githubusercontent.com",
//		Audiences:      []string{"https://sts.example.com"},
//		Algorithms:     []string{"RS256"},
//		MaxTokenAge:    10 * time.Minute,
//		Subjects:       []string{"repo:my-org/*"},
//		RequiredClaims: map[string]string{"repository_owner": "my-org"},
//		Attributes:     gha,
//	})
//	if err != nil {
//		return err
//	}
//	w, err := v.Verify(ctx, rawToken, attest.TypeJWT)
//	// w.Attributes["repository"], w.Attributes["ref"], ...
package oidc
