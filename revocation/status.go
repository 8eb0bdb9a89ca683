package revocation

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Token Status Lists (draft-ietf-oauth-status-list-20): every token the STS mints
// holds one index in one list; the list's status of a token is derived from the
// revoke entries in force and from facts recorded per index when the token was
// minted. The facts that tokens of a workload share (subject, upstream, client,
// audiences, attributes, binding, signing kid) are recorded once per list as a
// "class"; each token adds one fixed-size StatusRecord. Lists are append-only and
// expire as a whole once every token in them has expired.

// StatusStore is implemented by stores that keep status list records (both
// backends). Lists are named by the issuer (ValidStatusListName); the store keeps
// a list until expires.
type StatusStore interface {
	// AppendStatus appends records (a whole number of StatusRecordSize-byte
	// records) to list, adds the classes it does not hold yet (class ID ->
	// EncodeStatusClass bytes; a class is never replaced) and merges meta (the
	// later heartbeat; sealed once sealed), creating the list if needed, to be
	// kept until expires. It is durable (and, where the store confirms writes,
	// replicated) before it returns.
	AppendStatus(ctx context.Context, list string, expires time.Time, classes map[string][]byte, records []byte, meta StatusMeta) error
	// ReadStatus returns the records of list from byte offset on (a multiple of
	// StatusRecordSize, what the caller already holds), every class of the list
	// and its meta; found is false for a list the store does not hold (never
	// created, or expired).
	ReadStatus(ctx context.Context, list string, offset int) (records []byte, classes map[string][]byte, meta StatusMeta, found bool, err error)
}

// StatusMeta is what the replica that writes a list says of it: when it last
// wrote (Heartbeat, its clock) and whether it will write no more (Sealed).
// Records are written behind issuance, so an index without a record is a token
// in flight while the writer is alive and unsealed (VALID), and a token whose
// record was lost once the list is sealed or its writer has gone silent
// (INVALID: fail closed). See issuer's statuslist.go.
type StatusMeta struct {
	Heartbeat time.Time
	Sealed    bool
}

// Merge returns the meta after writing o over m.
func (m StatusMeta) Merge(o StatusMeta) StatusMeta {
	if o.Heartbeat.After(m.Heartbeat) {
		m.Heartbeat = o.Heartbeat
	}
	m.Sealed = m.Sealed || o.Sealed
	return m
}

// StatusRecordSize is the size of one StatusRecord in bytes: index (4), iat
// (4, unix seconds), the first 8 bytes of the raw jti, class ID (8).
const StatusRecordSize = 24

// StatusClassIDLen is the length of a class ID in bytes.
const StatusClassIDLen = 8

// Limits on status lists.
const (
	// MaxStatusListName is the length of a list name.
	MaxStatusListName = 64
	// MaxStatusListSize is the largest capacity (number of indices) of a list.
	MaxStatusListSize = 1 << 24
	// MaxStatusClassLen bounds the encoded facts of one class.
	MaxStatusClassLen = 64 << 10
)

