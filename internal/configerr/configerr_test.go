package configerr

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFieldErrorText(t *testing.T) {
	for _, c := range []struct {
		e    FieldError
		want string
	}{
		{FieldError{Path: "peers[1].trustBundle", Line: 7, Msg: "required"}, "peers[1].trustBundle (line 7): required"},
		{FieldError{Path: "peers[1].trustBundle", Msg: "required"}, "peers[1].trustBundle: required"},
		{FieldError{Line: 3, Msg: "invalid YAML: x"}, "line 3: invalid YAML: x"},
		{FieldError{Msg: "empty"}, "empty"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.e, got, c.want)
		}
	}
}

func TestErrorsAddSortErr(t *testing.T) {
	var es Errors
	if es.Err() != nil {
		t.Fatal("no problem is not nil")
	}
	add := es.Add // the validation functions take it as a func
	add("b", "no line %d", 1)
	es.AddAt("c", 9, "nine")
	es.AddAt("d", 2, "two")
	add("a", "no line %d", 2)
	es.AddAt("e", 2, "two again")
	es.Sort()
	want := "d (line 2): two\ne (line 2): two again\nc (line 9): nine\nb: no line 1\na: no line 2"
	if got := es.Err().Error(); got != want {
		t.Fatalf("sorted:\n%s\nwant:\n%s", got, want)
	}
	var back Errors
	if !errors.As(fmt.Errorf("wrapped: %w", es.Err()), &back) || len(back) != 5 {
		t.Fatalf("errors.As: %v", back)
	}
}

// dur decodes itself, as config.Duration does.
type dur time.Duration

func (d *dur) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration", s)
	}
	*d = dur(v)
	return nil
}

type inner struct {
	Name string   `yaml:"name"`
	Port uint16   `yaml:"port"`
	Tags []string `yaml:"tags"`
	Wait dur      `yaml:"wait"`
}

type link struct {
	XDS   string `yaml:"xds"`
	Admin string `yaml:"admin"`
}

type Extra struct {
	Extra string `yaml:"extra"`
}

