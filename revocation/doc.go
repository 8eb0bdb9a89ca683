// Package revocation owns the revocation store: the record of revoked tokens (by
// jti) and of blocked workloads (upstream and subject), which the issuer consults
// once per exchange before minting and which the admin API writes.
//
// Two backends implement Store: OpenEmbedded keeps the state in a local bbolt file
// for a single replica, NewRedis keeps it in Redis (standalone, Sentinel or Cluster)
// for replicas that must agree. Both refuse malformed or oversized arguments with
// ErrInvalid, treat entries past their expiry as absent, never let a later write
// shorten an entry, and return an error (never an admission) when they cannot
// answer, so that callers fail closed. Selectors, watermarks and the firing of
// runtime changes come later and will extend Admit in the same single round trip.
//
// Usage:
//
//	store, err := revocation.OpenEmbedded("/var/lib/sts/revocation.db", revocation.EmbeddedOptions{})
//	// or: store := revocation.NewRedis(revocation.NewRedisClient(cfg), revocation.RedisOptions{})
//	if err != nil { ... }
//	defer store.Close()
//
//	// At the revocation API:
//	err = store.RevokeToken(ctx, jti, exp, "key compromise")
//
//	// On each exchange, before minting:
//	switch err := store.Admit(ctx, revocation.Query{Upstream: "corp", Subject: sub}); {
//	case errors.Is(err, revocation.ErrBlocked):
//		// refuse; the reason (errors.As *BlockedError) goes to the audit log only
//	case err != nil:
//		// store unavailable: fail closed (503)
//	}
package revocation
