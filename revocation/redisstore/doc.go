// Package redisstore is the Redis revocation store: a revocation.Store kept in
// Redis (standalone, Sentinel or Cluster) for STS replicas that must agree.
//
// Every key shares the {rev} hash tag (one Cluster slot), so each operation is one
// Lua script or one command: Admit reads Redis TIME, the binding fingerprint and
// the block buckets of the facts' anchors in one script; Revoked reads the revoke
// buckets likewise; Create, Lift and Bind write the entry, its bucket, the index
// and the feed (a stream) atomically, with Created from Redis TIME. Entries and
// buckets expire (PXAT) with their entries; only open-ended blocks live in keys
// without expiry, which vanish once lifted. With Options.ConfirmReplicas, writes
// wait for a replica (WAIT 1). Every operation has a deadline, and every failure
// is an error: callers fail closed.
//
// Redis 7.0 or later is required.
//
// Usage:
//
//	client := redisstore.NewClient(redisstore.Config{Addrs: []string{"redis:6379"}})
//	defer client.Close()
//	store := redisstore.New(client, redisstore.Options{Prefix: "sts", RevokeTTL: maxTTL})
//	defer store.Close()
package redisstore
