package attest

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// maxNumericDate is 9999-12-31T23:59:59Z: later dates are refused as absurd.
const maxNumericDate = 253402300799

// AudienceClaim reads a verified `aud` claim: a non-empty string or a non-empty
// array of non-empty strings. Verifiers share it so every upstream kind reads `aud`
// the same way.
func AudienceClaim(v any) ([]string, error) {
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

// NumericDateClaim reads an optional NumericDate claim, which must be a JSON
// number between 0 and the year 9999. ok is false when the claim is absent.
func NumericDateClaim(c map[string]any, name string) (t time.Time, ok bool, err error) {
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
