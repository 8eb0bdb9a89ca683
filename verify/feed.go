package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// Feed bounds.
const (
	snapshotTimeout = 30 * time.Second
	maxSnapshot     = 64 << 20 // about 200,000 entries
	maxErrorBody    = 4 << 10
	// clockSkewWarn: a larger difference between the STS's clock (snapshot `now`)
	// and ours is logged, since entry expiries are judged by our clock.
	clockSkewWarn = 30 * time.Second
)

// errResync ends a stream whose content cannot be applied incrementally; the next
// attempt starts from a new snapshot.
var errResync = errors.New("resynchronizing from a snapshot")

// feed is the local copy of the STS's revocation feed: the active revoke entries
// and the cursor they are current to, kept in sync by run.
type feed struct {
	snapshotURL string
	streamURL   string
	client      *http.Client
	token       func(context.Context) (string, error)
	now         func() time.Time
	log         *slog.Logger
	maxStale    time.Duration
	leeway      time.Duration
	minBackoff  time.Duration
	maxBackoff  time.Duration
	idle        time.Duration

	syncedCh   chan struct{} // closed at the first snapshot
	syncedOnce sync.Once

	mu          sync.RWMutex
	index       *revocation.Index // active revoke entries (blocks are not kept)
	cursor      string
	synced      bool
	lastContact time.Time
	lastErr     error
}

func newFeed(cfg Config) *feed {
	base := strings.TrimSuffix(cfg.Issuer, "/")
	// The stream is long-lived: no total timeout (an idle watchdog instead), and no
	// redirects, so that the credential goes to the issuer only.
	client := *cfg.HTTPClient
	client.Timeout = 0
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &feed{
		snapshotURL: base + revocation.FeedSnapshotPath,
		streamURL:   base + revocation.FeedStreamPath,
		client:      &client,
		token:       cfg.FeedToken,
		now:         cfg.Now,
		log:         cfg.Logger,
		maxStale:    cfg.MaxStale,
		leeway:      cfg.Leeway,
		minBackoff:  cfg.minBackoff,
		maxBackoff:  cfg.maxBackoff,
		idle:        cfg.streamIdle,
		syncedCh:    make(chan struct{}),
		index:       revocation.NewIndex(),
	}
}

// run keeps the copy in sync until ctx ends: a snapshot, then the stream from its
// cursor; on a stream end it resumes from the last event id, on 410 (or content it
// cannot apply) it takes a new snapshot, and between attempts it backs off
// exponentially with jitter, from minBackoff up to maxBackoff.
func (f *feed) run(ctx context.Context) {
	needSnapshot := true
	attempt := 0
	for {
		var err error
		progressed := false
		if needSnapshot {
			if err = f.snapshot(ctx); err == nil {
				needSnapshot = false
			}
		}
		if err == nil {
			progressed, err = f.stream(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, revocation.ErrCursorExpired) || errors.Is(err, errResync) {
			needSnapshot = true
		}
		if progressed {
			attempt = 0
		}
		d := backoff(f.minBackoff, f.maxBackoff, attempt)
		attempt++
		f.fail(err)
		level := slog.LevelWarn
		if errors.Is(err, revocation.ErrCursorExpired) || errors.Is(err, io.EOF) {
			level = slog.LevelInfo // routine: retention passed, or the STS ended the stream
		}
		f.log.LogAttrs(ctx, level, "verify: revocation feed interrupted",
			slog.String(logError, err.Error()), slog.Bool("resnapshot", needSnapshot), slog.Duration(logBackoff, d))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff is min·2^attempt capped at max, jittered uniformly over its upper half.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := hi
	if attempt < 30 {
		if s := lo << attempt; s > 0 && s < hi {
			d = s
		}
	}
	return d/2 + rand.N(d/2+1)
}

// snapshot replaces the copy with GET /revocations.
func (f *feed) snapshot(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	resp, err := f.get(ctx, f.snapshotURL, "application/json", "")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("snapshot: %w", statusError(resp))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSnapshot+1))
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if len(body) > maxSnapshot {
		return fmt.Errorf("snapshot: over %d bytes", maxSnapshot)
	}
	var doc revocation.FeedSnapshot
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if doc.Cursor == nil || !revocation.ValidCursor(*doc.Cursor) {
		return errors.New("snapshot: missing or malformed cursor")
	}
	index := revocation.NewIndex()
	now := f.now()
	for _, raw := range doc.Entries {
		if err := applyEntry(index, revocation.EventCreated, raw, now.Add(-f.leeway)); err != nil {
			// Fail closed: an entry we cannot read might revoke tokens we accept.
			return fmt.Errorf("snapshot: %w", err)
		}
	}
	if doc.Now > 0 {
		if skew := now.Sub(time.UnixMilli(doc.Now)).Abs(); skew > clockSkewWarn {
			f.log.LogAttrs(ctx, slog.LevelWarn, "verify: clock differs from the STS's; revocation entries expire by this clock",
				slog.Duration("skew", skew))
		}
	}

	f.mu.Lock()
	f.index = index
	f.cursor = *doc.Cursor
	f.synced = true
	f.lastContact = now
	f.lastErr = nil
	f.mu.Unlock()
	f.syncedOnce.Do(func() { close(f.syncedCh) })
	f.log.LogAttrs(ctx, slog.LevelDebug, "verify: revocation snapshot applied",
		slog.String(logCursor, *doc.Cursor), slog.Int("entries", index.Len()))
	return nil
}

