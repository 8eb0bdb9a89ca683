// Package attest turns an upstream credential into a Workload: who presented it,
// which trusted upstream vouched for it, and the attributes it carried.
//
// A Verifier checks the credentials of one upstream (package attest/oidc for OIDC
// issuers, attest/spiffe for a SPIFFE trust domain). A Router holds the Verifiers of
// every configured upstream (Routes) and hands each credential to exactly one of
// them:
//
//   - a JWT whose `iss` is a configured issuer (Routes.ByIssuer) goes to that
//     issuer's Verifier, whatever its `sub`: an OIDC issuer always wins;
//   - a JWT without `iss`, or whose `iss` no upstream claims, goes by the trust
//     domain of its `sub`, parsed strictly as a SPIFFE ID, to that trust domain's
//     Verifier (Routes.ByTrustDomain): a JWT-SVID, which SPIRE mints without `iss`
//     unless configured with one;
//   - an mTLS client certificate chain (Router.AttestX509) goes by the trust domain
//     of its leaf's SPIFFE ID (exactly one URI SAN) to that trust domain's Verifier,
//     which must implement X509Verifier;
//   - anything else is refused: ErrUnknownIssuer for an unclaimed issuer or an
//     unconfigured trust domain, ErrMalformed for a malformed SPIFFE ID or a JWT
//     with neither `iss` nor a SPIFFE `sub`.
//
// The Verifier's answer is held to the route: the routed issuer, or Issuer
// "spiffe://<trust domain>" and the routed SPIFFE ID as Subject, so a misconfigured
// map cannot let one upstream vouch for another's credentials.
//
// Before any key is looked at, and without any network traffic, the Router refuses
// what is not worth verifying (ParseHeaderInsecure): tokens over MaxTokenSize,
// anything but a compact JWS (JWE, JSON serialization, extra dots), `alg: none` and
// HMAC, `crit`, `b64`, `zip`, nested JWTs, a `typ` naming another kind of token than
// the one presented, duplicate JSON member names, and issuers or trust domains
// nobody configured. Keys are never taken from the token (`jku`, `x5u`, `jwk` and
// `x5c` are ignored).
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
// oidc.Config.Subjects, spiffe.Config.Subjects) and require claim values
// (oidc.Config.RequiredClaims). A SPIFFE Workload's attributes are "trust_domain",
// "path" and the captures of its path templates (spiffe.Config.PathTemplates).
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
//	spire, err := spiffe.New(ctx, spiffe.Config{
//		Name:              "prod-spire",
//		TrustDomain:       "prod.example",
//		Audiences:         []string{"sts.example.com"},
//		WorkloadAPISocket: "unix:///run/spire/agent.sock",
//		PathTemplates:     []string{"/ns/{namespace}/sa/{service_account}"},
//	})
//	if err != nil {
//		return err
//	}
//	router, err := attest.NewRouterRoutes(attest.Routes{
//		ByIssuer:      map[string]attest.Verifier{k8s.Issuer(): k8s},
//		ByTrustDomain: map[string]attest.Verifier{spire.TrustDomain().Name(): spire},
//	})
//	if err != nil {
//		return err
//	}
//	w, err := router.Attest(ctx, subjectToken, attest.TypeJWT)
//	// or, for an mTLS client: router.AttestX509(ctx, r.TLS.PeerCertificates)
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
