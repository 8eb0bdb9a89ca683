// Package storeguard wraps a revocation store so that lost revocation state is
// noticed and refused instead of served as an empty list, and so that a store
// that cannot record revocations does not look healthy.
//
// The store keeps an identity record (revocation.Identity) written when it is
// initialised; the guard remembers it in memory and, when configured, in an
// identity file outside the store. It compares them at start and every Interval:
//
//   - no identity anywhere: a new store; the guard writes one and logs it;
//   - the store has the remembered identity (or the guard remembers none yet):
//     in order;
//   - the store has no identity, or another one, while one is remembered: the
//     store lost its data (a truncated or deleted file, a Redis flushed or
//     restarted empty) or was replaced. Every operation then fails with
//     revocation.ErrStoreLost, Ping included (readiness), until an operator
//     accepts the loss (AcceptLoss, behind `sts revocation-store accept-loss`).
//
// Each check also makes a write probe confirmed like a revocation (see
// revocation.Identified.ProbeWrite); while it fails Ping fails with
// revocation.ErrNotWritable.
package storeguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// AcceptCommand is the command named in the loss log line and errors.
const AcceptCommand = "sts revocation-store accept-loss --config FILE"

// Options configures New.
type Options struct {
	// Name says which store this is in logs and errors (backend and path or
	// addresses; never a credential).
	Name string
	// IdentityFile is where the identity is remembered outside the store; empty
	// means memory only (a loss is then noticed by running processes, not across
	// a restart of every one of them).
	IdentityFile string
	// Interval between checks; zero means 5 s.
	Interval time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for new identities; nil means time.Now.
	Now func() time.Time
}

// Guard is a revocation.Store that refuses every operation while the wrapped
// store is known to have lost its data.
type Guard struct {
	revocation.Store
	ids  revocation.Identified
	opts Options
	log  *slog.Logger

	// mu serialises checks and guards mem.
	mu sync.Mutex
	// mem is the identity this process verified or wrote; nil before the first
	// successful check.
	mem *revocation.Identity

	lost     atomic.Pointer[string] // the reason while lost
	verified atomic.Bool            // a check succeeded (or found the loss)
	writable atomic.Bool
	probed   atomic.Bool // a write probe ran

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ revocation.Store = (*Guard)(nil)

// New wraps st, which must implement revocation.Identified, runs the first check
// and starts the periodic ones. An unreachable store is not an error here: the
// check is retried (and every operation fails closed until it succeeds). An
// unreadable identity file is.
func New(st revocation.Store, opts Options) (*Guard, error) {
	ids, ok := st.(revocation.Identified)
	if !ok {
		return nil, fmt.Errorf("storeguard: %T keeps no identity", st)
	}
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if _, err := readIdentityFile(opts.IdentityFile); err != nil {
		return nil, err
	}
	g := &Guard{Store: st, ids: ids, opts: opts, log: opts.Logger.With(slog.String("store", opts.Name)),
		stop: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	g.Check(ctx)
	cancel()
	go g.loop()
	return g, nil
}

func (g *Guard) loop() {
	defer close(g.done)
	t := time.NewTicker(g.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), g.opts.Interval)
			g.Check(ctx)
			cancel()
		}
	}
}

// Check compares the identities and probes a write now (the loop does it every
// Interval).
func (g *Guard) Check(ctx context.Context) {
	if err := g.checkIdentity(ctx); err != nil {
		g.log.WarnContext(ctx, "revocation store: identity check failed", slog.String("error", err.Error()))
	}
	err := g.ids.ProbeWrite(ctx)
	was := g.writable.Swap(err == nil)
	first := !g.probed.Swap(true)
	switch {
	case err != nil && (was || first):
		g.log.WarnContext(ctx, "revocation store cannot record revocations: revokes fail (503) and /readyz fails until writes are confirmed again",
			slog.String("error", err.Error()))
	case err == nil && !was && !first:
		g.log.InfoContext(ctx, "revocation store records revocations again")
	}
}

// Health reports the state for the metrics.
func (g *Guard) Health() revocation.Health {
	return revocation.Health{Lost: g.lost.Load() != nil, Writable: g.writable.Load()}
}

func newIdentity(now time.Time) (revocation.Identity, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return revocation.Identity{}, err
	}
	return revocation.Identity{ID: hex.EncodeToString(b), Created: now.UTC().Truncate(time.Second)}, nil
}