type doc struct {
	Title  string            `yaml:"title"`
	Count  int               `yaml:"count"`
	Ratio  float64           `yaml:"ratio"`
	On     bool              `yaml:"on"`
	Small  int8              `yaml:"small"`
	Items  []inner           `yaml:"items"`
	One    *inner            `yaml:"one"`
	Labels map[string]string `yaml:"labels"`
	Link   link              `yaml:"link"`
	Fixed  [2]int            `yaml:"fixed"`
	Any    any               `yaml:"any"`
	Plain  string
	Skip   string `yaml:"-"`
	Extra  `yaml:",inline"`
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		want      []string // every error, in order
	}{
		{"misspelled field", "title: x\ncont: 3\n", []string{`cont (line 2): unknown field; did you mean "count"?`}},
		{"case", "items:\n  - NAME: a\n", []string{`items[0].NAME (line 2): unknown field; did you mean "name"?`}},
		{"transposition", "link: {xsd: a}\n", []string{`link.xsd (line 1): unknown field; did you mean "xds"?`}},
		{"nothing close", "items:\n  - name: a\n  - name: b\n    zzzzzz: 1\n", []string{`items[1].zzzzzz (line 4): unknown field; known fields: name, port, tags, wait`}},
		{"the plain and inline fields are known, the skipped one not", "plain: a\nextra: b\nskip: c\n", []string{`skip (line 3): unknown field; known fields: title, count, ratio, on, small, items, one, labels, link, fixed, any, plain, extra`}},
		{"string for a list", "items: [{tags: web}]\n", []string{`items[0].tags (line 1): expected a list, got "web"; write ["web"]`}},
		{"list for a mapping", "link: [a]\n", []string{`link (line 1): expected a mapping, got a list`}},
		{"mapping for a string", "title: {a: 1}\n", []string{`title (line 1): expected a string, got a mapping`}},
		{"scalars", "count: many\nratio: x\n'on': maybe\nsmall: 300\none: {port: 70000}\n", []string{
			`count (line 1): expected an integer, got "many"`,
			`ratio (line 2): expected a number, got "x"`,
			`on (line 3): expected true or false, got "maybe"`,
			`small (line 4): expected an integer from -128 to 127, got 300`,
			`one.port (line 5): expected an integer from 0 to 65535, got 70000`,
		}},
		{"a type that decodes itself", "items:\n  - wait: soon\n", []string{`items[0].wait (line 2): "soon" is not a duration`}},
		{"array length", "fixed: [1, 2, 3]\n", []string{`fixed (line 1): expected a list of 2, got 3`}},
		{"map values", "labels: {a: [1]}\n", []string{`labels.a (line 1): expected a string, got a list`}},
		{"duplicate key", "title: a\ncount: 1\ntitle: b\n", []string{`title (line 3): duplicate key; first at line 1`}},
		{"key that is not a string", "one: {[a]: 1}\n", []string{`one (line 1): a key must be a string, got a list`}},
		{"the document is a list", "- a\n- b\n", []string{`line 1: expected a mapping, got a list`}},
		{"several, in document order", "one:\n  nme: a\ncount: x\nitems:\n  - port: -1\n", []string{
			`one.nme (line 2): unknown field; did you mean "name"?`,
			`count (line 3): expected an integer, got "x"`,
			`items[0].port (line 5): expected an integer from 0 to 65535, got -1`,
		}},
		{"unknown field in a merged mapping", "items:\n  - &a {name: a, prot: 1}\n  - {<<: *a, port: 2}\n", []string{
			`items[0].prot (line 2): unknown field; did you mean "port"?`,
			`items[1].prot (line 2): unknown field; did you mean "port"?`,
		}},
		{"bad merge", "one: {<<: [1]}\n", []string{`one.<< (line 1): a merge needs a mapping or a list of mappings, got 1`}},
		{"syntax", "title: a\ncount: [\n", []string{`line 2: invalid YAML: did not find expected node content`}},
		{"a list as a key of a generic mapping", "any: {<<, [a]}\n", []string{`any (line 1): invalid map key: []interface {}{"a"}`}},
		{"yaml.v3 panics here, Decode does not", "one: {<<, [a]}\n", []string{
			`one (line 1): a key must be a string, got a list`,
			`one.<< (line 1): a merge needs a mapping or a list of mappings, got null`,
		}},
		{"an alias of itself", "items: &a [{tags: *a}]\n", []string{`items[0].tags[0] (line 1): expected a string, got a mapping`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var d doc
			warnings, err := Decode([]byte(c.doc), &d)
			if len(warnings) > 0 {
				t.Errorf("warnings %v", warnings)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("%v is not Errors", err)
			}
			var got []string
			for _, e := range es {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			if yerr := strict([]byte(c.doc), new(doc)); yerr == nil {
				t.Errorf("yaml.v3 accepts what Decode refuses")
			}
		})
	}
}

// strict decodes as yaml.v3 with KnownFields does; its panics are errors.
func strict(b []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml.v3 panicked: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func TestDecodeAccepts(t *testing.T) {
	src := `
title: t
count: 3
ratio: 0.5
on: true
small: -3
items:
  - &base {name: a, port: 80, tags: [x, y], wait: 1.5s}
  - <<: *base
    name: b
one: ~
labels: {k: v, "1": two}
link: {xds: "h:1"}
fixed: [1, 2]
any: {deep: [1, {x: y}]}
plain: p
extra: e
`
	var got, want doc
	warnings, err := Decode([]byte(src), &got)
	if err != nil || warnings != nil {
		t.Fatalf("Decode: %v, warnings %v", err, warnings)
	}
	if err := strict([]byte(src), &want); err != nil {
		t.Fatal(err)
	}
	if !same(t, got, want) {
		t.Fatalf("Decode and yaml.v3 differ")
	}
	if got.Items[1].Name != "b" || got.Items[1].Port != 80 || got.Items[0].Wait != dur(1500*time.Millisecond) {
		t.Errorf("items %+v", got.Items)
	}
	if _, err := Decode(nil, &got); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty: %v", err)
	}
	if _, err := Decode([]byte("# only a comment\n"), &got); !errors.Is(err, ErrEmpty) {
		t.Errorf("comment only: %v", err)
	}
	if _, err := Decode([]byte("a: 1"), got); err == nil {
		t.Error("Decode into a value, not a pointer")
	}
}

func same(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := yaml.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Logf("%s\n---\n%s", x, y)
		return false
	}
	return true
}

