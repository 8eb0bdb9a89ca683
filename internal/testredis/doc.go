// Package testredis gives tests a private Redis: a redis-server child process on a
// free loopback port, or the server CI names in an environment variable. It never
// touches the machine's shared Redis on port 6379 and never flushes anything: tests
// isolate themselves with a random key prefix (Prefix), so one server can be shared.
//
//	addr := testredis.Start(t)
//	client := redis.NewClient(&redis.Options{Addr: addr})
//	store := revocation.NewRedis(client, revocation.RedisOptions{Prefix: testredis.Prefix(t)})
package testredis