// stream follows GET /revocations/stream from the current cursor until it ends.
// progressed reports whether any event (heartbeats included) was applied.
func (f *feed) stream(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.mu.RLock()
	cursor := f.cursor
	f.mu.RUnlock()

	// Idle watchdog, from the request on: the STS answers at once and then sends
	// a heartbeat every revocation.HeartbeatInterval; a connection silent for longer than idle is dead (a
	// half-open TCP connection would never say so).
	idle := time.AfterFunc(f.idle, cancel)
	defer idle.Stop()

	u := f.streamURL
	if cursor != "" {
		u += "?" + revocation.CursorParam + "=" + url.QueryEscape(cursor)
	}
	resp, err := f.get(ctx, u, revocation.StreamContentType, cursor)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("no answer within %s", f.idle)
		}
		return false, fmt.Errorf("stream: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusGone:
		err := statusError(resp)
		return false, fmt.Errorf("stream: %w (%w)", revocation.ErrCursorExpired, err)
	case resp.StatusCode != http.StatusOK:
		return false, fmt.Errorf("stream: %w", statusError(resp))
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != revocation.StreamContentType {
		return false, fmt.Errorf("stream: content type %q is not %s", resp.Header.Get("Content-Type"), revocation.StreamContentType)
	}

	idle.Reset(f.idle)
	r := newSSEReader(resp.Body, maxSSELine, maxSSEData)
	for {
		ev, err := r.Next()
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("no event or heartbeat for %s", f.idle)
			}
			return progressed, fmt.Errorf("stream: %w", err)
		}
		idle.Reset(f.idle)
		if err := f.apply(ev); err != nil {
			return progressed, fmt.Errorf("stream: %w", err)
		}
		progressed = true
	}
}

