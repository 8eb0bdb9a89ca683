package issuer

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testSink is an audit sink that can refuse writes (a full disk) or hold them
// (a pipe nobody reads).
type testSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	full bool
	hold chan struct{} // when set, a write waits for it to close
}

func (s *testSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	hold, full := s.hold, s.full
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if full {
		return 0, syscall.ENOSPC
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *testSink) set(f func(*testSink)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

func (s *testSink) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSuffix(s.buf.String(), "\n"), "\n")
}

func auditLine(s string) *[]byte {
	b := []byte(`{"event":"` + s + `"}` + "\n")
	return &b
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

// TestAuditWriterFullDisk: a durable event on a refusing sink fails at once
// and marks the path failed; once the sink takes writes again the writer
// recovers on its own and writes audit_recovered with the count lost first.
func TestAuditWriterFullDisk(t *testing.T) {
	sink := &testSink{full: true}
	w := newAuditWriter(sink, true, newMetrics(), slog.New(slog.DiscardHandler), time.Now)
	defer w.close()
	if err := w.submit(auditLine("a"), true); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("durable event on a full disk: %v", err)
	}
	if !w.refuses() {
		t.Fatal("the path is not failed after a write error")
	}
	sink.set(func(s *testSink) { s.full = false })
	waitUntil(t, "recovery", func() bool { return !w.refuses() })
	if err := w.submit(auditLine("b"), true); err != nil {
		t.Fatal(err)
	}
	lines := sink.lines()
	if len(lines) != 2 || !strings.Contains(lines[0], `"event":"audit_recovered","lost":1,`) || lines[1] != `{"event":"b"}` {
		t.Fatalf("audit stream %q", lines)
	}
}

// TestAuditWriterNoFlapping: a stuck sink fills the queue past half; when it
// moves again the path recovers once, when the queue has room, with a single
// audit_recovered record (not one per batch while it catches up).
func TestAuditWriterNoFlapping(t *testing.T) {
	sink := &testSink{hold: make(chan struct{})}
	w := newAuditWriter(sink, false, newMetrics(), slog.New(slog.DiscardHandler), time.Now)
	defer w.close()
	if err := w.submit(auditLine("first"), false); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the writer stuck in the sink", func() bool { return w.writing.Load() != 0 })
	n := auditQueueLen * 3 / 4
	for range n {
		if err := w.submit(auditLine("x"), false); err != nil {
			t.Fatal(err)
		}
	}
	w.fail(errAuditStalled)
	sink.set(func(s *testSink) { close(s.hold); s.hold = nil })
	waitUntil(t, "recovery", func() bool { return w.healthy.Load() && len(w.queue) == 0 && w.writing.Load() == 0 })
	lines := sink.lines()
	recovered := 0
	for i, l := range lines {
		if strings.Contains(l, `"event":"audit_recovered"`) {
			recovered++
			// The queue is measured after the writer took its batch.
			if i < n-auditQueueLen/2-auditBatchBytes/len(*auditLine("x"))-1 {
				t.Fatalf("recovered at line %d, with more than half the queue still waiting", i)
			}
		}
	}
	if recovered != 1 || len(lines) != n+2 {
		t.Fatalf("%d audit_recovered records in %d lines, want 1 in %d", recovered, len(lines), n+2)
	}
}
