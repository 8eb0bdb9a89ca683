// Package auditschema validates audit events against the published schema,
// docs/audit-event.schema.json, with a JSON Schema (2020-12) validator. Tests
// call it on every audit line they produce.
package auditschema

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/safeconduct/safeconduct/internal/testbin"
)

// SchemaPath is the schema's path in the repository.
const SchemaPath = "docs/audit-event.schema.json"

var (
	once   sync.Once
	schema *jsonschema.Schema
	errC   error
)

// Schema is the compiled schema (compiled once; formats asserted).
func Schema() (*jsonschema.Schema, error) {
	once.Do(func() {
		dir, err := testbin.ModuleRoot()
		if err != nil {
			errC = fmt.Errorf("auditschema: %w", err)
			return
		}
		raw, err := os.ReadFile(filepath.Join(dir, SchemaPath))
		if err != nil {
			errC = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			errC = fmt.Errorf("%s: %w", SchemaPath, err)
			return
		}
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		c.DefaultDraft(jsonschema.Draft2020)
		if err := c.AddResource(SchemaPath, doc); err != nil {
			errC = err
			return
		}
		schema, errC = c.Compile(SchemaPath)
	})
	return schema, errC
}

// Validate checks one event (a JSON object).
func Validate(event []byte) error {
	s, err := Schema()
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(event))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return s.Validate(v)
}

// ValidateLines checks every non-empty line of JSON-lines text that is an
// audit event ("log":"audit"; other lines are skipped) and returns the kinds
// seen, with one error per invalid line.
func ValidateLines(text string) (kinds map[string]int, errs []error) {
	kinds = map[string]int{}
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" || !strings.Contains(line, `"log":"audit"`) {
			continue
		}
		if err := Validate([]byte(line)); err != nil {
			errs = append(errs, fmt.Errorf("%s\n  %v", line, err))
			continue
		}
		if i := strings.Index(line, `"event":"`); i >= 0 {
			rest := line[i+len(`"event":"`):]
			if j := strings.IndexByte(rest, '"'); j >= 0 {
				kinds[rest[:j]]++
			}
		}
	}
	return kinds, errs
}
