package revocation

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Store keeps revocation and block entries, binding fingerprints and the feed of
// changes. Implementations are safe for concurrent use and fail closed: when they
// cannot answer they return an error, never an admission or a "not revoked".
// Arguments they refuse wrap ErrInvalid.
type Store interface {
	// Admit is asked once per exchange, before minting: ErrBlocked (wrapped in
	// *BlockedError with the entry) when an active block matches f; otherwise the
	// time to use as the token's iat (the store's clock, never later than the
	// caller's now) and the binding fingerprint last recorded for instance (""
	// if none). One round trip; O(1) in the number of entries.
	Admit(ctx context.Context, f *Facts, instance string) (Admission, error)
	// Bind records binding as the current fingerprint of instance. If another
	// fingerprint was recorded, it atomically creates (and returns) a revoke
	// entry for tokens of that instance bound to the old fingerprint
	// (selector "upstream=U,sub=S,bnd=OLD"), actor "runtime-change".
	Bind(ctx context.Context, instance string, f *Facts, ttl time.Duration) (*Entry, error)
	// Revoked returns the active revoke entry that invalidates a token with these
	// facts, or nil. O(1) round trips whatever the number of entries.
	Revoked(ctx context.Context, f *Facts) (*Entry, error)
	// Create assigns ID and Created; durable before it returns. It canonicalises
	// the selector and refuses (ErrInvalid) one naming iss or that cannot be
	// indexed. A revoke without Expires lasts the store's RevokeTTL (at least the
	// tokens' max TTL); a block without Expires is open-ended.
	//
	// Created is the store's clock plus a grace (1 s or more), and Create returns
	// before the store's clock reaches it: every token admitted before Create
	// returned has iat <= Created, so a revoke invalidates every matching token
	// issued before it was acknowledged (and those issued within the grace after).
	Create(ctx context.Context, e Entry) (Entry, error)
	// Lift ends entry id; ErrNotFound if the store does not know it.
	Lift(ctx context.Context, id, actor, reason string) (Entry, error)
	// List returns the active entries, or every retained one with includeInactive.
	List(ctx context.Context, includeInactive bool) ([]Entry, error)
	// Events returns feed events after cursor ("" = from the oldest retained),
	// and the cursor of the last one. ErrCursorExpired when cursor is older than
	// what the feed retains (the client must take a new snapshot).
	Events(ctx context.Context, cursor string, limit int) ([]Event, string, error)
	// Snapshot returns every active entry and the cursor the feed is at.
	Snapshot(ctx context.Context) ([]Entry, string, error)
	// Wait blocks until an event after cursor may exist or ctx ends (pub/sub or
	// blocking read; spurious wake-ups allowed).
	Wait(ctx context.Context, cursor string) error
	// Claim records key as used until the given time and reports whether this
	// call was the first to do so (fresh); false means key is already recorded
	// and has not expired: a replay. It is how one-time credentials are refused
	// the second time (a subject token from an upstream marked one_time, a
	// client assertion's jti). The record is durable before Claim returns (a
	// synced write; on Redis one atomic SET NX, acknowledged by a replica when
	// the store confirms writes). key is at most MaxClaimKeyLen bytes; until is
	// in the future and at most MaxClaimTTL away (ErrInvalid otherwise).
	Claim(ctx context.Context, key string, until time.Time) (fresh bool, err error)
	// Ping checks that the store is reachable and usable (readiness).
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// Admission is Admit's answer when issuance may proceed.
type Admission struct {
	// IssuedAt is the iat to give the token: the store's clock truncated to the
	// second, never later than the caller's clock.
	IssuedAt time.Time
	// Binding is the fingerprint last recorded for the instance by Bind, "" if none.
	Binding string
}

// Actor of the revoke entries Bind creates.
const ActorRuntimeChange = "runtime-change"

// Limits on the strings a store accepts (ErrInvalid beyond them).
const (
	MaxReasonLen   = 1024 // bytes of a reason
	MaxActorLen    = 256  // bytes of an actor
	MaxInstanceLen = 1024 // bytes of an instance name
	MaxIDLen       = 64   // bytes of an entry ID
	MaxClaimKeyLen = 1024 // bytes of a Claim key
)

// MaxClaimTTL bounds how long a Claim is remembered: one-time credentials are
// short-lived, and a longer claim only grows the store.
const MaxClaimTTL = 24 * time.Hour

var (
	// ErrBlocked is wrapped by Admit when an active block matches.
	ErrBlocked = errors.New("issuance blocked")
	// ErrInvalid is wrapped for arguments a store refuses.
	ErrInvalid = errors.New("invalid revocation argument")
	// ErrCursorExpired is returned by Events (and Wait) for a cursor older than the
	// feed retains, or unknown to it: take a new Snapshot.
	ErrCursorExpired = errors.New("revocation feed cursor expired")
	// ErrNotFound is returned by Lift for an unknown (or no longer retained) entry.
	ErrNotFound = errors.New("revocation entry not found")
)

// BlockedError is Admit's error when a block matches; errors.Is(err, ErrBlocked)
// holds. The entry is for the log and audit event, not for the client.
type BlockedError struct {
	Entry Entry
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("revocation: %s by entry %s: %s", ErrBlocked, e.Entry.ID, e.Entry.Reason)
}

// Unwrap makes errors.Is(err, ErrBlocked) hold.
func (e *BlockedError) Unwrap() error { return ErrBlocked }

func invalid(format string, args ...any) error {
	return fmt.Errorf("revocation: %w: "+format, append([]any{ErrInvalid}, args...)...)
}