func (g *Guard) checkIdentity(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, found, err := g.ids.Identity(ctx)
	if err != nil {
		return err
	}
	file, err := readIdentityFile(g.opts.IdentityFile)
	if err != nil {
		g.setLost(ctx, err.Error(), nil, nil)
		return nil
	}
	expected := g.mem
	if expected == nil {
		expected = file
	}
	switch {
	case file != nil && file.Accepted && (g.mem == nil || file.ID != g.mem.ID):
		// The operator accepted the loss through the identity file: take the
		// store as it is, giving it the file's identity when it has none.
		if !found {
			if s, err = g.ids.CreateIdentity(ctx, revocation.Identity{ID: file.ID, Created: file.Created}); err != nil {
				return err
			}
		}
		return g.adopt(ctx, s, "revocation store loss accepted by the operator; the store's contents are in force from now on")
	case !found && expected == nil:
		id, err := newIdentity(g.opts.Now())
		if err != nil {
			return err
		}
		got, err := g.ids.CreateIdentity(ctx, id)
		if err != nil {
			return err
		}
		if got.ID != id.ID {
			return g.adopt(ctx, got, "") // another replica initialised it first
		}
		return g.adopt(ctx, got, "revocation store initialised: a new, empty store")
	case !found:
		g.setLost(ctx, "the store has no identity record: its data was deleted, truncated or flushed (or it was restarted empty)", expected, nil)
		return nil
	case expected == nil:
		return g.adopt(ctx, s, "")
	case s.ID == expected.ID:
		if g.mem == nil || g.opts.IdentityFile != "" && (file == nil || file.Accepted || file.ID != s.ID) {
			return g.adopt(ctx, s, "")
		}
		g.verified.Store(true)
		return nil
	case s.Accepted:
		return g.adopt(ctx, s, "revocation store loss accepted by an operator (accept-loss wrote a new identity); the store's contents are in force from now on")
	default:
		g.setLost(ctx, "the store has another identity: it was replaced or re-initialised", expected, &s)
		return nil
	}
}

// adopt makes id the remembered identity (memory and file) and clears a loss.
func (g *Guard) adopt(ctx context.Context, id revocation.Identity, msg string) error {
	id.Accepted = false
	if err := writeIdentityFile(g.opts.IdentityFile, id); err != nil {
		return err
	}
	if g.mem == nil && msg == "" {
		g.log.InfoContext(ctx, "revocation store identity verified", slog.String("identity", id.ID), slog.Time("identity_created", id.Created))
	}
	g.mem = &id
	g.verified.Store(true)
	if g.lost.Swap(nil) != nil && msg == "" {
		msg = "revocation store in order again"
	}
	if msg != "" {
		g.log.WarnContext(ctx, msg, slog.String("identity", id.ID), slog.Time("identity_created", id.Created))
	}
	return nil
}

func (g *Guard) setLost(ctx context.Context, reason string, expected, found *revocation.Identity) {
	g.verified.Store(true)
	if expected != nil && g.mem == nil {
		// Remember what was expected, so an acceptance is told from it.
		e := *expected
		g.mem = &e
	}
	if g.lost.Swap(&reason) != nil {
		return
	}
	attrs := []any{slog.String("reason", reason), slog.String("run", AcceptCommand)}
	if expected != nil {
		attrs = append(attrs, slog.String("expected_identity", expected.ID), slog.Time("expected_identity_created", expected.Created))
	}
	if found != nil {
		attrs = append(attrs, slog.String("found_identity", found.ID))
	}
	g.log.ErrorContext(ctx, "REVOCATION STORE LOST: refusing tokens, revocations and readiness until an operator accepts the loss", attrs...)
}

// gate fails while the store is lost, and checks first when no check has
// succeeded yet (the store was unreachable at start).
func (g *Guard) gate(ctx context.Context) error {
	if !g.verified.Load() {
		if err := g.checkIdentity(ctx); err != nil {
			return err // the store's own error: it cannot be reached
		}
	}
	if r := g.lost.Load(); r != nil {
		return fmt.Errorf("%w (%s: %s); run %s", revocation.ErrStoreLost, g.opts.Name, *r, AcceptCommand)
	}
	return nil
}

// Ping fails while the store is lost or cannot confirm writes.
func (g *Guard) Ping(ctx context.Context) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	if err := g.Store.Ping(ctx); err != nil {
		return err
	}
	if !g.writable.Load() {
		return fmt.Errorf("%w (%s): writes are not confirmed (no replica acknowledges, or the store refuses writes)", revocation.ErrNotWritable, g.opts.Name)
	}
	return nil
}

// Close stops the checks and closes the store.
func (g *Guard) Close() error {
	g.closeOnce.Do(func() { close(g.stop); <-g.done })
	return g.Store.Close()
}

func (g *Guard) Admit(ctx context.Context, f *revocation.Facts, instance string) (revocation.Admission, error) {
	if err := g.gate(ctx); err != nil {
		return revocation.Admission{}, err
	}
	return g.Store.Admit(ctx, f, instance)
}

func (g *Guard) Bind(ctx context.Context, instance string, f *revocation.Facts, ttl time.Duration) (*revocation.Entry, error) {
	if err := g.gate(ctx); err != nil {
		return nil, err
	}
	return g.Store.Bind(ctx, instance, f, ttl)
}

