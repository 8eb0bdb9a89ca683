package issuer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
)

// Key rotation is file based, so that every replica sharing key_dir computes the
// same answer from the directory and the clock:
//
//   - a key is published in the JWKS as soon as its file exists;
//   - it signs once now >= its activation (the time in its file name) and it is the
//     newest activated key of the configured algorithm;
//   - a key superseded at S (the activation of the next key of the configured
//     algorithm) is retired and stays published until S + max_ttl + keyRetireSkew,
//     so every token it signed has expired before verifiers lose it.
//
// `stsctl keys rotate` writes a key activating JWKSCacheLifetime*2 ahead, so every
// verifier that refreshes the JWKS at the advertised cache lifetime knows the key
// before the first token it signs.
const (
	// JWKSCacheLifetime is the JWKS (and discovery) Cache-Control max-age.
	JWKSCacheLifetime = 300 * time.Second
	// KeyReloadInterval is how often key_dir is re-read.
	KeyReloadInterval = 10 * time.Second
	// keyRetireSkew is the clock skew allowed on top of max_ttl before a retired key
	// is dropped.
	keyRetireSkew = time.Minute
	// maxKeyRetention keeps retired keys for the longest allowed max_ttl, for rings
	// computed before the server's max_ttl is known.
	maxKeyRetention = 24*time.Hour + keyRetireSkew
)

// Signer is a key the STS mints with: a crypto.Signer with its kid and JWS
// algorithm. Keys from key_dir implement it; a KMS-backed key can implement it too.
type Signer interface {
	crypto.Signer
	KeyID() string
	Algorithm() jose.SignatureAlgorithm
}

var _ Signer = (*signingKey)(nil)

// KeyID is the key's kid (its RFC 7638 thumbprint for file keys).
func (k *signingKey) KeyID() string { return k.kid }

// Algorithm is the JWS algorithm the key signs with.
func (k *signingKey) Algorithm() jose.SignatureAlgorithm { return k.alg }

// Public is the public key.
func (k *signingKey) Public() crypto.PublicKey { return k.signer.Public() }

// Sign signs digest with the private key.
func (k *signingKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.signer.Sign(rand, digest, opts)
}

// keyFromSigner wraps a Signer (a KMS key, say) so it can join a ring. It is
// published and activates at activation.
func keyFromSigner(s Signer, activation time.Time) *signingKey {
	return &signingKey{kid: s.KeyID(), alg: s.Algorithm(), signer: s, file: "signer:" + s.KeyID(), activation: activation}
}

// jose returns the key's go-jose signer (typ at+jwt, kid header), built once.
func (k *signingKey) jose() (jose.Signer, error) {
	k.joseOnce.Do(func() {
		k.joseSigner, k.joseErr = k.signerWithType(TypeAccessTokenJWT)
	})
	return k.joseSigner, k.joseErr
}

// signerWithType builds a go-jose signer of k whose JWS header has typ (and the
// kid): in-process keys directly, a KMS or other opaque key through
// cryptosigner.
func (k *signingKey) signerWithType(typ jose.ContentType) (jose.Signer, error) {
	opts := (&jose.SignerOptions{}).WithType(typ)
	var (
		s   jose.Signer
		err error
	)
	switch k.signer.(type) {
	case *ecdsa.PrivateKey, ed25519.PrivateKey, *rsa.PrivateKey:
		s, err = jose.NewSigner(jose.SigningKey{
			Algorithm: k.alg,
			Key:       jose.JSONWebKey{Key: k.signer, KeyID: k.kid, Algorithm: string(k.alg)},
		}, opts)
	default: // a KMS or other opaque key
		o := kidOpaque{cryptosigner.Opaque(k.signer), k.kid, k.alg}
		s, err = jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: o}, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("signer for key %s: %w", k.kid, err)
	}
	return s, nil
}

// kidOpaque is a crypto.Signer-backed OpaqueSigner that names its kid.
type kidOpaque struct {
	jose.OpaqueSigner
	kid string
	alg jose.SignatureAlgorithm
}

func (o kidOpaque) Public() *jose.JSONWebKey {
	jwk := *o.OpaqueSigner.Public()
	jwk.KeyID, jwk.Algorithm = o.kid, string(o.alg)
	return &jwk
}

// keySchedule is the state of a key set at one instant.
type keySchedule struct {
	active    *signingKey
	published []*signingKey
	dropAt    map[string]time.Time // retired (or to-be-retired) keys' end of publication
	next      time.Time            // the next transition after now (zero: none)
}

