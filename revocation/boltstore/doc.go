// Package boltstore is the embedded revocation store: a revocation.Store kept in a
// bbolt file by a single process (one STS replica, no Redis).
//
// Every write (Create, Lift, Bind) is synced to disk before it returns. The active
// entries and the bindings are also held in memory, rebuilt at Open, so Admit and
// Revoked cost a few map lookups (the anchors of the facts) whatever the number of
// entries, and never touch the disk. The feed is a bucket of events numbered by a
// monotonically increasing sequence (the cursor is its decimal form), bounded by
// age and count; Wait is an in-process broadcast.
//
// Usage:
//
//	store, err := boltstore.Open("/var/lib/sts/revocation.db", boltstore.Options{RevokeTTL: maxTTL})
//	if err != nil { ... }
//	defer store.Close()
package boltstore
