// Package testspire gives Go tests a real SPIRE deployment: a spire-server and a
// spire-agent child process (SPIRE v1.13.3, built and cached by
// scripts/spire-install.sh), talking over a loopback TCP port and unix sockets only.
//
//	s := testspire.Start(t, testspire.Options{})          // trust domain example.org
//	id := s.RegisterWorkload(t, "/workload")              // selector unix:uid:<this uid>
//	token := s.FetchJWTSVIDFor(t, id, "sts")              // through the Workload API
//	bundle := s.BundleJWKS(t)                             // SPIFFE bundle (JWKS) JSON
//
// The server uses a sqlite datastore and a disk key manager in a private
// directory under /tmp (kept short: Workload API socket paths must stay under about
// 100 bytes), attests the agent with a join token, and the agent bootstraps its trust
// from `spire-server bundle show` rather than insecure_bootstrap. Server
// cache_reload_interval and agent sync_interval are 1s, so a new entry reaches the
// agent in about a second instead of about five.
//
// Binaries: SAFECONDUCT_SPIRE_DIR names a directory holding spire-server and
// spire-agent; otherwise Start runs scripts/spire-install.sh from the module root
// (found by walking up from the working directory to go.mod), which prints the cache
// directory, building the binaries first if needed (about 10 minutes on a fresh
// machine). When they cannot be had the test is skipped, or failed when CI=true.
//
// What SPIRE v1.13.3 does that tests may rely on: JWT-SVIDs have the header typ JWT
// and a kid, and the claims sub, aud (always an array), exp and iat only; iss is
// present only when Options.JWTIssuer is set. X.509-SVIDs chain to the bundle's
// x509-svid keys with the SPIFFE ID as the only URI SAN.
//
// Everything stops when the test ends (agent first, SIGTERM then SIGKILL after 5s)
// and the directory is removed; the processes run in their own process group and, on
// Linux, die with the test binary. When a wait fails, or the test has failed by the
// time it ends, the tails of the server and agent logs are printed with t.Log.
package testspire
