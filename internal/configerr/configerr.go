// Package configerr locates problems in configuration documents. Each problem is a
// FieldError at a path of the document, such as "peers[1].trustBundle", and, when it comes
// from the document's text, at a line. The validation of a domain file, a gateway file
// and a sync job file all report their problems as Errors.
//
// Decode reads a YAML document into a struct strictly, as yaml.v3 with KnownFields does,
// and reports every decode problem as a FieldError: an unknown field (with the closest
// known name), a value of the wrong type, a duplicate key. It also accepts the legacy
// spellings it is given (a renamed key, a scalar that became a mapping), rewrites them to
// the current ones and returns a deprecation warning for each.
package configerr

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// FieldError is one problem at one path of a document.
type FieldError struct {
	// Path is where the problem is: "registry.addresses[0]"; empty for the document as a
	// whole.
	Path string
	// Line is the 1-based line of the document the problem is on; 0 when it is not known
	// (a problem found by validating a decoded value, a missing field).
	Line int
	Msg  string
}

// Error is "path (line N): msg", or "path: msg" without a line.
func (e *FieldError) Error() string {
	switch {
	case e.Path != "" && e.Line > 0:
		return e.Path + " (line " + strconv.Itoa(e.Line) + "): " + e.Msg
	case e.Path != "":
		return e.Path + ": " + e.Msg
	case e.Line > 0:
		return "line " + strconv.Itoa(e.Line) + ": " + e.Msg
	default:
		return e.Msg
	}
}

// Errors is every problem found in a document. Decode returns them in document order;
// validation, in the order it checks.
type Errors []*FieldError

// Error is one problem a line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Add appends a problem at path, without a line.
func (es *Errors) Add(path, format string, args ...any) {
	*es = append(*es, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// AddAt appends a problem at path and line.
func (es *Errors) AddAt(path string, line int, format string, args ...any) {
	*es = append(*es, &FieldError{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// Err returns es as an error, or nil if there is no problem.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Sort orders es by line, stably: problems on one line, and problems without a line
// (which come last), keep their order.
func (es Errors) Sort() {
	key := func(e *FieldError) int {
		if e.Line <= 0 {
			return int(^uint(0) >> 1)
		}
		return e.Line
	}
	sort.SliceStable(es, func(i, j int) bool { return key(es[i]) < key(es[j]) })
}
