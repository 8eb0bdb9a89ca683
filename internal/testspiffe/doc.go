// Package testspiffe makes SPIFFE material for tests: a trust domain's X.509 CA and
// JWT signing key, its SPIFFE bundle (JSON), X.509-SVIDs and JWT-SVIDs, built with
// crypto/x509, go-jose and go-spiffe's bundle type. For a real SPIRE server and agent
// see internal/testspire.
//
//	td := testspiffe.New(t, "prod.example")
//	os.WriteFile(bundlePath, td.Bundle(t), 0o600)
//	cert := td.TLSCertificate(t, "spiffe://prod.example/ns/payments/sa/api")
//	tok := td.JWTSVID(t, "spiffe://prod.example/ns/payments/sa/api", "sts")
package testspiffe
