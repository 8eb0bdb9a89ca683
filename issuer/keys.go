package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// signingKey is one parsed private key from key_dir, kept in memory. It implements
// Signer.
type signingKey struct {
	kid    string
	alg    jose.SignatureAlgorithm
	signer crypto.Signer
	file   string
	// activation is when the key starts signing: the time in its file name
	// (key-<activation>-<kid8>.pem), or the zero time for other names.
	activation time.Time

	joseOnce   sync.Once
	joseSigner jose.Signer
	joseErr    error
}

// keyRing is one computed state of the signing keys: the active one signs, keys
// are the published ones (see schedule in rotation.go).
type keyRing struct {
	active *signingKey
	keys   []*signingKey // published, sorted by activation, oldest first
	jwks   []byte        // the public JWKS document of keys

	// dir is the key directory the ring is reloaded from ("" for a fixed set).
	dir string
	alg jose.SignatureAlgorithm
	// all are the keys found (published or not), the input of the schedule.
	all []*signingKey
	// dropAt is, by kid, when a retired key leaves the JWKS; tokens it signs must
	// expire by then.
	dropAt map[string]time.Time
	// validUntil is the next schedule transition (zero: none).
	validUntil time.Time
	// scanned is when dir was last read (by the server clock).
	scanned time.Time
	// discovery is the discovery document rendered for this ring (set by the
	// key manager).
	discovery []byte
	// live is the key manager wired to the server's startup ring (nil before).
	live *keyManager
	// known are the key IDs that may be revoked by kid: every key of all, the
	// kid registry of dir and every key found in dir since the start (kids.go).
	known map[string]bool
	// kidsErr is why the registry could not be appended to at start (nil: it
	// could, or had nothing to add).
	kidsErr error
	// token resolves the PKCS#11 key references in dir (nil: none configured).
	token *PKCS11Token
}

// keyFilePrefix names key files: key-<UTC activation time>-<kid8>.pem, so the
// newest sorts last.
const keyFilePrefix = "key-"

// keyTimeLayout is the activation time in key file names.
const keyTimeLayout = "20060102T150405Z"

// loadKeyRing reads every *.pem private key in dir. If dir has none, it creates one
// key of alg activating now (the directory is created 0700, the file 0600). The
// schedule (rotation.go) decides which key signs and which are published.
func loadKeyRing(dir string, alg jose.SignatureAlgorithm, now time.Time, o keyOptions) (*keyRing, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	keys, err := readKeysWith(dir, alg, o.token)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(keys, func(k *signingKey) bool { return k.alg == alg }) {
		k, err := o.first(dir, alg, now)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	r, err := computeRing(keys, alg, now, maxKeyRetention)
	if err != nil {
		return nil, err
	}
	ks := syncKids(dir, nil, keys, now)
	if ks.readErr != nil {
		return nil, fmt.Errorf("signing keys: %w", ks.readErr)
	}
	r.dir, r.scanned, r.known, r.kidsErr, r.token = dir, now, ks.known, ks.writeErr, o.token
	return r, nil
}

// newKeyRing computes the ring of a fixed key set at the current time, keeping
// retired keys for the longest token lifetime (24h).
func newKeyRing(keys []*signingKey, alg jose.SignatureAlgorithm) (*keyRing, error) {
	return computeRing(keys, alg, time.Now(), maxKeyRetention)
}

// computeRing applies the schedule to keys at now: retired keys stay published for
// retain after their successor activates.
func computeRing(keys []*signingKey, alg jose.SignatureAlgorithm, now time.Time, retain time.Duration) (*keyRing, error) {
	keys = slices.Clone(keys)
	slices.SortStableFunc(keys, compareKeys)
	seen := map[string]string{}
	known := map[string]bool{}
	for _, k := range keys {
		if other, dup := seen[k.kid]; dup {
			return nil, fmt.Errorf("signing keys: %s and %s are the same key", other, k.file)
		}
		seen[k.kid], known[k.kid] = k.file, true
	}
	sc := schedule(keys, alg, now, retain)
	if sc.active == nil {
		if !slices.ContainsFunc(keys, func(k *signingKey) bool { return k.alg == alg }) {
			return nil, fmt.Errorf("signing keys: no %s key", alg)
		}
		return nil, fmt.Errorf("signing keys: no %s key is active yet at %s", alg, now.UTC().Format(time.RFC3339))
	}
	r := &keyRing{active: sc.active, keys: sc.published, alg: alg, all: keys, dropAt: sc.dropAt, validUntil: sc.next, known: known}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range r.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.signer.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
	}
	var err error
	if r.jwks, err = json.Marshal(set); err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	return r, nil
}

