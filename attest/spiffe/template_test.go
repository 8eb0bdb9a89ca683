package spiffe

import (
	"maps"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestCompileTemplate(t *testing.T) {
	for _, bad := range []string{
		"", "ns/{x}", "/", "/ns/", "/ns//x", "//", "/{}", "/{X}", "/{1x}", "/{a-b}", "/{sub}", "/{iss}", "/{path}",
		"/{trust_domain}", "/{a}/{a}", "/ns/{a", "/ns/a}", "/ns/{a}b", "/./x", "/../x", "/a b", "/a%2F", "/a?b",
		"/" + strings.Repeat("a/", maxTemplateSegments) + "a", "/{" + strings.Repeat("a", 65) + "}",
	} {
		if _, err := compileTemplate(bad); err == nil {
			t.Errorf("%q compiled", bad)
		}
	}
	tests := []struct {
		template, path string
		want           map[string]string // nil: no match
	}{
		{"/ns/{namespace}/sa/{service_account}", "/ns/prod/sa/api", map[string]string{"namespace": "prod", "service_account": "api"}},
		{"/ns/{namespace}/sa/{service_account}", "/ns/prod/sa/api/x", nil},
		{"/ns/{namespace}/sa/{service_account}", "/ns/prod/sa", nil},
		{"/ns/{namespace}/sa/{service_account}", "/ns/prod/pod/api", nil},
		{"/ns/{namespace}/sa/{service_account}", "", nil},
		{"/ns/*/sa/{sa}", "/ns/prod/sa/api", map[string]string{"sa": "api"}},
		{"/{a}", "/x", map[string]string{"a": "x"}},
		{"/{a}", "/x/y", nil},
		{"/{a}/{b}", "/x", nil},
		{"/literal", "/literal", map[string]string{}},
		{"/literal", "/Literal", nil},
		{"/*", "/anything", map[string]string{}},
	}
	for _, tt := range tests {
		pt, err := compileTemplate(tt.template)
		if err != nil {
			t.Fatalf("%q: %v", tt.template, err)
		}
		got := map[string]string{"keep": "me"}
		ok := pt.match(tt.path, got)
		delete(got, "keep")
		switch {
		case tt.want == nil && (ok || len(got) != 0):
			t.Errorf("%q matched %q: %v", tt.template, tt.path, got)
		case tt.want != nil && (!ok || !maps.Equal(got, tt.want)):
			t.Errorf("%q on %q: %v %v, want %v", tt.template, tt.path, ok, got, tt.want)
		}
	}
}

// FuzzPathTemplate runs random templates over random SPIFFE IDs: compiling and
// matching never panic; a match writes exactly the template's captures, each a
// non-empty segment without '/', and substituting them (and the '*' segments)
// back into the template gives the path; a miss writes nothing.
func FuzzPathTemplate(f *testing.F) {
	for _, s := range [][2]string{
		{"/ns/{namespace}/sa/{service_account}", "spiffe://a.example/ns/prod/sa/api"},
		{"/ns/*/{x}", "spiffe://a.example/ns/a/b"},
		{"/{a}/{b}/{c}", "spiffe://a.example/x/y"},
		{"/a", "spiffe://a.example/a"},
		{"/{a}", "spiffe://a.example"},
		{"/{a}", "spiffe://a.example/x/"},
		{"/{a}", "spiffe://a.example//x"},
		{"/x/{a}", "spiffe://a.example/x/%2F"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, template, rawID string) {
		pt, err := compileTemplate(template)
		if err != nil {
			return
		}
		// Paths of valid SPIFFE IDs, as the verifier hands them over, and raw
		// strings too (match must hold on any input).
		paths := []string{rawID}
		if id, err := spiffeid.FromString(rawID); err == nil {
			paths = append(paths, id.Path())
		}
		for _, path := range paths {
			got := map[string]string{}
			if !pt.match(path, got) {
				if len(got) != 0 {
					t.Fatalf("%q on %q: miss wrote %v", template, path, got)
				}
				continue
			}
			var rebuilt strings.Builder
			segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
			if len(segs) != len(pt.segs) {
				t.Fatalf("%q on %q: %d segments matched %d", template, path, len(segs), len(pt.segs))
			}
			names := 0
			for i, seg := range pt.segs {
				rebuilt.WriteByte('/')
				switch {
				case seg.any:
					rebuilt.WriteString(segs[i])
				case seg.name != "":
					names++
					v := got[seg.name]
					if v == "" || strings.Contains(v, "/") {
						t.Fatalf("%q on %q: capture %s = %q", template, path, seg.name, v)
					}
					rebuilt.WriteString(v)
				default:
					rebuilt.WriteString(seg.literal)
				}
			}
			if rebuilt.String() != path || len(got) != names {
				t.Fatalf("%q on %q: captures %v rebuild %q", template, path, got, rebuilt.String())
			}
		}
	})
}
