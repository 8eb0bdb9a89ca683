package jwtcore

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// maxNumericDate is 9999-12-31T23:59:59Z: later dates are refused as absurd.
const maxNumericDate = 253402300799

// NumericDate reads an optional NumericDate claim, which must be a JSON number
// (float64, as encoding/json decodes it) between 0 and the year 9999. ok is false
// when the claim is absent.
func NumericDate(c map[string]any, name string) (t time.Time, ok bool, err error) {
	v, present := c[name]
	if !present {
		return time.Time{}, false, nil
	}
	f, isNum := v.(float64)
	if !isNum {
		return time.Time{}, false, fmt.Errorf("%s is not a number", name)
	}
	if f < 0 || f > maxNumericDate || math.IsNaN(f) {
		return time.Time{}, false, fmt.Errorf("%s out of range", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// Audience reads an `aud` claim: a non-empty string or a non-empty array of
// non-empty strings.
func Audience(v any) ([]string, error) {
	switch a := v.(type) {
	case nil:
		return nil, errors.New("aud missing")
	case string:
		if a == "" {
			return nil, errors.New("aud empty")
		}
		return []string{a}, nil
	case []any:
		if len(a) == 0 {
			return nil, errors.New("aud empty")
		}
		out := make([]string, len(a))
		for i, e := range a {
			s, ok := e.(string)
			if !ok || s == "" {
				return nil, errors.New("aud entry not a non-empty string")
			}
			out[i] = s
		}
		return out, nil
	}
	return nil, errors.New("aud neither a string nor an array")
}

// CheckAudience reads the `aud` of claims c and requires one of its values to be
// one of accepted. It returns the values. An empty accepted list is an error: no
// expectation never means "any audience".
func CheckAudience(c map[string]any, accepted []string) ([]string, error) {
	if len(accepted) == 0 {
		return nil, errors.New("no accepted audience configured")
	}
	aud, err := Audience(c["aud"])
	if err != nil {
		return nil, err
	}
	for _, a := range aud {
		if slices.Contains(accepted, a) {
			return aud, nil
		}
	}
	return nil, errors.New("no accepted audience in aud")
}
