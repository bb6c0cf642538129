package configerr

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrEmpty is Decode's error for a document with nothing in it.
var ErrEmpty = errors.New("empty document")

// Option is a legacy spelling Decode accepts, with a deprecation warning.
type Option struct {
	at       string // schema path: list indexes written [], "" for the document
	old, new string // a renamed key
	key      string // a shorthand's key
}

// Renamed accepts key old of the mapping at path at as key new, with a deprecation
// warning; both keys in one mapping are an error. Path at is written like the paths of
// errors, with list indexes left empty ("peers[].tls"), and is "" for the document itself.
func Renamed(at, old, new string) Option { return Option{at: at, old: old, new: new} }

// Shorthand accepts a scalar at path at, where a mapping belongs, as the mapping
// {key: scalar}, with a deprecation warning.
func Shorthand(at, key string) Option { return Option{at: at, key: key} }

// maxVisits bounds the nodes Decode examines, aliases expanded; past it the document is
// left to yaml.v3 alone (which refuses excessive aliasing).
const maxVisits = 1 << 18

// Decode decodes the first YAML document of doc into v (a non-nil pointer to a struct)
// strictly: a key that is not a field, a duplicate key or a value of the wrong type is an
// error. Its errors are Errors, each at its path and line, in document order (or ErrEmpty
// if doc holds no document). The warnings are the legacy spellings of opts the document
// uses, which Decode accepted as their current form; they come with or without an error.
func Decode(doc []byte, v any, opts ...Option) (warnings Errors, err error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil, fmt.Errorf("configerr: Decode into %T, not a non-nil pointer", v)
	}
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(doc)).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrEmpty
		}
		return nil, fromYAML(err)
	}
	w := &walker{opts: opts, active: map[*yaml.Node]bool{}, reported: map[*yaml.Node]bool{}, budget: maxVisits}
	w.walk(&root, rv.Type().Elem(), path{})
	w.errs.Sort()
	w.warns.Sort()
	if len(w.errs) > 0 {
		return w.warns, w.errs
	}
	if w.rewrote && !w.gaveUp {
		// The walk checked every key; the tree holds the current spellings now.
		err = safely(func() error { return root.Decode(v) })
	} else {
		err = safely(func() error {
			dec := yaml.NewDecoder(bytes.NewReader(doc))
			dec.KnownFields(true)
			return dec.Decode(v)
		})
	}
	if err != nil {
		// A problem the walk does not model (an alias of itself, excessive aliasing):
		// yaml.v3's words, at its line.
		return w.warns, fromYAML(err)
	}
	return w.warns, nil
}

// safely runs a yaml.v3 decode, turning its panics into errors: yaml.v3 v3.0.1 panics
// on a merge key (<<) in a mapping that has a list or a mapping as another key.
func safely(decode func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: cannot decode: %v", r)
		}
	}()
	return decode()
}

var lineRE = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)

// splitLine takes yaml.v3's "line N: " off msg.
func splitLine(msg string) (int, string) {
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, m[2]
	}
	return 0, msg
}

// fromYAML turns an error of yaml.v3 into Errors.
func fromYAML(err error) Errors {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var es Errors
		for _, s := range te.Errors {
			line, msg := splitLine(s)
			es.AddAt("", line, "%s", msg)
		}
		return es
	}
	line, msg := splitLine(err.Error())
	return Errors{{Line: line, Msg: "invalid YAML: " + msg}}
}

// cleanErr is err's text without yaml.v3's "yaml: " and "line N: " prefixes.
func cleanErr(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		parts := make([]string, len(te.Errors))
		for i, s := range te.Errors {
			_, parts[i] = splitLine(s)
		}
		return strings.Join(parts, "; ")
	}
	_, msg := splitLine(err.Error())
	return msg
}

// path is where the walk is: s as errors print it ("peers[1].domain"), schema with the
// indexes left out ("peers[].domain"), as Options name places.
type path struct{ s, schema string }

func (p path) key(k string) path {
	if p.s == "" {
		return path{k, k}
	}
	return path{p.s + "." + k, p.schema + "." + k}
}

func (p path) index(i int) path { return path{p.s + "[" + strconv.Itoa(i) + "]", p.schema + "[]"} }

// last is the last key of p ("xds" of "controlplane.xds").
func (p path) last() string {
	if i := strings.LastIndexAny(p.s, ".]"); i >= 0 {
		return p.s[i+1:]
	}
	return p.s
}

