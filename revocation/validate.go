package revocation

import (
	"fmt"
	"strings"
	"time"
)

// Size limits for the values a Store accepts. Longer values are refused with ErrInvalid
// before they reach a backend, so an untrusted caller cannot grow keys or entries
// without bound.
const (
	MaxJTILen      = 256  // bytes of a jti
	MaxUpstreamLen = 256  // bytes of an upstream name
	MaxSubjectLen  = 1024 // bytes of a subject
	MaxReasonLen   = 1024 // bytes of a reason
)

// BlockedError is the error Admit returns when issuance to a workload is blocked.
// errors.Is(err, ErrBlocked) holds for it; errors.As gives the reason and expiry for
// the log and audit event (not for the client).
type BlockedError struct {
	// Reason is the reason recorded by BlockSubject.
	Reason string
	// Until is when the block ends.
	Until time.Time
}

func (e *BlockedError) Error() string {
	if e.Reason == "" {
		return "revocation: " + ErrBlocked.Error()
	}
	return "revocation: " + ErrBlocked.Error() + ": " + e.Reason
}

// Unwrap makes errors.Is(err, ErrBlocked) hold.
func (e *BlockedError) Unwrap() error { return ErrBlocked }

func invalid(format string, args ...any) error {
	return fmt.Errorf("revocation: %w: "+format, append([]any{ErrInvalid}, args...)...)
}

// checkJTI accepts a non-empty jti of at most MaxJTILen visible ASCII characters
// (0x21-0x7E). A jti is an identifier this service minted; refusing control
// characters, spaces and non-ASCII keeps backend keys printable.
func checkJTI(jti string) error {
	if jti == "" {
		return invalid("empty jti")
	}
	if len(jti) > MaxJTILen {
		return invalid("jti longer than %d bytes", MaxJTILen)
	}
	for i := 0; i < len(jti); i++ {
		if c := jti[i]; c < 0x21 || c > 0x7e {
			return invalid("jti contains a byte outside visible ASCII at offset %d", i)
		}
	}
	return nil
}

// checkWorkload accepts a non-empty upstream of at most MaxUpstreamLen bytes without
// control characters (so no NUL: the NUL that joins upstream and subject in keys is
// unambiguous), and a non-empty subject of at most MaxSubjectLen bytes. The subject
// may hold any bytes: backends hash it or store it as an opaque key.
func checkWorkload(upstream, subject string) error {
	switch {
	case upstream == "":
		return invalid("empty upstream")
	case len(upstream) > MaxUpstreamLen:
		return invalid("upstream longer than %d bytes", MaxUpstreamLen)
	case strings.ContainsFunc(upstream, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return invalid("upstream contains a control character")
	case subject == "":
		return invalid("empty subject")
	case len(subject) > MaxSubjectLen:
		return invalid("subject longer than %d bytes", MaxSubjectLen)
	}
	return nil
}

// checkEntry checks the expiry and reason of an entry about to be written.
func checkEntry(now, until time.Time, reason string) error {
	if !until.After(now) {
		return invalid("until %s is not after now %s", until.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	}
	if len(reason) > MaxReasonLen {
		return invalid("reason longer than %d bytes", MaxReasonLen)
	}
	return nil
}
