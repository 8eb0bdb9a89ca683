package verify

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/safeconduct/safeconduct/internal/fakeclock"
)

// This file is a fake STS for the tests: a real TLS server with discovery, a JWKS,
// at+jwt tokens minted as the issuer does (ES256, kid = RFC 7638 thumbprint, typ
// at+jwt), and the revocation feed of docs/revocation-design.md driven by the test.

const (
	testAudience  = "https://ledger.internal"
	testFeedToken = "feed-secret"
)

// fakeClock is the clock shared by the fake STS (iat, entry creation) and the
// verifier under test.
type fakeClock = fakeclock.Clock

func newFakeClock() *fakeClock { return fakeclock.New(time.Now().Truncate(time.Second)) }

type signingKey struct {
	key *ecdsa.PrivateKey
	kid string
}

func newSigningKey(t testing.TB) signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := (&jose.JSONWebKey{Key: &k.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{key: k, kid: base64.RawURLEncoding.EncodeToString(tp)}
}

type fakeSTS struct {
	srv   *httptest.Server
	URL   string
	clock *fakeClock
	feed  *fakeFeed

	mu        sync.Mutex
	keys      []signingKey // published; keys[0] signs
	issuer    string       // what discovery says (default URL)
	jwksHits  atomic.Int64
	discovery atomic.Int64
}

func newFakeSTS(t *testing.T) *fakeSTS {
	t.Helper()
	s := &fakeSTS{clock: newFakeClock(), keys: []signingKey{newSigningKey(t)}}
	s.feed = newFakeFeed(s.clock)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		s.discovery.Add(1)
		s.mu.Lock()
		iss := s.issuer
		s.mu.Unlock()
		writeTestJSON(w, http.StatusOK, map[string]any{
			"issuer":                                iss,
			"token_endpoint":                        s.URL + "/token",
			"jwks_uri":                              s.URL + "/jwks",
			"response_types_supported":              []string{"token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		s.jwksHits.Add(1)
		s.mu.Lock()
		var set jose.JSONWebKeySet
		for _, k := range s.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.key.PublicKey, KeyID: k.kid, Algorithm: "ES256", Use: "sig"})
		}
		s.mu.Unlock()
		writeTestJSON(w, http.StatusOK, set)
	})
	mux.HandleFunc("GET /revocations", s.feed.handleSnapshot)
	mux.HandleFunc("GET /revocations/stream", s.feed.handleStream)
	s.srv = httptest.NewUnstartedServer(mux)
	s.srv.StartTLS()
	s.URL = s.srv.URL
	s.issuer = s.URL
	t.Cleanup(func() {
		s.feed.dropStreams()
		s.srv.Close()
	})
	return s
}

func writeTestJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// rotate publishes a new key that signs from now on; the old one stays published.
func (s *fakeSTS) rotate(t *testing.T) {
	k := newSigningKey(t)
	s.mu.Lock()
	s.keys = append([]signingKey{k}, s.keys...)
	s.mu.Unlock()
}

var tokenSeq atomic.Int64

// claims are what the STS mints for a workload of upstream "corp": ES256, five
// minutes, iat = nbf = now, attributes and a binding fingerprint.
func (s *fakeSTS) claims() map[string]any {
	now := s.clock.Now()
	return map[string]any{
		"iss":        s.URL,
		"sub":        "spiffe://example.org/ns/payments/sa/api",
		"aud":        testAudience,
		"exp":        now.Add(5 * time.Minute).Unix(),
		"iat":        now.Unix(),
		"nbf":        now.Unix(),
		"jti":        "jti-" + strconv.FormatInt(tokenSeq.Add(1), 10),
		"client_id":  "spiffe://example.org/ns/payments/sa/api",
		"scope":      "ledger.read ledger.write",
		"upstream":   "corp",
		"attributes": map[string]any{"namespace": "payments", "service_account": "api"},
		"bnd":        "bnd-fingerprint-1",
	}
}