// walker walks a document's nodes alongside the Go type they decode into.
type walker struct {
	opts        []Option
	errs, warns Errors
	active      map[*yaml.Node]bool // aliases being walked: one inside itself is a cycle
	reported    map[*yaml.Node]bool // keys with an error of their own already
	budget      int
	rewrote     bool // a legacy spelling was rewritten in the tree
	gaveUp      bool // the budget ran out
}

var (
	nodeType        = reflect.TypeFor[yaml.Node]()
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	obsoleteType    = reflect.TypeFor[interface {
		UnmarshalYAML(func(any) error) error
	}]()
	textType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// custom reports whether values of t decode themselves.
func custom(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(unmarshalerType) || p.Implements(obsoleteType)
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; i < 100 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && (n.Tag == "" || n.Tag == "!" || n.ShortTag() == "!!merge")
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, at path) {
	if w.budget--; w.budget < 0 {
		w.gaveUp = true
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 1 {
			w.walk(n.Content[0], t, at)
		}
		return
	case yaml.AliasNode:
		if n.Alias == nil || w.active[n] {
			return // a value containing itself: yaml.v3 refuses it
		}
		w.active[n] = true
		w.walk(n.Alias, t, at)
		delete(w.active, n)
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nodeType || isNull(n) {
		return // a null is the zero value of any type
	}
	if custom(t) {
		w.leaf(n, t, at)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.leaf(n, t, at)
			return
		}
		w.structMapping(n, t, at, nil)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.leaf(n, t, at)
			return
		}
		w.mapMapping(n, t, at)
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			w.leaf(n, t, at)
			return
		}
		if t.Kind() == reflect.Array && len(n.Content) != t.Len() {
			w.errs.AddAt(at.s, n.Line, "expected a list of %d, got %d", t.Len(), len(n.Content))
			return
		}
		for i := range n.Content {
			w.shorthand(&n.Content[i], t.Elem(), at.index(i))
			w.walk(n.Content[i], t.Elem(), at.index(i))
		}
	default:
		w.leaf(n, t, at)
	}
}

// leaf decodes n into a new value of type t as yaml.v3 does, and reports its error.
func (w *walker) leaf(n *yaml.Node, t reflect.Type, at path) {
	if t.Kind() == reflect.String && n.Kind == yaml.ScalarNode && n.ShortTag() != "!!binary" && !reflect.PointerTo(t).Implements(textType) {
		return // the common case, which cannot fail
	}
	err := safely(func() error { return n.Decode(reflect.New(t).Interface()) })
	if err == nil {
		return
	}
	var te *yaml.TypeError
	if !custom(t) && !reflect.PointerTo(t).Implements(textType) && errors.As(err, &te) {
		msg := "expected " + Want(t) + ", got " + Got(n)
		if (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && resolve(n).Kind == yaml.ScalarNode {
			msg += "; write [" + Got(n) + "]"
		}
		w.errs.AddAt(at.s, n.Line, "%s", msg)
		return
	}
	w.errs.AddAt(at.s, n.Line, "%s", cleanErr(err))
}

// duplicates reports the keys written again in mapping n, as yaml.v3 refuses them, and
// marks them reported: the walk skips them.
func (w *walker) duplicates(n *yaml.Node, at path) {
	type spelling struct {
		kind  yaml.Kind
		value string
	}
	first := make(map[spelling]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if w.reported[k] {
			continue
		}
		s := spelling{k.Kind, k.Value}
		if f, ok := first[s]; ok {
			w.errs.AddAt(at.key(k.Value).s, k.Line, "duplicate key; first at line %d", f.Line)
			w.reported[k] = true
		} else {
			first[s] = k
		}
	}
}

// rename applies the Renamed options of the mapping at at.
func (w *walker) rename(n *yaml.Node, at path) {
	for _, o := range w.opts {
		if o.key != "" || o.at != at.schema {
			continue
		}
		var oldK, newK *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			switch k := n.Content[i]; {
			case k.Kind != yaml.ScalarNode || w.reported[k]:
			case k.Value == o.old && oldK == nil:
				oldK = k
			case k.Value == o.new && newK == nil:
				newK = k
			}
		}
		switch {
		case oldK == nil:
		case newK != nil:
			w.errs.AddAt(at.key(o.old).s, oldK.Line, "%s is the deprecated name of %s (line %d); keep %s only", o.old, o.new, newK.Line, o.new)
			w.reported[oldK] = true
		default:
			oldK.Value = o.new
			w.rewrote = true
			w.warns.AddAt(at.key(o.old).s, oldK.Line, "deprecated: renamed to %s", at.key(o.new).s)
		}
	}
}

