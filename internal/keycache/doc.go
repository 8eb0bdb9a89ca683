// Package keycache is the one cache of verification keys (a JWKS, a SPIFFE
// bundle, any value of type T) shared by the token verifiers: attest/oidc,
// attest/spiffe and verify. It holds the last good value and its age and decides
// when to fetch again:
//
//   - reads are lock-free (an atomic pointer to an immutable Value);
//   - a value older than Config.RefreshAfter is refetched in the background while
//     it keeps being used;
//   - a value older than Config.MaxStale is unusable (zero: never);
//   - fetches run one at a time (single flight) and are shared by every caller
//     waiting for them, whatever triggered them (first use, age, an unknown key
//     ID); no caller's cancellation aborts one for the others, and each is bounded
//     by Config.Timeout;
//   - a fetch starts at most once per Config.MinInterval, so forged tokens naming
//     unknown key IDs cannot make a verifier hammer its key source;
//   - a fetched value that fails or is refused (Config.Accept) leaves the last good
//     one in place.
//
// A pushed source (the SPIFFE Workload API) has no Fetch: its updates arrive
// through Set and Drop. Its value does not age while the source is connected;
// once the source reports it may be behind (Lagging: disconnected, or an update
// refused), it is unusable after Config.MaxStale. Time comes from Config.Now, so staleness and refetch rules
// are tested with a fake clock. The package depends on the standard library only:
// package verify imports it without pulling in any server package. Bounding the
// size of a fetched document is the Fetch function's business (its HTTP client).
package keycache