// mint returns an at+jwt token for claims() after edits.
func (s *fakeSTS) mint(t testing.TB, edits ...func(map[string]any)) string {
	t.Helper()
	c := s.claims()
	for _, e := range edits {
		e(c)
	}
	s.mu.Lock()
	k := s.keys[0]
	s.mu.Unlock()
	return signToken(t, k, "at+jwt", c)
}

// signToken signs claims as a compact JWS with typ (none when typ is "").
func signToken(t testing.TB, k signingKey, typ string, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.key, KeyID: k.kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// config is a verifier configuration for s with the feed on and short backoffs.
func (s *fakeSTS) config(t *testing.T) Config {
	return Config{
		Issuer:      s.URL,
		Audience:    testAudience,
		HTTPClient:  s.srv.Client(),
		FeedToken:   func(context.Context) (string, error) { return testFeedToken, nil },
		RequireFeed: true,
		Now:         s.clock.Now,
		Logger:      slog.New(slog.DiscardHandler),
		minBackoff:  5 * time.Millisecond,
		maxBackoff:  50 * time.Millisecond,
	}
}

// verifier starts a verifier for s (after edits of its config), closed at test end,
// and waits for the first snapshot when the feed is on.
func (s *fakeSTS) verifier(t *testing.T, edits ...func(*Config)) *Verifier {
	t.Helper()
	cfg := s.config(t)
	for _, e := range edits {
		e(&cfg)
	}
	v, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	if cfg.FeedToken != nil {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := v.WaitSynced(ctx); err != nil {
			t.Fatalf("WaitSynced: %v (status %+v)", err, v.Status())
		}
		// Heartbeats go to open streams only.
		waitFor(t, "the stream", func() bool { return s.feed.live.Load() > 0 })
	}
	return v
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitCursor waits until v's copy is current to cursor.
func waitCursor(t *testing.T, v *Verifier, cursor string) {
	t.Helper()
	waitFor(t, "cursor "+cursor, func() bool { return v.Status().Cursor == cursor })
}

// fakeFeed is the STS's revocation feed: entries, an event log with a retention
// floor, and streams woken through a channel whenever the test changes something.
type fakeFeed struct {
	clock *fakeClock
	live  atomic.Int64 // streams being served

	mu         sync.Mutex
	token      string
	seq        int                 // cursor of the last event
	oldest     int                 // cursors below this are no longer retained (410)
	events     []feedEvent         // all events, cursor = index+1
	active     map[string]entryDoc // by id
	heartbeats int                 // heartbeats sent so far
	wake       chan struct{}       // closed and replaced on every change
	kill       chan struct{}       // closed and replaced by dropStreams
	gate       chan struct{}       // when set, new streams wait until it is closed
	snapshots  int
	streams    []streamRequest
	nextID     int
}

type feedEvent struct {
	typ   string
	entry entryDoc
}

// entryDoc is an ENTRY as the STS writes it.
type entryDoc struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Selector string `json:"selector"`
	Reason   string `json:"reason"`
	Actor    string `json:"actor"`
	Created  int64  `json:"created"`
	Expires  int64  `json:"expires"`
	Lifted   bool   `json:"lifted"`
}

type streamRequest struct {
	Cursor, LastEventID string
}

func newFakeFeed(clock *fakeClock) *fakeFeed {
	return &fakeFeed{clock: clock, token: testFeedToken, active: map[string]entryDoc{},
		wake: make(chan struct{}), kill: make(chan struct{})}
}

// notify wakes every stream; f.mu is held.
func (f *fakeFeed) notify() {
	close(f.wake)
	f.wake = make(chan struct{})
}

// create records an entry created now (expiring in an hour) and returns it and the
// event's cursor.
func (f *fakeFeed) create(kind, selector string) (entryDoc, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	now := f.clock.Now()
	e := entryDoc{ID: fmt.Sprintf("e%d", f.nextID), Kind: kind, Selector: selector, Reason: "test", Actor: "corp:alice",
		Created: now.UnixMilli(), Expires: now.Add(time.Hour).UnixMilli()}
	f.active[e.ID] = e
	return e, f.appendEvent("created", e)
}

// lift lifts entry id and returns the event's cursor.
func (f *fakeFeed) lift(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.active[id]
	delete(f.active, id)
	e.Lifted = true
	return f.appendEvent("lifted", e)
}

func (f *fakeFeed) appendEvent(typ string, e entryDoc) string {
	f.events = append(f.events, feedEvent{typ: typ, entry: e})
	f.seq = len(f.events)
	f.notify()
	return strconv.Itoa(f.seq)
}

// heartbeat sends a heartbeat on every open stream.
func (f *fakeFeed) heartbeat() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats++
	f.notify()
}

