package issuer

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/bits"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/safeconduct/safeconduct/revocation"
)

// Token Status Lists (draft-ietf-oauth-status-list-20). Each replica mints into
// its own open list: a random name, rotated when full or after RotateAfter, so a
// list mixes the tokens of every workload issued by one replica in one time window
// and its URI says nothing about the workload. Within a list the index of the n-th
// token is a keyed pseudorandom permutation of n (AES-based Feistel network), so
// indices are unique, never reused, and do not reveal the order of issuance.
//
// The facts a revocation can match are recorded in the revocation store
// (revocation.StatusStore): a 24-byte record per token and, once per list, the
// facts its workload's tokens share (a class). Records are written behind
// issuance: a flusher appends what was minted every FlushInterval (one store
// write per list), with a heartbeat; a list that will get no more records
// (rotated, or at shutdown) is sealed. So an index without a record is a token
// whose record is in flight while its writer is alive (VALID), and one whose
// record was lost once the list is sealed or its writer has been silent for
// writerSilence (INVALID: a crash fails closed). While the flusher cannot write
// for flushFailLimit, exchanges are refused (503). Any replica serves any list:
// it reads the records (only the new ones since its last read), evaluates them
// against the revoke entries in force, and signs the Status List Token, kept for
// half the ttl.

// PathStatusLists is where the lists are served: PathStatusLists + name.
const PathStatusLists = "/statuslists/"

// TypeStatusListJWT is the media type (and typ header) of Status List Tokens.
const TypeStatusListJWT = "statuslist+jwt"

const mediaStatusListJWT = "application/statuslist+jwt"

// StatusListConfig configures status lists; the zero value of a field takes the
// default.
type StatusListConfig struct {
	// TTL is the ttl claim (how long a consumer may cache a list) and twice the
	// interval at which a replica re-evaluates a list it serves. Default 30 s.
	TTL time.Duration
	// Size is the number of indices of a list, a power of two between 2^10 and
	// 2^24. Default 2^20 (128 KiB of bits before compression).
	Size int
	// RotateAfter is how long a replica mints into one list before opening the
	// next. Default 10 minutes.
	RotateAfter time.Duration
	// FlushInterval is how often minted records are written to the store.
	// Default DefaultStatusFlushInterval.
	FlushInterval time.Duration
}

// Status list defaults and bounds.
const (
	DefaultStatusListTTL    = 30 * time.Second
	DefaultStatusListSize   = 1 << 20
	DefaultStatusListRotate = 10 * time.Minute
	MinStatusListSize       = 1 << 10
	MaxStatusListSize       = 1 << 24
	MaxStatusListTTL        = 10 * time.Minute
)

// Check validates c with defaults applied (config validates its file first).
func (c StatusListConfig) withDefaults() (StatusListConfig, error) {
	if c.TTL == 0 {
		c.TTL = DefaultStatusListTTL
	}
	if c.Size == 0 {
		c.Size = DefaultStatusListSize
	}
	if c.RotateAfter == 0 {
		c.RotateAfter = DefaultStatusListRotate
	}
	switch {
	case c.TTL < time.Second || c.TTL > MaxStatusListTTL:
		return c, fmt.Errorf("status list ttl %s: between 1s and %s", c.TTL, MaxStatusListTTL)
	case c.Size < MinStatusListSize || c.Size > MaxStatusListSize || c.Size&(c.Size-1) != 0:
		return c, fmt.Errorf("status list size %d: a power of two between %d and %d", c.Size, MinStatusListSize, MaxStatusListSize)
	case c.RotateAfter < time.Second:
		return c, fmt.Errorf("status list rotate_after %s: at least 1s", c.RotateAfter)
	}
	return c, nil
}