// shorthand replaces the value in slot, of type t at at, by the mapping of a Shorthand
// option if it is a scalar where that option's mapping belongs. The scalar itself is left
// alone (an alias may name it elsewhere).
func (w *walker) shorthand(slot **yaml.Node, t reflect.Type, at path) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	n := resolve(*slot)
	if t.Kind() != reflect.Struct || custom(t) || n.Kind != yaml.ScalarNode || isNull(n) {
		return
	}
	for _, o := range w.opts {
		if o.key == "" || o.at != at.schema {
			continue
		}
		line, col := (*slot).Line, (*slot).Column
		key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: o.key, Line: line, Column: col}
		*slot = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle, Line: line, Column: col, Content: []*yaml.Node{key, n}}
		w.rewrote = true
		w.warns.AddAt(at.s, line, "deprecated form; write %s: {%s: %s}", at.last(), o.key, Got(n))
		return
	}
}

// key is the field name of key node k, as yaml.v3 reads it; false for a key yaml.v3 skips
// (null) or refuses.
func (w *walker) key(k *yaml.Node, at path) (string, bool) {
	if isNull(k) {
		return "", false
	}
	var s string
	if err := k.Decode(&s); err != nil {
		w.errs.AddAt(at.s, k.Line, "a key must be a string, got %s", Got(k))
		return "", false
	}
	return s, true
}

// structMapping walks mapping n into struct type t. skip holds the keys a mapping that
// merges this one (<<) sets itself, nil if none; their values here are ignored.
func (w *walker) structMapping(n *yaml.Node, t reflect.Type, at path, skip map[string]bool) {
	w.duplicates(n, at)
	w.rename(n, at)
	fs := fieldsOf(t)
	set := map[string]bool{}
	var merges [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if w.reported[k] {
			continue
		}
		if isMerge(k) {
			merges = append(merges, [2]*yaml.Node{k, v})
			continue
		}
		name, ok := w.key(k, at)
		if !ok {
			continue
		}
		if skip != nil {
			if skip[name] {
				continue
			}
			skip[name] = true
		}
		if ft, ok := fs.byName[name]; ok {
			if set[name] {
				w.errs.AddAt(at.key(name).s, k.Line, "set twice")
				continue
			}
			set[name] = true
			w.shorthand(&n.Content[i+1], ft, at.key(name))
			w.walk(n.Content[i+1], ft, at.key(name))
		} else if fs.inlineMap != nil {
			w.walk(v, fs.inlineMap.Elem(), at.key(name))
		} else {
			w.errs.AddAt(at.key(name).s, k.Line, "%s", w.unknown(name, fs, at))
		}
	}
	if len(merges) == 0 {
		return
	}
	if skip == nil {
		skip = map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; !isMerge(k) && !isNull(k) {
				var s string
				if k.Decode(&s) == nil {
					skip[s] = true
				}
			}
		}
	}
	for _, m := range merges {
		w.merge(m[0], m[1], func(mm *yaml.Node) { w.structMapping(mm, t, at, skip) }, at)
	}
}

// merge walks the mappings a merge key (<<) brings in, with each.
func (w *walker) merge(k, v *yaml.Node, each func(*yaml.Node), at path) {
	var ms []*yaml.Node
	switch v.Kind {
	case yaml.MappingNode, yaml.AliasNode:
		ms = []*yaml.Node{v}
	case yaml.SequenceNode:
		ms = v.Content
	}
	if len(ms) == 0 && v.Kind != yaml.SequenceNode {
		w.errs.AddAt(at.key("<<").s, k.Line, "a merge needs a mapping or a list of mappings, got %s", Got(v))
		return
	}
	for _, m := range ms {
		if m.Kind == yaml.AliasNode {
			if m.Alias == nil || w.active[m] {
				continue
			}
			if m.Alias.Kind != yaml.MappingNode {
				w.errs.AddAt(at.key("<<").s, m.Line, "a merge needs a mapping or a list of mappings, got %s", Got(m))
				continue
			}
			w.active[m] = true
			each(m.Alias)
			delete(w.active, m)
			continue
		}
		if m.Kind != yaml.MappingNode {
			w.errs.AddAt(at.key("<<").s, m.Line, "a merge needs a mapping or a list of mappings, got %s", Got(m))
			continue
		}
		each(m)
	}
}

