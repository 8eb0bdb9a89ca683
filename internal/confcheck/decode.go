package confcheck

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds the nodes Decode visits, aliases expanded: a small document
// whose aliases nest ("billion laughs") must not take forever.
const maxNodes = 1 << 16

// Decode decodes the YAML document n into out, a non-nil pointer to a struct, as
// yaml.v3's Decoder with KnownFields(true) would, except that it does not stop at
// the first problem. Each mapping key must be the yaml tag (or lower-cased name)
// of a field of the struct it decodes into; a key that is not is an unknown key,
// reported with a suggestion. Values are decoded field by field (scalars by
// yaml.v3, so custom UnmarshalYAML methods apply): a value of the wrong type, or
// one whose UnmarshalYAML fails, is reported with its line and path, its field
// keeps its zero value and decoding goes on. Duplicate keys are problems; aliases
// and merge keys (<<) are followed. Problems come in document order (merged keys
// after the mapping's own); Sort orders them by line.
func Decode(file string, n *yaml.Node, out any) []Problem {
	v := reflect.ValueOf(out)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		panic("confcheck: Decode needs a non-nil pointer")
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	if n.Kind == 0 {
		return nil // no document at all
	}
	d := &decoder{file: file, budget: maxNodes, following: make(map[*yaml.Node]bool)}
	if v.Elem().Kind() == reflect.Struct && !isNull(n) && resolve(n).Kind != yaml.MappingNode {
		d.add(n, "", "the document must be a mapping of keys to values")
		return d.problems
	}
	d.value(n, v.Elem(), "")
	return d.problems
}

type decoder struct {
	file     string
	problems []Problem
	// budget is the number of nodes left to visit.
	budget int
	// following holds the anchors being expanded, to refuse an alias inside the
	// value it names.
	following map[*yaml.Node]bool
}

func (d *decoder) add(n *yaml.Node, path, msg string) {
	d.problems = append(d.problems, Problem{File: d.file, Line: n.Line, Path: path, Message: msg})
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// spend takes k nodes from the budget, reporting when it runs out.
func (d *decoder) spend(k int, n *yaml.Node, path string) bool {
	if d.budget < k {
		if d.budget >= 0 {
			d.add(n, path, "the document is too large once its aliases are expanded")
		}
		d.budget = -1
		return false
	}
	d.budget -= k
	return true
}

// value decodes n into v, which is addressable.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if !d.spend(1, n, path) {
		return
	}
	if n.Kind == yaml.AliasNode {
		if d.following[n.Alias] {
			d.add(n, path, fmt.Sprintf("alias *%s is inside the value it names", n.Value))
			return
		}
		d.following[n.Alias] = true
		d.value(n.Alias, v, path)
		delete(d.following, n.Alias)
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		d.leaf(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			v.SetZero()
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path)
	case reflect.Struct:
		switch {
		case isNull(n):
		case n.Kind != yaml.MappingNode:
			d.add(n, path, "must be a mapping")
		default:
			d.structFields(n, v, path)
		}
	case reflect.Slice:
		switch {
		case isNull(n):
			v.SetZero()
		case n.Kind != yaml.SequenceNode:
			d.add(n, path, "must be a list")
		default:
			s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
			for i, item := range n.Content {
				d.value(item, s.Index(i), Index(path, i))
			}
			v.Set(s)
		}
	case reflect.Map:
		switch {
		case isNull(n):
			v.SetZero()
		case n.Kind != yaml.MappingNode:
			d.add(n, path, "must be a mapping")
		default:
			m := reflect.MakeMap(v.Type())
			for _, p := range d.pairs(n, path) {
				at := Key(path, p.key.Value)
				k := reflect.New(v.Type().Key()).Elem()
				e := reflect.New(v.Type().Elem()).Elem()
				if n := len(d.problems); d.leaf(p.key, k, at) {
					if d.value(p.val, e, at); len(d.problems) == n {
						m.SetMapIndex(k, e) // (an entry that failed is left out)
					}
				}
			}
			v.Set(m)
		}
	default:
		d.leaf(n, v, path)
	}
}

