// Package spiffe verifies the SVIDs of one SPIFFE trust domain, JWT-SVIDs presented
// as subject or actor tokens and X.509-SVIDs presented as mTLS client certificates,
// and attests the Workload they identify. A Verifier implements attest.Verifier,
// attest.ParsedVerifier and attest.X509Verifier for its trust domain; the
// attest.Router routes to it by the trust domain of the SVID's SPIFFE ID
// (attest.Routes.ByTrustDomain).
//
// # Bundles
//
// A Verifier trusts its own trust domain's bundle and nothing else: every lookup
// goes through a source that only ever returns that bundle, and the SVID's SPIFFE
// ID must belong to the trust domain before any key is looked at. A JWT-SVID of
// trust domain B is refused by A's Verifier however it is signed; one signed by
// B's key but claiming A finds no key of A to verify it.
//
// The bundle comes from exactly one source:
//
//   - BundleFile: a SPIFFE bundle (`spire-server bundle show -format spiffe`),
//     read and vetted at New (a bad file fails New), read again every
//     FileCheckInterval while in use;
//   - BundleEndpoint: a SPIFFE bundle endpoint (federation), profile https_web
//     (web PKI) or https_spiffe (the endpoint's X.509-SVID must carry
//     EndpointSPIFFEID, verified with go-spiffe's tlsconfig against the
//     BootstrapBundle and then the latest bundle fetched). It is fetched on first
//     use or after one refresh interval, whichever comes first, so the STS starts
//     while the endpoint is down; then refreshed in the background every
//     RefreshInterval (by default the bundle's spiffe_refresh_hint within [30s,
//     5m]) whether or not tokens arrive, so that the interval bounds how long an
//     authority removed from the bundle is honoured; an unknown JWT kid triggers
//     at most one refresh per 30s, shared by concurrent requests; while refreshes
//     fail the last good bundle stays in use up to MaxStale after its fetch, then
//     verification fails closed with attest.ErrUnavailable. Fetches are bounded
//     (FetchTimeout, MaxResponseBytes), accept only 200 and never follow
//     redirects;
//   - WorkloadAPISocket: the local SPIRE agent's Workload API, which pushes the
//     trust domain's bundle (its own or a federated one) as it changes. New does
//     not wait for the agent; verification is unavailable until the first bundle
//     arrives. When the agent stops delivering the trust domain (federation
//     removed), the bundle is withdrawn. The bundle is current while the agent's
//     streams are connected and their updates accepted; once a stream breaks or
//     an update is refused it stays usable for WorkloadAPIMaxStale (1h), then
//     verification fails closed with attest.ErrUnavailable.
//
// Every bundle is vetted before it replaces the last good one, which is kept when
// the new one is refused: duplicate JSON members or jwt-svid key IDs; JWT
// authorities other than RSA (2048 to 8192 bits) and ECDSA P-256/384/521 public
// keys (private material included); X.509 authorities that name another trust
// domain in a SPIFFE URI SAN (a bundle "for another trust domain"); a bundle with
// no authority at all; an update that drops every JWT, or every X.509, authority
// the last good bundle had; more than 100 authorities of a kind.
//
// # JWT-SVIDs
//
// Verified with go-jose against the trust domain's cached JWT authorities, with
// every check of go-spiffe's jwtsvid.ParseAndValidate (RSA or ECDSA algorithm, `typ`
// absent or JWT, `kid` required, `sub` a SPIFFE ID, `exp` required, audience) and
// more: the Router's header checks (size, compact form, no `crit`, `jku` and
// friends ignored), the algorithm fitting the key, exactly one signature verified
// over the very payload whose claims are used, an audience expectation that is
// never empty (go-spiffe skips the check on an empty one), `exp`, `nbf` and `iat`
// with at most ClockSkew of leeway on the injected clock (go-spiffe uses the real
// clock with a fixed minute), a well-formed `aud`, and a `sub` that names a
// workload (a non-empty path). `iss` is not required (SPIRE omits it unless
// configured) and not checked. What this package accepts, ParseAndValidate accepts
// too (the tests check it).
//
// # X.509-SVIDs
//
// Verified with go-spiffe's x509svid.Verify at the injected clock: exactly one URI
// SAN holding a SPIFFE ID of the trust domain, a leaf that is no CA and has neither
// keyCertSign nor cRLSign, a chain to one of the trust domain's X.509 authorities.
// Thumbprint gives the leaf's `x5t#S256` for sender-constrained tokens (RFC 8705).
//
// # Workloads
//
// Subject and ID are the SPIFFE ID, Issuer is "spiffe://" + trust domain, Upstream
// the configured Name. Attributes hold "sub", "iss", "trust_domain", "path" and
// the captures of the first PathTemplates entry that matches the path (e.g.
// "/ns/{namespace}/sa/{service_account}"); a path no template matches gets no
// captures, which policy sees as absent attributes. Subjects bounds the trust
// domain's breadth with globs over the SPIFFE ID (e.g.
// "spiffe://prod.example/ns/payments/*"); an SVID outside them is refused with
// attest.ErrInvalid. Malformed SPIFFE IDs (upper case trust domain, port, userinfo,
// query, fragment, dot or empty segments, trailing slash, percent-encoding) are
// refused: spiffeid parsing is strict.
//
// Usage:
//
//	v, err := spiffe.New(ctx, spiffe.Config{
//		Name:        "prod-spire",
//		TrustDomain: "prod.example",
//		Audiences:   []string{"sts.example.com"},
//		BundleEndpoint: &spiffe.EndpointConfig{
//			URL:              "https://spire.prod.example:8443",
//			Profile:          spiffe.ProfileSPIFFE,
//			EndpointSPIFFEID: "spiffe://prod.example/spire/server",
//			BootstrapBundle:  "/etc/sts/prod.example.bundle.json",
//		},
//		PathTemplates: []string{"/ns/{namespace}/sa/{service_account}"},
//		Subjects:      []string{"spiffe://prod.example/ns/*"},
//	})
//	if err != nil {
//		return err
//	}
//	defer v.Close()
//	router, err := attest.NewRouterRoutes(attest.Routes{
//		ByIssuer:      byIssuer, // OIDC upstreams
//		ByTrustDomain: map[string]attest.Verifier{v.TrustDomain().Name(): v},
//	})
//	// JWT-SVID subject token:
//	w, err := router.Attest(ctx, subjectToken, attest.TypeJWT)
//	// mTLS client:
//	w, err = router.AttestX509(ctx, r.TLS.PeerCertificates)
//	// w.Subject, w.Attributes["namespace"], spiffe.Thumbprint(r.TLS.PeerCertificates[0])
package spiffe
