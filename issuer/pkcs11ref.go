package issuer

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/go-jose/go-jose/v4"
)

// Signing keys in a PKCS#11 token (an HSM) join the same schedule as key files:
// key_dir holds, for each token key, a reference file
// key-<activation>-<kid8>.pkcs11 naming the token, the key's CKA_ID and
// CKA_LABEL and its kid. The private key is generated in the token as sensitive
// and non-extractable and never leaves it; the STS reads its public key for the
// JWKS and asks the token to sign. Because the reference carries the activation
// time in its name, staged and emergency rotation, the kid registry
// (key_dir/kids) and `stsctl keys list` work for token keys exactly as for key
// files, and replicas that share key_dir and reach the same token agree.
const pkcs11RefExt = ".pkcs11"

// PKCS11Config names a PKCS#11 token and the label of its signing key
// (signing.pkcs11 in sts.yaml).
type PKCS11Config struct {
	// Module is the path of the PKCS#11 library (e.g.
	// /usr/lib/softhsm/libsofthsm2.so).
	Module string
	// TokenLabel selects the token.
	TokenLabel string
	// KeyLabel is the CKA_LABEL of the first key (an existing key of that label
	// is adopted; else one is generated); rotated keys are labelled
	// KeyLabel-<activation>.
	KeyLabel string
	// PINFile holds the user PIN; it must be readable by the STS alone, like a
	// key file.
	PINFile string
}

// pkcs11Ref is a parsed reference file.
type pkcs11Ref struct {
	token, label, kid string
	id                []byte
}

// maxPKCS11Ref bounds a reference file.
const maxPKCS11Ref = 4 << 10

