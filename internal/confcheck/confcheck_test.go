package confcheck

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestProblemString(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{File: "a.yaml", Line: 3, Path: "x.y[1]", Message: "m"}, "a.yaml:3: x.y[1]: m"},
		{Problem{File: "a.yaml", Line: 3, Message: "m"}, "a.yaml:3: m"},
		{Problem{File: "a.yaml", Path: "x", Message: "m"}, "a.yaml: x: m"},
		{Problem{File: "a.yaml", Message: "m"}, "a.yaml: m"},
		{Problem{Message: "m"}, "m"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestSortAndFormat(t *testing.T) {
	ps := []Problem{
		{File: "b", Line: 1, Message: "b1"},
		{File: "a", Line: 9, Message: "a9"},
		{File: "a", Line: 2, Message: "a2 first"},
		{File: "a", Line: 2, Message: "a2 second"},
		{Message: "no file"},
	}
	Sort(ps, "a", "b")
	want := "no file\na:2: a2 first\na:2: a2 second\na:9: a9\nb:1: b1"
	if got := Format(ps); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestPaths(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Key("", "a"), "a"},
		{Key("a", "b_c-1"), "a.b_c-1"},
		{Index(Key("a", "b"), 2), "a.b[2]"},
		{Key("a", "x.io/claim"), `a["x.io/claim"]`},
		{Key("", "two\nlines"), `["two\nlines"]`},
		{Key("a", ""), `a[""]`},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestMerge(t *testing.T) {
	decoded := []Problem{{Path: "a.b", Message: "1"}, {Path: "", Message: "2"}, {Path: "l[1]", Message: "3"}}
	later := []Problem{
		{Path: "a.b", Message: "same"}, {Path: "a.b.c", Message: "below"}, {Path: "a.b[0]", Message: "item"},
		{Path: "a.bc", Message: "4"}, {Path: "a", Message: "5"}, {Path: "l[10]", Message: "6"}, {Path: "l[1].x", Message: "below"},
	}
	var got []string
	for _, p := range Merge(decoded, later) {
		got = append(got, p.Message)
	}
	if want := []string{"1", "2", "3", "4", "5", "6"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestUnknownKey(t *testing.T) {
	known := []string{"listen", "issuer", "upstreams", "policy_files", "otlp_endpoint", "max_ttl", "default_ttl"}
	for key, want := range map[string]string{
		"endpoint":    `unknown key (did you mean "otlp_endpoint"?)`,
		"otlp":        `unknown key (did you mean "otlp_endpoint"?)`,
		"policy":      `unknown key (did you mean "policy_files"?)`,
		"ttl":         `unknown key (the keys here are listen, issuer, upstreams, policy_files, otlp_endpoint, max_ttl, default_ttl)`,
		"lsiten":      `unknown key (did you mean "listen"?)`,
		"upstream":    `unknown key (did you mean "upstreams"?)`,
		"policy_file": `unknown key (did you mean "policy_files"?)`,
		"colour":      `unknown key (the keys here are listen, issuer, upstreams, policy_files, otlp_endpoint, max_ttl, default_ttl)`,
		"":            `unknown key (the keys here are listen, issuer, upstreams, policy_files, otlp_endpoint, max_ttl, default_ttl)`,
	} {
		if got := UnknownKey(key, known); got != want {
			t.Errorf("%q: got %q, want %q", key, got, want)
		}
	}
}

// dur is a duration with its own UnmarshalYAML, as configurations have.
type dur time.Duration

func (d *dur) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return fmt.Errorf("%q is not a duration", n.Value)
	}
	*d = dur(v)
	return nil
}

type inner struct {
	D dur `yaml:"d"`
	N int `yaml:"n"`
}

type Shared struct {
	Shared string `yaml:"shared"`
}

type sample struct {
	Name   string            `yaml:"name"`
	Count  int               `yaml:"count"`
	On     bool              `yaml:"on"`
	Ratio  *float64          `yaml:"ratio"`
	List   []string          `yaml:"list"`
	Items  []inner           `yaml:"items"`
	Ptr    *inner            `yaml:"ptr"`
	Map    map[string]string `yaml:"map"`
	Inner  inner             `yaml:"inner"`
	Skip   string            `yaml:"-"`
	Plain  string
	Shared `yaml:",inline"`
	hidden string
}

func decode(t *testing.T, src string) (sample, []string) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	var s sample
	var got []string
	for _, p := range Decode("c.yaml", &n, &s) {
		got = append(got, p.String())
	}
	return s, got
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{name: "empty", src: ""},
		{name: "comments only", src: "# nothing\n"},
		{name: "null document", src: "~\n"},
		{name: "not a mapping", src: "- a\n", want: []string{"c.yaml:1: the document must be a mapping of keys to values"}},
		{
			name: "every unknown key, at every level",
			src:  "nme: x\ncount: 1\nitems:\n  - {d: 1s, nn: 2}\n  - d: 1s\n    colour: red\nptr: {dd: 1s}\nskip: x\nhidden: x\n",
			want: []string{
				`c.yaml:1: nme: unknown key (did you mean "name"?)`,
				`c.yaml:4: items[0].nn: unknown key (did you mean "n"?)`,
				`c.yaml:6: items[1].colour: unknown key (the keys here are d, n)`,
				`c.yaml:7: ptr.dd: unknown key (did you mean "d"?)`,
				`c.yaml:8: skip: unknown key (the keys here are name, count, on, ratio, list, items, ptr, map, inner, plain, shared)`,
				`c.yaml:9: hidden: unknown key (the keys here are name, count, on, ratio, list, items, ptr, map, inner, plain, shared)`,
			},
		},
		{
			name: "wrong types, and decoding goes on",
			src:  "name: [a]\ncount: many\non: maybe\nratio: half\nlist: a\nitems: {d: 1s}\nptr: 5\nmap: [a]\ninner:\n  d: 5 minutes\n  n: x\nplain: ok\n",
			want: []string{
				"c.yaml:1: name: must be a string",
				"c.yaml:2: count: must be a whole number",
				"c.yaml:3: on: must be true or false",
				"c.yaml:4: ratio: must be a number",
				"c.yaml:5: list: must be a list",
				"c.yaml:6: items: must be a list",
				"c.yaml:7: ptr: must be a mapping",
				"c.yaml:8: map: must be a mapping",
				`c.yaml:10: inner.d: "5 minutes" is not a duration`,
				"c.yaml:11: inner.n: must be a whole number",
			},
		},
		{
			name: "duplicate keys and odd keys",
			src:  "name: a\nname: b\n[x]: 1\nmap: {a.b: x, a.b: y, \"\": z}\n",
			want: []string{
				"c.yaml:2: name: duplicate key (first at line 1)",
				"c.yaml:3: a key must be a plain value, not a list or mapping",
				`c.yaml:4: map["a.b"]: duplicate key (first at line 4)`,
			},
		},
		{
			name: "bad merge",
			src:  "<<: [a]\ninner: {<<: 5, n: 1}\n",
			want: []string{
				"c.yaml:1: a merge key (<<) takes a mapping or a list of mappings",
				"c.yaml:2: inner: a merge key (<<) takes a mapping or a list of mappings",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got := decode(t, tt.src)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// What Decode accepts it decodes as yaml.v3 does.
func TestDecodeValues(t *testing.T) {
	src := `name: n
count: 3
on: true
ratio: 0.5
list: [a, b]
items: [{d: 1s, n: 1}, &i {d: 2m}]
ptr: *i
map: {x.io/a: "1", b: 2}
inner:
  <<: [{n: 7, d: 3s}, {n: 8}]
  d: 4s
plain: p
shared: s
`
	got, problems := decode(t, src)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	var want sample
	if err := yaml.Unmarshal([]byte(src), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if got.hidden != "" || got.Skip != "" {
		t.Errorf("unexported or skipped fields set: %+v", got)
	}
	if got.Inner.N != 7 || got.Inner.D != dur(4*time.Second) || got.Ptr.D != dur(2*time.Minute) {
		t.Errorf("merge or alias: %+v %+v", got.Inner, got.Ptr)
	}
}

func TestDecodeAliasCycle(t *testing.T) {
	type tree struct {
		Kids []tree `yaml:"kids"`
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("kids: &x [{kids: *x}]\n"), &n); err != nil {
		t.Fatal(err)
	}
	var v tree
	got := Format(Decode("c.yaml", &n, &v))
	if want := "c.yaml:1: kids[0].kids[0].kids: alias *x is inside the value it names"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDecodeAliasBomb(t *testing.T) {
	src := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for c := 'b'; c <= 'k'; c++ {
		src += fmt.Sprintf("%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n", c, c, c-1, c-1, c-1, c-1, c-1, c-1, c-1, c-1, c-1, c-1)
	}
	src += "list: *k\n"
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	var m struct {
		List [][][][][][][][][][][]string `yaml:"list"`
		Rest map[string]any               `yaml:",inline"`
	}
	// Bounded by the node budget (10^10 nodes once expanded), not by time.
	problems := Decode("c.yaml", &n, &m)
	if len(problems) == 0 || !strings.Contains(problems[len(problems)-1].Message, "too large") {
		t.Fatalf("problems %v", problems)
	}
}

// FuzzDecode: Decode agrees with yaml.v3's strict decoder: whatever it accepts,
// yaml.v3 decodes to the same value, and whatever yaml.v3 accepts, it accepts.
func FuzzDecode(f *testing.F) {
	f.Add("name: n\ncount: 3\nitems: [{d: 1s}]\nmap: {a: b}\ninner: {<<: {n: 1}}\n")
	f.Add("nme: x\ncount: many\nitems: &x [*x]\n")
	f.Add("ptr: ~\nlist: ~\non: yes\n")
	f.Fuzz(func(t *testing.T, src string) {
		var n yaml.Node
		if yaml.Unmarshal([]byte(src), &n) != nil {
			return
		}
		var got, want sample
		problems := Decode("f.yaml", &n, &got)
		for _, p := range problems {
			if p.File != "f.yaml" || p.Line <= 0 || p.Message == "" || strings.Contains(p.String(), "\n") {
				t.Fatalf("bad problem %q", p)
			}
		}
		dec := yaml.NewDecoder(strings.NewReader(src))
		dec.KnownFields(true)
		err := dec.Decode(&want)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		switch {
		case err == nil && len(problems) > 0 && !hasNullKey(&n):
			// (yaml.v3 skips null keys; Decode calls them unknown.)
			t.Fatalf("yaml.v3 accepts what Decode refuses: %v", problems)
		case err != nil && len(problems) == 0 && !strings.Contains(err.Error(), "alias"):
			t.Fatalf("Decode accepts what yaml.v3 refuses: %v", err)
		case err == nil && !reflect.DeepEqual(got, want):
			t.Fatalf("got  %+v\nwant %+v", got, want)
		}
	})
}

func hasNullKey(n *yaml.Node) bool {
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 && c.Kind == yaml.ScalarNode && c.ShortTag() == "!!null" || hasNullKey(c) {
			return true
		}
	}
	return false
}

func TestStripKey(t *testing.T) {
	for _, tc := range []struct{ path, msg, want string }{
		{"tracing.timeout", "tracing.timeout must be positive", "must be positive"},
		{"upstreams[0].clock_skew", "clock_skew must be between 0s and 60s", "must be between 0s and 60s"},
		{"upstreams[0].bundle_endpoint.url", "bundle_endpoint.url must be an https URL", "must be an https URL"},
		{"revocation.redis.addrs[1]", `revocation.redis.addrs[1] "x" is not host:port`, `"x" is not host:port`},
		{"limits.trusted_proxies[0]", `limits.trusted_proxies: "x" is not an IP`, `"x" is not an IP`},
		{"upstreams[0].jwks_uri", "jwks_uri and jwks_file are exclusive", "jwks_uri and jwks_file are exclusive"},
		{"tls", "tls.cert_file and tls.key_file are required", "tls.cert_file and tls.key_file are required"},
		{"upstreams[1]", "upstream name is required", "upstream name is required"},
		{"", "anything", "anything"},
	} {
		if got := StripKey(tc.path, tc.msg); got != tc.want {
			t.Errorf("StripKey(%q, %q) = %q, want %q", tc.path, tc.msg, got, tc.want)
		}
	}
}

func TestSyntax(t *testing.T) {
	for src, want := range map[string]string{
		"a: [\n":         "c.yaml:2: invalid YAML: did not find expected node content",
		"a: b\n\tc: d\n": "c.yaml:2: invalid YAML: found a tab character that violates indentation",
		"a: b\nc\n":      "c.yaml:2: invalid YAML: could not find expected ':'",
		"\"unterminated": "c.yaml:1: invalid YAML: found unexpected end of stream",
	} {
		var n yaml.Node
		err := yaml.Unmarshal([]byte(src), &n)
		if err == nil {
			t.Fatalf("%q parsed", src)
		}
		if got := Syntax("c.yaml", err).String(); got != want {
			t.Errorf("%q: got %q, want %q", src, got, want)
		}
	}
}

// TestParse: a syntax error and a document that is not a mapping end at
// decoding (validate is not called); otherwise validate's problems join
// decoding's, less those under a value decoding already refused, sorted by line.
func TestParse(t *testing.T) {
	validate := func(called *bool) func(*yaml.Node) []Problem {
		return func(root *yaml.Node) []Problem {
			*called = true
			return []Problem{
				{File: "c.yaml", Line: Line(root, "inner", "n"), Path: "inner.n", Message: "too small"},
				{File: "c.yaml", Line: Line(root, "count"), Path: "count", Message: "must be positive"},
				{File: "c.yaml", Line: Line(root, "list", 1), Path: "list[1]", Message: "bad item"},
				{File: "c.yaml", Line: Line(root, "missing", "key"), Message: "missing.key is required"},
			}
		}
	}
	for _, tc := range []struct {
		name, src, want string
		validated       bool
	}{
		{"syntax", "a: [\n", "c.yaml:2: invalid YAML: did not find expected node content", false},
		{"not a mapping", "- a\n", "c.yaml:1: the document must be a mapping of keys to values", false},
		{"merged and sorted", "nme: x\nlist:\n  - a\n  - b\ninner: {n: x}\ncount: 0\n", `c.yaml:1: nme: unknown key (did you mean "name"?)
c.yaml:1: missing.key is required
c.yaml:4: list[1]: bad item
c.yaml:5: inner.n: must be a whole number
c.yaml:6: count: must be positive`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sample
			called := false
			err := Parse("c.yaml", []byte(tc.src), &s, validate(&called))
			var e *Error
			if !errors.As(err, &e) || err.Error() != tc.want || called != tc.validated {
				t.Fatalf("got (validated %v) %v, want (validated %v):\n%s", called, err, tc.validated, tc.want)
			}
		})
	}
	if err := Parse("c.yaml", []byte("name: n\n"), &sample{}, func(*yaml.Node) []Problem { return nil }); err != nil {
		t.Fatalf("good document: %v", err)
	}
}

func TestReadFileTooLarge(t *testing.T) {
	p := t.TempDir() + "/big.yaml"
	if err := os.WriteFile(p, []byte("#"+strings.Repeat("x", MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(p); err == nil || err.Error() != p+": file larger than 1 MiB" {
		t.Fatalf("got %v", err)
	}
}
