package verify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func readAll(t testing.TB, input string, maxLine, maxData int) ([]sseEvent, error) {
	t.Helper()
	r := newSSEReader(strings.NewReader(input), maxLine, maxData)
	var out []sseEvent
	for {
		ev, err := r.Next()
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}

func TestSSE(t *testing.T) {
	cases := []struct {
		name  string
		input string
		want  []sseEvent
	}{
		{"one event", "id: 7\nevent: created\ndata: {\"id\":\"e1\"}\n\n",
			[]sseEvent{{ID: "7", Type: "created", Data: []byte(`{"id":"e1"}`)}}},
		{"CRLF", "id: 7\r\nevent: created\r\ndata: x\r\n\r\n",
			[]sseEvent{{ID: "7", Type: "created", Data: []byte("x")}}},
		{"CR", "id: 7\revent: created\rdata: x\r\r",
			[]sseEvent{{ID: "7", Type: "created", Data: []byte("x")}}},
		{"BOM", "\uFEFFdata: x\n\n", []sseEvent{{Type: "message", Data: []byte("x")}}},
		{"only the first BOM", "data: x\n\n\uFEFFdata: y\n\n", []sseEvent{{Type: "message", Data: []byte("x")}}},
		{"multi-line data", "data: a\ndata:b\ndata:  c\n\n", []sseEvent{{Type: "message", Data: []byte("a\nb\n c")}}},
		{"empty data line", "data\n\n", []sseEvent{{Type: "message", Data: []byte("")}}},
		{"comments and unknown fields", ": hi\nretry: 10\nfoo: bar\ndata: x\n\n", []sseEvent{{Type: "message", Data: []byte("x")}}},
		{"id persists, heartbeat carries it", "id: 3\nevent: lifted\ndata: a\n\nevent: heartbeat\ndata: {}\n\n",
			[]sseEvent{{ID: "3", Type: "lifted", Data: []byte("a")}, {ID: "3", Type: "heartbeat", Data: []byte("{}")}}},
		{"id with NUL ignored", "id: 3\ndata: a\n\nid: 4\x005\ndata: b\n\n",
			[]sseEvent{{ID: "3", Type: "message", Data: []byte("a")}, {ID: "3", Type: "message", Data: []byte("b")}}},
		{"event without data is not dispatched, but its id counts", "id: 9\nevent: created\n\ndata: x\n\n",
			[]sseEvent{{ID: "9", Type: "message", Data: []byte("x")}}},
		{"event type does not leak into the next", "event: created\ndata: a\n\ndata: b\n\n",
			[]sseEvent{{Type: "created", Data: []byte("a")}, {Type: "message", Data: []byte("b")}}},
		{"unterminated event is dropped", "data: a\n\ndata: b\n", []sseEvent{{Type: "message", Data: []byte("a")}}},
		{"unterminated line is dropped", "data: a\n\ndata: b", []sseEvent{{Type: "message", Data: []byte("a")}}},
		{"colon in value", "data: a: b\n\n", []sseEvent{{Type: "message", Data: []byte("a: b")}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(t, tc.input, maxSSELine, maxSSEData)
			if err != io.EOF {
				t.Fatalf("err = %v, want io.EOF", err)
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("events\n %q\nwant\n %q", got, tc.want)
			}
		})
	}
}

func TestSSEBounds(t *testing.T) {
	long := strings.Repeat("x", 100)
	if _, err := readAll(t, "data: "+long+"\n\n", 64, 1024); !errors.Is(err, errSSELineTooLong) {
		t.Errorf("long line: err = %v", err)
	}
	if _, err := readAll(t, "data: "+long[:50]+"\n\n", 64, 1024); err != io.EOF {
		t.Errorf("line within bound: err = %v", err)
	}
	if _, err := readAll(t, strings.Repeat("data: "+long[:50]+"\n", 30)+"\n", 64, 1024); !errors.Is(err, errSSEDataTooLong) {
		t.Errorf("many data lines: err = %v", err)
	}
	// An endless line without terminator is refused after maxLine bytes, not buffered.
	r := newSSEReader(io.LimitReader(infiniteReader{}, 1<<30), maxSSELine, maxSSEData)
	if _, err := r.Next(); !errors.Is(err, errSSELineTooLong) {
		t.Errorf("endless line: err = %v", err)
	}
}

type infiniteReader struct{}

func (infiniteReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

// FuzzSSE: the parser never panics, keeps every event within its bounds, makes
// progress, and reads back what a conforming writer wrote.
func FuzzSSE(f *testing.F) {
	for _, s := range []string{
		"id: 1\nevent: created\ndata: {\"id\":\"e1\"}\n\n",
		"event: heartbeat\ndata: {\"now\":1}\n\n",
		"\uFEFF: comment\r\ndata: a\r\ndata: b\r\r\n\n",
		"id\nevent\ndata\n\n",
		"id: \x00\ndata:\n\n",
		"data: " + strings.Repeat("x", 200) + "\n\n",
	} {
		f.Add([]byte(s))
	}
	const maxLine, maxData = 128, 256
	f.Fuzz(func(t *testing.T, input []byte) {
		r := newSSEReader(bytes.NewReader(input), maxLine, maxData)
		events := 0
		for {
			ev, err := r.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, errSSELineTooLong) && !errors.Is(err, errSSEDataTooLong) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			events++
			if len(ev.Data) > maxData || len(ev.ID) > maxLine || len(ev.Type) > maxLine {
				t.Fatalf("event over its bounds: id %d, type %d, data %d bytes", len(ev.ID), len(ev.Type), len(ev.Data))
			}
			if events > len(input) {
				t.Fatalf("%d events from %d bytes", events, len(input))
			}
			if cap(r.line) > 2*maxLine+64 || cap(r.data) > 2*maxData+64 || cap(r.evType) > 2*maxLine+64 {
				t.Fatalf("buffers grew past their bounds: line %d, data %d, type %d", cap(r.line), cap(r.data), cap(r.evType))
			}
		}

		// Round trip: whatever the input, as one event's data written line by line
		// (a conforming writer splits on line breaks), reads back unchanged.
		data := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(input))
		if len(data) > maxData/2 {
			data = data[:maxData/2]
		}
		var enc strings.Builder
		enc.WriteString("id: 42\nevent: created\n")
		for line := range strings.SplitSeq(data, "\n") {
			if len(line)+6 > maxLine {
				return
			}
			enc.WriteString("data: " + line + "\n")
		}
		enc.WriteString("\n")
		got, err := readAll(t, enc.String(), maxLine, maxData)
		if err != io.EOF || len(got) != 1 || string(got[0].Data) != data || got[0].ID != "42" || got[0].Type != "created" {
			t.Fatalf("round trip of %q: %q, %v", data, got, err)
		}
	})
}
