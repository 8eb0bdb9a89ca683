package attrs

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// Bounds of a Mapping.
const (
	// MaxAttributes is the most attributes one Mapping may define, preset included.
	MaxAttributes = 64
	// MaxExpressionLength is the longest expression accepted, in code points.
	MaxExpressionLength = 4096
	// MaxValueLength is the longest attribute value kept, in bytes; a longer result
	// leaves the attribute absent.
	MaxValueLength = 1024
	// CostLimit bounds the work of one expression evaluation, in CEL cost units
	// (roughly one per operation, list element or string byte visited). An
	// evaluation that exceeds it is cancelled and leaves its attribute absent.
	CostLimit = 10_000
)

// Reserved names that a Mapping cannot define: verifiers set them from what they
// verified themselves (Workload.Attributes["sub"] and ["iss"]; "trust_domain" is the
// verified SPIFFE trust domain that policy's trust_domains match). A mapping that
// could set them would let an upstream's claims impersonate them.
var reserved = []string{"iss", "sub", "trust_domain"}

// Mapping is a compiled set of attribute expressions. It is immutable and safe for
// concurrent use.
type Mapping struct {
	preset string
	attrs  []attribute // sorted by name
	// gate is the preset's gate (presetGates), nil without one; it decides the
	// attributes marked gated.
	gate cel.Program
}

type attribute struct {
	name, expr string
	prg        cel.Program
	gated      bool
}

// Compile compiles the expressions of preset ("" for none, else one of Presets)
// overlaid with exprs, which maps attribute names to CEL expressions over `claims`
// (a map(string, dyn) of the verified claims). An expression in exprs replaces the
// preset's expression of the same name.
//
// Every expression is parsed and type-checked now: syntax errors, undeclared
// variables or functions, and a result type other than string or dyn fail. Names
// must match [a-z][a-z0-9_]{0,63} and must not be "sub", "iss" or "trust_domain",
// which verifiers set from what they verified themselves. Compile reports
// every problem at once, sorted by attribute name.
func Compile(preset string, exprs map[string]string) (*Mapping, error) {
	var errs []error
	all := map[string]string{}
	if preset != "" {
		p, ok := presets[preset]
		if !ok {
			errs = append(errs, fmt.Errorf("attrs: unknown preset %q (known: %s)", preset, strings.Join(Presets(), ", ")))
		}
		maps.Copy(all, p)
	}
	maps.Copy(all, exprs)
	if len(all) > MaxAttributes {
		errs = append(errs, fmt.Errorf("attrs: %d attributes, at most %d allowed", len(all), MaxAttributes))
	}
	env, err := newEnv()
	if err != nil {
		return nil, fmt.Errorf("attrs: CEL environment: %w", err)
	}
	m := &Mapping{preset: preset}
	gate := presetGates[preset]
	if gate != "" {
		ast, iss := env.Compile(gate)
		if err := iss.Err(); err != nil {
			return nil, fmt.Errorf("attrs: preset %s gate: %w", preset, err)
		}
		if m.gate, err = env.Program(ast, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptOptimize)); err != nil {
			return nil, fmt.Errorf("attrs: preset %s gate: %w", preset, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		expr := all[name]
		_, overridden := exprs[name]
		gated := gate != "" && !overridden
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("attrs: attribute %q: %s", name, fmt.Sprintf(format, args...)))
		}
		if !ValidName(name) {
			bad("invalid name (want [a-z][a-z0-9_]{0,63})")
			continue
		}
		if slices.Contains(reserved, name) {
			bad("reserved: set by the verifier itself")
			continue
		}
		prg, err := compile(env, expr)
		if err != nil {
			bad("%v", err)
			continue
		}
		shown := expr
		if gated {
			shown = gate + " ? " + expr + ` : ""`
		}
		m.attrs = append(m.attrs, attribute{name: name, expr: shown, prg: prg, gated: gated})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

func newEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
		cel.ParserExpressionSizeLimit(MaxExpressionLength),
	)
}

func compile(env *cel.Env, expr string) (cel.Program, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, errors.New("empty expression")
	}
	ast, iss := env.Compile(expr)
	if err := iss.Err(); err != nil {
		return nil, err
	}
	if t := ast.OutputType(); !t.IsExactType(types.StringType) && !t.IsExactType(types.DynType) {
		return nil, fmt.Errorf("expression yields %s, want string (convert with string())", t)
	}
	return env.Program(ast, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptOptimize))
}