func (g *Guard) Revoked(ctx context.Context, f *revocation.Facts) (*revocation.Entry, error) {
	if err := g.gate(ctx); err != nil {
		return nil, err
	}
	return g.Store.Revoked(ctx, f)
}

func (g *Guard) Create(ctx context.Context, e revocation.Entry) (revocation.Entry, error) {
	if err := g.gate(ctx); err != nil {
		return revocation.Entry{}, err
	}
	return g.Store.Create(ctx, e)
}

func (g *Guard) Lift(ctx context.Context, id, actor, reason string) (revocation.Entry, error) {
	if err := g.gate(ctx); err != nil {
		return revocation.Entry{}, err
	}
	return g.Store.Lift(ctx, id, actor, reason)
}

func (g *Guard) List(ctx context.Context, includeInactive bool) ([]revocation.Entry, error) {
	if err := g.gate(ctx); err != nil {
		return nil, err
	}
	return g.Store.List(ctx, includeInactive)
}

func (g *Guard) Events(ctx context.Context, cursor string, limit int) ([]revocation.Event, string, error) {
	if err := g.gate(ctx); err != nil {
		return nil, "", err
	}
	return g.Store.Events(ctx, cursor, limit)
}

func (g *Guard) Snapshot(ctx context.Context) ([]revocation.Entry, string, error) {
	if err := g.gate(ctx); err != nil {
		return nil, "", err
	}
	return g.Store.Snapshot(ctx)
}

func (g *Guard) Wait(ctx context.Context, cursor string) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	return g.Store.Wait(ctx, cursor)
}

func (g *Guard) Claim(ctx context.Context, key string, until time.Time) (bool, error) {
	if err := g.gate(ctx); err != nil {
		return false, err
	}
	return g.Store.Claim(ctx, key, until)
}

// readIdentityFile returns nil when path is empty or the file does not exist.
func readIdentityFile(path string) (*revocation.Identity, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("revocation store identity file: %w", err)
	}
	var id revocation.Identity
	if err := json.Unmarshal(b, &id); err != nil || id.ID == "" {
		return nil, fmt.Errorf("revocation store identity file %s is unreadable: fix or remove it, then run %s", path, AcceptCommand)
	}
	return &id, nil
}

// writeIdentityFile replaces the file atomically (mode 0600, synced); a no-op
// when path is empty or the file already says id.
func writeIdentityFile(path string, id revocation.Identity) error {
	if path == "" {
		return nil
	}
	if old, err := readIdentityFile(path); err == nil && old != nil && old.ID == id.ID && old.Accepted == id.Accepted {
		return nil
	}
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("revocation store identity file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".identity-*")
	if err != nil {
		return fmt.Errorf("revocation store identity file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("revocation store identity file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("revocation store identity file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("revocation store identity file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("revocation store identity file: %w", err)
	}
	return nil
}

// AcceptLoss records an operator's acknowledgement that the store's data was
// lost: it writes a new identity marked Accepted into the identity file (when
// set) and, when st is not nil (a store the command can reach: Redis), into the
// store. Guards running against the store adopt it at their next check; a guard
// starting later adopts it at start.
func AcceptLoss(ctx context.Context, st revocation.Identified, identityFile string, now time.Time) (revocation.Identity, error) {
	id, err := newIdentity(now)
	if err != nil {
		return id, err
	}
	id.Accepted = true
	if st != nil {
		if err := st.SetIdentity(ctx, id); err != nil {
			return id, err
		}
	}
	if identityFile == "" && st == nil {
		return id, errors.New("storeguard: nowhere to record the acceptance (no identity file, no store)")
	}
	return id, writeIdentityFile(identityFile, id)
}

// errNoStatus is returned by the status list methods when the wrapped store
// keeps no status lists.
var errNoStatus = errors.New("revocation: the store keeps no status lists")

// AppendStatus implements revocation.StatusStore when the wrapped store does.
func (g *Guard) AppendStatus(ctx context.Context, list string, expires time.Time, classes map[string][]byte, records []byte, meta revocation.StatusMeta) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	ss, ok := g.Store.(revocation.StatusStore)
	if !ok {
		return errNoStatus
	}
	return ss.AppendStatus(ctx, list, expires, classes, records, meta)
}

// ReadStatus implements revocation.StatusStore when the wrapped store does.
func (g *Guard) ReadStatus(ctx context.Context, list string, offset int) ([]byte, map[string][]byte, revocation.StatusMeta, bool, error) {
	if err := g.gate(ctx); err != nil {
		return nil, nil, revocation.StatusMeta{}, false, err
	}
	ss, ok := g.Store.(revocation.StatusStore)
	if !ok {
		return nil, nil, revocation.StatusMeta{}, false, errNoStatus
	}
	return ss.ReadStatus(ctx, list, offset)
}
