// Package fakeclock is a settable clock for tests of code that takes a Now func:
// token times (internal/jwtcore), the staleness and refetch rules of the key
// caches (internal/keycache) and the verifiers built on them.
package fakeclock