// compareKeys orders keys by activation, then file name.
func compareKeys(a, b *signingKey) int {
	if c := a.activation.Compare(b.activation); c != 0 {
		return c
	}
	return strings.Compare(a.file, b.file)
}

// activationOf parses the activation time from a key file name
// key-<20060102T150405Z>-<kid8>.pem; other names activate at the zero time.
func activationOf(path string) time.Time {
	name := strings.TrimSuffix(filepath.Base(path), ".pem")
	rest, ok := strings.CutPrefix(name, keyFilePrefix)
	if !ok || len(rest) < len(keyTimeLayout) {
		return time.Time{}
	}
	t, err := time.Parse(keyTimeLayout, rest[:len(keyTimeLayout)])
	if err != nil || (len(rest) > len(keyTimeLayout) && rest[len(keyTimeLayout)] != '-') {
		return time.Time{}
	}
	return t
}

func readKeys(dir string, alg jose.SignatureAlgorithm) ([]*signingKey, error) {
	return readKeysWith(dir, alg, nil)
}

// readKeysWith reads the key files (*.pem) in dir and resolves the token key
// references (*.pkcs11) in token.
func readKeysWith(dir string, alg jose.SignatureAlgorithm, token *PKCS11Token) ([]*signingKey, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	var keys []*signingKey
	var errs []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".pem") && !strings.HasSuffix(e.Name(), pkcs11RefExt) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		var k *signingKey
		var err error
		if strings.HasSuffix(e.Name(), pkcs11RefExt) {
			k, err = token.readTokenKey(path, alg)
		} else {
			k, err = readKey(path, alg)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keys = append(keys, k)
	}
	return keys, errors.Join(errs...)
}

// maxKeyFile bounds a key file.
const maxKeyFile = 64 << 10

func readKey(path string, preferred jose.SignatureAlgorithm) (*signingKey, error) {
	st, err := os.Stat(path)
	if err == nil && st.IsDir() {
		err = errors.New("is a directory")
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	if st.Size() > maxKeyFile {
		return nil, fmt.Errorf("signing key %s: file too large", path)
	}
	if err := keyFileAccess(path, st); err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("signing key %s: unsupported PEM type %q", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not a signing key", path)
	}
	alg, err := algFor(signer, preferred)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	kid, err := thumbprint(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return &signingKey{kid: kid, alg: alg, signer: signer, file: path, activation: activationOf(path)}, nil
}

// algFor returns the JWS algorithm a key signs with. RSA keys sign with the preferred
// algorithm when it is an RSA one, else RS256.
func algFor(k crypto.Signer, preferred jose.SignatureAlgorithm) (jose.SignatureAlgorithm, error) {
	switch pub := k.Public().(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return "", errors.New("only P-256 EC keys are supported")
		}
		return jose.ES256, nil
	case ed25519.PublicKey:
		return jose.EdDSA, nil
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return "", errors.New("RSA keys must be at least 2048 bits")
		}
		if preferred == jose.PS256 {
			return jose.PS256, nil
		}
		return jose.RS256, nil
	default:
		return "", fmt.Errorf("unsupported key type %T", pub)
	}
}

// RSA key sizes the STS generates (signing.rsa_bits). Existing RSA keys of at
// least 2048 bits are read whatever their size.
var RSAKeySizes = []int{2048, 3072, 4096}

// DefaultRSABits is the size of generated RSA keys when none is configured.
const DefaultRSABits = 3072

// KeyOption adjusts how keys are generated (OpenKeyDir, RotateKey).
type KeyOption func(*keyOptions)

// keyOptions are the KeyOptions applied.
type keyOptions struct {
	rsaBits int
	// token, when set, holds the keys generated (key_dir gets their reference
	// files) and resolves the reference files found.
	token *PKCS11Token
}

// WithPKCS11 keeps new keys in the token t (generated there, never leaving it)
// and resolves the token keys key_dir references. Without it, a reference file
// in key_dir is an error.
func WithPKCS11(t *PKCS11Token) KeyOption {
	return func(o *keyOptions) { o.token = t }
}

// WithRSABits sets the size of generated RSA keys (RS256, PS256): one of
// RSAKeySizes; 0 keeps DefaultRSABits.
func WithRSABits(bits int) KeyOption {
	return func(o *keyOptions) {
		if bits != 0 {
			o.rsaBits = bits
		}
	}
}