// statusLists is the status list concern: allocation of indices, the batched
// recording of token facts, and the endpoint.
type statusLists struct {
	*core
	cfg   StatusListConfig
	store revocation.StatusStore
	base  string // issuer + PathStatusLists

	// rotMu serialises list rotations; mu guards open, own, failingSince and
	// the open lists' pending state.
	rotMu sync.Mutex
	mu    sync.Mutex
	open  *openList
	// own are this replica's lists not yet sealed: the open one and retired
	// ones awaiting their last flush.
	own map[*openList]struct{}
	// failingSince is when flushes started failing (zero while they succeed).
	failingSince time.Time
	flushEvery   time.Duration
	// closed: no more tokens (an exchange after close would open a list nobody
	// writes).
	closed bool

	// classes remembers the class of each subject's last token.
	classes classCache

	// perIP bounds what one client address asks of the endpoint (a list not
	// served yet costs a store read); limitedIP counts its refusals.
	perIP      *keyLimiter[netip.Addr]
	limitedIP  prometheus.Counter
	clientAddr func(*http.Request) netip.Addr

	smu       sync.Mutex
	served    map[string]*servedList
	signers   map[string]jose.Signer // kid -> signer with typ statuslist+jwt
	entries   *entriesSnapshot
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type openList struct {
	name    string
	exp     int // log2 of the size
	perm    cipher.Block
	next    uint32
	started time.Time
	expires time.Time
	// Guarded by statusLists.mu: records and classes minted and not yet
	// written, classes already written, retired (no more records), the last
	// write.
	pending        []byte
	scratch        [32]byte // permute's
	pendingClasses map[string][]byte
	known          map[string]struct{}
	retired        bool
	lastWrite      time.Time
}

// Write-behind bounds.
const (
	// DefaultStatusFlushInterval is how often minted records are written.
	DefaultStatusFlushInterval = 100 * time.Millisecond
	// statusHeartbeat is how often an idle open list's heartbeat is written.
	statusHeartbeat = time.Second
	// writerSilence: a list unsealed whose heartbeat is older is orphaned (its
	// writer is gone): its indices without a record are INVALID.
	writerSilence = 10 * time.Second
	// flushFailLimit: exchanges are refused once flushes have failed this long.
	flushFailLimit = 2 * time.Second
)

func newStatusLists(c *core, cfg StatusListConfig, st revocation.Store) (*statusLists, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ss, ok := st.(revocation.StatusStore)
	if !ok {
		return nil, errors.New("status lists: the revocation store keeps no status lists")
	}
	s := &statusLists{
		core: c, cfg: cfg, store: ss, base: strings.TrimSuffix(c.issuer, "/") + PathStatusLists,
		own: map[*openList]struct{}{}, flushEvery: cfg.FlushInterval, served: map[string]*servedList{},
		signers: map[string]jose.Signer{}, stop: make(chan struct{}),
	}
	if s.flushEvery <= 0 {
		s.flushEvery = DefaultStatusFlushInterval
	}
	s.wg.Add(1)
	go s.flusher()
	return s, nil
}

// close stops the flusher, then writes what is pending and seals every list of
// this replica.
func (s *statusLists) close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.mu.Lock()
		for l := range s.own {
			l.retired = true
		}
		s.open = nil
		s.closed = true
		s.mu.Unlock()
		err = s.flush(true)
	})
	return err
}

// newOpenList starts a list: name "<log2 size>-<16 random bytes, base64url>".
func (s *statusLists) newOpenList(now time.Time) *openList {
	var key [16]byte
	_, _ = rand.Read(key[:])
	blk, _ := aes.NewCipher(key[:]) // a 16-byte key is always valid
	var id [16]byte
	_, _ = rand.Read(id[:])
	exp := bits.TrailingZeros(uint(s.cfg.Size))
	return &openList{
		name: strconv.Itoa(exp) + "-" + base64.RawURLEncoding.EncodeToString(id[:]),
		exp:  exp, perm: blk, started: now, pendingClasses: map[string][]byte{}, known: map[string]struct{}{},
		// Every token of the list expires by then (iat within RotateAfter of the
		// start, lifetime at most max_ttl), plus a minute of clock skew.
		expires: now.Add(s.cfg.RotateAfter + s.maxTTL + time.Minute),
	}
}

// needsRotation reports whether l cannot take the next token at now.
func (s *statusLists) needsRotation(l *openList, now time.Time) bool {
	return l == nil || l.next >= uint32(s.cfg.Size) || now.Sub(l.started) >= s.cfg.RotateAfter || now.Before(l.started)
}

