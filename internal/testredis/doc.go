// Package testredis gives tests a private Redis: a redis-server child process on a
// free loopback port, or the server CI names in an environment variable. It never
// touches the machine's shared Redis on port 6379 and never flushes anything: tests
// isolate themselves with a random key prefix (Prefix), so one server can be shared.
//
//	addr := testredis.Start(t)
//	client := redis.NewClient(&redis.Options{Addr: addr})
//	store := revocation.NewRedis(client, revocation.RedisOptions{Prefix: testredis.Prefix(t)})
//
// For failover tests it also starts whole private topologies, always as child
// processes (the environment variables do not apply: their nodes are there to be
// killed):
//
//   - StartSentinel: a primary, one replica and three sentinels (master name "sc",
//     quorum 2, down-after-milliseconds 1000); FailoverByKill, FailoverByPause and
//     Restart drive failovers (about 2.5 s each).
//   - StartCluster6: a six-node Redis Cluster (three masters with one replica each,
//     cluster-node-timeout 1000); KillMaster and Restart drive failovers (about
//     2.3 s). Give go-redis's ClusterClient a ClusterStateReloadInterval of a second
//     or two: by default it keeps routing to a dead master for up to 60 s.
//
// Both wait, bounded, until every replica is in sync, so WAIT 1 succeeds at once.
// WAIT counts the replicas that have the writes of its own connection: send it on
// the connection that wrote (a pipeline on one node's client), never through a
// ClusterClient, which routes a keyless WAIT round-robin over the masters.
//
// The servers run as internal/testbin processes: each in a process group of its
// own, killed (SIGKILL) when the test that started it ends and, on Linux, when the
// test binary dies.
package testredis
