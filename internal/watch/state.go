package watch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// maxStateBytes bounds a state file (about 200 bytes per entry, agent or pod).
const maxStateBytes = 256 << 20

// stateVersion is the version of the state files' format.
const stateVersion = 1

// stateFile is a source's persisted view: what it last saw and had reported.
// It is written (to a temporary file, synced, renamed) only once every report
// derived from the change to it has been dealt with, so that a restart compares
// the API's current list against what was reported and finds what changed while
// the watcher was down.
type stateFile struct {
	path string
}

func newStateFile(dir, name string) (*stateFile, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	return &stateFile{path: filepath.Join(dir, name)}, nil
}

type stateEnvelope struct {
	Version int             `json:"version"`
	Source  string          `json:"source"`
	Data    json.RawMessage `json:"data"`
}

// load decodes the state into v; found is false when there is no state yet.
func (s *stateFile) load(source string, v any) (found bool, err error) {
	f, err := os.Open(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return false, err
	}
	if len(b) > maxStateBytes {
		return false, fmt.Errorf("state file %s is over %d bytes", s.path, maxStateBytes)
	}
	var env stateEnvelope
	if err := json.Unmarshal(b, &env); err != nil {
		return false, fmt.Errorf("state file %s is not valid: %v (remove it to start afresh: deletions while the watcher was down are then not found)", s.path, err)
	}
	if env.Version != stateVersion || env.Source != source {
		return false, fmt.Errorf("state file %s is version %d of source %q, want version %d of %q", s.path, env.Version, env.Source, stateVersion, source)
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return false, fmt.Errorf("state file %s is not valid: %v", s.path, err)
	}
	return true, nil
}

// save writes v atomically.
func (s *stateFile) save(source string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b, err := json.Marshal(stateEnvelope{Version: stateVersion, Source: source, Data: data})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), filepath.Base(s.path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), s.path)
}
