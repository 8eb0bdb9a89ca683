package revocation

import (
	"context"
	"errors"
	"time"
)

// Identity is a store's identity record, written inside the store when it is
// initialised (and again when an operator accepts a loss). Whoever uses the store
// remembers it outside the store too, so that a store that lost its data (a
// truncated file, a flushed or restarted-empty Redis) can be told from a new one:
// a new store has no identity and nobody remembers one; a lost store has none,
// or another, while someone remembers one.
type Identity struct {
	// ID is random (128 bits, hex).
	ID string `json:"id"`
	// Created is when the identity was written, for the logs.
	Created time.Time `json:"created"`
	// Accepted marks an identity written by an operator's acknowledgement of a
	// loss (sts revocation-store accept-loss): whoever remembered another one
	// adopts it.
	Accepted bool `json:"accepted,omitempty"`
}

// Identified is implemented by the stores that keep an identity record and can
// prove that they can record revocations (both backends).
type Identified interface {
	// Identity returns the store's identity record; found is false when the store
	// has none (new, or emptied).
	Identity(ctx context.Context) (id Identity, found bool, err error)
	// SetIdentity writes the identity record (replacing any), durably and
	// confirmed like any write.
	SetIdentity(ctx context.Context, id Identity) error
	// CreateIdentity writes id unless the store already has an identity, in
	// one atomic step (replicas initialising a new store at once agree), and
	// returns the identity in force.
	CreateIdentity(ctx context.Context, id Identity) (Identity, error)
	// ProbeWrite makes a small write confirmed exactly as a revocation is (fsync;
	// on Redis with replicas, WAIT for a replica): an error means a revocation
	// could not be recorded now.
	ProbeWrite(ctx context.Context) error
}

// Health is what a guarded store reports for the metrics.
type Health struct {
	// Lost is true while the store is known to have lost its data (or to be
	// another store), until an operator accepts the loss.
	Lost bool
	// Writable is true when the last write probe was confirmed.
	Writable bool
}

// ErrStoreLost is returned by every operation of a guarded store whose data was
// lost: it does not have the identity it had (see Identity). Operations resume
// when an operator accepts the loss.
var ErrStoreLost = errors.New("revocation store lost its data")

// ErrNotWritable is returned by a guarded store's Ping while it cannot confirm
// writes: revocations cannot be recorded.
var ErrNotWritable = errors.New("revocation store cannot record revocations")
