package verify

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Bounds of the Server-Sent Events parser: a line (field name and value) and the
// data of one event. A revocation entry is a few hundred bytes.
const (
	maxSSELine = 64 << 10
	maxSSEData = 64 << 10
)

var (
	errSSELineTooLong = errors.New("event stream line over 64 KiB")
	errSSEDataTooLong = errors.New("event stream event data over 64 KiB")
)

// sseEvent is one dispatched event.
type sseEvent struct {
	// ID is the stream's last event ID when the event was dispatched (it persists
	// across events, as in the HTML standard: a heartbeat without `id:` carries the
	// previous one).
	ID string
	// Type is the `event:` field, "message" when absent.
	Type string
	// Data is the `data:` lines joined with "\n".
	Data []byte
}

// sseReader parses a text/event-stream (HTML Living Standard, "Parsing an event
// stream") with bounded memory: a line over maxLine bytes or an event whose data
// exceeds maxData ends the stream with an error. Lines end with CRLF, LF or CR; a
// leading BOM is skipped; comments and unknown fields (including `retry:`) are
// ignored; an event that is not terminated by a blank line before EOF is discarded.
type sseReader struct {
	r       *bufio.Reader
	maxLine int
	maxData int

	started bool // the BOM check is done
	skipLF  bool // the previous line ended with CR: a following LF belongs to it
	line    []byte
	lastID  string
	evType  []byte
	data    []byte
	hasData bool
}

func newSSEReader(r io.Reader, maxLine, maxData int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 4096), maxLine: maxLine, maxData: maxData}
}

// Next returns the next event, or the error that ended the stream (io.EOF at a
// clean end).
func (s *sseReader) Next() (sseEvent, error) {
	for {
		line, err := s.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) == 0 {
			if ev, ok := s.dispatch(); ok {
				return ev, nil
			}
			continue
		}
		if line[0] == ':' {
			continue // comment
		}
		name, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "event":
			s.evType = append(s.evType[:0], value...)
		case "data":
			if len(s.data)+len(value)+1 > s.maxData {
				return sseEvent{}, errSSEDataTooLong
			}
			s.data = append(s.data, value...)
			s.data = append(s.data, '\n')
			s.hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				s.lastID = string(value)
			}
		}
	}
}

// dispatch ends the current event; ok is false when it had no data (nothing is
// dispatched then, as the standard says).
func (s *sseReader) dispatch() (sseEvent, bool) {
	defer func() {
		s.evType = s.evType[:0]
		s.data = s.data[:0]
		s.hasData = false
	}()
	if !s.hasData {
		return sseEvent{}, false
	}
	ev := sseEvent{ID: s.lastID, Type: "message", Data: bytes.Clone(s.data[:len(s.data)-1])}
	if len(s.evType) > 0 {
		ev.Type = string(s.evType)
	}
	return ev, true
}

// readLine returns the next line without its terminator. The slice is valid until
// the next call.
func (s *sseReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(s.line) > 0 {
				// A last line without terminator is incomplete: the event it belongs
				// to is never dispatched, so it can be dropped.
				return nil, io.EOF
			}
			return nil, err
		}
		if s.skipLF {
			s.skipLF = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return s.checkBOM(s.line), nil
		case '\r':
			s.skipLF = true
			return s.checkBOM(s.line), nil
		}
		if len(s.line) >= s.maxLine {
			return nil, errSSELineTooLong
		}
		s.line = append(s.line, b)
	}
}

// checkBOM strips a UTF-8 byte order mark from the stream's first line.
func (s *sseReader) checkBOM(line []byte) []byte {
	if !s.started {
		s.started = true
		return bytes.TrimPrefix(line, []byte("\uFEFF"))
	}
	return line
}
