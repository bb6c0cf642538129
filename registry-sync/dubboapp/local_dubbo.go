package dubboapp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/strait-mesh/strait/internal/dubbowire"
)

// The hessian2 MetadataService as Dubbo exports it: in group <application>, version 1.0.0
// (org.apache.dubbo.metadata.MetadataService.VERSION, also in url-params).
const (
	metadataService        = "org.apache.dubbo.metadata.MetadataService"
	metadataServiceVersion = "1.0.0"
	// defaultMetadataTimeout is the timeout attachment of a call whose ctx has no deadline
	// (Java's DEFAULT_METADATA_TIMEOUT_VALUE, in ms).
	defaultMetadataTimeout = 5000
)

// ErrUnexpectedMetadataInfo is wrapped by FetchLocal's error when a MetadataService over
// the dubbo protocol answers with something that is not a MetadataInfo: no value (the
// provider has no MetadataInfo of that revision), a value of another type, or a
// MetadataInfo whose fields have unexpected types.
var ErrUnexpectedMetadataInfo = errors.New("not a MetadataInfo")

// fetchDubbo calls getMetadataInfo(revision) of the hessian2 MetadataService at addr, as
// Java Dubbo's consumer does (MetadataUtils.referMetadataService with a dubbo:// URL):
// service path org.apache.dubbo.metadata.MetadataService, version (1.0.0 if empty), and the
// attachments path, interface, version, group (= app) and timeout (what remains of ctx's
// deadline, in ms). A failure to connect, a response whose status is not OK and an
// exception result are errors (the last two wrap a *dubbowire.RemoteError); so is a result
// that is not a MetadataInfo (ErrUnexpectedMetadataInfo).
//
// The answer is decoded by dubbo-go-hessian2 (dubbowire.Call): to a map of its fields when
// no Go type is registered for org.apache.dubbo.metadata.MetadataInfo, or to the registered
// type (dubbo-go's info.MetadataInfo, registered by the packages of dubbo-go that a binary
// links): metadataInfoOf reads both.
func fetchDubbo(ctx context.Context, app, addr, version, revision string) (*MetadataInfo, error) {
	if version == "" {
		version = metadataServiceVersion
	}
	timeout := defaultMetadataTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(1, int(time.Until(d).Milliseconds()))
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metadata service %s (dubbo): %w", addr, withDeadline(ctx, err))
	}
	defer conn.Close()
	req := dubbowire.Request{
		DubboVersion: dubbowire.DubboProtocolVersion,
		Path:         metadataService,
		Version:      version,
		Method:       "getMetadataInfo",
		ParamTypes:   "Ljava/lang/String;",
		Attachments: map[string]string{
			"path":      metadataService,
			"interface": metadataService,
			"version":   version,
			"group":     app,
			"timeout":   strconv.Itoa(timeout),
		},
	}
	resp, err := dubbowire.Call(ctx, conn, 1, req, []any{revision}, 0)
	if err != nil {
		return nil, fmt.Errorf("metadata service %s (dubbo): getMetadataInfo %s: %w", addr, revision, withDeadline(ctx, err))
	}
	if err := resp.Err(); err != nil {
		return nil, fmt.Errorf("metadata service %s (dubbo): getMetadataInfo %s of %s: %w", addr, revision, app, firstLine{err})
	}
	if resp.Value == nil {
		return nil, fmt.Errorf("metadata service %s (dubbo): getMetadataInfo %s of %s: no value (%s), the provider has no such revision: %w",
			addr, revision, app, resp.Flag, ErrUnexpectedMetadataInfo)
	}
	mi, err := metadataInfoOf(resp.Value)
	if err != nil {
		return nil, fmt.Errorf("metadata service %s (dubbo): getMetadataInfo %s of %s: %w", addr, revision, app, err)
	}
	mi.Revision = revision
	return mi, nil
}

// withDeadline makes err, a failure of I/O bounded by ctx's deadline, also match
// context.DeadlineExceeded when that deadline has passed: the connection's deadline (set
// from ctx's) may fire a moment before ctx's timer, and the error then says only "i/o
// timeout".
func withDeadline(ctx context.Context, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// firstLine shortens an error's text to its first line: Java Dubbo puts a whole stack
// trace in the message of a failure status, too much for a log line. errors.As and
// errors.Is see the error it holds.
type firstLine struct{ err error }

func (e firstLine) Error() string {
	s := e.err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimRight(s[:i], " \t\r") + " […]"
	}
	return s
}

func (e firstLine) Unwrap() error { return e.err }

// metadataInfoOf reads a Java org.apache.dubbo.metadata.MetadataInfo as dubbo-go-hessian2
// decoded it: its fields app, revision, services (and tag, which dubbo-go's has), each
// service's name, group, version, protocol, port, path and params.
func metadataInfoOf(v any) (*MetadataInfo, error) {
	f, err := javaFields(v)
	if err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	mi := &MetadataInfo{Services: map[string]*ServiceInfo{}}
	for name, dst := range map[string]*string{"app": &mi.App, "revision": &mi.Revision, "tag": &mi.Tag} {
		if *dst, err = javaString(f[name]); err != nil {
			return nil, fmt.Errorf("result: field %s: %w", name, err)
		}
	}
	services, err := javaMap(f["services"])
	if err != nil {
		return nil, fmt.Errorf("result: field services: %w", err)
	}
	for _, k := range slices.Sorted(maps.Keys(services)) {
		sv := services[k]
		if sv == nil {
			continue
		}
		s, err := serviceInfoOf(sv)
		if err != nil {
			return nil, fmt.Errorf("result: service %s: %w", k, err)
		}
		mi.Services[k] = s
	}
	return mi, nil
}

