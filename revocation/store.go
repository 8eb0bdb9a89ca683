package revocation

import (
	"context"
	"errors"
	"time"
)

// Query describes one issuance that the store is asked to admit. Every exchange asks
// once, before minting.
type Query struct {
	// Upstream is the configured upstream name, Subject the verified upstream `sub`.
	Upstream string
	Subject  string
}

// Store is the revocation store. Implementations are safe for concurrent use.
//
// Arguments are checked before any backend is touched: an empty or oversized value
// (see MaxJTILen and friends), a jti outside visible ASCII, an upstream with control
// characters, or an until not after Now are refused with a wrapped ErrInvalid.
// Entries are absent once Now reaches until (a backend keeping milliseconds may keep
// them up to 1 ms longer, never shorter). A write never shortens an existing entry:
// writing again with a later until extends it and replaces the reason, with an
// earlier until it changes nothing.
type Store interface {
	// Admit returns nil when a token may be issued for q, a *BlockedError (for which
	// errors.Is(err, ErrBlocked) holds; it carries the block's reason) when issuance
	// to this workload is blocked, or another error when the store cannot answer (the
	// caller must then fail closed). It costs at most one round trip to the backend.
	Admit(ctx context.Context, q Query) error
	// RevokeToken records that the minted token jti is revoked. until is when the
	// entry may be forgotten (the token's exp); it must be in the future. A nil
	// error means the entry is recorded: synced to disk by the embedded store,
	// acknowledged by the Redis primary (whose persistence and replication settings
	// then decide whether it survives a crash or failover).
	RevokeToken(ctx context.Context, jti string, until time.Time, reason string) error
	// TokenRevoked reports whether jti has been revoked (and the entry has not yet
	// expired).
	TokenRevoked(ctx context.Context, jti string) (bool, error)
	// BlockSubject blocks issuance to the workload (upstream, subject) until the given
	// time.
	BlockSubject(ctx context.Context, upstream, subject string, until time.Time, reason string) error
	// Ping checks that the store is reachable and usable (readiness).
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// ErrBlocked is wrapped by Admit when issuance is blocked.
var ErrBlocked = errors.New("issuance blocked")

// ErrInvalid is wrapped for arguments a store refuses (empty jti, past expiry, ...).
var ErrInvalid = errors.New("invalid revocation entry")
