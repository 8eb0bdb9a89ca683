package policy

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"

	"github.com/safeconduct/safeconduct/attest"
)

// Limits on conditions (`when`), so that a condition can neither take long to
// compile nor to evaluate, whatever a workload's claims hold.
const (
	// MaxConditionSize bounds the text of one condition, in bytes.
	MaxConditionSize = 4096
	// MaxConditionCost bounds the runtime cost of one evaluation, in cel-go cost
	// units (about one per operation, plus one per few bytes of each string
	// operation and one per element a comprehension visits). An evaluation that
	// would exceed it stops with an error, which counts as an evaluation error.
	MaxConditionCost = 10_000
	// maxConditionDepth bounds the nesting of a condition's syntax tree.
	maxConditionDepth = 32
)

// The CEL type names of the objects a condition sees.
const (
	celWorkloadType     = "safeconduct.Workload"
	celRequestType      = "safeconduct.Request"
	celAdminRequestType = "safeconduct.AdminRequest"
)

var (
	celWorkload     = types.NewObjectType(celWorkloadType)
	celRequest      = types.NewObjectType(celRequestType)
	celAdminRequest = types.NewObjectType(celAdminRequestType)
	celStringList   = types.NewListType(types.StringType)
	celStringMap    = types.NewMapType(types.StringType, types.StringType)
	celClaimsMap    = types.NewMapType(types.StringType, types.DynType)
)

// errAbsent is the evaluation error of reading a field the request does not carry
// (request.actor without an actor, request.client_id without a client). Absent
// data is never read as a default value: a condition tests has(...) first, and a
// condition that does not errs, which fails closed (see the package doc).
func errAbsent(field string) error {
	return fmt.Errorf("%s is absent (test has(%s) first)", field, field)
}

// celField is one field of an object type: its CEL type, whether it is set, and
// how to read it from the Go value behind the object.
type celField struct {
	typ   *types.Type
	isSet func(any) bool
	get   func(any) (any, error)
}

func always(any) bool { return true }

// celObjects describes the object types of an environment to the type checker and
// the interpreter. Field reads go through typed closures, not reflection.
type celObjects struct {
	*types.Registry
	fields map[string]map[string]*types.FieldType
}

func newCELObjects(objects map[string]map[string]celField) (*celObjects, error) {
	reg, err := types.NewRegistry()
	if err != nil {
		return nil, err
	}
	o := &celObjects{Registry: reg, fields: make(map[string]map[string]*types.FieldType)}
	for typeName, fields := range objects {
		m := make(map[string]*types.FieldType, len(fields))
		for name, f := range fields {
			m[name] = &types.FieldType{Type: f.typ, IsSet: f.isSet, GetFrom: f.get}
		}
		o.fields[typeName] = m
	}
	return o, nil
}

// FindStructType implements types.Provider.
func (o *celObjects) FindStructType(name string) (*types.Type, bool) {
	if _, ok := o.fields[name]; ok {
		return types.NewTypeTypeWithParam(types.NewObjectType(name)), true
	}
	return o.Registry.FindStructType(name)
}

// FindStructFieldNames implements types.Provider.
func (o *celObjects) FindStructFieldNames(name string) ([]string, bool) {
	if fields, ok := o.fields[name]; ok {
		names := make([]string, 0, len(fields))
		for n := range fields {
			names = append(names, n)
		}
		slices.Sort(names)
		return names, true
	}
	return o.Registry.FindStructFieldNames(name)
}

// FindStructFieldType implements types.Provider.
func (o *celObjects) FindStructFieldType(name, field string) (*types.FieldType, bool) {
	if fields, ok := o.fields[name]; ok {
		ft, ok := fields[field]
		return ft, ok
	}
	return o.Registry.FindStructFieldType(name, field)
}

// NewValue implements types.Provider: conditions read objects, they do not build
// them.
func (o *celObjects) NewValue(name string, fields map[string]ref.Val) ref.Val {
	if _, ok := o.fields[name]; ok {
		return types.NewErr("%s values cannot be created in a condition", name)
	}
	return o.Registry.NewValue(name, fields)
}

// celObject is the CEL value of a workload or a request: an opaque object whose
// fields the celObjects provider reads. Value returns the Go value behind it.
type celObject struct {
	typ *types.Type
	v   any
}

func (o celObject) ConvertToNative(t reflect.Type) (any, error) {
	if reflect.TypeOf(o.v).AssignableTo(t) {
		return o.v, nil
	}
	return nil, fmt.Errorf("%s cannot be converted to %v", o.typ.TypeName(), t)
}

func (o celObject) ConvertToType(t ref.Type) ref.Val {
	if t.TypeName() == types.TypeType.TypeName() {
		return o.typ
	}
	if t.TypeName() == o.typ.TypeName() {
		return o
	}
	return types.NewErr("type conversion error from %s to %s", o.typ.TypeName(), t.TypeName())
}

