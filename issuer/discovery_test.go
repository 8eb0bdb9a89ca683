package issuer

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// TestDiscoveryClientCertificates: tls_client_auth and certificate-bound tokens
// are advertised only when the listener requests client certificates; there is
// no response_types_supported (no authorization endpoint).
func TestDiscoveryClientCertificates(t *testing.T) {
	plain := startSTS(t, stsOptions{})
	mtls, _ := startSPIFFESTS(t)
	for _, c := range []struct {
		name  string
		ts    *testSTS
		mtls  bool
		paths []string
	}{
		{"no client certificates", plain, false, []string{PathOpenID, PathOAuthMeta}},
		{"client_certificates: request", mtls, true, []string{PathOpenID, PathOAuthMeta}},
	} {
		for _, path := range c.paths {
			t.Run(c.name+" "+path, func(t *testing.T) {
				r := c.ts.do(t, http.MethodGet, path, "", "", nil)
				if r.status != 200 {
					t.Fatalf("status %d", r.status)
				}
				methods := toStrings(r.body["token_endpoint_auth_methods_supported"])
				if slices.Contains(methods, "tls_client_auth") != c.mtls || !slices.Contains(methods, "none") {
					t.Fatalf("auth methods %v with mtls=%v", methods, c.mtls)
				}
				bound, ok := r.body["tls_client_certificate_bound_access_tokens"].(bool)
				if !ok || bound != c.mtls {
					t.Fatalf("tls_client_certificate_bound_access_tokens = %v (present %v), want %v", bound, ok, c.mtls)
				}
				if _, ok := r.body["response_types_supported"]; ok {
					t.Fatalf("response_types_supported listed: %v", r.body["response_types_supported"])
				}
			})
		}
	}
}

// TestDiscoveryAndJWKSETag: both documents carry a strong ETag; If-None-Match
// naming it (strong, weak, in a list, or *) gets 304 without a body, another tag
// the document; the JWKS's tag changes when a rotation changes the JWKS, and the
// old tag then gets the new document.
func TestDiscoveryAndJWKSETag(t *testing.T) {
	ts := startSTS(t, stsOptions{})
	for _, path := range []string{PathOpenID, PathOAuthMeta, PathJWKS} {
		t.Run(path, func(t *testing.T) {
			first := ts.do(t, http.MethodGet, path, "", "", nil)
			tag := first.header.Get("ETag")
			if first.status != 200 || !strings.HasPrefix(tag, `"`) || !strings.HasSuffix(tag, `"`) || len(tag) < 10 {
				t.Fatalf("status %d, ETag %q", first.status, tag)
			}
			if again := ts.do(t, http.MethodGet, path, "", "", nil); again.header.Get("ETag") != tag || again.raw != first.raw {
				t.Fatalf("same document, ETag %q then %q", tag, again.header.Get("ETag"))
			}
			for _, c := range []struct {
				name, inm string
				want      int
			}{
				{"same tag", tag, 304},
				{"weak form", "W/" + tag, 304},
				{"in a list", `"other", ` + tag, 304},
				{"second field line", "", 304}, // two If-None-Match lines, see below
				{"star", "*", 304},
				{"other tag", `"other"`, 200},
				{"unquoted", strings.Trim(tag, `"`), 200},
				{"garbage", `W/`, 200},
			} {
				t.Run(c.name, func(t *testing.T) {
					r := ts.do(t, http.MethodGet, path, "", "", func(r *http.Request) {
						if c.inm == "" {
							r.Header.Add("If-None-Match", `"other"`)
							r.Header.Add("If-None-Match", tag)
							return
						}
						r.Header.Set("If-None-Match", c.inm)
					})
					if r.status != c.want {
						t.Fatalf("If-None-Match %q: status %d, want %d", c.inm, r.status, c.want)
					}
					if r.header.Get("ETag") != tag || r.header.Get("Cache-Control") != cacheControl() {
						t.Fatalf("ETag %q Cache-Control %q", r.header.Get("ETag"), r.header.Get("Cache-Control"))
					}
					if c.want == 304 && r.raw != "" {
						t.Fatalf("304 with a body %q", r.raw)
					}
					if c.want == 200 && r.raw != first.raw {
						t.Fatal("200 with another document")
					}
				})
			}
			if r := ts.do(t, http.MethodHead, path, "", "", func(r *http.Request) { r.Header.Set("If-None-Match", tag) }); r.status != 304 {
				t.Fatalf("HEAD with the tag: %d", r.status)
			}
		})
	}

	// A staged rotation publishes a new key: the JWKS and its tag change at once,
	// and the old tag no longer gets 304.
	before := ts.do(t, http.MethodGet, PathJWKS, "", "", nil)
	oldTag := before.header.Get("ETag")
	if _, err := RotateKey(ts.dir+"/keys", jose.ES256, time.Now(), false); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	after := ts.do(t, http.MethodGet, PathJWKS, "", "", func(r *http.Request) { r.Header.Set("If-None-Match", oldTag) })
	if after.status != 200 || after.raw == before.raw || len(toSlice(after.body["keys"])) != 2 {
		t.Fatalf("after rotation with the old tag: status %d, keys %v", after.status, after.body["keys"])
	}
	if newTag := after.header.Get("ETag"); newTag == oldTag || newTag != etag([]byte(after.raw)) {
		t.Fatalf("ETag %q after rotation (before %q)", newTag, oldTag)
	}
}

func toSlice(v any) []any { s, _ := v.([]any); return s }

// TestETagMatches covers If-None-Match parsing (RFC 9110 §13.1.2).
func TestETagMatches(t *testing.T) {
	const tag = `"abc"`
	for _, c := range []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{`"abc"`}, true},
		{[]string{`W/"abc"`}, true},
		{[]string{` "x" ,  "abc" `}, true},
		{[]string{`"x"`, `"abc"`}, true},
		{[]string{`*`}, true},
		{[]string{`abc`}, false},
		{[]string{`"ab"`}, false},
		{[]string{`"abc`}, false},
		{[]string{`w/"abc"`}, false},                              // W is case-sensitive
		{[]string{strings.Repeat(`"x",`, 2000) + `"abc"`}, false}, // oversized: ignored
	} {
		if got := etagMatches(c.values, tag); got != c.want {
			t.Errorf("etagMatches(%q) = %v, want %v", c.values, got, c.want)
		}
	}
}

// FuzzETagMatches: If-None-Match is untrusted input; any value is answered
// without a panic, and a field naming the tag exactly matches.
func FuzzETagMatches(f *testing.F) {
	f.Add(`"abc"`, `W/"abc", "x"`)
	f.Add(`"abc"`, `*`)
	f.Add(`"abc"`, `,,,"`)
	f.Fuzz(func(t *testing.T, doc, field string) {
		tag := etag([]byte(doc))
		_ = etagMatches([]string{field}, tag)
		if !etagMatches([]string{tag}, tag) || !etagMatches([]string{field, tag}, tag) && len(field)+len(tag) <= maxIfNoneMatch {
			t.Fatalf("the tag itself does not match (field %q)", field)
		}
	})
}
