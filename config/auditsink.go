package config

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// AuditConfig sends audit events to a file of their own instead of the
// application log.
type AuditConfig struct {
	// Path is the audit file (JSON lines, opened for append with mode 0600);
	// empty (default) = audit events go to the application log with log=audit.
	Path string `yaml:"path"`
	// Fsync syncs the file after every write (durable, slower; events written
	// together share one sync).
	Fsync bool `yaml:"fsync"`
	// OnFailure is what happens while audit events cannot be written (a write
	// error, a sink that does not keep up): fail_closed (default) answers 503 to
	// /token and admin changes and fails /readyz; continue keeps serving without
	// the events. Either way the failure is counted, logged and ends when writes
	// succeed again.
	OnFailure string `yaml:"on_failure"`
	// HTTP posts the events to an HTTP endpoint as CloudEvents batches
	// (audithttp.go) instead of a file; exclusive with Path.
	HTTP *AuditHTTPConfig `yaml:"http"`
}

// Values of audit.on_failure.
const (
	AuditFailClosed = "fail_closed"
	AuditContinue   = "continue"
)

func (c *AuditConfig) validate(v *validator) {
	if c.Fsync && c.Path == "" {
		v.at("audit.fsync needs audit.path", "audit", "fsync")
	}
	if c.HTTP != nil {
		if c.Path != "" {
			v.at("audit.path and audit.http are exclusive: choose one sink", "audit", "http")
		}
		c.HTTP.validate(v)
	}
	switch c.OnFailure {
	case "":
		c.OnFailure = AuditFailClosed
	case AuditFailClosed, AuditContinue:
	default:
		v.at(fmt.Sprintf("audit.on_failure must be %s or %s, not %q", AuditFailClosed, AuditContinue, c.OnFailure), "audit", "on_failure")
	}
}

// auditReopenInterval is how often the audit file's path is checked for rotation.
const auditReopenInterval = 10 * time.Second

// AuditSink is an append-only audit file. It is safe for concurrent use; when the
// file is moved away (log rotation) Reopen starts a new one at the same path.
type AuditSink struct {
	path  string
	fsync bool

	mu sync.Mutex
	f  *os.File
	fi os.FileInfo
}

// OpenAuditSink opens (creating, mode 0600) path for appending.
func OpenAuditSink(path string, fsync bool) (*AuditSink, error) {
	s := &AuditSink{path: path, fsync: fsync}
	if err := s.Reopen(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *AuditSink) open() (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	return f, fi, nil
}

// Write appends whole events (the issuer's audit writer hands over whole
// lines). A write that fails part way (a full disk) is cut back, so that the
// file never holds a partial line.
func (s *AuditSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return 0, os.ErrClosed
	}
	n, err := s.f.Write(p)
	if err != nil && n > 0 {
		if fi, serr := s.f.Stat(); serr == nil && s.f.Truncate(fi.Size()-int64(n)) == nil {
			n = 0
		}
	}
	if err == nil && s.fsync {
		err = s.f.Sync()
	}
	return n, err
}

// Reopen closes the current file and opens the path again (after rotation).
func (s *AuditSink) Reopen() error {
	f, fi, err := s.open()
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.f
	s.f, s.fi = f, fi
	s.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

// moved reports whether the path no longer names the open file.
func (s *AuditSink) moved() bool {
	cur, err := os.Stat(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fi == nil {
		return false
	}
	return err != nil || !os.SameFile(cur, s.fi)
}

// Watch reopens the file whenever its path stops naming it, checking every
// interval until ctx ends; errors go to log.
func (s *AuditSink) Watch(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.moved() {
				if err := s.Reopen(); err != nil {
					log.Error("audit log reopen failed", slog.String("path", s.path), slog.String("error", err.Error()))
				} else {
					log.Info("audit log reopened after rotation", slog.String("path", s.path))
				}
			}
		}
	}
}

// Close closes the file; later writes fail.
func (s *AuditSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f, s.fi = nil, nil
	return err
}

// openAuditSink opens the audit file of c and starts its rotation watch; the
// function returned stops the watch and closes the file.
func openAuditSink(c AuditConfig, path string, appLog *slog.Logger) (*AuditSink, func() error, error) {
	sink, err := OpenAuditSink(path, c.Fsync)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sink.Watch(ctx, auditReopenInterval, appLog)
	}()
	closeFn := func() error {
		cancel()
		<-done
		return sink.Close()
	}
	return sink, closeFn, nil
}