// serviceInfoOf reads a Java MetadataInfo.ServiceInfo (see metadataInfoOf).
func serviceInfoOf(v any) (*ServiceInfo, error) {
	f, err := javaFields(v)
	if err != nil {
		return nil, err
	}
	s := &ServiceInfo{}
	for name, dst := range map[string]*string{
		"name": &s.Name, "group": &s.Group, "version": &s.Version,
		"protocol": &s.Protocol, "path": &s.Path,
	} {
		if *dst, err = javaString(f[name]); err != nil {
			return nil, fmt.Errorf("field %s: %w", name, err)
		}
	}
	if s.Port, err = javaInt(f["port"]); err != nil {
		return nil, fmt.Errorf("field port: %w", err)
	}
	params, err := javaMap(f["params"])
	if err != nil {
		return nil, fmt.Errorf("field params: %w", err)
	}
	if len(params) > 0 {
		s.Params = make(map[string]string, len(params))
		for k, pv := range params {
			if pv == nil {
				continue
			}
			ps, err := javaString(pv)
			if err != nil {
				return nil, fmt.Errorf("field params: %s: %w", k, err)
			}
			s.Params[k] = ps
		}
	}
	return s, nil
}

// javaFields returns the fields of a decoded Java object by their Java names: the entries
// of the map hessian2 makes of an unregistered class (map[string]any, its "_class" entry
// included), or the exported fields of a registered Go type (a struct or a pointer to one),
// named by their hessian tag or, as hessian2 names them, their lower-camel-case name.
func javaFields(v any) (map[string]any, error) {
	if m, ok := v.(map[string]any); ok {
		return m, nil
	}
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Interface {
		if rv.IsNil() {
			return map[string]any{}, nil
		}
		rv = rv.Elem()
	}
	switch rv.Kind() {
	case reflect.Map:
		return javaMap(rv.Interface())
	case reflect.Struct:
	default:
		return nil, fmt.Errorf("%T: %w", v, ErrUnexpectedMetadataInfo)
	}
	out := map[string]any{}
	t := rv.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name := lowerFirst(sf.Name)
		if tag, ok := sf.Tag.Lookup("hessian"); ok {
			if tag == "-" {
				continue
			}
			name = tag
		}
		out[name] = rv.Field(i).Interface()
	}
	return out, nil
}

// javaMap returns a decoded Java map with string keys (nil for null): hessian2 decodes an
// untyped map to map[any]any, a registered type's field is a Go map.
func javaMap(v any) (map[string]any, error) {
	if v == nil {
		return nil, nil
	}
	switch m := v.(type) {
	case map[string]any:
		return m, nil
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, e := range m {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("key %v is %T, not a string: %w", k, k, ErrUnexpectedMetadataInfo)
			}
			out[ks] = e
		}
		return out, nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Map {
		return nil, fmt.Errorf("%T is not a map: %w", v, ErrUnexpectedMetadataInfo)
	}
	if rv.Type().Key().Kind() != reflect.String {
		return nil, fmt.Errorf("%T: keys are not strings: %w", v, ErrUnexpectedMetadataInfo)
	}
	out := make(map[string]any, rv.Len())
	for it := rv.MapRange(); it.Next(); {
		e := it.Value()
		if (e.Kind() == reflect.Pointer || e.Kind() == reflect.Interface) && e.IsNil() {
			out[it.Key().String()] = nil
			continue
		}
		out[it.Key().String()] = e.Interface()
	}
	return out, nil
}

// javaString reads a Java String ("" for null).
func javaString(v any) (string, error) {
	switch s := v.(type) {
	case nil:
		return "", nil
	case string:
		return s, nil
	case *string:
		if s == nil {
			return "", nil
		}
		return *s, nil
	}
	return "", fmt.Errorf("%T is not a string: %w", v, ErrUnexpectedMetadataInfo)
}

// javaInt reads a Java int (hessian2 decodes it to int32; a registered type may hold any
// integer type). Null is 0.
func javaInt(v any) (int, error) {
	if v == nil {
		return 0, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n := rv.Int()
		if n < -1<<31 || n > 1<<31-1 {
			return 0, fmt.Errorf("%d is not a Java int: %w", n, ErrUnexpectedMetadataInfo)
		}
		return int(n), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n := rv.Uint()
		if n > 1<<31-1 {
			return 0, fmt.Errorf("%d is not a Java int: %w", n, ErrUnexpectedMetadataInfo)
		}
		return int(n), nil
	}
	return 0, fmt.Errorf("%T is not an int: %w", v, ErrUnexpectedMetadataInfo)
}

// lowerFirst is hessian2's default field name of a Go field: its name with the first
// letter in lower case.
func lowerFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToLower(r)) + s[n:]
}