// schedule computes which key signs at now and which keys are published. keys are
// sorted by compareKeys. retain is max_ttl + skew.
func schedule(keys []*signingKey, alg jose.SignatureAlgorithm, now time.Time, retain time.Duration) keySchedule {
	sc := keySchedule{dropAt: map[string]time.Time{}}
	later := func(t time.Time) {
		if t.After(now) && (sc.next.IsZero() || t.Before(sc.next)) {
			sc.next = t
		}
	}
	for i, k := range keys {
		later(k.activation)
		if k.alg == alg && !k.activation.After(now) {
			sc.active = k
		}
		// The successor: the next key of alg in (activation, file) order.
		var succ *signingKey
		for _, n := range keys[i+1:] {
			if n.alg == alg {
				succ = n
				break
			}
		}
		if succ != nil {
			drop := succ.activation.Add(retain)
			sc.dropAt[k.kid] = drop
			if !now.Before(drop) {
				continue
			}
			later(drop)
		}
		sc.published = append(sc.published, k)
	}
	return sc
}

// keyManager keeps the live ring: it re-reads key_dir every KeyReloadInterval and
// recomputes the schedule at each transition, swapping the ring atomically.
type keyManager struct {
	issuer string
	meta   discoveryMeta // for the discovery document
	retain time.Duration
	now    func() time.Time
	onErr  func(error)
	// onChange, when set, is told when the signing key or the published set changed.
	onChange func(old, next *keyRing)

	mu  sync.Mutex // serializes reloads
	cur atomic.Pointer[keyRing]
}

func newKeyManager(issuer string, meta discoveryMeta, start *keyRing, maxTTL time.Duration, now func() time.Time, onErr func(error)) (*keyManager, error) {
	m := &keyManager{issuer: issuer, meta: meta, retain: maxTTL + keyRetireSkew, now: now, onErr: onErr}
	if m.onErr == nil {
		m.onErr = func(error) {}
	}
	r, err := m.compute(start.all, start.alg, now())
	if err != nil {
		return nil, err
	}
	r.dir, r.scanned, r.token = start.dir, now(), start.token
	maps.Copy(r.known, start.known)
	m.cur.Store(r)
	return m, nil
}

func (m *keyManager) compute(keys []*signingKey, alg jose.SignatureAlgorithm, now time.Time) (*keyRing, error) {
	r, err := computeRing(keys, alg, now, m.retain)
	if err != nil {
		return nil, err
	}
	if r.discovery, err = discoveryDoc(m.issuer, r, m.meta); err != nil {
		return nil, err
	}
	return r, nil
}

// current returns the ring at the manager's clock, reloading when a transition
// passed or a rescan is due. A reload already under way is not waited for.
func (m *keyManager) current() *keyRing {
	r := m.cur.Load()
	now := m.now()
	if (r.validUntil.IsZero() || now.Before(r.validUntil)) && (r.dir == "" || now.Sub(r.scanned) < KeyReloadInterval) {
		return r
	}
	if !m.mu.TryLock() {
		return r
	}
	defer m.mu.Unlock()
	if err := m.reloadLocked(now, false); err != nil {
		m.onErr(err)
	}
	return m.cur.Load()
}

// reload re-reads key_dir now (on demand).
func (m *keyManager) reload() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reloadLocked(m.now(), true)
}

func (m *keyManager) reloadLocked(now time.Time, force bool) error {
	r := m.cur.Load()
	keys, scanned, known := r.all, r.scanned, r.known
	var scanErr error
	if r.dir != "" && (force || now.Sub(r.scanned) >= KeyReloadInterval) {
		scanned = now
		found, err := readKeysWith(r.dir, r.alg, r.token)
		if err != nil {
			// Keep the last good set: a transient read error must not drop a key.
			scanErr = err
		} else {
			keys = found
		}
		// Kids found stay known (revocable) after their files are gone. An append
		// the directory refuses (read-only) was reported at start.
		ks := syncKids(r.dir, known, keys, now)
		known, scanErr = ks.known, errors.Join(scanErr, ks.readErr)
	}
	next, err := m.compute(keys, r.alg, now)
	if err != nil {
		// Keep signing with the last good ring; retry at the next scan.
		r2 := *r
		r2.scanned, r2.known = scanned, known
		m.cur.Store(&r2)
		return errors.Join(scanErr, err)
	}
	maps.Copy(next.known, known)
	next.dir, next.scanned, next.token = r.dir, scanned, r.token
	m.cur.Store(next)
	if m.onChange != nil && (next.active.kid != r.active.kid || !slices.Equal(keyIDs(next.keys), keyIDs(r.keys))) {
		m.onChange(r, next)
	}
	return scanErr
}

