// Package verify is the library downstream APIs use to accept safeconduct access
// tokens: it verifies the STS's RFC 9068 JWTs and checks them against a local copy
// of the STS's revocation feed, failing closed when that copy is stale.
//
// # Verification
//
// New discovers the issuer with go-oidc (Issuer + "/.well-known/openid-configuration",
// whose `issuer` must equal Config.Issuer exactly) and fetches its JWKS. Verify then
// checks, for every token:
//
//   - the signature, with an algorithm the discovery document advertises (asymmetric
//     only) and a key of the JWKS (refreshed every 5 minutes, and on an unknown kid
//     at most once per 10 s, so forged tokens cannot make verifiers hammer the STS);
//   - the `typ` header is at+jwt (RFC 9068 §4): an ID token is not an access token;
//   - iss equals Config.Issuer, aud contains Config.Audience;
//   - exp is in the future, nbf and iat are not (Config.Leeway, default 0, tolerated);
//   - the claims RFC 9068 requires: sub, jti, client_id, iat, exp;
//   - no active revoke entry of the feed matches the token (below).
//
// Errors wrap ErrInvalid, ErrRevoked or ErrStale. Middleware turns them into RFC 6750
// answers: 401 with `WWW-Authenticate: Bearer error="invalid_token"` for invalid and
// revoked tokens, 401 `WWW-Authenticate: Bearer` without a credential, 503 with
// Retry-After when the revocation data is stale.
//
// # Revocation feed
//
// With Config.FeedToken set (a bearer credential the STS's admin rules allow the
// action read_feed, e.g. a projected service-account token; or "" when the
// HTTPClient presents an X.509-SVID), a background goroutine takes a snapshot
// (GET Issuer/revocations), then follows the Server-Sent Events stream
// (GET Issuer/revocations/stream?cursor=C, with Last-Event-ID on reconnect):
// `created` adds an entry, `lifted` removes it, `heartbeat` (every 5 s) proves the
// STS is there. A 410 (cursor_expired) or an event it cannot apply makes it take a
// new snapshot; failures are retried with jittered exponential backoff. Block
// entries are ignored: they stop issuance, not tokens already minted.
//
// A revoke entry invalidates a token when its selector matches the token's facts
// (revocation.FactsFromClaims: jti, sub, upstream, aud, client_id, attributes, bnd;
// and kid, the key ID of the JWKS key that verified the signature) and the token's
// iat (in whole seconds) is not after the entry's creation. An entry with a kid
// term (the STS's POST /admin/v1/keys/revoke) invalidates every token that key
// signed, whatever its iat: after an emergency key rotation, tokens of the old key
// are refused as soon as the entry arrives, before the JWKS is refreshed. Matching
// is local and indexed (revocation.Index files entries by anchor), so Verify makes
// no network call for revocation and its cost does not grow with the entries. An
// entry the verifier cannot read (e.g. a selector key from a newer STS) is not
// skipped: the copy stops updating and goes stale.
//
// Verify fails closed with ErrStale before the first snapshot and whenever neither an
// event nor a heartbeat has arrived for Config.MaxStale (default 30 s), so a network
// partition or an expired feed credential never turns into "nothing is revoked".
// Without FeedToken revocation is not checked at all (a warning is logged at New);
// set Config.RequireFeed to make that a configuration error.
//
// # Sources
//
// Keys and revocation data come from two one-method interfaces, in the style of
// go-spiffe's jwtbundle.Source: KeySource (KeysForKeyID) and RevocationSource
// (CheckRevocation). By default New uses discovery and the JWKS for keys, and the
// feed above for revocation. Config.Keys and Config.Revocations replace them, e.g.
// with StaticKeys (a JWKS held as is) and StaticRevocations (a fixed set of revoke
// entries, never stale), for a downstream's tests or keys and revocations
// distributed out of band; nothing is fetched for a static source. The time,
// audience and algorithm rules are package internal/jwtcore's, shared with the
// STS's own upstream verifiers.
//
// # Usage
//
//	v, err := verify.New(ctx, verify.Config{
//		Issuer:      "https://sts.example",
//		Audience:    "https://ledger.internal",
//		HTTPClient:  client, // trusts the STS's CA
//		FeedToken:   func(context.Context) (string, error) { return readFile("/var/run/secrets/sts/token") },
//		RequireFeed: true,
//	})
//	if err != nil { ... }
//	defer v.Close()
//
//	mux := http.NewServeMux()
//	mux.Handle("GET /v1/balance", v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//		tok, _ := verify.TokenFromContext(r.Context())
//		if !tok.HasScope("ledger.read") {
//			http.Error(w, "insufficient scope", http.StatusForbidden)
//			return
//		}
//		fmt.Fprintf(w, "hello %s (via %s)\n", tok.Subject, tok.ClientID)
//	})))
//
// Or without the middleware:
//
//	tok, err := v.Verify(ctx, raw)
//	switch {
//	case errors.Is(err, verify.ErrStale): // 503, retry later
//	case err != nil: // 401 invalid_token (invalid or revoked)
//	}
//
// examples/verify-api is a complete API protected this way.
package verify
