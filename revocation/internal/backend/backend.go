// Package backend holds what the revocation stores share: argument checks, entry
// IDs, anchor hashing and defaults. It is internal to revocation's backends.
package backend

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/safeconduct/safeconduct/revocation"
)

const (
	// DefaultRevokeTTL is the lifetime of a revoke created without Expires: it must
	// be at least the STS's tokens.max_ttl, so every token it can match has expired
	// when it goes.
	DefaultRevokeTTL = 24 * time.Hour
	// DefaultGrace is added to the store's clock to make Created (see Grace).
	DefaultGrace = time.Second
	// LiftedRetention is how long a lifted entry stays listed (List with inactive).
	LiftedRetention = 24 * time.Hour
	// BindReason is the reason of the revoke entries Bind creates.
	BindReason = "binding fingerprint of the workload instance changed"
)

// Invalid wraps revocation.ErrInvalid.
func Invalid(format string, args ...any) error {
	return fmt.Errorf("revocation: %w: "+format, append([]any{revocation.ErrInvalid}, args...)...)
}

// Prepared is a checked entry to create, and its parsed selector.
type Prepared struct {
	Entry revocation.Entry // ID assigned, selector canonical; Created and Expires not yet
	// TTL, when Expires is zero and the kind is revoke, is how long after Created
	// the entry lasts; zero otherwise.
	TTL      time.Duration
	Selector revocation.Selector
	Anchor   string
}

// PrepareCreate checks e for Store.Create against the local clock now, assigns an
// ID, canonicalises the selector and resolves a missing revoke expiry to
// revokeTTL after Created. The store then sets Created (and Expires from TTL).
func PrepareCreate(e revocation.Entry, now time.Time, revokeTTL time.Duration) (Prepared, error) {
	if e.Kind != revocation.KindRevoke && e.Kind != revocation.KindBlock {
		return Prepared{}, Invalid("kind %q is not revoke or block", e.Kind)
	}
	sel, err := revocation.ParseSelector(e.Selector)
	if err != nil {
		return Prepared{}, err
	}
	if _, ok := sel.Value(revocation.KeyIssuer); ok {
		return Prepared{}, Invalid("selector names iss: resolve it to upstream first")
	}
	if err := sel.CheckKind(e.Kind); err != nil {
		return Prepared{}, err // a block with a kid term
	}
	anchor := sel.Anchor()
	if anchor == "" {
		return Prepared{}, Invalid("selector %q cannot be indexed", e.Selector)
	}
	if err := CheckText("reason", e.Reason, revocation.MaxReasonLen); err != nil {
		return Prepared{}, err
	}
	if err := CheckText("actor", e.Actor, revocation.MaxActorLen); err != nil {
		return Prepared{}, err
	}
	p := Prepared{Selector: sel, Anchor: anchor}
	if !e.Expires.IsZero() && !e.Expires.After(now) {
		return Prepared{}, Invalid("expires %s is not in the future", e.Expires.UTC().Format(time.RFC3339))
	}
	if e.Expires.IsZero() && e.Kind == revocation.KindRevoke {
		if revokeTTL <= 0 {
			revokeTTL = DefaultRevokeTTL
		}
		p.TTL = revokeTTL
	}
	p.Entry = revocation.Entry{
		ID: NewID(), Kind: e.Kind, Selector: sel.String(), Reason: e.Reason, Actor: e.Actor,
		Expires: e.Expires,
	}
	return p, nil
}

// CheckText accepts a non-empty string of at most max bytes without control
// characters.
func CheckText(what, s string, max int) error {
	switch {
	case s == "":
		return Invalid("empty %s", what)
	case len(s) > max:
		return Invalid("%s longer than %d bytes", what, max)
	case strings.ContainsFunc(s, unicode.IsControl):
		return Invalid("%s contains a control character", what)
	}
	return nil
}

