package issuer

import (
	"bufio"
	"bytes"
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

