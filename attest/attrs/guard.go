package attrs

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"

	"github.com/safeconduct/safeconduct/internal/glob"
)

// MaxBoundPatterns is the most patterns one attribute bound may list.
const MaxBoundPatterns = 64

// GuardConfig is an upstream's admission check, as configured: what every
// credential of the upstream must satisfy, once verified and its attributes
// mapped, before any policy rule is consulted (GCP's attribute_condition).
type GuardConfig struct {
	// Condition is a CEL expression over `claims` (map(string, dyn), the verified
	// claims) and `attributes` (map(string, string), the mapped attributes with
	// sub and iss, and for SPIFFE trust_domain, path and the path templates'
	// captures) that must yield true. "" for none. A condition that fails to
	// evaluate (an absent attribute read without has(), a claim of the wrong
	// type, the cost limit) refuses the credential: it fails closed.
	Condition string
	// AttributeBounds maps attribute names to glob patterns (package
	// internal/glob, as upstream `subjects`): a present attribute whose value
	// matches none of its patterns refuses the credential. An absent attribute
	// is not refused (it matches no policy attribute pattern anyway).
	AttributeBounds map[string][]string
	// Known are the attribute names the upstream can produce; a condition or
	// bound naming another attribute is reported, since it could never be
	// satisfied as written. nil skips that check.
	Known []string
}

// GuardProblem is one problem of a GuardConfig: its path ("condition", or
// "attribute_bounds" then the attribute name and pattern index) and message.
type GuardProblem struct {
	Path    []any
	Message string
}

// Guard is a compiled GuardConfig. It is immutable and safe for concurrent use.
// The zero of *Guard (nil) admits everything.
type Guard struct {
	condition string
	prg       cel.Program
	bounds    []bound // sorted by attribute name
}

type bound struct {
	name     string
	patterns []glob.Glob
}

// Refusal is why a Guard refused a credential: Check names the condition that
// was not satisfied ("condition", or "attribute_bounds.NAME"), Detail says how.
type Refusal struct {
	Check  string
	Detail string
}

func (r *Refusal) Error() string { return r.Check + ": " + r.Detail }

// CheckGuard reports every problem of cfg (for `sts check-config`): the
// condition is parsed and type-checked in its declared environment (claims and
// attributes, the standard library) and must yield a bool; it and the bounds
// must name only Known attributes; bound names must be valid attribute names
// with 1 to MaxBoundPatterns non-empty patterns.
func CheckGuard(cfg GuardConfig) []GuardProblem {
	_, ps := compileGuard(cfg)
	return ps
}

// NewGuard compiles cfg; nil (and no error) when it checks nothing.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	g, ps := compileGuard(cfg)
	if len(ps) > 0 {
		errs := make([]error, len(ps))
		for i, p := range ps {
			errs[i] = fmt.Errorf("%s: %s", guardPath(p.Path), p.Message)
		}
		return nil, errors.Join(errs...)
	}
	return g, nil
}

func guardPath(path []any) string {
	var b strings.Builder
	for i, e := range path {
		switch e := e.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", e)
		case string:
			if i == 0 {
				b.WriteString(e)
			} else {
				fmt.Fprintf(&b, "[%q]", e)
			}
		}
	}
	return b.String()
}

func compileGuard(cfg GuardConfig) (*Guard, []GuardProblem) {
	var ps []GuardProblem
	bad := func(path []any, format string, args ...any) {
		ps = append(ps, GuardProblem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	known := func(name string) bool { return cfg.Known == nil || slices.Contains(cfg.Known, name) }
	g := &Guard{condition: cfg.Condition}
	if strings.TrimSpace(cfg.Condition) != "" {
		prg, refs, err := compileCondition(cfg.Condition)
		if err != nil {
			bad([]any{"condition"}, "%v", err)
		}
		for _, r := range refs {
			if !known(r) {
				bad([]any{"condition"}, "reads attribute %q, which this upstream never maps (known: %s)", r, strings.Join(slices.Sorted(slices.Values(cfg.Known)), ", "))
			}
		}
		g.prg = prg
	} else if cfg.Condition != "" {
		bad([]any{"condition"}, "empty condition (leave it out to have none)")
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.AttributeBounds)) {
		pats := cfg.AttributeBounds[name]
		at := []any{"attribute_bounds", name}
		switch {
		case !ValidName(name) && name != "trust_domain" && name != "path":
			bad(at, "invalid attribute name (want [a-z][a-z0-9_]{0,63})")
			continue
		case name == "sub" || name == "iss":
			bad(at, "bound %s with the upstream's subjects or issuer instead", name)
			continue
		case !known(name):
			bad(at, "this upstream never maps attribute %q (known: %s)", name, strings.Join(slices.Sorted(slices.Values(cfg.Known)), ", "))
			continue
		case len(pats) == 0:
			bad(at, "no pattern (an attribute bound must allow something)")
			continue
		case len(pats) > MaxBoundPatterns:
			bad(at, "%d patterns, at most %d", len(pats), MaxBoundPatterns)
			continue
		}
		b := bound{name: name}
		for i, p := range pats {
			if strings.TrimSpace(p) == "" {
				bad(append(at, i), "empty pattern")
				continue
			}
			b.patterns = append(b.patterns, glob.Compile(p))
		}
		g.bounds = append(g.bounds, b)
	}
	if len(ps) > 0 {
		return nil, ps
	}
	if g.prg == nil && len(g.bounds) == 0 {
		return nil, nil
	}
	return g, nil
}

// conditionEnv declares what a condition may read.
func conditionEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("attributes", cel.MapType(cel.StringType, cel.StringType)),
		cel.ParserExpressionSizeLimit(MaxExpressionLength),
	)
}