// forget stops retaining events up to cursor (a stream from an older cursor: 410).
func (f *fakeFeed) forget(cursor int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.oldest = cursor
}

// dropStreams ends every open stream.
func (f *fakeFeed) dropStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.kill)
	f.kill = make(chan struct{})
}

// hold makes new streams wait until the returned function is called.
func (f *fakeFeed) hold() (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := make(chan struct{})
	f.gate = g
	return func() {
		f.mu.Lock()
		f.gate = nil
		f.mu.Unlock()
		close(g)
	}
}

func (f *fakeFeed) setToken(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = tok
}

func (f *fakeFeed) counts() (snapshots int, streams []streamRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snapshots, append([]streamRequest(nil), f.streams...)
}

func (f *fakeFeed) authorized(w http.ResponseWriter, r *http.Request) bool {
	f.mu.Lock()
	want := f.token
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+want {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeTestJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return false
	}
	return true
}

func (f *fakeFeed) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	f.mu.Lock()
	f.snapshots++
	entries := make([]entryDoc, 0, len(f.active))
	for _, e := range f.active {
		entries = append(entries, e)
	}
	cursor := "" // a feed without events: "" streams from the oldest retained
	if f.seq > 0 {
		cursor = strconv.Itoa(f.seq)
	}
	doc := map[string]any{"cursor": cursor, "now": f.clock.Now().UnixMilli(), "entries": entries}
	f.mu.Unlock()
	writeTestJSON(w, http.StatusOK, doc)
}

func (f *fakeFeed) handleStream(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	cursor := r.URL.Query().Get("cursor")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		cursor = id
	}
	f.mu.Lock()
	f.streams = append(f.streams, streamRequest{Cursor: r.URL.Query().Get("cursor"), LastEventID: r.Header.Get("Last-Event-ID")})
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}

	f.mu.Lock()
	n, err := strconv.Atoi(cursor)
	if cursor == "" {
		n, err = 0, nil
	}
	if err != nil || n < f.oldest || n > f.seq {
		f.mu.Unlock()
		writeTestJSON(w, http.StatusGone, map[string]string{"error": "cursor_expired"})
		return
	}
	sentHeartbeats := f.heartbeats
	f.mu.Unlock()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher := w.(http.Flusher)
	flusher.Flush()
	f.live.Add(1)
	defer f.live.Add(-1)
	for {
		f.mu.Lock()
		pending := append([]feedEvent(nil), f.events[n:]...)
		heartbeats := f.heartbeats
		wake, kill := f.wake, f.kill
		f.mu.Unlock()
		for _, ev := range pending {
			n++
			data, _ := json.Marshal(ev.entry)
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", n, ev.typ, data); err != nil {
				return
			}
		}
		for ; sentHeartbeats < heartbeats; sentHeartbeats++ {
			if _, err := fmt.Fprintf(w, "event: heartbeat\ndata: {\"now\":%d}\n\n", f.clock.Now().UnixMilli()); err != nil {
				return
			}
		}
		flusher.Flush()
		select {
		case <-wake:
		case <-kill:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// wantErr checks that err wraps want (nil: no error).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}