// rotate opens a new list if the open one cannot take the next token: it is
// created in the store (with a heartbeat, so any replica serves it) before its
// first index is handed out; the old one is retired, sealed by its next flush.
func (s *statusLists) rotate(ctx context.Context, now time.Time) error {
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	s.mu.Lock()
	need := s.needsRotation(s.open, now)
	s.mu.Unlock()
	if !need {
		return nil
	}
	l := s.newOpenList(now)
	if err := s.store.AppendStatus(ctx, l.name, l.expires, nil, nil, revocation.StatusMeta{Heartbeat: now}); err != nil {
		return err
	}
	l.lastWrite = now
	s.mu.Lock()
	if s.open != nil {
		s.open.retired = true
	}
	s.open = l
	s.own[l] = struct{}{}
	s.mu.Unlock()
	return nil
}

// permute maps n < 2^w to a unique index < 2^w: a 4-round Feistel network over
// the smallest even width >= w, with AES as round function, cycle-walking back
// into [0, 2^w). scratch is the caller's (a block's input and output escape
// through the interface call: kept by the list, they cost no allocation).
func permute(blk cipher.Block, w int, n uint32, scratch *[32]byte) uint32 {
	half := (w + 1) / 2
	mask := uint32(1)<<half - 1
	in, out := scratch[:16], scratch[16:]
	x := n
	for {
		l, r := x>>half, x&mask
		for round := range 4 {
			clear(in)
			in[0] = byte(round)
			binary.BigEndian.PutUint32(in[1:5], r)
			blk.Encrypt(out, in)
			l, r = r, l^(binary.BigEndian.Uint32(out[:4])&mask)
		}
		x = l<<half | r
		if x < uint32(1)<<w {
			return x
		}
	}
}

var errStatusWrites = errors.New("status list records cannot be written")

// record allocates the index of a token and queues its facts for the flusher;
// it returns the uri and index for the token's status claim. Called with the
// token's claims before signing; kid is the key that will sign it. It refuses
// while the flusher has been failing for flushFailLimit.
func (s *statusLists) record(ctx context.Context, c *claims, kid string) (string, uint32, error) {
	f := revocation.Facts{
		Subject: c.Subject, Upstream: c.Upstream, ClientID: c.ClientID, Audiences: c.Audience,
		Attributes: c.Attributes, Binding: c.Binding, KeyID: kid,
	}
	classID, enc := s.classes.encode(&f)
	now := s.now()
	for range 3 {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return "", 0, errors.New("status lists closed (shutting down)")
		}
		if !s.failingSince.IsZero() && now.Sub(s.failingSince) >= flushFailLimit {
			s.mu.Unlock()
			return "", 0, errStatusWrites
		}
		l := s.open
		if s.needsRotation(l, now) {
			s.mu.Unlock()
			if err := s.rotate(ctx, now); err != nil {
				return "", 0, err
			}
			continue
		}
		n := l.next
		l.next++
		idx := permute(l.perm, l.exp, n, &l.scratch)
		l.pending = revocation.AppendStatusRecord(l.pending,
			revocation.StatusRecord{Index: idx, IssuedAt: c.IssuedAt, JTI: c.ID, Class: classID})
		if _, ok := l.known[classID]; !ok {
			l.pendingClasses[classID] = enc
		}
		s.mu.Unlock()
		return s.base + l.name, idx, nil
	}
	return "", 0, errors.New("status list: no open list")
}

// classCache remembers, by subject, the class of the last token minted
// (revocation.EncodeStatusClass): a workload's tokens nearly always share their
// class, so the JSON encoding and its hash are computed once per change rather
// than once per token. A hit is checked against every fact of the class.
type classCache struct {
	mu sync.Mutex
	m  map[string]*cachedClass
}

type cachedClass struct {
	f   revocation.Facts // a copy, never changed
	id  string
	enc []byte
}

// maxCachedClasses bounds the cache; when full it starts over.
const maxCachedClasses = 4096

// encode returns what revocation.EncodeStatusClass returns for f.
func (c *classCache) encode(f *revocation.Facts) (string, []byte) {
	c.mu.Lock()
	e := c.m[f.Subject]
	c.mu.Unlock()
	if e != nil && sameClass(&e.f, f) {
		return e.id, e.enc
	}
	id, enc := revocation.EncodeStatusClass(f)
	e = &cachedClass{f: *f, id: id, enc: enc}
	e.f.Audiences = slices.Clone(f.Audiences)
	e.f.Attributes = maps.Clone(f.Attributes)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedClasses {
		c.m = make(map[string]*cachedClass)
	}
	c.m[f.Subject] = e
	c.mu.Unlock()
	return id, enc
}