// Equal compares identities: two workloads are equal when they are the same
// identity from the same upstream.
func (o celObject) Equal(other ref.Val) ref.Val {
	x, ok := other.(celObject)
	if !ok || x.typ.TypeName() != o.typ.TypeName() {
		return types.False
	}
	if a, ok := o.v.(*attest.Workload); ok {
		b := x.v.(*attest.Workload)
		return types.Bool(a == b || (a.Upstream == b.Upstream && a.Issuer == b.Issuer && a.Subject == b.Subject && a.ID == b.ID))
	}
	return types.Bool(o.v == x.v)
}

func (o celObject) Type() ref.Type { return o.typ }
func (o celObject) Value() any     { return o.v }

func workloadOf(v any) (*attest.Workload, error) {
	if w, ok := v.(*attest.Workload); ok && w != nil {
		return w, nil
	}
	return nil, errors.New("not a workload")
}

// workloadFields are the fields of safeconduct.Workload, shared by every
// environment (the subject, the actor and the admin caller).
func workloadFields() map[string]celField {
	str := func(f func(*attest.Workload) string) celField {
		return celField{typ: types.StringType, isSet: always, get: func(v any) (any, error) {
			w, err := workloadOf(v)
			if err != nil {
				return nil, err
			}
			return types.String(f(w)), nil
		}}
	}
	return map[string]celField{
		"id":       str(func(w *attest.Workload) string { return w.ID }),
		"upstream": str(func(w *attest.Workload) string { return w.Upstream }),
		"issuer":   str(func(w *attest.Workload) string { return w.Issuer }),
		"subject":  str(func(w *attest.Workload) string { return w.Subject }),
		"attributes": {typ: celStringMap, isSet: always, get: func(v any) (any, error) {
			w, err := workloadOf(v)
			if err != nil {
				return nil, err
			}
			if w.Attributes == nil {
				return map[string]string{}, nil
			}
			return w.Attributes, nil
		}},
		"claims": {typ: celClaimsMap, isSet: always, get: func(v any) (any, error) {
			w, err := workloadOf(v)
			if err != nil {
				return nil, err
			}
			if w.Claims == nil {
				return map[string]any{}, nil
			}
			return w.Claims, nil
		}},
	}
}

// requestFields are the fields of safeconduct.Request.
func requestFields() map[string]celField {
	list := func(f func(*Request) []string) celField {
		return celField{typ: celStringList, isSet: always, get: func(v any) (any, error) {
			r := v.(*Request)
			l := f(r)
			if l == nil {
				l = []string{}
			}
			return l, nil
		}}
	}
	// optional strings are absent when empty: reading one errs.
	optional := func(name string, f func(*Request) string) celField {
		return celField{
			typ:   types.StringType,
			isSet: func(v any) bool { return f(v.(*Request)) != "" },
			get: func(v any) (any, error) {
				if s := f(v.(*Request)); s != "" {
					return types.String(s), nil
				}
				return nil, errAbsent("request." + name)
			},
		}
	}
	return map[string]celField{
		"audiences":            list(func(r *Request) []string { return r.Audiences }),
		"resources":            list(func(r *Request) []string { return r.Resources }),
		"scopes":               list(func(r *Request) []string { return r.Scopes }),
		"requested_token_type": optional("requested_token_type", func(r *Request) string { return r.RequestedTokenType }),
		"client_id":            optional("client_id", func(r *Request) string { return r.ClientID }),
		"client_authenticated": {typ: types.BoolType, isSet: always, get: func(v any) (any, error) {
			return types.Bool(v.(*Request).ClientAuthenticated), nil
		}},
		"actor": {
			typ:   celWorkload,
			isSet: func(v any) bool { return v.(*Request).Actor != nil },
			get: func(v any) (any, error) {
				if a := v.(*Request).Actor; a != nil {
					return celObject{typ: celWorkload, v: a}, nil
				}
				return nil, errAbsent("request.actor")
			},
		},
		"delegation_depth": {typ: types.IntType, isSet: always, get: func(v any) (any, error) {
			return types.Int(v.(*Request).DelegationDepth), nil
		}},
	}
}

// adminRequestFields are the fields of safeconduct.AdminRequest.
func adminRequestFields() map[string]celField {
	return map[string]celField{
		"action": {typ: types.StringType, isSet: always, get: func(v any) (any, error) {
			return types.String(v.(*AdminRequest).Action), nil
		}},
		"target_upstreams": {typ: celStringList, isSet: always, get: func(v any) (any, error) {
			l := v.(*AdminRequest).TargetUpstreams
			if l == nil {
				l = []string{}
			}
			return l, nil
		}},
	}
}

