package issuer

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// An audit event's fields are listed once, as calls on a fieldSink, and encoded
// either as slog attributes (an AuditLogger given to New) or straight into the
// JSON line the audit writer writes (sts serve: the exchange's hot path, without
// slog's per-attribute work). Both give the same JSON object.
type fieldSink interface {
	str(key, v string)
	// strs is a JSON array of strings.
	strs(key string, v []string)
	int(key string, v int64)
	// pair is an object of two string members (an audit_rule).
	pair(key, k1, v1, k2, v2 string)
}

// attrFields collects the fields as slog attributes.
type attrFields []slog.Attr

func (a *attrFields) str(key, v string) { *a = append(*a, slog.String(key, v)) }
func (a *attrFields) strs(key string, v []string) {
	// Pre-encoded, so the handler copies it instead of reflecting over a slice.
	*a = append(*a, slog.Any(key, json.RawMessage(appendJSONStrings(make([]byte, 0, 64), v))))
}
func (a *attrFields) int(key string, v int64) { *a = append(*a, slog.Int64(key, v)) }
func (a *attrFields) pair(key, k1, v1, k2, v2 string) {
	*a = append(*a, slog.Group(key, slog.String(k1, v1), slog.String(k2, v2)))
}

// jsonFields appends the fields as members of a JSON object (each preceded by
// a comma: the object was opened with a member already).
type jsonFields struct{ b []byte }

func (j *jsonFields) key(k string) {
	j.b = append(j.b, ',')
	j.b = appendJSONString(j.b, k)
	j.b = append(j.b, ':')
}

func (j *jsonFields) str(key, v string) {
	j.key(key)
	j.b = appendJSONString(j.b, v)
}

func (j *jsonFields) strs(key string, v []string) {
	j.key(key)
	j.b = appendJSONStrings(j.b, v)
}

// appendJSONStrings appends v as a JSON array of strings.
func appendJSONStrings(buf []byte, v []string) []byte {
	buf = append(buf, '[')
	for i, s := range v {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, s)
	}
	return append(buf, ']')
}

func (j *jsonFields) int(key string, v int64) {
	j.key(key)
	j.b = strconv.AppendInt(j.b, v, 10)
}

func (j *jsonFields) pair(key, k1, v1, k2, v2 string) {
	j.key(key)
	j.b = append(j.b, '{')
	j.b = appendJSONString(j.b, k1)
	j.b = append(j.b, ':')
	j.b = appendJSONString(j.b, v1)
	j.b = append(j.b, ',')
	j.b = appendJSONString(j.b, k2)
	j.b = append(j.b, ':')
	j.b = appendJSONString(j.b, v2)
	j.b = append(j.b, '}')
}

// envelopeFields are the envelope's fields of an event of ctx (see
// withEnvelope).
func envelopeFields(ctx context.Context, f fieldSink) {
	f.int("schema_version", AuditSchemaVersion)
	f.str("event_id", newEventID())
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		f.str("request_id", info.id)
		if info.userAgent != "" {
			f.str("user_agent", info.userAgent)
		}
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		f.str("trace_id", sc.TraceID().String())
		f.str("span_id", sc.SpanID().String())
	}
}

// auditEvent writes one audit event msg whose fields fields lists. durable (a
// token issued) waits for the event to be written under fail_closed, as
// auditDurable does.
func (c *core) auditEvent(ctx context.Context, level slog.Level, msg string, fields func(fieldSink), durable bool) error {
	if c.audit == nil {
		var a attrFields
		fields(&a)
		if durable {
			return c.auditDurable(ctx, level, msg, a...)
		}
		c.auditLog.LogAttrs(ctx, level, msg, a...)
		return nil
	}
	// The line slog's JSONHandler would write for c.auditLog (the audit
	// writer's handler, with log=audit) and the envelope.
	buf := auditBufs.Get().(*[]byte)
	j := jsonFields{b: append((*buf)[:0], `{"time":"`...)}
	j.b = time.Now().AppendFormat(j.b, time.RFC3339Nano)
	j.b = append(j.b, `","level":`...)
	j.b = appendJSONString(j.b, level.String())
	j.b = append(j.b, `,"msg":`...)
	j.b = appendJSONString(j.b, msg)
	j.str("log", "audit")
	fields(&j)
	envelopeFields(ctx, &j)
	*buf = append(j.b, '}', '\n')
	return c.audit.submit(buf, durable && c.audit.failClosed)
}

// clientAddr is the client_addr of an audit event: the address, its /64 for
// an IPv6 rate-limit key (key), or "unknown".
func clientAddr(a netip.Addr, key bool) string {
	switch {
	case !a.IsValid():
		return "unknown"
	case key && a.Is6():
		return netip.PrefixFrom(a, 64).String()
	}
	return a.String()
}

// level is the audit level of the exchange: a warning when the STS could not
// serve it.
func (ev *exchangeEvent) level() slog.Level {
	if ev.code == codeTemporarilyUnavailable || ev.code == codeServerError {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// fields lists the exchange event's fields, in their order in the event.
func (ev *exchangeEvent) fields(f fieldSink) {
	f.str("event", "exchange")
	f.str("outcome", ev.outcome)
	f.str("client_addr", clientAddr(ev.clientAddr, false))
	if ev.code != "" {
		f.str("error", ev.code)
	}
	ev.parties(f)
	nonEmptyStrs(f, "aud", ev.audiences)
	nonEmptyStrs(f, "requested_audience", ev.requestedAud)
	nonEmptyStrs(f, "requested_resource", ev.requestedResource)
	nonEmptyStrs(f, "requested_scope", ev.requestedScopes)
	nonEmpty(f, "rule", ev.rule)
	nonEmpty(f, "reason", ev.reason)
	nonEmpty(f, "revocation_entry", ev.blockEntry)
	if c := ev.condition; c != nil {
		f.str("refused_by_upstream", c.Upstream)
		f.str("upstream_condition", c.Check)
	}
	if ev.jti != "" {
		f.str("jti", ev.jti)
		f.int("exp", ev.expiry.Unix())
		if len(ev.scopes) > 0 {
			f.str("scope", strings.Join(ev.scopes, " "))
		}
	}
	for _, a := range ev.audited {
		f.pair("audit_rule", "rule", a.Rule, "would", a.Would)
	}
	nonEmpty(f, "subject_token_sha256", ev.subjectTokenSHA)
}

// parties lists the workload, actor and client of the exchange.
func (ev *exchangeEvent) parties(f fieldSink) {
	if w := ev.workload; w != nil {
		f.str("upstream", w.Upstream)
		f.str("sub", w.ID)
		nonEmpty(f, "upstream_iss", w.Issuer)
	}
	if a := ev.actor; a != nil {
		f.str("actor_upstream", a.Upstream)
		f.str("actor", a.ID)
		nonEmpty(f, "actor_iss", a.Issuer)
	}
	if c := ev.client; c != nil {
		f.str("client", c.ID)
		f.str("client_auth", ev.clientAuth)
	}
}

func nonEmpty(f fieldSink, key, v string) {
	if v != "" {
		f.str(key, v)
	}
}

func nonEmptyStrs(f fieldSink, key string, v []string) {
	if len(v) > 0 {
		f.strs(key, v)
	}
}