// keyIDs lists the key IDs of keys, in order.
func keyIDs(keys []*signingKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.kid
	}
	return out
}

// ringSigner is the jose.Signer behind the minter once the key manager is wired:
// each token is signed by the ring's active key at that moment.
type ringSigner struct {
	m    *keyManager
	opts jose.SignerOptions
}

func (s *ringSigner) Options() jose.SignerOptions { return s.opts }

func (s *ringSigner) Sign(payload []byte) (*jose.JSONWebSignature, error) {
	jws, _, err := s.signKID(payload)
	return jws, err
}

// signKID signs with the ring's active key and returns its kid.
func (s *ringSigner) signKID(payload []byte) (*jose.JSONWebSignature, string, error) {
	r := s.m.current()
	k := r.active
	exp, ok := payloadExp(payload)
	if !ok {
		return nil, "", errors.New("token has no exp")
	}
	// A token must never outlive its key's verification window.
	if drop, scheduled := r.dropAt[k.kid]; scheduled && exp > drop.Unix() {
		return nil, "", fmt.Errorf("key %s leaves the JWKS at %s, before the token expires", k.kid, drop.UTC().Format(time.RFC3339))
	}
	js, err := k.jose()
	if err != nil {
		return nil, "", err
	}
	jws, err := js.Sign(payload)
	return jws, k.kid, err
}

// payloadExp reads exp from a claims set built by minter.mint, where the top-level
// "exp" is the first one (values before it are escaped JSON strings).
func payloadExp(payload []byte) (int64, bool) {
	i := bytes.Index(payload, []byte(`,"exp":`))
	if i < 0 {
		return 0, false
	}
	rest := payload[i+len(`,"exp":`):]
	end := bytes.IndexAny(rest, ",}")
	if end < 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return v, err == nil
}

func cacheControl() string {
	return "public, max-age=" + strconv.Itoa(int(JWKSCacheLifetime/time.Second))
}

func (m *keyManager) serve(doc func(*keyRing) []byte) http.HandlerFunc {
	cc := cacheControl()
	return func(w http.ResponseWriter, r *http.Request) {
		d := doc(m.current())
		serveJSONDoc(w, r, d, etag(d), cc)
	}
}

// ReloadKeys re-reads key_dir at once (the periodic reload runs every
// KeyReloadInterval).
func (s *Server) ReloadKeys() error { return s.signing.reload() }

// RotateResult reports a key rotation.
type RotateResult struct {
	// KeyID and File are the new key; it signs from ActivateAt.
	KeyID      string
	File       string
	ActivateAt time.Time
	// Previous is the kid signing at the time of the rotation ("" if none).
	Previous string
	// Removed are the key files deleted (emergency rotation only).
	Removed []string
}

// RotateKey writes a new key of alg to dir. A staged rotation activates it at
// now + 2*JWKSCacheLifetime (rounded up to the second), so verifiers refreshing the
// JWKS at the advertised lifetime know it before it signs. An emergency rotation
// activates it now and deletes the key file signing now: replicas drop that key
// from the JWKS at their next reload and verifiers reject its tokens at their next
// JWKS refresh.
func RotateKey(dir string, alg jose.SignatureAlgorithm, now time.Time, emergency bool, opts ...KeyOption) (*RotateResult, error) {
	o, err := applyKeyOptions(opts)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("key directory: %w", err)
	}
	keys, err := readKeysWith(dir, alg, o.token)
	if err != nil {
		return nil, err
	}
	// Every kid is registered before anything changes, so that the key an
	// emergency rotation deletes stays revocable.
	if err := registerKids(dir, keys, now); err != nil {
		return nil, err
	}
	slices.SortStableFunc(keys, compareKeys)
	sc := schedule(keys, alg, now, maxKeyRetention)
	res := &RotateResult{}
	if sc.active != nil {
		res.Previous = sc.active.kid
	}
	at := now
	if !emergency {
		at = now.Add(2 * JWKSCacheLifetime)
		if t := at.Truncate(time.Second); !t.Equal(at) {
			at = t.Add(time.Second)
		}
	}
	k, err := o.generate(dir, alg, at)
	if err != nil {
		return nil, err
	}
	res.KeyID, res.File, res.ActivateAt = k.kid, k.file, k.activation
	if err := registerKids(dir, []*signingKey{k}, now); err != nil {
		return res, err
	}
	if emergency && sc.active != nil {
		if err := os.Remove(sc.active.file); err != nil {
			return res, fmt.Errorf("remove old key: %w", err)
		}
		res.Removed = append(res.Removed, sc.active.file)
	}
	return res, nil
}
