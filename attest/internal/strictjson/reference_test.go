package strictjson

import (
	"bytes"
	"encoding/json"
	"io"
)

// referenceCheck is the obvious duplicate-name detector: walk the json.Decoder token
// stream with a set of names per open object. It is three times slower than
// DecodeObject and serves as its oracle in tests.
func referenceCheck(data []byte, maxDepth int) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		names  map[string]bool // nil for an array
		expect bool            // object: next token is a name
	}
	var stack []frame
	first := true
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if first || len(stack) > 0 {
				return ErrNotObject
			}
			return nil
		}
		if err != nil {
			return err
		}
		if first && tok != json.Delim('{') {
			return ErrNotObject
		}
		if !first && len(stack) == 0 {
			return ErrNotObject // a second top-level value
		}
		first = false
		if n := len(stack); n > 0 && stack[n-1].names != nil {
			top := &stack[n-1]
			if top.expect {
				if name, ok := tok.(string); ok {
					if top.names[name] {
						return ErrDuplicateKey
					}
					top.names[name] = true
					top.expect = false
					continue
				}
			} else {
				top.expect = true // this token starts the member's value
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{names: map[string]bool{}, expect: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > maxDepth {
			return ErrTooDeep
		}
	}
}
