package revocation

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Facts is what is known about a token (from its claims, see FactsFromClaims) or
// about a workload at issuance. Empty fields are unknown: no selector term on them
// matches.
type Facts struct {
	JTI         string
	Subject     string
	Upstream    string
	TrustDomain string
	ClientID    string
	Audiences   []string
	Attributes  map[string]string
	// Binding is the binding fingerprint (claim bnd, see Fingerprint).
	Binding string
	// KeyID is the kid of the key that signed the token (JWS header, not a claim:
	// FactsFromClaims leaves it empty and whoever verified the token sets it); empty
	// for a workload at issuance. A revoke with a kid term matches it whatever the
	// token's iat.
	KeyID string
	// IssuedAt is the token's iat; zero for a workload not yet issued a token (and
	// then every revoke that matches invalidates it).
	IssuedAt time.Time
}

// value returns the fact a selector key refers to (not aud, which is a list).
func (f *Facts) value(key string) (string, bool) {
	switch key {
	case KeySubject:
		return f.Subject, true
	case KeyUpstream:
		return f.Upstream, true
	case KeyTrustDomain:
		return f.TrustDomain, true
	case KeyClientID:
		return f.ClientID, true
	case KeyJTI:
		return f.JTI, true
	case KeyBinding:
		return f.Binding, true
	case KeyKeyID:
		return f.KeyID, true
	}
	if name, ok := strings.CutPrefix(key, KeyAttrPrefix); ok {
		v, ok := f.Attributes[name]
		return v, ok
	}
	return "", false // iss and unknown keys
}

// Anchors returns the index buckets a store must read for f: one "key=value" per
// known fact (each audience, each attribute) and "sub^P" for each of the first
// MaxSubPrefixes prefixes P of the subject that end in '/' or ':'. See
// Selector.Anchor. The result is sorted and has no duplicates.
func (f *Facts) Anchors() []string {
	if f == nil {
		return nil
	}
	out := make([]string, 0, f.AnchorCount())
	f.EachAnchor(func(a []byte) { out = append(out, string(a)) })
	slices.Sort(out)
	return slices.Compact(out)
}

// AnchorCount is how many anchors EachAnchor yields for f (an upper bound of
// len(f.Anchors()), which drops repeats).
func (f *Facts) AnchorCount() int {
	n := 0
	f.EachAnchor(func([]byte) { n++ })
	return n
}

// anchorBufs holds the scratch buffers of EachAnchor.
var anchorBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// EachAnchor calls fn with each anchor of f (see Anchors), in no particular order
// and possibly repeated, built in a pooled buffer (no allocation per call). The
// bytes are valid only during the call: a lookup such as m[string(a)] does not
// copy them.
func (f *Facts) EachAnchor(fn func(anchor []byte)) {
	if f == nil {
		return
	}
	bp := anchorBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= 4096 {
			*bp = buf[:0]
			anchorBufs.Put(bp)
		}
	}()
	add := func(key, v string) {
		if v != "" {
			buf = append(append(append(buf[:0], key...), '='), v...)
			fn(buf)
		}
	}
	add(KeyJTI, f.JTI)
	add(KeyKeyID, f.KeyID)
	add(KeySubject, f.Subject)
	add(KeyClientID, f.ClientID)
	add(KeyBinding, f.Binding)
	for name, v := range f.Attributes {
		if v != "" && checkAttrName(name) == nil {
			buf = append(append(append(append(buf[:0], KeyAttrPrefix...), name...), '='), v...)
			fn(buf)
		}
	}
	for _, a := range f.Audiences {
		add(KeyAudience, a)
	}
	add(KeyUpstream, f.Upstream)
	add(KeyTrustDomain, f.TrustDomain)
	n := 0
	for i := 0; i < len(f.Subject) && n < MaxSubPrefixes; i++ {
		if c := f.Subject[i]; c == '/' || c == ':' {
			buf = append(append(append(buf[:0], KeySubject...), '^'), f.Subject[:i+1]...)
			fn(buf)
			n++
		}
	}
}

// FactsFromClaims reads the facts of a token from its verified claims: jti, sub,
// upstream, aud (a string or an array of strings), client_id, attributes (an object;
// string values as they are, numbers and booleans in their JSON form, other values
// ignored), bnd and iat (seconds, a number or json.Number). TrustDomain is the host
// of a spiffe:// subject. Claims of the wrong type are left empty. KeyID is not a
// claim: the caller sets it to the kid of the key that verified the token's
// signature (not a kid read from the header by another parser), or revokes by kid
// do not apply to it.
func FactsFromClaims(claims map[string]any) Facts {
	str := func(name string) string {
		s, _ := claims[name].(string)
		return s
	}
	f := Facts{
		JTI:      str("jti"),
		Subject:  str("sub"),
		Upstream: str("upstream"),
		ClientID: str("client_id"),
		Binding:  str("bnd"),
	}
	if rest, ok := strings.CutPrefix(f.Subject, "spiffe://"); ok {
		td, _, _ := strings.Cut(rest, "/")
		f.TrustDomain = td
	}
	switch aud := claims["aud"].(type) {
	case string:
		f.Audiences = []string{aud}
	case []string:
		f.Audiences = slices.Clone(aud)
	case []any:
		for _, a := range aud {
			if s, ok := a.(string); ok {
				f.Audiences = append(f.Audiences, s)
			}
		}
	}
	switch attrs := claims["attributes"].(type) {
	case map[string]any:
		for k, v := range attrs {
			if s, ok := scalarString(v); ok {
				if f.Attributes == nil {
					f.Attributes = make(map[string]string, len(attrs))
				}
				f.Attributes[k] = s
			}
		}
	case map[string]string:
		f.Attributes = make(map[string]string, len(attrs))
		for k, v := range attrs {
			f.Attributes[k] = v
		}
	}
	if sec, ok := numericSeconds(claims["iat"]); ok {
		f.IssuedAt = time.Unix(sec, 0)
	}
	return f
}

func scalarString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case json.Number:
		return v.String(), true
	case int:
		return strconv.Itoa(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	}
	return "", false
}

// numericSeconds reads a NumericDate, truncated to whole seconds.
func numericSeconds(v any) (int64, bool) {
	var x float64
	switch v := v.(type) {
	case float64:
		x = v
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i, true
		}
		f, err := v.Float64()
		if err != nil {
			return 0, false
		}
		x = f
	case int64:
		return v, true
	case int:
		return int64(v), true
	default:
		return 0, false
	}
	if math.IsNaN(x) || math.IsInf(x, 0) || x < math.MinInt64 || x >= math.MaxInt64 {
		return 0, false
	}
	return int64(math.Floor(x)), true
}

// Fingerprint returns the binding fingerprint of a workload: the first 16 bytes of
// SHA-256 over its attributes named by names that are present (sorted by name,
// duplicates ignored, each encoded as the lengths and bytes of name and value so no
// two sets encode alike), base64url without padding (22 characters). It is "" when
// none of the names is present.
func Fingerprint(attrs map[string]string, names []string) string {
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	h := sha256.New()
	var buf []byte
	found := false
	for _, n := range sorted {
		v, ok := attrs[n]
		if !ok {
			continue
		}
		found = true
		buf = binary.AppendUvarint(buf[:0], uint64(len(n)))
		buf = append(buf, n...)
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
		h.Write(buf)
	}
	if !found {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}
