package issuer

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
)

// The audit event envelope. Every audit event, whatever its kind, carries the
// fields of docs/audit-event.schema.json's common part: schema_version, event_id
// (a UUIDv7: unique and time-ordered) and, for events of a request, request_id,
// user_agent and, when tracing is on, trace_id and span_id. eventHandler adds
// them to each record, so that an event kind added later has them too.

// AuditSchemaVersion is the version of the audit event schema
// (docs/audit-event.schema.json); it changes when a field changes meaning or
// goes away, not when one is added.
const AuditSchemaVersion = 1

// HeaderRequestID is the request correlation header: honoured when the caller
// sends a valid one, generated otherwise, echoed in every response.
const HeaderRequestID = "X-Request-Id"

const (
	// maxRequestIDLen bounds an incoming X-Request-Id.
	maxRequestIDLen = 128
	// maxUserAgentLen bounds the user_agent of audit events (bytes).
	maxUserAgentLen = 256
)

// requestInfo is what the audit events of one request share.
type requestInfo struct {
	id        string
	userAgent string
}

type requestInfoKey struct{}

// validRequestID reports whether an incoming X-Request-Id may be used as it is:
// 1 to maxRequestIDLen characters of [A-Za-z0-9._:/+=@-]. Anything else (too
// long, spaces, quotes, control characters, non-ASCII) is replaced by a
// generated id, never cleaned up: a SIEM then sees either the caller's id or
// one of the STS's.
func validRequestID(s string) bool {
	if s == "" || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("._:/+=@-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// boundedUserAgent is the User-Agent as audit events record it: valid UTF-8
// (invalid bytes replaced), cut to maxUserAgentLen bytes at a character
// boundary. The JSON encoder escapes control characters.
func boundedUserAgent(s string) string {
	if len(s) > 4*maxUserAgentLen {
		s = s[:4*maxUserAgentLen]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxUserAgentLen {
		return s
	}
	cut := maxUserAgentLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// withRequestID gives every request its request id (the caller's valid
// X-Request-Id, else a new UUIDv4), echoes it in the response and puts it and
// the user agent in the request's context for the audit events.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = uuid.NewString()
		}
		w.Header().Set(HeaderRequestID, id)
		info := &requestInfo{id: id, userAgent: boundedUserAgent(r.UserAgent())}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info)))
	})
}

// RequestID is the request id of ctx (set for every request the server
// handles), or "".
func RequestID(ctx context.Context) string {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return info.id
	}
	return ""
}

// newEventID is an audit event's id: a UUIDv7 (time-ordered), or a UUIDv4
// should the clock read fail.
func newEventID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// eventHandler adds the envelope fields to every audit record it handles.
type eventHandler struct{ next slog.Handler }

func (h eventHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h eventHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.next.Handle(ctx, withEnvelope(ctx, r))
}

func (h eventHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return eventHandler{next: h.next.WithAttrs(attrs)}
}

func (h eventHandler) WithGroup(name string) slog.Handler {
	return eventHandler{next: h.next.WithGroup(name)}
}

// withEnvelope returns r with the envelope fields of ctx added.
func withEnvelope(ctx context.Context, r slog.Record) slog.Record {
	r = r.Clone()
	a := make(attrFields, 0, 6)
	envelopeFields(ctx, &a)
	r.AddAttrs(a...)
	return r
}
