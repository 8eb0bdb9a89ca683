package revocation

import (
	"encoding/json"
	"time"
)

// The wire protocol of the revocation feed the STS serves and verifiers follow
// (docs/revocation-design.md, "HTTP"), defined once for both sides: issuer/feed.go
// speaks it, verify/feed.go listens to it.
//
//   - GET FeedSnapshotPath: {"cursor":C,"now":MS,"entries":[ENTRY...]}, every active
//     entry and the cursor they are current to.
//   - GET FeedStreamPath?cursor=C (CursorParam), or with Last-Event-ID: C
//     (LastEventIDHeader, which wins when both are sent): Server-Sent Events of
//     StreamContentType after C. Each change is an event with `id:` its cursor,
//     `event:` EventCreated or EventLifted and `data:` the ENTRY; an event of type
//     EventHeartbeat with `data: {"now":MS}` follows every batch and comes at least
//     every HeartbeatInterval, so a verifier bounds its staleness. A cursor that is
//     no longer retained (or not understood) is answered 410 with the JSON error
//     code ErrorCursorExpired: take a new snapshot.
//   - Cursors are opaque to verifiers: ValidCursor says what a verifier accepts
//     and may send back in a header; the empty cursor is a feed without events.
const (
	FeedSnapshotPath = "/revocations"
	FeedStreamPath   = "/revocations/stream"

	// CursorParam is the stream's query parameter naming the cursor to follow
	// from; LastEventIDHeader is the SSE reconnection header, which wins over it.
	CursorParam       = "cursor"
	LastEventIDHeader = "Last-Event-ID"

	// StreamContentType is the media type of the stream.
	StreamContentType = "text/event-stream"

	// EventHeartbeat is the stream's liveness event (EventCreated and EventLifted,
	// the change events, are in entry.go).
	EventHeartbeat = "heartbeat"

	// ErrorCursorExpired is the error code of the stream's 410 answer to a cursor
	// the store no longer retains (ErrCursorExpired).
	ErrorCursorExpired = "cursor_expired"

	// HeartbeatInterval is the longest time the stream goes without an event.
	HeartbeatInterval = 5 * time.Second

	// MaxCursorLength is the longest cursor a verifier accepts.
	MaxCursorLength = 1024
)

// ValidCursor reports whether c is a cursor a verifier accepts and may send back
// in a header: at most MaxCursorLength bytes of visible ASCII (no space, no
// control character). The empty cursor (a feed without events) is valid.
func ValidCursor(c string) bool {
	if len(c) > MaxCursorLength {
		return false
	}
	for i := 0; i < len(c); i++ {
		if c[i] <= ' ' || c[i] > '~' {
			return false
		}
	}
	return true
}

// FeedSnapshot is the body of GET FeedSnapshotPath. Cursor is a pointer so that a
// verifier tells a missing cursor from the empty one.
type FeedSnapshot struct {
	// Cursor is the feed position the entries are current to.
	Cursor *string `json:"cursor"`
	// Now is the STS's clock in Unix milliseconds (verifiers compare their own).
	Now int64 `json:"now"`
	// Entries are the active entries, each as an entry's JSON.
	Entries []json.RawMessage `json:"entries"`
}
