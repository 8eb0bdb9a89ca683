package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/safeconduct/safeconduct/policy"
	"github.com/safeconduct/safeconduct/revocation"
)

// Feed timing: heartbeats let verifiers bound their staleness; a stream lives at
// most streamLifetime, after which the client resumes from its cursor.
const (
	heartbeatInterval = revocation.HeartbeatInterval
	streamLifetime    = 10 * time.Minute
	feedBatch         = 500
)

// handleSnapshot is GET /revocations: every active entry and the feed cursor they
// are current to.
func (s *adminService) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authorize(w, r, policy.ActionReadFeed, nil); !ok {
		return
	}
	entries, cursor, err := s.store.Snapshot(r.Context())
	if err != nil {
		writeAdminError(w, errStoreDown)
		return
	}
	out := make([]json.RawMessage, len(entries))
	for i, e := range entries {
		out[i] = entryJSON(e)
	}
	writeJSON(w, http.StatusOK, revocation.FeedSnapshot{Cursor: &cursor, Now: s.now().UnixMilli(), Entries: out})
}

// handleStream is GET /revocations/stream: Server-Sent Events from a cursor
// (?cursor= or Last-Event-ID), with heartbeats. An expired cursor is 410: the client
// takes a new snapshot.
func (s *adminService) handleStream(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authorize(w, r, policy.ActionReadFeed, nil); !ok {
		return
	}
	releaseSlot(r.Context()) // the in-flight bound is for verifying, not streaming
	cursor := r.URL.Query().Get(revocation.CursorParam)
	if id := r.Header.Get(revocation.LastEventIDHeader); id != "" {
		cursor = id
	}
	// The stream ends when the server shuts down (the client resumes from its
	// cursor elsewhere or after the restart): it must not hold up the drain.
	ctx, cancel := untilShutdown(r.Context())
	defer cancel()
	events, next, err := s.store.Events(ctx, cursor, feedBatch)
	if errors.Is(err, revocation.ErrCursorExpired) || errors.Is(err, revocation.ErrInvalid) {
		writeAdminError(w, &adminError{http.StatusGone, revocation.ErrorCursorExpired, "the cursor is no longer retained; take a new snapshot"})
		return
	}
	if err != nil {
		writeAdminError(w, errStoreDown)
		return
	}
	// The stream outlives the server's WriteTimeout: lift it for this response.
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		writeAdminError(w, &adminError{http.StatusInternalServerError, "server_error", "streaming unsupported"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", revocation.StreamContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s.metrics.feedSubscribers.Inc()
	defer s.metrics.feedSubscribers.Dec()

	deadline := time.Now().Add(streamLifetime)
	if next != "" {
		cursor = next
	}
	send := func() error {
		for _, ev := range events {
			if _, err := fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", ev.Cursor, ev.Type, entryJSON(ev.Entry)); err != nil {
				return err
			}
			s.metrics.feedEventsSent.Inc()
			// Lag of created events only: an entry records no time of its lifting.
			if ev.Type == revocation.EventCreated {
				s.metrics.observeFeedLag(s.now(), ev.Entry.Created)
			}
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: {\"now\":%d}\n\n", revocation.EventHeartbeat, s.now().UnixMilli()); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send(); err != nil {
		return
	}
	for time.Now().Before(deadline) {
		// Wait returns on a new event or after a heartbeat interval; either way the
		// client gets what is new and a heartbeat.
		wctx, cancel := context.WithTimeout(ctx, heartbeatInterval)
		_ = s.store.Wait(wctx, cursor)
		cancel()
		if ctx.Err() != nil {
			return
		}
		events, next, err = s.store.Events(ctx, cursor, feedBatch)
		if err != nil {
			return // the client reconnects from its last id
		}
		if next != "" {
			cursor = next
		}
		if err := send(); err != nil {
			return
		}
	}
}
