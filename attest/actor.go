package attest

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxSubjectLength is the longest subject (`sub`, or an actor's `sub` or `iss`)
// accepted, in bytes.
const MaxSubjectLength = 1024

// MaxActDepth is the longest delegation chain ActChain accepts: the current actor
// and up to MaxActDepth-1 prior ones.
const MaxActDepth = 16

// CheckSubject refuses empty or overlong subjects (over MaxSubjectLength bytes),
// invalid UTF-8, and any control, format (invisible, bidi) or white space character.
// Verifiers apply it to every subject they attest.
func CheckSubject(sub string) error {
	if sub == "" || len(sub) > MaxSubjectLength {
		return fmt.Errorf("%d bytes (allowed 1 to %d)", len(sub), MaxSubjectLength)
	}
	for i, r := range sub {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("forbidden character at byte %d", i)
		}
	}
	return nil
}

// Actor is a party named by an `act` or `may_act` claim (RFC 8693 §4.1, §4.4).
type Actor struct {
	// Subject is the actor's `sub`, always set and valid per CheckSubject.
	Subject string
	// Issuer is the actor's `iss`, empty when the claim names none (the subject is
	// then in the namespace of the token's own issuer).
	Issuer string
}

// ActChain parses the verified `act` claim (RFC 8693 §4.1): the current actor first,
// then each prior actor, following the nested `act` members. It returns nil and no
// error when the credential has no `act` claim. Each level must be a JSON object
// with a string `sub` and, optionally, a string `iss`; other members are ignored
// (the RFC says claims other than identity claims are not meaningful there). A level
// that is not an object, lacks `sub`, has a malformed `sub` or `iss`, or a chain
// deeper than MaxActDepth, is an error wrapping ErrInvalid.
//
// Only the current actor (the first) is an actor on this request; the prior ones
// are informational, for policy and audit.
func (w *Workload) ActChain() ([]Actor, error) {
	v, ok := w.Claims["act"]
	if !ok {
		return nil, nil
	}
	var chain []Actor
	for depth := 0; ; depth++ {
		if depth == MaxActDepth {
			return nil, fmt.Errorf("%w: act chain deeper than %d", ErrInvalid, MaxActDepth)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: act at depth %d is not an object", ErrInvalid, depth)
		}
		a, err := actor(obj)
		if err != nil {
			return nil, fmt.Errorf("%w: act at depth %d: %w", ErrInvalid, depth, err)
		}
		chain = append(chain, a)
		if v, ok = obj["act"]; !ok {
			return chain, nil
		}
	}
}

// MayAct parses the verified `may_act` claim (RFC 8693 §4.4): the party the token's
// subject has authorized to act on its behalf. ok reports whether the claim is
// present. A claim that is not an object with a valid string `sub` and optional
// string `iss` is an error wrapping ErrInvalid (with ok true). Members other than
// `sub` and `iss` are ignored, so a `may_act` naming its party by another claim
// alone is an error rather than a grant to anyone.
func (w *Workload) MayAct() (a *Actor, ok bool, err error) {
	v, ok := w.Claims["may_act"]
	if !ok {
		return nil, false, nil
	}
	obj, isObj := v.(map[string]any)
	if !isObj {
		return nil, true, fmt.Errorf("%w: may_act is not an object", ErrInvalid)
	}
	act, err := actor(obj)
	if err != nil {
		return nil, true, fmt.Errorf("%w: may_act: %w", ErrInvalid, err)
	}
	return &act, true, nil
}

// actor reads the identity members of one act or may_act object.
func actor(obj map[string]any) (Actor, error) {
	var a Actor
	sub, ok := obj["sub"].(string)
	if !ok {
		return a, fmt.Errorf("sub missing or not a string")
	}
	if err := CheckSubject(sub); err != nil {
		return a, fmt.Errorf("sub: %w", err)
	}
	a.Subject = sub
	if v, present := obj["iss"]; present {
		iss, ok := v.(string)
		if !ok {
			return a, fmt.Errorf("iss not a string")
		}
		if err := CheckSubject(iss); err != nil {
			return a, fmt.Errorf("iss: %w", err)
		}
		a.Issuer = iss
	}
	return a, nil
}