// CheckID accepts an entry ID as NewID makes them (or similar): 1 to MaxIDLen
// ASCII letters, digits, '-' and '_'.
func CheckID(id string) error {
	if id == "" || len(id) > revocation.MaxIDLen {
		return Invalid("entry ID must have 1 to %d characters", revocation.MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return Invalid("entry ID %q: only letters, digits, - and _", id)
		}
	}
	return nil
}

// CheckInstance accepts a non-empty instance of at most MaxInstanceLen bytes.
func CheckInstance(instance string) error {
	if instance == "" || len(instance) > revocation.MaxInstanceLen {
		return Invalid("instance must have 1 to %d bytes", revocation.MaxInstanceLen)
	}
	return nil
}

// CheckFacts refuses a nil Facts and facts with more than MaxAnchors anchors
// (refusing fails closed; skipping anchors would not). The anchors are counted,
// not built: a store that needs them calls f.Anchors (or f.EachAnchor).
func CheckFacts(f *revocation.Facts) error {
	if f == nil {
		return Invalid("nil facts")
	}
	if n := f.AnchorCount(); n > MaxAnchors {
		return Invalid("facts have %d anchors, more than %d", n, MaxAnchors)
	}
	return nil
}

// MaxAnchors bounds the buckets one check reads.
const MaxAnchors = 256

// BindSelector returns the selector of the revoke Bind fires for facts f and the
// old fingerprint.
func BindSelector(f *revocation.Facts, old string) (string, error) {
	sel, err := revocation.NewSelector(revocation.KeyUpstream, f.Upstream, revocation.KeySubject, f.Subject, revocation.KeyBinding, old)
	if err != nil {
		return "", err
	}
	return sel.String(), nil
}

// CheckBind checks Bind's arguments.
func CheckBind(instance string, f *revocation.Facts, ttl time.Duration) error {
	if err := CheckInstance(instance); err != nil {
		return err
	}
	switch {
	case f == nil:
		return Invalid("nil facts")
	case f.Upstream == "" || f.Subject == "":
		return Invalid("Bind needs the upstream and subject")
	case f.Binding == "":
		return Invalid("Bind needs a binding fingerprint")
	case ttl <= 0:
		return Invalid("Bind needs a positive ttl")
	case len(f.Binding) > 64 || strings.ContainsFunc(f.Binding, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_')
	}):
		return Invalid("binding fingerprint must be at most 64 base64url characters (see revocation.Fingerprint)")
	}
	// The fired selector must be storable whatever the old fingerprint: check it
	// now with the new one.
	if _, err := BindSelector(f, f.Binding); err != nil {
		return err
	}
	return nil
}

// NewID returns a random entry ID (26 characters, base32).
func NewID() string { return rand.Text() }

// Hash returns a short hex digest of s (the first 16 bytes of SHA-256), for keys
// that must not carry untrusted text.
func Hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// IssuedAt is Admit's iat: the earlier of the store's clock and the caller's,
// truncated to the second.
func IssuedAt(store, local time.Time) time.Time {
	t := store
	if local.Before(t) {
		t = local
	}
	return time.Unix(t.Unix(), 0)
}

// CheckClaim checks Claim's arguments against the store's clock and returns how
// long the claim lasts (at least a millisecond). The key may hold any bytes: the
// stores only ever keep its Hash.
func CheckClaim(key string, until, now time.Time) (time.Duration, error) {
	if key == "" || len(key) > revocation.MaxClaimKeyLen {
		return 0, Invalid("claim key must have 1 to %d bytes", revocation.MaxClaimKeyLen)
	}
	ttl := until.Sub(now)
	switch {
	case until.IsZero():
		return 0, Invalid("claim without an expiry")
	case ttl > revocation.MaxClaimTTL:
		return 0, Invalid("claim lasts more than %s", revocation.MaxClaimTTL)
	case ttl < time.Millisecond:
		// Already expired: nothing to remember, and nothing a replay could use.
		return time.Millisecond, nil
	}
	return ttl, nil
}