// parsePKCS11Ref parses a reference file: "name: value" lines (token, key_label,
// key_id in hex, kid), '#' comments, every field once and required.
func parsePKCS11Ref(data []byte) (*pkcs11Ref, error) {
	if len(data) > maxPKCS11Ref {
		return nil, fmt.Errorf("larger than %d bytes", maxPKCS11Ref)
	}
	ref := &pkcs11Ref{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: want name: value", n)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if seen[name] {
			return nil, fmt.Errorf("line %d: %s given twice", n, name)
		}
		seen[name] = true
		if value == "" || len(value) > 256 || strings.IndexFunc(value, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }) >= 0 {
			return nil, fmt.Errorf("line %d: %s must be 1 to 256 printable ASCII characters", n, name)
		}
		switch name {
		case "token":
			ref.token = value
		case "key_label":
			ref.label = value
		case "kid":
			ref.kid = value
		case "key_id":
			id, err := hex.DecodeString(value)
			if err != nil || len(id) == 0 {
				return nil, fmt.Errorf("line %d: key_id must be hex", n)
			}
			ref.id = id
		default:
			return nil, fmt.Errorf("line %d: unknown field %q (want token, key_label, key_id, kid)", n, name)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var missing []string
	for _, f := range []string{"token", "key_label", "key_id", "kid"} {
		if !seen[f] {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return ref, nil
}

// marshal renders the reference file.
func (r *pkcs11Ref) marshal() []byte {
	return fmt.Appendf(nil, "# A signing key in a PKCS#11 token: the private key never leaves the token.\n"+
		"# Delete this file to unpublish the key; the token object stays until deleted there.\n"+
		"token: %s\nkey_label: %s\nkey_id: %s\nkid: %s\n", r.token, r.label, hex.EncodeToString(r.id), r.kid)
}

// readPKCS11Ref reads the reference file at path (bounded).
func readPKCS11Ref(path string) (*pkcs11Ref, error) {
	data, err := readBounded(path, maxPKCS11Ref)
	if err != nil {
		return nil, err
	}
	return parsePKCS11Ref(data)
}

// writePKCS11Ref writes ref for a key activating at act into dir, atomically
// (mode 0600, like key files), and returns its path.
func writePKCS11Ref(dir string, ref *pkcs11Ref, act time.Time) (string, error) {
	name := filepath.Join(dir, keyFilePrefix+act.UTC().Format(keyTimeLayout)+"-"+ref.kid[:8]+pkcs11RefExt)
	tmp, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(ref.marshal())
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
	return name, err
}

// errNoPKCS11 is the error for a reference file read without a token.
var errNoPKCS11 = errors.New("a key in a PKCS#11 token, but signing.pkcs11 is not configured (stsctl: pass --config sts.yaml)")

// hsm is an open PKCS#11 token (pkcs11_cgo.go; builds without cgo have none).
type hsm interface {
	// find returns the key pair with CKA_ID id (when given) and CKA_LABEL label
	// (when given); nil, nil when there is none.
	find(id, label []byte) (crypto.Signer, error)
	// generate creates a sensitive, non-extractable key pair for alg in the token.
	generate(alg jose.SignatureAlgorithm, rsaBits int, id, label []byte) (crypto.Signer, error)
	// id returns the CKA_ID of a key pair find or generate returned.
	id(s crypto.Signer) ([]byte, error)
	close() error
}

// PKCS11Token is an open PKCS#11 token holding signing keys (OpenPKCS11).
type PKCS11Token struct {
	cfg PKCS11Config
	hsm hsm

	mu sync.Mutex
	// keys are the key pairs found, by reference file content, so that a rescan
	// of key_dir does not search the token again.
	keys map[string]*signingKey
}

// maxPINFile bounds the PIN file.
const maxPINFile = 1 << 10

// OpenPKCS11 logs in to the token cfg names with the PIN in cfg.PINFile (which
// must be readable by the STS alone, like a key file). Close it after the server.
func OpenPKCS11(cfg PKCS11Config) (*PKCS11Token, error) {
	if cfg.Module == "" || cfg.TokenLabel == "" || cfg.KeyLabel == "" || cfg.PINFile == "" {
		return nil, errors.New("signing.pkcs11: module, token_label, key_label and pin_file are required")
	}
	st, err := os.Stat(cfg.PINFile)
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err == nil {
		err = keyFileAccess(cfg.PINFile, st)
	}
	var pin []byte
	if err == nil {
		pin, err = readBounded(cfg.PINFile, maxPINFile)
	}
	if err != nil {
		return nil, fmt.Errorf("signing.pkcs11.pin_file %s: %w", cfg.PINFile, err)
	}
	p := strings.TrimRight(string(pin), "\r\n")
	if p == "" {
		return nil, fmt.Errorf("signing.pkcs11.pin_file %s: empty", cfg.PINFile)
	}
	h, err := openHSM(cfg, p)
	if err != nil {
		return nil, fmt.Errorf("signing.pkcs11: %w", err)
	}
	return &PKCS11Token{cfg: cfg, hsm: h, keys: map[string]*signingKey{}}, nil
}

// Close logs out of the token.
func (t *PKCS11Token) Close() error {
	if t == nil {
		return nil
	}
	return t.hsm.close()
}

// readTokenKey resolves the reference file at path to its key in the token.
func (t *PKCS11Token) readTokenKey(path string, preferred jose.SignatureAlgorithm) (*signingKey, error) {
	if t == nil {
		return nil, fmt.Errorf("signing key %s: %w", path, errNoPKCS11)
	}
	ref, err := readPKCS11Ref(path)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	if ref.token != t.cfg.TokenLabel {
		return nil, fmt.Errorf("signing key %s: in token %q, but signing.pkcs11.token_label is %q", path, ref.token, t.cfg.TokenLabel)
	}
	cacheKey := path + "\x00" + string(ref.marshal())
	t.mu.Lock()
	k, ok := t.keys[cacheKey]
	t.mu.Unlock()
	if ok {
		return k, nil
	}
	s, err := t.hsm.find(ref.id, []byte(ref.label))
	if err == nil && s == nil {
		err = fmt.Errorf("token %q has no key pair with key_id %x and label %q", ref.token, ref.id, ref.label)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	k, err = t.tokenKey(s, preferred, path, activationOf(path))
	if err != nil {
		return nil, err
	}
	if k.kid != ref.kid {
		return nil, fmt.Errorf("signing key %s: the token key's kid is %s, not the kid %s the file names", path, k.kid, ref.kid)
	}
	t.mu.Lock()
	t.keys[cacheKey] = k
	t.mu.Unlock()
	return k, nil
}

// tokenKey wraps a token key pair as a signing key.
func (t *PKCS11Token) tokenKey(s crypto.Signer, preferred jose.SignatureAlgorithm, file string, act time.Time) (*signingKey, error) {
	alg, err := algFor(s, preferred)
	if err == nil && alg == jose.EdDSA {
		err = errors.New("EdDSA keys in a PKCS#11 token are not supported")
	}
	var kid string
	if err == nil {
		kid, err = thumbprint(s.Public())
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", file, err)
	}
	return &signingKey{kid: kid, alg: alg, signer: pssHashSalt{s}, file: file, activation: act}, nil
}

// pssHashSalt signs PS256 with a salt as long as the hash, as RFC 7518 §3.5
// requires: go-jose asks an opaque signer for PSSSaltLengthAuto, which tokens
// (and crypto11) do not take.
type pssHashSalt struct{ crypto.Signer }

func (p pssHashSalt) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if o, ok := opts.(*rsa.PSSOptions); ok && o.SaltLength == rsa.PSSSaltLengthAuto {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: o.Hash}
	}
	return p.Signer.Sign(r, digest, opts)
}

// generateIn creates a key for alg in the token labelled label (when the token
// has none of that label and adopt is set, an existing one is adopted) and
// writes its reference file activating at now into dir.
func (t *PKCS11Token) generateIn(dir string, alg jose.SignatureAlgorithm, now time.Time, rsaBits int, label string, adopt bool) (*signingKey, error) {
	if alg == jose.EdDSA {
		return nil, errors.New("signing.pkcs11: EdDSA is not supported in a PKCS#11 token (use ES256, RS256 or PS256)")
	}
	now = now.UTC().Truncate(time.Second)
	var s crypto.Signer
	var err error
	if adopt {
		if s, err = t.hsm.find(nil, []byte(label)); err != nil {
			return nil, fmt.Errorf("signing.pkcs11: find key %q: %w", label, err)
		}
	}
	id := make([]byte, 16)
	if s == nil {
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
		if s, err = t.hsm.generate(alg, rsaBits, id, []byte(label)); err != nil {
			return nil, fmt.Errorf("signing.pkcs11: generate %s key %q: %w", alg, label, err)
		}
	} else if id, err = t.hsm.id(s); err != nil || len(id) == 0 {
		return nil, fmt.Errorf("signing.pkcs11: key %q has no CKA_ID (give it one: pkcs11-tool --id): %v", label, err)
	}
	k, err := t.tokenKey(s, alg, "", now)
	if err != nil {
		return nil, err
	}
	if k.alg != alg {
		return nil, fmt.Errorf("signing.pkcs11: the token key %q signs %s, not %s", label, k.alg, alg)
	}
	ref := &pkcs11Ref{token: t.cfg.TokenLabel, label: label, id: id, kid: k.kid}
	if k.file, err = writePKCS11Ref(dir, ref, now); err != nil {
		return nil, fmt.Errorf("signing.pkcs11: key reference: %w", err)
	}
	return k, nil
}