func TestLegacySpellings(t *testing.T) {
	opts := []Option{Renamed("items[]", "label", "name"), Renamed("", "heading", "title"), Shorthand("link", "xds")}
	old := "heading: t\nitems:\n  - label: a\n  - {label: b, port: 2}\nlink: h:1\n"
	current := "title: t\nitems:\n  - name: a\n  - {name: b, port: 2}\nlink: {xds: h:1}\n"
	var fromOld, fromCurrent doc
	warnings, err := Decode([]byte(old), &fromOld, opts...)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range warnings {
		got = append(got, w.Error())
	}
	want := []string{
		`heading (line 1): deprecated: renamed to title`,
		`items[0].label (line 3): deprecated: renamed to items[0].name`,
		`items[1].label (line 4): deprecated: renamed to items[1].name`,
		`link (line 5): deprecated form; write link: {xds: "h:1"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if w, err := Decode([]byte(current), &fromCurrent, opts...); err != nil || w != nil {
		t.Fatalf("current spelling: %v, warnings %v", err, w)
	}
	if !same(t, fromOld, fromCurrent) {
		t.Fatal("the old spelling decodes to another value")
	}

	// A shorthand's scalar named by an alias elsewhere stays a scalar there.
	var d doc
	warnings, err = Decode([]byte("title: &t h:1\nlink: *t\nplain: *t\n"), &d, opts...)
	if err != nil || len(warnings) != 1 || d.Link.XDS != "h:1" || d.Plain != "h:1" || d.Title != "h:1" {
		t.Fatalf("shorthand of an alias: %+v, %v, warnings %v", d, err, warnings)
	}

	// Both spellings, a misspelled old one, an old spelling elsewhere, errors beside warnings.
	_, err = Decode([]byte("title: a\nheading: b\nitems: [{labl: x}]\nlink: {label: y}\none: {label: z}\ncount: x\nlink: h\n"), new(doc), opts...)
	got = got[:0]
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("%v", err)
	}
	for _, e := range es {
		got = append(got, e.Error())
	}
	want = []string{
		`heading (line 2): heading is the deprecated name of title (line 1); keep title only`,
		`items[0].labl (line 3): unknown field; did you mean "name"?`,
		`link.label (line 4): unknown field; known fields: xds, admin`,
		`one.label (line 5): unknown field; known fields: name, port, tags, wait`,
		`count (line 6): expected an integer, got "x"`,
		`link (line 7): duplicate key; first at line 4`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	warnings, err = Decode([]byte("heading: a\ncount: x\n"), new(doc), opts...)
	if err == nil || len(warnings) != 1 {
		t.Errorf("warnings beside an error: %v, %v", warnings, err)
	}
}

// FuzzDecode: without legacy spellings Decode refuses exactly what yaml.v3 with
// KnownFields refuses, decodes the same value, and never hangs.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"", "title: x", "title: [", "cont: 1", "items: [{name: a, port: 1, tags: [a], wait: 1s}]",
		"items: &a [*a]", "a: &a [*a, *a]", "one: {<<: {name: a}}", "one: {<<: [{name: a}, {port: 1}], name: b}",
		"labels: {<<: {a: b}, c: d}", "labels: {a: 1, a: 2}", "? [a]\n: b", "~: 1", "!!binary dGl0bGU=: x",
		"fixed: [1]", "small: 128", "on: yes", "one: !!null {name: a}", "any: {[a]: b}", "- a", "x: !!binary AAAA",
		"items: [{<<: &b {name: a}}, *b]", "one: {name: &n a, port: *n}", "extra: 1\nplain: 2\n", "\t\x00\xff",
		"title: &t x\ncount: *t", "one: {<<: *x}", "link: h:1",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got, want doc
		done := make(chan struct{})
		var err error
		go func() {
			defer close(done)
			_, err = Decode(b, &got)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Decode did not return within 5s")
		}
		yerr := strict(b, &want)
		if errors.Is(yerr, io.EOF) {
			yerr = ErrEmpty
		}
		if (err == nil) != (yerr == nil) {
			t.Fatalf("Decode: %v\nyaml.v3: %v", err, yerr)
		}
		if err == nil && !same(t, got, want) {
			t.Fatal("Decode and yaml.v3 decode different values")
		}
	})
}
