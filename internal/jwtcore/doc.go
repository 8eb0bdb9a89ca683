// Package jwtcore holds the JWT checks every token verifier of the module shares
// (attest/oidc, attest/spiffe and verify), so that they cannot diverge:
//
//   - the reading of NumericDate claims and of `aud` (NumericDate, Audience);
//   - the time rules: exp required and in the future, nbf and iat not in the
//     future, each with a clock skew, and an optional maximum token age
//     (CheckTimes);
//   - the audience rule: one of the accepted audiences in `aud`, an empty list of
//     accepted audiences being an error, never "any" (CheckAudience);
//   - the table of asymmetric JWS algorithms and the key type each needs
//     (Algorithms, KeyTypeOf, KeyType.Fits).
//
// It depends on the standard library only. Its errors are plain: each verifier
// wraps them in its own sentinel (attest.ErrInvalid, verify.ErrInvalid). It checks
// claims that were verified already; it parses no token.
package jwtcore