// sameClass reports whether a and b have the same class: the facts
// EncodeStatusClass encodes are equal.
func sameClass(a, b *revocation.Facts) bool {
	return a.Subject == b.Subject && a.Upstream == b.Upstream && a.ClientID == b.ClientID &&
		a.Binding == b.Binding && a.KeyID == b.KeyID &&
		slices.Equal(a.Audiences, b.Audiences) && maps.Equal(a.Attributes, b.Attributes)
}

// flusher writes the pending records every flushEvery.
func (s *statusLists) flusher() {
	defer s.wg.Done()
	t := time.NewTicker(s.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			_ = s.flush(false)
		}
	}
}

// flush writes, for each list of this replica, its pending records and classes
// (or only a heartbeat, at most every statusHeartbeat), sealing the retired
// lists. A failed write is retried at the next flush.
func (s *statusLists) flush(final bool) error {
	type job struct {
		l       *openList
		recs    []byte
		classes map[string][]byte
		seal    bool
	}
	now := s.now()
	var jobs []job
	s.mu.Lock()
	if l := s.open; l != nil && now.Sub(l.started) >= s.cfg.RotateAfter {
		// Past its window and idle: seal it now rather than at the next token.
		l.retired = true
		s.open = nil
	}
	for l := range s.own {
		if len(l.pending) == 0 && len(l.pendingClasses) == 0 && !l.retired && now.Sub(l.lastWrite) < statusHeartbeat && !final {
			continue
		}
		jobs = append(jobs, job{l: l, recs: l.pending, classes: l.pendingClasses, seal: l.retired})
		l.pending, l.pendingClasses = nil, map[string][]byte{}
	}
	s.mu.Unlock()
	var firstErr error
	for _, j := range jobs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.store.AppendStatus(ctx, j.l.name, j.l.expires, j.classes, j.recs, revocation.StatusMeta{Heartbeat: now, Sealed: j.seal})
		cancel()
		s.mu.Lock()
		if err != nil {
			// Put it back in front of what was minted meanwhile.
			j.l.pending = append(j.recs, j.l.pending...)
			for id, enc := range j.classes {
				j.l.pendingClasses[id] = enc
			}
			if firstErr == nil {
				firstErr = err
			}
		} else {
			j.l.lastWrite = now
			for id := range j.classes {
				j.l.known[id] = struct{}{}
			}
			if j.seal && len(j.l.pending) == 0 {
				delete(s.own, j.l)
			}
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	switch {
	case firstErr == nil:
		s.failingSince = time.Time{}
	case s.failingSince.IsZero():
		s.failingSince = now
	}
	s.mu.Unlock()
	if firstErr != nil {
		s.log.Error("status list: writing token records failed; retrying (exchanges are refused after "+flushFailLimit.String()+")",
			slog.String("error", firstErr.Error()))
	}
	return firstErr
}

// appendStatusClaim appends the status claim of a token.
func appendStatusClaim(buf []byte, uri string, idx uint32) []byte {
	buf = append(buf, `,"status":{"status_list":{"idx":`...)
	buf = strconv.AppendUint(buf, uint64(idx), 10)
	buf = append(buf, `,"uri":`...)
	buf = appendJSONString(buf, uri)
	return append(buf, `}}`...)
}

// servedList is a replica's copy of a list: the records read so far and the
// last Status List Token signed from them.
type servedList struct {
	mu       sync.Mutex
	size     int
	records  []byte
	classes  map[string]revocation.Facts
	token    []byte
	built    time.Time
	lastUsed time.Time
}

// entriesSnapshot is the revoke entries in force, read at most once per half
// ttl and shared by the lists evaluated meanwhile.
type entriesSnapshot struct {
	at time.Time
	ev *revocation.StatusEvaluator
}

// maxServedLists bounds the lists a replica keeps a copy of.
const maxServedLists = 1024

// handleStatusList is GET /statuslists/{name}.
func (s *statusLists) handleStatusList(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	size, ok := parseListName(name)
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if !acceptsStatusListJWT(r.Header.Values("Accept")) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		http.Error(w, "only "+mediaStatusListJWT+" is served", http.StatusNotAcceptable)
		return
	}
	if s.perIP != nil {
		if ok, wait := s.perIP.allow(s.clientAddr(r)); !ok {
			s.limitedIP.Inc()
			writeRateLimited(w, wait)
			return
		}
	}
	tok, built, err := s.list(r.Context(), name, size)
	switch {
	case errors.Is(err, errNoList):
		http.Error(w, "not found", http.StatusNotFound)
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), "status list unavailable", slog.String("list", name), slog.String("error", err.Error()))
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "status list temporarily unavailable", http.StatusServiceUnavailable)
		return
	}
	left := s.cfg.TTL - s.now().Sub(built)
	if left < 0 {
		left = 0
	}
	w.Header().Set("Content-Type", mediaStatusListJWT)
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(left/time.Second)))
	w.Header().Set("Vary", "Accept")
	_, _ = w.Write(tok)
}

