// Package issuer is the STS itself: the RFC 8693 token endpoint, minting of RFC 9068
// access tokens, signing keys and their rotation, the JWKS and discovery documents,
// the admin API and revocation feed, health and metrics.
//
// It takes typed parts (Config: an Attester, a Decider, a revocation.Store, the
// signing keys, limits, clock, loggers) and imports no verifier or store
// implementation; package config builds those parts from the configuration file.
//
// One exchange runs one fixed pipeline, owned by the /token handler, so that no token
// type can skip a step:
//
//	parse -> authenticate client -> attest subject (and actor) -> policy
//	      -> revocation admit -> mint -> audit -> respond
//
// Protocol errors are produced here and only here: domain packages return sentinel
// errors, which the handler maps to RFC 6749 §5.2 / RFC 8693 §2.2.2 codes with
// descriptions that help an honest caller and tell an attacker nothing; the detail
// goes to the audit event.
//
// Usage:
//
//	keys, err := issuer.OpenKeyDir("keys", jose.ES256, time.Now())
//	if err != nil { ... }
//	s, err := issuer.New(issuer.Config{
//		Issuer:   "https://sts.example",
//		Attester: router,    // e.g. an attest.Router over attest/oidc verifiers
//		Decider:  pol,       // e.g. a *policy.Policy
//		Store:    store,     // e.g. boltstore.Open(...)
//		Keys:     keys,
//		DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour,
//	})
//	if err != nil { ... }
//	defer s.Close()
//	err = s.Serve(ctx, l, tlsConfig, 10*time.Second) // drains on ctx end
package issuer
