package policy

import (
	"slices"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"

	"github.com/safeconduct/safeconduct/attest"
)

// Conditions are indexed on their equality terms. A term is a leading conjunct of
// a condition of the form
//
//	workload.attributes["k"] == "v"     (or workload.attributes.k, or "v" == ...)
//	workload.claims["k"] == "v"         (or workload.claims.k)
//	workload.attributes["k"] in ["v", "w"]
//
// "Leading" means that every conjunct before it, in the condition's top-level
// chain of &&, is a term too. When the workload has k and its value is a string
// that is none of the term's values, the term is false, and so is the condition:
// CEL's && is false as soon as one operand is false, whatever the others do
// (errors included), and the terms before it cost at most a few hundred cost
// units, so the evaluation cannot have stopped at MaxConditionCost first. When k
// is missing or not a string, the term says nothing (it would be an error or a
// cross-type comparison) and the condition runs.
//
// Decide uses this twice, with no change to any outcome: the rules of a subject
// bucket are indexed on their first term (by attribute or claim name, then value),
// so a request looks only at the rules whose term can hold, plus those without one;
// and a rule whose term is false is found false without running CEL (refusals and
// Explain, which look at every rule).

// termSource says which map a term reads.
type termSource uint8

const (
	termAttribute termSource = iota + 1
	termClaim
)

// whenTerm is one equality term of a condition.
type whenTerm struct {
	src    termSource
	key    string
	values []string
}

// value is the workload's string value for the term's key, and whether the term
// can judge it (the key is present and holds a string).
func (t *whenTerm) value(w *attest.Workload) (string, bool) {
	switch t.src {
	case termAttribute:
		v, ok := w.Attributes[t.key]
		return v, ok
	case termClaim:
		v, ok := w.Claims[t.key].(string)
		return v, ok
	}
	return "", false
}

// definitelyFalse reports whether one of the terms is false for w, which makes
// the whole condition false.
func definitelyFalse(terms []whenTerm, w *attest.Workload) bool {
	for i := range terms {
		if v, ok := terms[i].value(w); ok && !slices.Contains(terms[i].values, v) {
			return true
		}
	}
	return false
}

// extractTerms returns the leading equality terms of a checked rule condition.
func extractTerms(ast *cel.Ast) []whenTerm {
	var conj []celast.Expr
	flattenAnd(ast.NativeRep().Expr(), &conj)
	var out []whenTerm
	for _, e := range conj {
		t, ok := termOf(e)
		if !ok {
			break
		}
		out = append(out, t)
	}
	return out
}

func flattenAnd(e celast.Expr, out *[]celast.Expr) {
	if e.Kind() == celast.CallKind && e.AsCall().FunctionName() == operators.LogicalAnd && len(e.AsCall().Args()) == 2 && !e.AsCall().IsMemberFunction() {
		for _, a := range e.AsCall().Args() {
			flattenAnd(a, out)
		}
		return
	}
	*out = append(*out, e)
}

// termOf recognizes one term.
func termOf(e celast.Expr) (whenTerm, bool) {
	if e.Kind() != celast.CallKind || e.AsCall().IsMemberFunction() {
		return whenTerm{}, false
	}
	call := e.AsCall()
	args := call.Args()
	if len(args) != 2 {
		return whenTerm{}, false
	}
	switch call.FunctionName() {
	case operators.Equals:
		for _, pair := range [2][2]celast.Expr{{args[0], args[1]}, {args[1], args[0]}} {
			src, key, ok := workloadLookup(pair[0])
			if !ok {
				continue
			}
			if lit, ok := stringLiteral(pair[1]); ok {
				return whenTerm{src: src, key: key, values: []string{lit}}, true
			}
		}
	case operators.In:
		src, key, ok := workloadLookup(args[0])
		if !ok || args[1].Kind() != celast.ListKind {
			return whenTerm{}, false
		}
		l := args[1].AsList()
		if len(l.OptionalIndices()) > 0 || len(l.Elements()) == 0 {
			return whenTerm{}, false
		}
		var values []string
		for _, x := range l.Elements() {
			lit, ok := stringLiteral(x)
			if !ok {
				return whenTerm{}, false
			}
			values = append(values, lit)
		}
		return whenTerm{src: src, key: key, values: values}, true
	}
	return whenTerm{}, false
}