var errNoList = errors.New("no such status list")

// limitIPs gives the endpoint per-IP buckets of its own at limits.admin_per_ip_rps
// (a verifier fetches a list about once per half ttl; a list not served yet costs
// a store read).
func (s *statusLists) limitIPs(c Limits, now func() time.Time, m *metrics, addr func(*http.Request) netip.Addr) {
	c = c.withDefaults()
	if c.AdminPerIPRPS <= 0 {
		return
	}
	s.perIP = newKeyLimiter[netip.Addr](c.AdminPerIPRPS, c.AdminBurst, maxLimiterKeys, now)
	s.clientAddr = addr
	s.limitedIP = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "safeconduct_status_list_rate_limited_total",
		Help: "GET /statuslists/{name} requests refused with 429 by the per-IP bucket (limits.admin_per_ip_rps).",
	})
	m.registry.MustRegister(s.limitedIP)
}

// parseListName reads the size of a list from its name "<log2 size>-<22 chars>".
func parseListName(name string) (int, bool) {
	exp, id, ok := strings.Cut(name, "-")
	if !ok || len(id) != 22 || !revocation.ValidStatusListName(name) {
		return 0, false
	}
	e, err := strconv.Atoi(exp)
	if err != nil || strconv.Itoa(e) != exp || 1<<e < MinStatusListSize || 1<<e > MaxStatusListSize {
		return 0, false
	}
	if _, err := base64.RawURLEncoding.Strict().DecodeString(id); err != nil {
		return 0, false
	}
	return 1 << e, true
}

// acceptsStatusListJWT: no Accept, or one that allows application/statuslist+jwt.
func acceptsStatusListJWT(values []string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if q, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
					continue
				}
			}
			if mt == mediaStatusListJWT || mt == "*/*" || mt == "application/*" {
				return true
			}
		}
	}
	return false
}

// list returns the current Status List Token of a list and when it was built.
func (s *statusLists) list(ctx context.Context, name string, size int) ([]byte, time.Time, error) {
	now := s.now()
	s.smu.Lock()
	sl := s.served[name]
	isNew := sl == nil
	if isNew {
		// Served (and so given a place, maybe evicting another) only once the
		// store has it: asking for names that do not exist evicts no list.
		sl = &servedList{size: size, classes: map[string]revocation.Facts{}}
	} else {
		sl.lastUsed = now
	}
	s.smu.Unlock()

	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.token != nil && now.Sub(sl.built) < s.cfg.TTL/2 && !now.Before(sl.built) {
		return sl.token, sl.built, nil
	}
	recs, classes, meta, found, err := s.store.ReadStatus(ctx, name, len(sl.records))
	if err != nil {
		return nil, time.Time{}, err
	}
	if !found {
		if !isNew {
			s.smu.Lock()
			delete(s.served, name)
			s.smu.Unlock()
		}
		return nil, time.Time{}, errNoList
	}
	for id, enc := range classes {
		if _, ok := sl.classes[id]; ok {
			continue
		}
		f, err := revocation.DecodeStatusClass(enc)
		if err != nil {
			continue // a record of this class then counts as invalid (fail closed)
		}
		sl.classes[id] = f
	}
	sl.records = append(sl.records, recs...)
	ev, err := s.evaluator(ctx, now)
	if err != nil {
		return nil, time.Time{}, err
	}
	statuses := make([]byte, sl.size)
	if meta.Sealed || now.Sub(meta.Heartbeat) > writerSilence {
		// Every record is written (sealed), or the writer is gone and what it
		// had not written is lost: an index without a record is INVALID.
		for i := range statuses {
			statuses[i] = revocation.StatusInvalid
		}
	}
	ev.Evaluate(sl.records, sl.classes, statuses)
	tok, err := s.sign(name, statuses, now)
	if err != nil {
		return nil, time.Time{}, err
	}
	sl.token, sl.built = tok, now
	if isNew {
		s.smu.Lock()
		if _, ok := s.served[name]; !ok && len(s.served) >= maxServedLists {
			s.evictLocked(now)
		}
		sl.lastUsed = now
		s.served[name] = sl
		s.smu.Unlock()
	}
	return tok, now, nil
}

