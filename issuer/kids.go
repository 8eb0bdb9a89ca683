package issuer

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/go-jose/go-jose/v4"
)

// The kid registry: key_dir/kids lists every key ID the STS (or `stsctl keys
// rotate`) has found or created in key_dir, one line each, "KID FIRST-SEEN FILE",
// appended to and never rewritten. A key whose file was removed (an emergency
// rotation deletes it) stays there, so its tokens stay revocable by kid on every
// replica and after a restart; a revoke naming any other kid is refused (404), as
// it would revoke nothing. Where key_dir is read-only (a Kubernetes Secret), the
// file travels with the keys: `stsctl keys rotate` keeps it in the directory the
// Secret is made from.
const kidsFile = "kids"

// maxKidsFile bounds the registry (some 60,000 keys).
const maxKidsFile = 4 << 20

// readKidsFile returns the key IDs listed in dir/kids with their lines (none
// when the file does not exist).
func readKidsFile(dir string) (map[string]string, error) {
	path := filepath.Join(dir, kidsFile)
	data, err := readBounded(path, maxKidsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kid registry: %w", err)
	}
	kids := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kid := strings.Fields(line)[0]
		if len(kid) > 256 || strings.IndexFunc(kid, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }) >= 0 {
			return nil, fmt.Errorf("kid registry %s:%d: not a key ID", path, n)
		}
		if _, dup := kids[kid]; !dup {
			kids[kid] = line
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kid registry %s: %w", path, err)
	}
	return kids, nil
}

// readBounded reads a regular file of at most max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return os.ReadFile(path)
}

// kidSync is the outcome of syncKids.
type kidSync struct {
	known map[string]bool
	// readErr is the error reading the registry, writeErr the one appending to it.
	readErr, writeErr error
}

// syncKids merges the registry in dir with the key IDs already known and those
// of keys, and appends to the registry the kids of keys it lacks (and known does
// not hold: each new kid is written once per process). known is not changed.
func syncKids(dir string, known map[string]bool, keys []*signingKey, now time.Time) kidSync {
	out := kidSync{known: maps.Clone(known)}
	if out.known == nil {
		out.known = map[string]bool{}
	}
	registered, err := readKidsFile(dir)
	out.readErr = err
	for kid := range registered {
		out.known[kid] = true
	}
	var lines strings.Builder
	for _, k := range keys {
		if out.known[k.kid] {
			continue
		}
		out.known[k.kid] = true
		fmt.Fprintf(&lines, "%s %s %s\n", k.kid, now.UTC().Format(time.RFC3339), filepath.Base(k.file))
	}
	if lines.Len() > 0 && out.readErr == nil {
		out.writeErr = appendKids(dir, lines.String())
	}
	return out
}

// registerKids makes sure the registry in dir lists the kids of keys.
func registerKids(dir string, keys []*signingKey, now time.Time) error {
	ks := syncKids(dir, nil, keys, now)
	if err := errors.Join(ks.readErr, ks.writeErr); err != nil {
		return fmt.Errorf("key directory: %w", err)
	}
	return nil
}

// appendKids appends lines to dir/kids in one write (mode 0600).
func appendKids(dir, lines string) error {
	f, err := os.OpenFile(filepath.Join(dir, kidsFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("kid registry: %w", err)
	}
	_, err = f.WriteString(lines)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kid registry: %w", err)
	}
	return nil
}

// kidProblem says why kid cannot be revoked by kid on ring: it is not one this
// STS has had in key_dir (nothing would be revoked), perhaps a truncated one (a
// key file name shows 8 characters). "" when it is known.
func (r *keyRing) kidProblem(kid string) string {
	if r.known[kid] {
		return ""
	}
	var prefixOf []string
	for k := range r.known {
		if strings.HasPrefix(k, kid) {
			prefixOf = append(prefixOf, k)
		}
	}
	slices.Sort(prefixOf)
	if len(prefixOf) > 0 {
		if len(prefixOf) > 3 {
			prefixOf = append(prefixOf[:3], "...")
		}
		return fmt.Sprintf("key ID %q looks truncated: it is the start of %s; give the full key ID (stsctl keys list --key-dir DIR shows them)",
			kid, strings.Join(prefixOf, ", "))
	}
	return fmt.Sprintf("key ID %q is not one this STS has signed with or published, so revoking it would revoke nothing; "+
		"stsctl keys list --key-dir DIR shows the full key IDs", kid)
}

// KeyInfo is one key ID of a key directory: a key file, or a kid its registry
// lists whose file is gone.
type KeyInfo struct {
	KeyID string
	// State is active (signs now), staged (published, signs from ActivateAt),
	// published (retired, in the JWKS until Until), retired (out of the JWKS: the
	// file may be deleted) or removed (no file; still revocable by kid).
	State     string
	Algorithm string // "" for a removed key
	// File is the key file (for a removed key, the name it had).
	File string
	// ActivateAt is when the key signs (zero: a file not named key-<time>-...;
	// for a removed key, when it was registered).
	ActivateAt time.Time
	Until      time.Time // for published keys
}

// ListKeys describes the keys in dir at now, as an STS signing with alg and
// max_ttl maxTTL sees them, and the removed keys its registry lists (first). The
// keys that could be read are listed even when others could not (the error).
func ListKeys(dir string, alg jose.SignatureAlgorithm, maxTTL time.Duration, now time.Time, opts ...KeyOption) ([]KeyInfo, error) {
	o, err := applyKeyOptions(opts)
	if err != nil {
		return nil, err
	}
	keys, keysErr := readKeysWith(dir, alg, o.token)
	registered, regErr := readKidsFile(dir)
	slices.SortStableFunc(keys, compareKeys)
	sc := schedule(keys, alg, now, maxTTL+keyRetireSkew)
	var out []KeyInfo
	files := map[string]bool{}
	for _, k := range keys {
		files[k.kid] = true
	}
	for kid, line := range registered {
		if files[kid] {
			continue
		}
		ki := KeyInfo{KeyID: kid, State: "removed"}
		if f := strings.Fields(line); len(f) >= 3 {
			ki.ActivateAt, _ = time.Parse(time.RFC3339, f[1])
			ki.File = f[2]
		}
		out = append(out, ki)
	}
	slices.SortFunc(out, func(a, b KeyInfo) int {
		return cmp.Or(a.ActivateAt.Compare(b.ActivateAt), strings.Compare(a.KeyID, b.KeyID))
	})
	for _, k := range keys {
		ki := KeyInfo{KeyID: k.kid, Algorithm: string(k.alg), File: k.file, ActivateAt: k.activation}
		drop, superseded := sc.dropAt[k.kid]
		switch {
		case k == sc.active:
			ki.State = "active"
		case k.alg == alg && k.activation.After(now):
			ki.State = "staged"
		case superseded && now.Before(drop):
			ki.State, ki.Until = "published", drop
		case superseded:
			ki.State = "retired"
		default: // another algorithm's key, published as long as its file exists
			ki.State = "published"
		}
		out = append(out, ki)
	}
	return out, errors.Join(keysErr, regErr)
}