// structFields decodes mapping n into struct v, field by field.
func (d *decoder) structFields(n *yaml.Node, v reflect.Value, path string) {
	fields := fieldsOf(v.Type())
	for _, p := range d.pairs(n, path) {
		at := Key(path, p.key.Value)
		if i, ok := fields.index[p.key.Value]; ok {
			d.value(p.val, v.FieldByIndex(i), at)
		} else {
			d.add(p.key, at, UnknownKey(p.key.Value, fields.keys))
		}
	}
}

// leaf decodes a scalar (or a value with its own UnmarshalYAML) with yaml.v3.
func (d *decoder) leaf(n *yaml.Node, v reflect.Value, path string) bool {
	err := n.Decode(v.Addr().Interface())
	if err == nil {
		return true
	}
	if te := (*yaml.TypeError)(nil); errors.As(err, &te) {
		d.add(n, path, want(v.Type()))
	} else {
		d.add(n, path, err.Error())
	}
	return false
}

// want says what a value of type t must be written as.
func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "must be true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "must be a whole number"
	case reflect.Float32, reflect.Float64:
		return "must be a number"
	case reflect.String:
		return "must be a string"
	case reflect.Slice, reflect.Array:
		return "must be a list"
	case reflect.Map, reflect.Struct:
		return "must be a mapping"
	case reflect.Pointer:
		return want(t.Elem())
	}
	return "has the wrong type"
}

type pair struct{ key, val *yaml.Node }

// pairs lists the entries of mapping n: its own keys, then those merged in with
// << that it does not set itself (earlier merged mappings win over later ones, as
// in yaml.v3). Keys that are not scalars, and keys given twice, are reported.
func (d *decoder) pairs(n *yaml.Node, path string) []pair {
	if !d.spend(len(n.Content)/2, n, path) {
		return nil
	}
	var out, merges []pair
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
			merges = append(merges, pair{k, v})
		case k.Kind != yaml.ScalarNode:
			d.add(k, path, "a key must be a plain value, not a list or mapping")
		case seen[k.Value] > 0:
			d.add(k, Key(path, k.Value), fmt.Sprintf("duplicate key (first at line %d)", seen[k.Value]))
		default:
			seen[k.Value] = k.Line
			out = append(out, pair{k, v})
		}
	}
	for _, m := range merges {
		from := []*yaml.Node{resolve(m.val)}
		if from[0].Kind == yaml.SequenceNode {
			from = from[0].Content
		}
		for _, f := range from {
			if f = resolve(f); f.Kind != yaml.MappingNode || d.following[f] {
				d.add(m.key, path, "a merge key (<<) takes a mapping or a list of mappings")
				continue
			}
			d.following[f] = true
			for _, p := range d.pairs(f, path) {
				if seen[p.key.Value] == 0 {
					seen[p.key.Value] = p.key.Line
					out = append(out, p)
				}
			}
			delete(d.following, f)
		}
	}
	return out
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// structKeys are the keys of a struct type and the fields they decode into.
type structKeys struct {
	keys  []string
	index map[string][]int
}

// fieldsOf reads the yaml tags of t's exported fields, as yaml.v3 does: the tag's
// name, or the lower-cased field name; "-" skips the field, ",inline" lifts the
// keys of a struct field into t.
func fieldsOf(t reflect.Type) structKeys {
	s := structKeys{index: make(map[string][]int)}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if slices.Contains(strings.Split(opts, ","), "inline") && f.Type.Kind() == reflect.Struct {
			inner := fieldsOf(f.Type)
			for _, k := range inner.keys {
				s.keys = append(s.keys, k)
				s.index[k] = append([]int{i}, inner.index[k]...)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		s.keys = append(s.keys, name)
		s.index[name] = []int{i}
	}
	return s
}
