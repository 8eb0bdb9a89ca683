package revocation

import (
	"encoding/json"
	"fmt"
	"time"
)

// Kind is the kind of an entry.
type Kind string

const (
	// KindRevoke invalidates every matching token issued at or before the entry's
	// Created (iat compared in whole seconds); with a kid term in its selector,
	// every matching token whatever its iat.
	KindRevoke Kind = "revoke"
	// KindBlock refuses new tokens to matching workloads while the entry is active.
	KindBlock Kind = "block"
)

// Event types.
const (
	EventCreated = "created"
	EventLifted  = "lifted"
)

// Entry is a revocation or a block.
type Entry struct {
	// ID is assigned by Store.Create.
	ID   string
	Kind Kind
	// Selector is the canonical text of the entry's selector.
	Selector string
	Reason   string
	Actor    string
	// Created is assigned by the store from its clock (see Store.Create); a revoke
	// invalidates tokens whose iat, in whole seconds, is not after Created.
	Created time.Time
	// Expires ends the entry; zero means never (blocks only). Times are kept to the
	// millisecond.
	Expires time.Time
	// Lifted is set once the entry was lifted (Store.Lift).
	Lifted bool
}

// Event is one change in a store's feed.
type Event struct {
	// Cursor identifies the event; Events(ctx, Cursor, n) continues after it.
	Cursor string
	// Type is EventCreated or EventLifted.
	Type  string
	Entry Entry
}

// Active reports whether e is in force at now: not lifted and not expired.
func (e Entry) Active(now time.Time) bool {
	return !e.Lifted && (e.Expires.IsZero() || now.Before(e.Expires))
}

// Invalidates reports whether e invalidates a token with facts f at now: e is an
// active revoke, its selector matches f, and f.IssuedAt truncated to the second is
// not after Created, unless the selector has a kid term, which invalidates every
// token signed by that key whatever its iat. An entry whose selector does not parse
// invalidates every token it is asked about (stores never hold one; a corrupt copy
// fails closed).
//
// Invalidates parses the selector on every call; Index keeps parsed selectors.
func (e Entry) Invalidates(f *Facts, now time.Time) bool {
	if e.Kind != KindRevoke || !e.Active(now) || f == nil {
		return false
	}
	sel, err := ParseSelector(e.Selector)
	if err != nil {
		return true
	}
	return sel.Match(f) && (sel.anyIssuedAt() || issuedBy(f.IssuedAt, e.Created))
}

// Blocks reports whether e refuses issuance to a workload with facts f at now: e
// is an active block and its selector matches f. A selector that does not parse
// blocks everything (fail closed).
func (e Entry) Blocks(f *Facts, now time.Time) bool {
	if e.Kind != KindBlock || !e.Active(now) || f == nil {
		return false
	}
	sel, err := ParseSelector(e.Selector)
	if err != nil {
		return true
	}
	return sel.Match(f)
}

// issuedBy reports whether iat, truncated to the second, is not after created.
func issuedBy(iat, created time.Time) bool {
	return !time.Unix(iat.Unix(), 0).After(created)
}

// entryJSON is the wire form: {"id","kind","selector","reason","actor",
// "created":MS,"expires":MS|0,"lifted":bool}.
type entryJSON struct {
	ID       string `json:"id"`
	Kind     Kind   `json:"kind"`
	Selector string `json:"selector"`
	Reason   string `json:"reason"`
	Actor    string `json:"actor"`
	Created  int64  `json:"created"`
	Expires  int64  `json:"expires"`
	Lifted   bool   `json:"lifted"`
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnixMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// MarshalJSON writes the wire form, times as unix milliseconds (0 for a zero time).
func (e Entry) MarshalJSON() ([]byte, error) {
	return json.Marshal(entryJSON{
		ID: e.ID, Kind: e.Kind, Selector: e.Selector, Reason: e.Reason, Actor: e.Actor,
		Created: unixMilli(e.Created), Expires: unixMilli(e.Expires), Lifted: e.Lifted,
	})
}

// UnmarshalJSON reads the wire form. It checks only the JSON types; a store or
// client validates the content (ParseSelector, Kind).
func (e *Entry) UnmarshalJSON(b []byte) error {
	var j entryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("revocation: entry: %w", err)
	}
	*e = Entry{
		ID: j.ID, Kind: j.Kind, Selector: j.Selector, Reason: j.Reason, Actor: j.Actor,
		Created: fromUnixMilli(j.Created), Expires: fromUnixMilli(j.Expires), Lifted: j.Lifted,
	}
	return nil
}
