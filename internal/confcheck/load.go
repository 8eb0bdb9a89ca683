package confcheck

import (
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds a configuration file.
const MaxFileSize = 1 << 20

// Error holds every problem found in a configuration, sorted by line; it prints
// one problem per line.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string { return Format(e.Problems) }

// ReadFile reads the configuration file at path. A file larger than MaxFileSize
// is an *Error.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, &Error{Problems: []Problem{{File: path, Message: "file larger than 1 MiB"}}}
	}
	return data, nil
}

// Parse parses data, the contents of file, as YAML and decodes it into out, a
// pointer to a struct (Decode). Unless the document is not a mapping, validate
// then checks the decoded value; it is given the document's root node to place
// its problems (Line), and what it finds under a value decoding already
// complained about is left out (Merge). Parse returns nil, or an *Error holding
// every problem, sorted by line.
func Parse(file string, data []byte, out any, validate func(root *yaml.Node) []Problem) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return &Error{Problems: []Problem{Syntax(file, err)}}
	}
	problems := Decode(file, &root, out)
	if len(problems) > 0 && len(root.Content) == 1 && root.Content[0].Kind != yaml.MappingNode {
		return &Error{Problems: problems} // not a mapping: nothing to validate
	}
	problems = Merge(problems, validate(&root))
	if len(problems) > 0 {
		Sort(problems)
		return &Error{Problems: problems}
	}
	return nil
}

// Line is the line of the value at path (map keys, as strings, and list
// indexes) in the document or node n: the line of its key, or of its item in a
// list. When part of path does not exist, it is the line of the deepest part that
// does (the document's first line when none does); 0 when n is nil.
func Line(n *yaml.Node, path ...any) int {
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == p {
						line = n.Content[i].Line
						next = n.Content[i+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && p < len(n.Content) {
				next = n.Content[p]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}
