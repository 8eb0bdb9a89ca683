// Package attest turns an upstream credential into a Workload: who presented it,
// which trusted upstream vouched for it, and the attributes it carried.
//
// A Verifier checks the credentials of one upstream (package attest/oidc for OIDC
// issuers). A Router holds the Verifiers of every configured upstream and hands each
// token to exactly one of them, chosen by the token's `iss`. Before any key is looked
// at, and without any network traffic, the Router refuses what is not worth
// verifying (ParseHeaderInsecure): tokens over MaxTokenSize, anything but a compact
// JWS (JWE, JSON serialization, extra dots), `alg: none` and HMAC, `crit`, `b64`,
// `zip`, nested JWTs, a `typ` naming another kind of token than the one presented,
// duplicate JSON member names, and issuers nobody configured. Keys are never taken
// from the token (`jku`, `x5u`, `jwk` and `x5c` are ignored).
//
// Errors wrap one of the sentinels ErrUnsupportedType, ErrMalformed,
// ErrUnknownIssuer, ErrInvalid and ErrUnavailable; map them to the protocol with
// errors.Is at the edge. Their text is for logs and never holds a token or a key.
//
// Functions whose name ends in Insecure read unverified data; their results must not
// be trusted beyond the check they perform.
//
// A Workload carries the verified claims and the string attributes mapped from them
// (package attest/attrs: CEL expressions per upstream, with presets for Kubernetes
// and GitHub Actions). Attributes are either present and non-empty or absent; an
// absent attribute, e.g. because its claim is missing, matches no attribute pattern.
// Each upstream may also bound which subjects it can assert at all (issuer breadth,
// oidc.Config.Subjects) and require claim values (oidc.Config.RequiredClaims).
//
// For delegation (RFC 8693), Workload.ActChain parses a verified `act` claim into
// the current actor and its predecessors, and Workload.MayAct the `may_act` claim;
// both refuse malformed claims with ErrInvalid and decide nothing: authorization is
// policy's. CheckSubject is the subject sanity check every verifier applies.
//
// Usage:
//
//	mapping, err := attrs.Compile(attrs.PresetKubernetes, nil)
//	if err != nil {
//		return err
//	}
//	k8s, err := oidc.New(ctx, oidc.Config{
//		Name:       "prod-cluster",
//		Issuer:     "https://oidc.prod.example.com",
//		Audiences:  []string{"sts.example.com"},
//		Subjects:   []string{"system:serviceaccount:prod:*"},
//		Attributes: mapping,
//	})
//	if err != nil {
//		return err
//	}
//	router, err := attest.NewRouter(map[string]attest.Verifier{k8s.Issuer(): k8s})
//	if err != nil {
//		return err
//	}
//	w, err := router.Attest(ctx, subjectToken, attest.TypeJWT)
//	switch {
//	case errors.Is(err, attest.ErrUnavailable):
//		// 503: the upstream's keys cannot be obtained right now.
//	case err != nil:
//		// invalid_request; log err.
//	default:
//		// w.Upstream, w.Subject, w.Attributes["namespace"], ...
//		chain, err := w.ActChain() // nil, nil without an `act` claim
//	}
package attest