// ValidName reports whether name is a well-formed attribute name:
// [a-z][a-z0-9_]{0,63}.
func ValidName(name string) bool {
	if name == "" || len(name) > 64 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// EvalError reports an attribute left absent because its expression failed: a
// missing key or field that no has() guards, a type mismatch, the cost limit, or a
// result that is not a string or is longer than MaxValueLength.
type EvalError struct {
	Attribute string
	Err       error
}

func (e *EvalError) Error() string { return fmt.Sprintf("attribute %s: %v", e.Attribute, e.Err) }
func (e *EvalError) Unwrap() error { return e.Err }

// Apply evaluates every expression over claims and returns the attributes whose
// expression yielded a non-empty string: a fresh map the caller owns. An attribute
// whose expression yields "" (the has()-guarded idiom for a missing claim) or fails
// is absent, never present with an empty value. The returned error, for logs only,
// joins one *EvalError per failed expression; the other attributes are returned all
// the same. Each expression is evaluated once, within CostLimit.
func (m *Mapping) Apply(claims map[string]any) (map[string]string, error) {
	out := make(map[string]string, len(m.attrs))
	if len(m.attrs) == 0 {
		return out, nil
	}
	act := &activation{claims: celMap(claims, 0)}
	var errs []error
	// The preset's gate, once: when it is not true, its attributes are absent
	// (and reported failed when it failed).
	gateOK, gateErr := true, error(nil)
	if m.gate != nil {
		v, _, err := m.gate.Eval(act)
		if b, ok := v.(types.Bool); err != nil || !ok || !bool(b) {
			gateOK, gateErr = false, err
			if err == nil && !ok {
				gateErr = fmt.Errorf("preset gate yields %s, not a bool", typeName(v))
			}
		}
	}
	for i := range m.attrs {
		a := &m.attrs[i]
		if a.gated && !gateOK {
			if gateErr != nil {
				errs = append(errs, &EvalError{Attribute: a.name, Err: gateErr})
			}
			continue
		}
		v, err := eval(a.prg, act)
		switch {
		case err != nil:
			errs = append(errs, &EvalError{Attribute: a.name, Err: err})
		case v != "":
			out[a.name] = v
		}
	}
	return out, errors.Join(errs...)
}

func eval(prg cel.Program, act interpreter.Activation) (string, error) {
	val, _, err := prg.Eval(act)
	if err != nil {
		return "", err
	}
	s, ok := val.(types.String)
	if !ok {
		return "", fmt.Errorf("result is %s, not a string", typeName(val))
	}
	if len(s) > MaxValueLength {
		return "", fmt.Errorf("result of %d bytes exceeds %d", len(s), MaxValueLength)
	}
	return string(s), nil
}

func typeName(v ref.Val) string {
	if v == nil {
		return "nothing"
	}
	return v.Type().TypeName()
}

// maxWrapDepth bounds the eager wrapping of nested objects (claims verified by this
// module nest at most attest.MaxClaimsDepth; a Go map may even contain itself).
const maxWrapDepth = 32

// celMap wraps a JSON object for evaluation, with every nested object wrapped once
// here: cel-go's wrapper of a map[string]any wraps a nested map[string]any again at
// each access, which the guarded expressions of the presets make several times each.
// Objects with nested objects are shallow-copied (claims are read-only); scalars and
// arrays stay as they are, converted on access.
func celMap(m map[string]any, depth int) ref.Val {
	if depth < maxWrapDepth {
		var cp map[string]any
		for k, v := range m {
			if nested, ok := v.(map[string]any); ok {
				if cp == nil {
					cp = maps.Clone(m)
				}
				cp[k] = celMap(nested, depth+1)
			}
		}
		if cp != nil {
			m = cp
		}
	}
	return types.NewStringInterfaceMap(types.DefaultTypeAdapter, m)
}

// activation binds `claims` without a map allocation per evaluation.
type activation struct {
	claims ref.Val
}

func (a *activation) ResolveName(name string) (any, bool) {
	if name == "claims" {
		return a.claims, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// Names returns the names of the attributes the Mapping defines, sorted.
func (m *Mapping) Names() []string {
	names := make([]string, len(m.attrs))
	for i, a := range m.attrs {
		names[i] = a.name
	}
	return names
}

// Len is the number of attributes the Mapping defines.
func (m *Mapping) Len() int { return len(m.attrs) }

// Preset returns the preset the Mapping was compiled from, "" for none.
func (m *Mapping) Preset() string { return m.preset }

// Expressions returns the effective expression of every attribute, preset and
// overrides merged: what `sts check-config` or an explain command shows.
func (m *Mapping) Expressions() map[string]string {
	out := make(map[string]string, len(m.attrs))
	for _, a := range m.attrs {
		out[a.name] = a.expr
	}
	return out
}