// mapMapping walks mapping n into map type t.
func (w *walker) mapMapping(n *yaml.Node, t reflect.Type, at path) {
	w.duplicates(n, at)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if w.reported[k] {
			continue
		}
		if isMerge(k) {
			w.merge(k, v, func(mm *yaml.Node) { w.mapMapping(mm, t, at) }, at)
			continue
		}
		w.walk(k, t.Key(), at)
		w.shorthand(&n.Content[i+1], t.Elem(), at.key(resolve(k).Value))
		w.walk(n.Content[i+1], t.Elem(), at.key(resolve(k).Value))
	}
}

// unknown explains an unknown key: the closest known name (or a deprecated name's
// current one), or the known names.
func (w *walker) unknown(name string, fs *fields, at path) string {
	type cand struct{ spelling, suggest string }
	var cs []cand
	for _, f := range fs.names {
		cs = append(cs, cand{f, f})
	}
	for _, o := range w.opts {
		if o.key == "" && o.at == at.schema {
			cs = append(cs, cand{o.old, o.new})
		}
	}
	best, bestD := "", math.MaxInt
	for _, c := range cs {
		if d := distance(strings.ToLower(name), strings.ToLower(c.spelling)); d < bestD {
			best, bestD = c.suggest, d
		}
	}
	if best != "" && bestD <= max(1, (len([]rune(name))+2)/4) {
		return fmt.Sprintf("unknown field; did you mean %q?", best)
	}
	if len(fs.names) == 0 {
		return "unknown field"
	}
	return "unknown field; known fields: " + strings.Join(fs.names, ", ")
}

// distance is the optimal string alignment distance of a and b: insertions, deletions,
// substitutions and transpositions of neighbours.
func distance(a, b string) int {
	s, t := []rune(a), []rune(b)
	d := make([][]int, len(s)+1)
	for i := range d {
		d[i] = make([]int, len(t)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(s); i++ {
		for j := 1; j <= len(t); j++ {
			cost := 1
			if s[i-1] == t[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && s[i-1] == t[j-2] && s[i-2] == t[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(s)][len(t)]
}

// fields are the YAML keys of a struct type, as yaml.v3 reads its tags.
type fields struct {
	byName    map[string]reflect.Type
	names     []string     // in declaration order
	inlineMap reflect.Type // the ",inline" map that takes the other keys, or nil
}

var fieldCache sync.Map // reflect.Type → *fields

func fieldsOf(t reflect.Type) *fields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*fields)
	}
	f := &fields{byName: map[string]reflect.Type{}}
	f.add(t, 0)
	fieldCache.Store(t, f)
	return f
}

func (f *fields) add(t reflect.Type, depth int) {
	if depth > 10 {
		return
	}
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.PkgPath != "" && !sf.Anonymous {
			continue // unexported
		}
		tag := sf.Tag.Get("yaml")
		if tag == "" && !strings.Contains(string(sf.Tag), ":") {
			tag = string(sf.Tag)
		}
		if tag == "-" {
			continue
		}
		parts := strings.Split(tag, ",")
		if slices.Contains(parts[1:], "inline") {
			switch ft := sf.Type; {
			case ft.Kind() == reflect.Map:
				f.inlineMap = ft
			case ft.Kind() == reflect.Struct:
				f.add(ft, depth+1)
			case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
				f.add(ft.Elem(), depth+1)
			}
			continue
		}
		name := parts[0]
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		if _, dup := f.byName[name]; !dup {
			f.names = append(f.names, name)
		}
		f.byName[name] = sf.Type
	}
}

// Want describes the YAML values of type t: "an integer", "a list".
func Want(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		return "a duration like 1.5s"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int8, reflect.Int16, reflect.Int32:
		return fmt.Sprintf("an integer from %d to %d", -1<<(t.Bits()-1), 1<<(t.Bits()-1)-1)
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return fmt.Sprintf("an integer from 0 to %d", uint64(1)<<t.Bits()-1)
	case reflect.Uint, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// Got describes node n for a message: "a mapping", "a list", `"text"` for a string, the
// value itself for another scalar.
func Got(n *yaml.Node) string {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if r := []rune(v); len(r) > 40 {
			v = string(r[:37]) + "…"
		}
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!str", "!!binary", "!!timestamp":
			return strconv.Quote(v)
		}
		return v
	}
	return "nothing"
}