// ValidStatusListName reports whether name can name a list: 1 to
// MaxStatusListName characters of the base64url alphabet.
func ValidStatusListName(name string) bool {
	if name == "" || len(name) > MaxStatusListName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// StatusRecord is what a list keeps of one token.
type StatusRecord struct {
	Index    uint32
	IssuedAt time.Time
	// JTI is the token's jti as it appears in the token.
	JTI   string
	Class string
}

// jtiKey is the 8 bytes a record keeps of a jti: the first 8 bytes of its
// base64url decoding (the STS's jtis are 16 random bytes), else of its SHA-256.
// Two jtis sharing a key only make a revoke by jti cover both (fail closed).
func jtiKey(jti string) [8]byte {
	var k [8]byte
	if raw, err := base64.RawURLEncoding.DecodeString(jti); err == nil && len(raw) >= 8 {
		copy(k[:], raw)
		return k
	}
	h := sha256.Sum256([]byte(jti))
	copy(k[:], h[:])
	return k
}

// AppendStatusRecord appends the encoding of r to buf.
func AppendStatusRecord(buf []byte, r StatusRecord) []byte {
	buf = binary.BigEndian.AppendUint32(buf, r.Index)
	iat := r.IssuedAt.Unix()
	if iat < 0 {
		iat = 0
	}
	if iat > 1<<32-1 {
		iat = 1<<32 - 1
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(iat))
	k := jtiKey(r.JTI)
	buf = append(buf, k[:]...)
	var c [StatusClassIDLen]byte
	copy(c[:], r.Class)
	return append(buf, c[:]...)
}

// statusClass is the wire form of a class: the facts of a token but jti and iat.
type statusClass struct {
	Sub        string            `json:"sub,omitempty"`
	Upstream   string            `json:"upstream,omitempty"`
	ClientID   string            `json:"client_id,omitempty"`
	Aud        []string          `json:"aud,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Binding    string            `json:"bnd,omitempty"`
	KeyID      string            `json:"kid,omitempty"`
}

// EncodeStatusClass returns the class of a token with facts f (JTI and IssuedAt
// are not part of it): its ID (StatusClassIDLen bytes of SHA-256 over the
// encoding) and encoding.
func EncodeStatusClass(f *Facts) (id string, enc []byte) {
	enc, _ = json.Marshal(statusClass{ // maps of strings and strings always marshal; keys sorted
		Sub: f.Subject, Upstream: f.Upstream, ClientID: f.ClientID, Aud: f.Audiences,
		Attributes: f.Attributes, Binding: f.Binding, KeyID: f.KeyID,
	})
	h := sha256.Sum256(enc)
	return string(h[:StatusClassIDLen]), enc
}

// DecodeStatusClass reads the facts of a class (EncodeStatusClass).
func DecodeStatusClass(enc []byte) (Facts, error) {
	if len(enc) > MaxStatusClassLen {
		return Facts{}, errors.New("revocation: status class too large")
	}
	var c statusClass
	if err := json.Unmarshal(enc, &c); err != nil {
		return Facts{}, fmt.Errorf("revocation: status class: %w", err)
	}
	f := Facts{Subject: c.Sub, Upstream: c.Upstream, ClientID: c.ClientID, Audiences: c.Aud,
		Attributes: c.Attributes, Binding: c.Binding, KeyID: c.KeyID}
	if rest, ok := strings.CutPrefix(f.Subject, "spiffe://"); ok {
		f.TrustDomain, _, _ = strings.Cut(rest, "/")
	}
	return f, nil
}

// StatusEvaluator computes statuses from the revoke entries in force at one
// moment. Build one per evaluation (NewStatusEvaluator); it is not safe for
// concurrent use.
type StatusEvaluator struct {
	now time.Time
	// byJTI: revokes with an exact jti term, by jtiKey; jtiGlob: with a glob jti
	// term; others by anchor (the jti-free ones).
	byJTI   map[[8]byte][]*indexed
	jtiGlob []*indexed
	others  map[string][]*indexed
	classes map[string]classStatus
}

// classStatus is what the jti-free revokes say of a class: all tokens invalid
// (a kid term matched), or those issued at or before created (unix seconds; -1:
// none).
type classStatus struct {
	all     bool
	created int64
	facts   *Facts
	bad     bool
}

// NewStatusEvaluator prepares the active revoke entries among entries (blocks,
// lifted and expired entries are ignored) for evaluation at now. An entry whose
// selector does not parse makes every token invalid (fail closed).
func NewStatusEvaluator(entries []Entry, now time.Time) *StatusEvaluator {
	ev := &StatusEvaluator{now: now, byJTI: map[[8]byte][]*indexed{}, others: map[string][]*indexed{},
		classes: map[string]classStatus{}}
	for _, e := range entries {
		if e.Kind != KindRevoke || !e.Active(now) {
			continue
		}
		sel, err := ParseSelector(e.Selector)
		if err != nil {
			// Unparseable: matches everything (fail closed), like Entry.Invalidates.
			ev.others[""] = append(ev.others[""], &indexed{entry: e, anyIAT: true})
			continue
		}
		it := &indexed{entry: e, sel: sel, anchor: sel.Anchor(), anyIAT: sel.anyIssuedAt()}
		if v, ok := sel.Value(KeyJTI); ok {
			if strings.Contains(v, "*") {
				ev.jtiGlob = append(ev.jtiGlob, it)
			} else {
				k := jtiKey(v)
				ev.byJTI[k] = append(ev.byJTI[k], it)
			}
			continue
		}
		ev.others[it.anchor] = append(ev.others[it.anchor], it)
	}
	return ev
}

func (ev *StatusEvaluator) class(id string, classes map[string]Facts) classStatus {
	if cs, ok := ev.classes[id]; ok {
		return cs
	}
	cs := classStatus{created: -1}
	f, ok := classes[id]
	if !ok {
		cs.bad = true // a record without its class: fail closed
		ev.classes[id] = cs
		return cs
	}
	cs.facts = &f
	consider := func(it *indexed) {
		if it.sel.IsZero() || it.sel.Match(&f) {
			if it.anyIAT {
				cs.all = true
			} else if c := it.entry.Created.Unix(); c > cs.created {
				cs.created = c
			}
		}
	}
	for _, it := range ev.others[""] {
		consider(it)
	}
	for _, a := range f.Anchors() {
		for _, it := range ev.others[a] {
			consider(it)
		}
	}
	ev.classes[id] = cs
	return cs
}

// Evaluate sets, in statuses (one byte per index, StatusValid or StatusInvalid),
// the status of each record in records (StatusRecordSize bytes each) given the
// classes of the list (DecodeStatusClass). Records whose index is beyond
// statuses are ignored; indices without a record are left as they are.
func (ev *StatusEvaluator) Evaluate(records []byte, classes map[string]Facts, statuses []byte) {
	for len(records) >= StatusRecordSize {
		r := records[:StatusRecordSize]
		records = records[StatusRecordSize:]
		idx := binary.BigEndian.Uint32(r[0:4])
		if int64(idx) >= int64(len(statuses)) {
			continue
		}
		iat := int64(binary.BigEndian.Uint32(r[4:8]))
		var jk [8]byte
		copy(jk[:], r[8:16])
		cs, ok := ev.classes[string(r[16:24])] // no allocation for the lookup
		if !ok {
			cs = ev.class(string(r[16:24]), classes)
		}
		invalid := cs.bad || cs.all || iat <= cs.created
		if !invalid {
			invalid = ev.jtiRevoked(jk, iat, cs.facts)
		}
		if invalid {
			statuses[idx] = StatusInvalid
		} else {
			statuses[idx] = StatusValid
		}
	}
}

func (ev *StatusEvaluator) jtiRevoked(jk [8]byte, iat int64, class *Facts) bool {
	cands := ev.byJTI[jk]
	if len(cands) == 0 && len(ev.jtiGlob) == 0 {
		return false
	}
	// The record keeps only a key of the jti: the jti term is taken as matched
	// (a collision only invalidates, fail closed); the other terms are checked.
	for _, it := range cands {
		f := *class
		f.JTI, _ = it.sel.Value(KeyJTI)
		if it.sel.Match(&f) && (it.anyIAT || iat <= it.entry.Created.Unix()) {
			return true
		}
	}
	for _, it := range ev.jtiGlob {
		// A glob on jti cannot be checked against a key of the jti: any such
		// revoke whose other terms match invalidates (fail closed).
		f := *class
		f.JTI, _ = it.sel.Value(KeyJTI)
		if matchExceptJTI(it.sel, &f) && (it.anyIAT || iat <= it.entry.Created.Unix()) {
			return true
		}
	}
	return false
}

func matchExceptJTI(sel Selector, f *Facts) bool {
	for i := range sel.terms {
		if sel.terms[i].key == KeyJTI {
			continue
		}
		if !sel.terms[i].match(f) {
			return false
		}
	}
	return true
}

// Statuses of the one-bit lists the STS publishes.
const (
	StatusValid   byte = 0
	StatusInvalid byte = 1
)

// EncodeStatusList packs statuses (one byte per index, each < 2^bits) into the
// draft's byte array (index 0 in the least significant bits of byte 0),
// compresses it with DEFLATE in the ZLIB format (RFC 1950) and returns it
// base64url without padding: the lst member.
func EncodeStatusList(statuses []byte, bits int) (string, error) {
	if bits != 1 && bits != 2 && bits != 4 && bits != 8 {
		return "", fmt.Errorf("revocation: status list bits %d (1, 2, 4 or 8)", bits)
	}
	per := 8 / bits
	raw := make([]byte, (len(statuses)+per-1)/per)
	mask := byte(1<<bits - 1)
	for i, s := range statuses {
		raw[i/per] |= (s & mask) << (uint(i%per) * uint(bits))
	}
	var buf bytes.Buffer
	zw, err := zlib.NewWriterLevel(&buf, zlib.BestCompression)
	if err != nil {
		return "", err
	}
	if _, err := zw.Write(raw); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(buf.Bytes()), nil
}

// ErrStatusIndex is returned by StatusList.Status for an index outside the list.
var ErrStatusIndex = errors.New("status list: index outside the list")

// StatusList is a decoded status list.
type StatusList struct {
	Bits int
	raw  []byte
}

// DecodeStatusList reads the lst member of a status list with bits bits per
// status: base64url without padding, ZLIB (RFC 1950), at most maxBytes bytes once
// decompressed (the caller's bound).
func DecodeStatusList(lst string, bits int, maxBytes int) (*StatusList, error) {
	if bits != 1 && bits != 2 && bits != 4 && bits != 8 {
		return nil, fmt.Errorf("status list: bits %d (1, 2, 4 or 8)", bits)
	}
	if len(lst) == 0 {
		return nil, errors.New("status list: empty lst")
	}
	comp, err := base64.RawURLEncoding.Strict().DecodeString(lst)
	if err != nil {
		return nil, fmt.Errorf("status list: lst is not base64url without padding: %w", err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(comp))
	if err != nil {
		return nil, fmt.Errorf("status list: lst is not ZLIB: %w", err)
	}
	defer zr.Close()
	raw, err := io.ReadAll(io.LimitReader(zr, int64(maxBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("status list: lst: %w", err)
	}
	if len(raw) > maxBytes {
		return nil, fmt.Errorf("status list: lst larger than %d bytes", maxBytes)
	}
	if len(raw) == 0 {
		return nil, errors.New("status list: empty list")
	}
	return &StatusList{Bits: bits, raw: raw}, nil
}

// Len is the number of indices the list holds.
func (l *StatusList) Len() int { return len(l.raw) * 8 / l.Bits }

// Status returns the status at idx; ErrStatusIndex for an index outside the list.
func (l *StatusList) Status(idx int) (byte, error) {
	if idx < 0 || idx >= l.Len() {
		return 0, ErrStatusIndex
	}
	per := 8 / l.Bits
	b := l.raw[idx/per]
	return (b >> (uint(idx%per) * uint(l.Bits))) & byte(1<<l.Bits-1), nil
}

// SortedClassIDs returns the keys of classes, sorted (for deterministic writes).
func SortedClassIDs(classes map[string][]byte) []string {
	ids := make([]string, 0, len(classes))
	for id := range classes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