// compileCondition type-checks src as a bool expression and returns the
// attribute names it reads by constant key (attributes.x, attributes["x"],
// "x" in attributes).
func compileCondition(src string) (cel.Program, []string, error) {
	env, err := conditionEnv()
	if err != nil {
		return nil, nil, fmt.Errorf("CEL environment: %w", err)
	}
	a, iss := env.Compile(src)
	if err := iss.Err(); err != nil {
		return nil, nil, err
	}
	if t := a.OutputType(); !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
		return nil, nil, fmt.Errorf("condition yields %s, want bool", t)
	}
	prg, err := env.Program(a, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, nil, err
	}
	return prg, attributeRefs(a.NativeRep()), nil
}

// attributeRefs lists the attribute names read by constant key, sorted.
func attributeRefs(a *ast.AST) []string {
	var refs []string
	isAttrs := func(e ast.Expr) bool { return e.Kind() == ast.IdentKind && e.AsIdent() == "attributes" }
	constString := func(e ast.Expr) (string, bool) {
		if e.Kind() != ast.LiteralKind {
			return "", false
		}
		s, ok := e.AsLiteral().(types.String)
		return string(s), ok
	}
	ast.PreOrderVisit(a.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		switch e.Kind() {
		case ast.SelectKind:
			if s := e.AsSelect(); isAttrs(s.Operand()) {
				refs = append(refs, s.FieldName())
			}
		case ast.CallKind:
			c := e.AsCall()
			args := c.Args()
			if len(args) != 2 {
				return
			}
			switch c.FunctionName() {
			case operators.Index:
				if k, ok := constString(args[1]); ok && isAttrs(args[0]) {
					refs = append(refs, k)
				}
			case operators.In:
				if k, ok := constString(args[0]); ok && isAttrs(args[1]) {
					refs = append(refs, k)
				}
			}
		}
	}))
	slices.Sort(refs)
	return slices.Compact(refs)
}

// Condition is the condition as configured ("" for none).
func (g *Guard) Condition() string {
	if g == nil {
		return ""
	}
	return g.condition
}

// Bounds are the attribute bounds as configured.
func (g *Guard) Bounds() map[string][]string {
	if g == nil {
		return nil
	}
	out := make(map[string][]string, len(g.bounds))
	for _, b := range g.bounds {
		for i := range b.patterns {
			out[b.name] = append(out[b.name], b.patterns[i].Pattern())
		}
	}
	return out
}

// Check admits or refuses a verified credential: its attributes must be within
// their bounds (attributes first: the cheaper check), then the condition must
// yield true. A nil Guard admits everything.
func (g *Guard) Check(claims map[string]any, attributes map[string]string) *Refusal {
	if g == nil {
		return nil
	}
	for _, b := range g.bounds {
		v, ok := attributes[b.name]
		if !ok {
			continue
		}
		if !slices.ContainsFunc(b.patterns, func(p glob.Glob) bool { return p.Match(v) }) {
			return &Refusal{Check: "attribute_bounds." + b.name, Detail: fmt.Sprintf("attribute %s %.128q is outside the upstream's bounds", b.name, v)}
		}
	}
	if g.prg == nil {
		return nil
	}
	act := &guardActivation{
		claims:     celMap(claims, 0),
		attributes: types.NewStringStringMap(types.DefaultTypeAdapter, attributes),
	}
	val, _, err := g.prg.Eval(act)
	if err != nil {
		return &Refusal{Check: "condition", Detail: fmt.Sprintf("did not evaluate (refused): %v", err)}
	}
	if b, ok := val.(types.Bool); !ok {
		return &Refusal{Check: "condition", Detail: fmt.Sprintf("yielded %s, not a bool (refused)", typeName(val))}
	} else if !b {
		return &Refusal{Check: "condition", Detail: "not satisfied"}
	}
	return nil
}

// guardActivation binds `claims` and `attributes`.
type guardActivation struct {
	claims, attributes ref.Val
}

func (a *guardActivation) ResolveName(name string) (any, bool) {
	switch name {
	case "claims":
		return a.claims, true
	case "attributes":
		return a.attributes, true
	}
	return nil, false
}

func (a *guardActivation) Parent() interpreter.Activation { return nil }
