// Package issuer is the STS itself: the RFC 8693 token endpoint, minting of RFC 9068
// access tokens, signing keys, the JWKS and discovery documents, health, metrics and
// the configuration file that wires attest, policy and revocation together.
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
//	cfg, err := issuer.LoadConfig("sts.yaml") // strict; every problem with file:line
//	if err != nil { ... }
//	s, err := issuer.New(ctx, cfg, issuer.Options{Logger: log})
//	if err != nil { ... }
//	defer s.Close()
//	tlsConfig, err := issuer.LoadTLS(cfg)
//	l, err := net.Listen("tcp", cfg.Listen)
//	err = s.Serve(ctx, l, tlsConfig, 10*time.Second) // drains on ctx end
package issuer
