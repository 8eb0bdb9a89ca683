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
// Usage:
//
//	v, err := oidc.New(ctx, oidc.Config{
//		Name:        "github-actions",
//		Issuer:      "https://token.actions.githubusercontent.com",
//		Audiences:   []string{"https://sts.example.com"},
//		Algorithms:  []string{"RS256"},
//		MaxTokenAge: 10 * time.Minute,
//	})
//	if err != nil {
//		return err
//	}
//	w, err := v.Verify(ctx, rawToken, attest.TypeJWT)
//
// Attributes: `sub` and `iss`, and for Kubernetes projected service account tokens
// `namespace`, `service_account`, `pod` and `pod_uid` from the `kubernetes.io` claim.
package oidc