// workloadLookup recognizes workload.attributes["k"], workload.attributes.k,
// workload.claims["k"] and workload.claims.k.
func workloadLookup(e celast.Expr) (termSource, string, bool) {
	var mapExpr celast.Expr
	var key string
	switch e.Kind() {
	case celast.SelectKind:
		s := e.AsSelect()
		if s.IsTestOnly() {
			return 0, "", false
		}
		mapExpr, key = s.Operand(), s.FieldName()
	case celast.CallKind:
		c := e.AsCall()
		if c.FunctionName() != operators.Index || c.IsMemberFunction() || len(c.Args()) != 2 {
			return 0, "", false
		}
		k, ok := stringLiteral(c.Args()[1])
		if !ok {
			return 0, "", false
		}
		mapExpr, key = c.Args()[0], k
	default:
		return 0, "", false
	}
	if mapExpr.Kind() != celast.SelectKind {
		return 0, "", false
	}
	s := mapExpr.AsSelect()
	if s.IsTestOnly() || s.Operand().Kind() != celast.IdentKind || s.Operand().AsIdent() != "workload" {
		return 0, "", false
	}
	switch s.FieldName() {
	case "attributes":
		return termAttribute, key, true
	case "claims":
		return termClaim, key, true
	}
	return 0, "", false
}

func stringLiteral(e celast.Expr) (string, bool) {
	if e.Kind() != celast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}

// termIndex holds the rules of one bucket keyed on one term key (attribute or
// claim name): by value, and all of them (for a workload the term cannot judge).
type termIndex struct {
	src     termSource
	key     string
	byValue map[string][]*rule
	all     []*rule
}

// ruleBucket is the rules of one subject-index entry: those without a term, and
// those with one, by term key. Every list is in file order.
type ruleBucket struct {
	rules []*rule // every rule of the bucket
	plain []*rule
	keyed []*termIndex
}

func (b *ruleBucket) add(r *rule) {
	if n := len(b.rules); n > 0 && b.rules[n-1] == r {
		return // a rule with two patterns in the same bucket
	}
	b.rules = append(b.rules, r)
	if r.when == nil || len(r.when.terms) == 0 {
		b.plain = append(b.plain, r)
		return
	}
	t := &r.when.terms[0]
	var ti *termIndex
	for _, x := range b.keyed {
		if x.src == t.src && x.key == t.key {
			ti = x
			break
		}
	}
	if ti == nil {
		ti = &termIndex{src: t.src, key: t.key, byValue: make(map[string][]*rule)}
		b.keyed = append(b.keyed, ti)
	}
	ti.all = append(ti.all, r)
	for _, v := range t.values {
		if l := ti.byValue[v]; len(l) == 0 || l[len(l)-1] != r {
			ti.byValue[v] = append(l, r)
		}
	}
}

// appendSources appends the lists of the bucket's rules whose term may hold for
// w (all rules when w is nil).
func (b *ruleBucket) appendSources(srcs [][]*rule, w *attest.Workload) [][]*rule {
	if w == nil || len(b.keyed) == 0 {
		return append(srcs, b.rules)
	}
	if len(b.plain) > 0 {
		srcs = append(srcs, b.plain)
	}
	for _, ti := range b.keyed {
		t := whenTerm{src: ti.src, key: ti.key}
		v, ok := t.value(w)
		switch {
		case !ok:
			srcs = append(srcs, ti.all)
		default:
			if l := ti.byValue[v]; len(l) > 0 {
				srcs = append(srcs, l)
			}
		}
	}
	return srcs
}
