package policy

import (
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
)

// conditionBounds reads, from an upstream's CEL condition, the limits on
// attribute values that every token must satisfy: the top-level conjuncts (`&&`)
// of the forms
//
//	attributes.X == "v"            X: [v]
//	attributes.X.startsWith("p")   X: [p*]
//	attributes.X in ["a", "b"]     X: [a, b]
//
// (attributes["X"] as well, either side of ==). Anything else narrows in ways
// the review does not follow, and is only shown. A value holding '*' (which a
// glob cannot match literally) is skipped. "sub" bounds the subjects the
// upstream asserts. The condition was type-checked by the server's config; one
// that does not parse gives nothing.
func conditionBounds(src string) map[string][]string {
	if strings.TrimSpace(src) == "" {
		return nil
	}
	env, err := cel.NewEnv()
	if err != nil {
		return nil
	}
	parsed, iss := env.Parse(src)
	if iss.Err() != nil {
		return nil
	}
	out := map[string][]string{}
	var walk func(e ast.Expr)
	walk = func(e ast.Expr) {
		if e.Kind() != ast.CallKind {
			return
		}
		c := e.AsCall()
		args := c.Args()
		switch c.FunctionName() {
		case operators.LogicalAnd:
			for _, a := range args {
				walk(a)
			}
		case operators.Equals:
			if len(args) != 2 {
				return
			}
			for _, p := range [][2]ast.Expr{{args[0], args[1]}, {args[1], args[0]}} {
				if name, ok := attributeOf(p[0]); ok {
					if v, ok := stringLit(p[1]); ok && !strings.Contains(v, "*") {
						out[name] = append(out[name], v)
						return
					}
				}
			}
		case operators.In:
			if len(args) != 2 || args[1].Kind() != ast.ListKind {
				return
			}
			name, ok := attributeOf(args[0])
			if !ok {
				return
			}
			var vals []string
			for _, el := range args[1].AsList().Elements() {
				v, ok := stringLit(el)
				if !ok || strings.Contains(v, "*") {
					return
				}
				vals = append(vals, v)
			}
			if len(vals) > 0 {
				out[name] = append(out[name], vals...)
			}
		case "startsWith":
			if !c.IsMemberFunction() || len(args) != 1 {
				return
			}
			name, ok := attributeOf(c.Target())
			v, lit := stringLit(args[0])
			if ok && lit && !strings.Contains(v, "*") {
				out[name] = append(out[name], v+"*")
			}
		}
	}
	walk(parsed.NativeRep().Expr())
	if len(out) == 0 {
		return nil
	}
	return out
}

// attributeOf recognises attributes.X and attributes["X"].
func attributeOf(e ast.Expr) (string, bool) {
	switch e.Kind() {
	case ast.SelectKind:
		s := e.AsSelect()
		if op := s.Operand(); !s.IsTestOnly() && op.Kind() == ast.IdentKind && op.AsIdent() == "attributes" {
			return s.FieldName(), true
		}
	case ast.CallKind:
		c := e.AsCall()
		if args := c.Args(); c.FunctionName() == operators.Index && len(args) == 2 &&
			args[0].Kind() == ast.IdentKind && args[0].AsIdent() == "attributes" {
			return stringLit(args[1])
		}
	}
	return "", false
}

func stringLit(e ast.Expr) (string, bool) {
	if e.Kind() != ast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}