// apply applies one stream event under the lock, advancing the cursor with it.
func (f *feed) apply(ev sseEvent) error {
	now := f.now()
	switch ev.Type {
	case revocation.EventHeartbeat:
		f.mu.Lock()
		defer f.mu.Unlock()
		f.contact(now)
		f.index.Prune(now.Add(-f.leeway))
		return nil
	case revocation.EventCreated, revocation.EventLifted:
		if ev.ID == "" || !revocation.ValidCursor(ev.ID) {
			return fmt.Errorf("%w: %s event with a malformed id", errResync, ev.Type)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := applyEntry(f.index, ev.Type, ev.Data, now.Add(-f.leeway)); err != nil {
			return fmt.Errorf("%w: %s event %s: %w", errResync, ev.Type, ev.ID, err)
		}
		f.cursor = ev.ID
		f.contact(now)
		return nil
	default:
		f.mu.RLock()
		moved := ev.ID != f.cursor
		f.mu.RUnlock()
		if moved {
			// An event the contract does not define moved the feed: a snapshot
			// reflects whatever it did.
			return fmt.Errorf("%w: unknown event type %q", errResync, ev.Type)
		}
		return nil
	}
}

// applyEntry applies one ENTRY of a snapshot (typ created) or an event to x: an
// active revoke entry is put (its selector parsed and indexed once); a lifted,
// expired or block entry is removed, blocks being none of a verifier's business
// (they stop issuance, not existing tokens). An error means the entry cannot be
// applied: an ENTRY that does not decode, has no id, or a revoke whose selector
// does not parse.
func applyEntry(x *revocation.Index, typ string, data []byte, now time.Time) error {
	var e revocation.Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return err
	}
	if e.ID == "" {
		return errors.New("entry without id")
	}
	if typ == revocation.EventLifted || e.Kind != revocation.KindRevoke || !e.Active(now) {
		x.Remove(e.ID)
		return nil
	}
	return x.Put(e)
}

// contact records that the STS was heard from; f.mu is held.
func (f *feed) contact(now time.Time) {
	f.lastContact = now
	f.lastErr = nil
}

func (f *feed) fail(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

// CheckRevocation implements RevocationSource: a wrapped ErrRevoked when an active
// revoke entry of the copy invalidates a token with facts, else a wrapped ErrStale
// when the copy cannot be trusted, else nil.
func (f *feed) CheckRevocation(facts *revocation.Facts, now time.Time) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	// Entries are judged with the leeway tokens get: an entry expires when every
	// token it covers has expired, and a token is accepted up to Leeway past exp.
	if e := f.index.Revoked(facts, now.Add(-f.leeway)); e != nil {
		return fmt.Errorf("%w: entry %s (%s)", ErrRevoked, e.ID, e.Selector)
	}
	if !f.synced {
		if f.lastErr != nil {
			return fmt.Errorf("%w: no revocation snapshot yet (%v)", ErrStale, f.lastErr)
		}
		return fmt.Errorf("%w: no revocation snapshot yet", ErrStale)
	}
	if age := now.Sub(f.lastContact); age > f.maxStale {
		if f.lastErr != nil {
			return fmt.Errorf("%w: nothing from the STS for %s (%v)", ErrStale, age.Round(time.Second), f.lastErr)
		}
		return fmt.Errorf("%w: nothing from the STS for %s", ErrStale, age.Round(time.Second))
	}
	return nil
}

func (f *feed) status(now time.Time) Status {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return Status{
		Feed:        true,
		Synced:      f.synced,
		Stale:       !f.synced || now.Sub(f.lastContact) > f.maxStale,
		Cursor:      f.cursor,
		Entries:     f.index.Len(),
		LastContact: f.lastContact,
		LastError:   f.lastErr,
	}
}

// get sends an authenticated GET; lastEventID is sent as Last-Event-ID when set.
func (f *feed) get(ctx context.Context, u, accept, lastEventID string) (*http.Response, error) {
	tctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	tok, err := f.token(tctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("feed credential: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("Cache-Control", "no-store")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if lastEventID != "" {
		req.Header.Set(revocation.LastEventIDHeader, lastEventID)
	}
	return f.client.Do(req)
}

// statusError describes a non-success answer with its OAuth error code if any.
func statusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e struct {
		Code string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Code != "" && len(e.Code) <= 64 {
		return fmt.Errorf("%s answered %s (%s)", resp.Request.URL.Path, resp.Status, e.Code)
	}
	return fmt.Errorf("%s answered %s", resp.Request.URL.Path, resp.Status)
}