// newCELEnv builds the environment of rule conditions (admin false) or of admin
// rule conditions (admin true).
func newCELEnv(admin bool) (*cel.Env, error) {
	objects := map[string]map[string]celField{celWorkloadType: workloadFields()}
	reqType := celRequest
	if admin {
		objects[celAdminRequestType] = adminRequestFields()
		reqType = celAdminRequest
	} else {
		objects[celRequestType] = requestFields()
	}
	provider, err := newCELObjects(objects)
	if err != nil {
		return nil, err
	}
	return cel.NewEnv(
		cel.CustomTypeProvider(provider),
		cel.Variable("workload", celWorkload),
		cel.Variable("request", reqType),
		cel.Variable("now", types.TimestampType),
		ext.Strings(),
		ext.Sets(),
		cel.ParserRecursionLimit(maxConditionDepth),
		cel.ParserExpressionSizeLimit(MaxConditionSize),
		cel.CrossTypeNumericComparisons(true),
	)
}

// The environments are built once, when the first condition is compiled, and never
// change: they are compiled constants, like a regexp.MustCompile.
var (
	ruleEnv  = sync.OnceValues(func() (*cel.Env, error) { return newCELEnv(false) })
	adminEnv = sync.OnceValues(func() (*cel.Env, error) { return newCELEnv(true) })
)

// condition is a compiled `when`.
type condition struct {
	src  string
	line int
	prg  cel.Program
	// terms are its leading equality terms (see whenindex.go); nil for admin
	// rules.
	terms []whenTerm
}

// compiled is a compiled condition's program and terms, cached by source.
type compiled struct {
	prg   cel.Program
	terms []whenTerm
}

// celProblem is one compile or type error of a condition, located in its text.
type celProblem struct {
	line, column int // 1-based in the condition; zero when unknown
	msg          string
}

// compileCondition parses, type-checks and plans src. Problems come back located
// within src; the caller adds the file:line of the `when` key.
func compileCondition(env *cel.Env, src string) (compiled, []celProblem) {
	if len(src) > MaxConditionSize {
		return compiled{}, []celProblem{{msg: fmt.Sprintf("a condition is at most %d bytes", MaxConditionSize)}}
	}
	if strings.TrimSpace(src) == "" {
		return compiled{}, []celProblem{{msg: "a condition must not be empty (leave the key out instead)"}}
	}
	ast, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		var out []celProblem
		for _, e := range iss.Errors() {
			out = append(out, celProblem{line: e.Location.Line(), column: e.Location.Column() + 1, msg: e.Message})
		}
		if len(out) == 0 {
			out = append(out, celProblem{msg: iss.Err().Error()})
		}
		return compiled{}, out
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return compiled{}, []celProblem{{msg: fmt.Sprintf("a condition must be a bool expression, this one is %s", ast.OutputType())}}
	}
	prg, err := env.Program(ast,
		cel.EvalOptions(cel.OptOptimize),
		cel.CostLimit(MaxConditionCost),
	)
	if err != nil {
		return compiled{}, []celProblem{{msg: err.Error()}}
	}
	return compiled{prg: prg, terms: extractTerms(ast)}, nil
}

// celVars binds the variables of one evaluation. It is built once per decision,
// when the first condition runs.
type celVars struct {
	workload ref.Val
	request  ref.Val
	now      ref.Val
}

func (v *celVars) ResolveName(name string) (any, bool) {
	switch name {
	case "workload":
		return v.workload, true
	case "request":
		return v.request, true
	case "now":
		return v.now, true
	}
	return nil, false
}

func (v *celVars) Parent() interpreter.Activation { return nil }

// newRuleVars binds a copy of req, so that the request itself (on Decide's
// stack) does not escape to the heap on the paths without conditions.
func newRuleVars(req *Request) *celVars {
	cp := new(Request)
	*cp = *req
	return &celVars{
		workload: celObject{typ: celWorkload, v: cp.Workload},
		request:  celObject{typ: celRequest, v: cp},
		now:      types.Timestamp{Time: req.Now},
	}
}

func newAdminVars(req *AdminRequest) *celVars {
	cp := new(AdminRequest)
	*cp = *req
	return &celVars{
		workload: celObject{typ: celWorkload, v: cp.Caller},
		request:  celObject{typ: celAdminRequest, v: cp},
		now:      types.Timestamp{Time: req.Now},
	}
}

// eval runs the condition. Anything but true or false is an error: the cost limit,
// a missing key or attribute, an absent field, a type mismatch.
func (c *condition) eval(vars *celVars) (bool, error) {
	out, _, err := c.prg.Eval(vars)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("the condition returned %s, not a bool", out.Type().TypeName())
	}
	return bool(b), nil
}
