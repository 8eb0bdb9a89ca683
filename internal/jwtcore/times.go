package jwtcore

import (
	"errors"
	"fmt"
	"time"
)

// TimeRules are a verifier's rules for exp, nbf and iat.
type TimeRules struct {
	// Skew is the clock skew tolerated on every check (not negative).
	Skew time.Duration
	// MaxAge, when positive, requires iat and refuses a token issued more than
	// MaxAge (plus Skew) before now.
	MaxAge time.Duration
	// RequireIssuedAt requires iat even without MaxAge (RFC 9068 access tokens).
	RequireIssuedAt bool
}

// Times are the time claims of a token that passed CheckTimes.
type Times struct {
	Expiry time.Time
	// NotBefore and IssuedAt are zero when the claim is absent.
	NotBefore, IssuedAt time.Time
}

// CheckTimes reads exp, nbf and iat from verified claims c and applies r at now:
//
//   - exp is required and now must be before exp+Skew (a token expiring this very
//     instant is expired);
//   - nbf, when present, must not be after now+Skew;
//   - iat, when present, must not be after now+Skew; it is required when
//     r.RequireIssuedAt or r.MaxAge is set;
//   - with r.MaxAge, now-iat must not exceed MaxAge+Skew.
//
// Each claim must be a NumericDate (see NumericDate).
func CheckTimes(c map[string]any, now time.Time, r TimeRules) (Times, error) {
	var t Times
	exp, ok, err := NumericDate(c, "exp")
	switch {
	case err != nil:
		return t, err
	case !ok:
		return t, errors.New("exp missing")
	case !now.Before(exp.Add(r.Skew)):
		return t, fmt.Errorf("expired at %s", exp.UTC().Format(time.RFC3339))
	}
	t.Expiry = exp
	nbf, ok, err := NumericDate(c, "nbf")
	switch {
	case err != nil:
		return t, err
	case ok && nbf.After(now.Add(r.Skew)):
		return t, fmt.Errorf("not valid before %s", nbf.UTC().Format(time.RFC3339))
	case ok:
		t.NotBefore = nbf
	}
	iat, ok, err := NumericDate(c, "iat")
	switch {
	case err != nil:
		return t, err
	case ok && iat.After(now.Add(r.Skew)):
		return t, fmt.Errorf("issued in the future (%s)", iat.UTC().Format(time.RFC3339))
	case !ok && r.MaxAge > 0:
		return t, errors.New("iat missing and a max token age is set")
	case !ok && r.RequireIssuedAt:
		return t, errors.New("iat missing")
	case ok && r.MaxAge > 0 && now.Sub(iat) > r.MaxAge+r.Skew:
		return t, fmt.Errorf("issued %s ago, more than max token age %v", now.Sub(iat).Round(time.Second), r.MaxAge)
	case ok:
		t.IssuedAt = iat
	}
	return t, nil
}
