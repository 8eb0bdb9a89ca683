// Package config is the STS's composition root: the configuration file's schema
// (sts.yaml), its validation, and the assembly of the parts package issuer takes:
// the upstream verifiers (attest/oidc, attest/spiffe) behind an attest.Router, the
// issuance policy, the revocation store (revocation/boltstore or
// revocation/redisstore), the signing keys, the private_key_jwt client verifiers,
// the audit sink, tracing, and the serving TLS configuration.
//
// Package issuer never sees the file format: it takes typed parts (issuer.Config).
// The import direction is cmd -> config -> issuer -> {policy, attest, revocation}.
//
// Loading is strict: unknown keys are errors, and every problem is reported at
// once with file:line. Check is the dry run behind `sts check-config`.
//
// Usage:
//
//	cfg, err := config.Load("sts.yaml")
//	if err != nil { ... }
//	s, err := config.Build(ctx, cfg, config.Options{Logger: log})
//	if err != nil { ... }
//	defer s.Close()
//	tlsConfig, closeTLS, err := config.ServingTLS(ctx, cfg)
//	l, err := net.Listen("tcp", cfg.Listen)
//	go s.WatchPolicy(ctx, config.PolicySource(cfg), cfg.PolicyReloadInterval.D(), nil)
//	err = s.Serve(ctx, l, tlsConfig, 10*time.Second) // drains on ctx end
package config