func (s *statusLists) evictLocked(now time.Time) {
	var oldest string
	var at time.Time
	for n, sl := range s.served {
		if oldest == "" || sl.lastUsed.Before(at) {
			oldest, at = n, sl.lastUsed
		}
	}
	delete(s.served, oldest)
}

// evaluator returns the evaluator of the revoke entries in force, read from the
// store at most once per half ttl.
func (s *statusLists) evaluator(ctx context.Context, now time.Time) (*revocation.StatusEvaluator, error) {
	s.smu.Lock()
	snap := s.entries
	s.smu.Unlock()
	if snap != nil && now.Sub(snap.at) < s.cfg.TTL/2 && !now.Before(snap.at) {
		return snap.ev, nil
	}
	entries, err := s.core.store.List(ctx, false)
	if err != nil {
		return nil, err
	}
	snap = &entriesSnapshot{at: now, ev: revocation.NewStatusEvaluator(entries, now)}
	s.smu.Lock()
	s.entries = snap
	s.smu.Unlock()
	return snap.ev, nil
}

// sign builds and signs the Status List Token of a list with the active key.
func (s *statusLists) sign(name string, statuses []byte, now time.Time) ([]byte, error) {
	lst, err := revocation.EncodeStatusList(statuses, 1)
	if err != nil {
		return nil, err
	}
	iat := now.Unix()
	ttl := int64(s.cfg.TTL / time.Second)
	buf := make([]byte, 0, len(lst)+256)
	buf = append(buf, `{"sub":`...)
	buf = appendJSONString(buf, s.base+name)
	buf = append(buf, `,"iss":`...)
	buf = appendJSONString(buf, s.issuer)
	buf = append(buf, `,"iat":`...)
	buf = strconv.AppendInt(buf, iat, 10)
	// exp: the list may be used for one ttl after a consumer fetched it, and a
	// replica serves a copy up to half a ttl old.
	buf = append(buf, `,"exp":`...)
	buf = strconv.AppendInt(buf, iat+2*ttl, 10)
	buf = append(buf, `,"ttl":`...)
	buf = strconv.AppendInt(buf, ttl, 10)
	buf = append(buf, `,"status_list":{"bits":1,"lst":"`...)
	buf = append(buf, lst...)
	buf = append(buf, `"}}`...)
	signer, err := s.signer()
	if err != nil {
		return nil, err
	}
	jws, err := signer.Sign(buf)
	if err != nil {
		return nil, fmt.Errorf("sign status list: %w", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		return nil, err
	}
	return []byte(out), nil
}

// signer is a signer with the active key and typ statuslist+jwt.
func (s *statusLists) signer() (jose.Signer, error) {
	k := s.currentRing().active
	s.smu.Lock()
	defer s.smu.Unlock()
	if sg, ok := s.signers[k.kid]; ok {
		return sg, nil
	}
	sg, err := k.signerWithType(TypeStatusListJWT)
	if err != nil {
		return nil, fmt.Errorf("status list: %w", err)
	}
	s.signers[k.kid] = sg
	return sg, nil
}