func applyKeyOptions(opts []KeyOption) (keyOptions, error) {
	o := defaultKeyOptions
	for _, f := range opts {
		f(&o)
	}
	if !slices.Contains(RSAKeySizes, o.rsaBits) {
		return o, fmt.Errorf("signing keys: RSA key size %d is not one of %v", o.rsaBits, RSAKeySizes)
	}
	return o, nil
}

// generate creates a key for alg in dir activating at now, as the options say:
// a key file, or a key in the token labelled signing.pkcs11.key_label-<activation>.
func (o keyOptions) generate(dir string, alg jose.SignatureAlgorithm, now time.Time) (*signingKey, error) {
	if o.token != nil {
		return o.token.generateIn(dir, alg, now, o.rsaBits, o.token.cfg.KeyLabel+"-"+now.UTC().Format(keyTimeLayout), false)
	}
	return generateKeyFile(dir, alg, now, o.rsaBits)
}

// first creates the first key of an empty key_dir: a key file, or with a token
// the token's key labelled key_label (adopted when the token has one, e.g. made
// with pkcs11-tool --keypairgen, else generated).
func (o keyOptions) first(dir string, alg jose.SignatureAlgorithm, now time.Time) (*signingKey, error) {
	if o.token != nil {
		return o.token.generateIn(dir, alg, now, o.rsaBits, o.token.cfg.KeyLabel, true)
	}
	return generateKeyFile(dir, alg, now, o.rsaBits)
}

// generateKey creates a key for alg in dir activating at now with the default
// sizes (generateKeyFile).
func generateKey(dir string, alg jose.SignatureAlgorithm, now time.Time) (*signingKey, error) {
	return generateKeyFile(dir, alg, now, DefaultRSABits)
}

// generateKeyFile creates a key for alg in dir activating at now (truncated to
// the second), written atomically with mode 0600. RSA keys have rsaBits.
func generateKeyFile(dir string, alg jose.SignatureAlgorithm, now time.Time, rsaBits int) (*signingKey, error) {
	now = now.UTC().Truncate(time.Second)
	var signer crypto.Signer
	var err error
	switch alg {
	case jose.ES256:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.EdDSA:
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	case jose.RS256, jose.PS256:
		signer, err = rsa.GenerateKey(rand.Reader, rsaBits)
	default:
		err = fmt.Errorf("unsupported algorithm %s", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	kid, err := thumbprint(signer.Public())
	if err != nil {
		return nil, err
	}
	name := filepath.Join(dir, keyFilePrefix+now.Format(keyTimeLayout)+"-"+kid[:8]+".pem")
	tmp, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		err = pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return &signingKey{kid: kid, alg: alg, signer: signer, file: name, activation: now}, nil
}

// thumbprint is the RFC 7638 SHA-256 JWK thumbprint, base64url: a stable kid.
func thumbprint(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// tokenHash is the hex SHA-256 of a token, the only form in which a token may be
// logged.
func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// SigningKeys are the STS's signing keys as found in a key directory: the key that
// signs and those published in the JWKS (see the schedule in rotation.go). A
// Server re-reads the directory while it runs, so rotation needs no restart.
type SigningKeys struct{ ring *keyRing }

// OpenKeyDir reads every *.pem private key in dir. If dir has none of alg, it
// creates one activating at now (the directory 0700, the file 0600) as opts say.
func OpenKeyDir(dir string, alg jose.SignatureAlgorithm, now time.Time, opts ...KeyOption) (*SigningKeys, error) {
	o, err := applyKeyOptions(opts)
	if err != nil {
		return nil, err
	}
	r, err := loadKeyRing(dir, alg, now, o)
	if err != nil {
		return nil, err
	}
	return &SigningKeys{ring: r}, nil
}

// CheckKeyDir is OpenKeyDir's dry run: it reads the keys in dir without creating
// any. A directory that does not exist yet is fine (it is created at start).
func CheckKeyDir(dir string, alg jose.SignatureAlgorithm, opts ...KeyOption) error {
	o, err := applyKeyOptions(opts)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("signing.key_dir: %w", err)
	}
	keys, err := readKeysWith(dir, alg, o.token)
	if err != nil {
		return err
	}
	if _, err := readKidsFile(dir); err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	if len(keys) > 0 {
		if _, err := newKeyRing(keys, alg); err != nil {
			return fmt.Errorf("%w (a %s key is created at start when none exists)", err, alg)
		}
	}
	return nil
}

// defaultKeyOptions are the options with nothing set.
var defaultKeyOptions = keyOptions{rsaBits: DefaultRSABits}
