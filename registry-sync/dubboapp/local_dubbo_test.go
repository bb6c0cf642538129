package dubboapp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"testing"
	"time"
)

// What dubbo-go-hessian2 makes of a Java MetadataInfo is tested against a real Java
// provider in test/dubbometa; these tests cover the shapes and the failures metadataInfoOf
// must handle without a provider that would send them.

// goMetadataInfo and goServiceInfo stand for a registered Go type of the Java classes
// (dubbo-go's info.MetadataInfo has the same fields and tags).
type goMetadataInfo struct {
	App      string                    `hessian:"app"`
	Revision string                    `hessian:"revision"`
	Tag      string                    `hessian:"tag"`
	Services map[string]*goServiceInfo `hessian:"services"`
	Skipped  string                    `hessian:"-"`
	hidden   string
}

type goServiceInfo struct {
	Name     string
	Group    string
	Version  string
	Protocol string
	Port     int
	Path     string
	Params   map[string]string
}

func TestMetadataInfoOf(t *testing.T) {
	want := &MetadataInfo{App: "app", Revision: "r1", Services: map[string]*ServiceInfo{
		"g/S:1.0.0:dubbo": {Name: "S", Group: "g", Version: "1.0.0", Protocol: "dubbo", Port: 20880, Path: "S",
			Params: map[string]string{"side": "provider", "methods": "a,b"}},
	}}
	// An unregistered class: a map of its fields, untyped maps, a Java int.
	asMap := map[string]any{
		"_class": "org.apache.dubbo.metadata.MetadataInfo", "app": "app", "revision": "r1",
		"services": map[any]any{
			"g/S:1.0.0:dubbo": map[string]any{
				"_class": "org.apache.dubbo.metadata.MetadataInfo$ServiceInfo",
				"name":   "S", "group": "g", "version": "1.0.0", "protocol": "dubbo", "port": int32(20880), "path": "S",
				"params": map[any]any{"side": "provider", "methods": "a,b", "absent": nil},
			},
			"null": nil,
		},
	}
	// A registered type.
	asType := &goMetadataInfo{App: "app", Revision: "r1", Skipped: "x", hidden: "y", Services: map[string]*goServiceInfo{
		"g/S:1.0.0:dubbo": {Name: "S", Group: "g", Version: "1.0.0", Protocol: "dubbo", Port: 20880, Path: "S",
			Params: map[string]string{"side": "provider", "methods": "a,b"}},
		"null": nil,
	}}
	for name, v := range map[string]any{"map": asMap, "type": asType, "struct": *asType} {
		got, err := metadataInfoOf(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}

	// No services at all is an empty MetadataInfo, not an error.
	if got, err := metadataInfoOf(map[string]any{"app": "a"}); err != nil || got.App != "a" || len(got.Services) != 0 {
		t.Errorf("no services: %+v %v", got, err)
	}
}

func TestMetadataInfoOfRefuses(t *testing.T) {
	svc := func(k string, v any) map[string]any {
		return map[string]any{"app": "a", "services": map[any]any{"k": map[string]any{"name": "S", k: v}}}
	}
	for name, v := range map[string]any{
		"a string":           "MetadataInfo",
		"a list":             []any{"a"},
		"app not a string":   map[string]any{"app": int32(1)},
		"services not a map": map[string]any{"services": "x"},
		"service key":        map[string]any{"services": map[any]any{int32(1): map[string]any{}}},
		"service not a map":  map[string]any{"services": map[any]any{"k": "x"}},
		"port not an int":    svc("port", "20880"),
		"port too large":     svc("port", int64(1)<<40),
		"params not a map":   svc("params", []any{"x"}),
		"params value":       svc("params", map[any]any{"side": int32(1)}),
		"params key":         svc("params", map[any]any{int32(1): "x"}),
		"map with int keys":  map[int]any{1: "x"},
	} {
		mi, err := metadataInfoOf(v)
		if !errors.Is(err, ErrUnexpectedMetadataInfo) {
			t.Errorf("%s: %+v, %v; want ErrUnexpectedMetadataInfo", name, mi, err)
		}
	}
}

func TestFetchLocalUnsupported(t *testing.T) {
	for _, md := range []map[string]string{
		{MetaServiceParams: `{"protocol":"rest","port":"80"}`},
		{MetaServiceParams: `{"protocol":"tri","port":"80"}`, MetaServiceV: "1.0.0"},
		{MetaServiceParams: `{"protocol":"tri","port":"80"}`},
	} {
		if _, err := FetchLocal(context.Background(), "a", "127.0.0.1", md, "r"); !errors.Is(err, ErrUnsupportedMetadataService) {
			t.Errorf("%v: %v, want ErrUnsupportedMetadataService", md, err)
		}
	}
	for _, md := range []map[string]string{
		{MetaServiceParams: `{"protocol":"dubbo","port":"0"}`},
		{MetaServiceParams: `{"protocol":"dubbo"}`},
		{MetaServiceParams: `not json`},
		{},
	} {
		if _, err := FetchLocal(context.Background(), "a", "127.0.0.1", md, "r"); err == nil || errors.Is(err, ErrUnsupportedMetadataService) {
			t.Errorf("%v: %v, want an error about the parameters", md, err)
		}
	}
}

func TestWithDeadline(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	future, cancel2 := context.WithTimeout(context.Background(), time.Hour)
	defer cancel2()
	if err := withDeadline(past, timeout); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("past deadline: %v", err)
	}
	if err := withDeadline(future, timeout); errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline to come: %v", err)
	}
	if err := withDeadline(context.Background(), timeout); errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("no deadline: %v", err)
	}
	refused := errors.New("refused")
	if err := withDeadline(past, refused); err != refused {
		t.Errorf("another error: %v", err)
	}
}

func TestFirstLine(t *testing.T) {
	inner := errors.New("remote SERVICE_ERROR: Not found exported service \nat a.b(C.java:1)\n\tat d")
	err := fmt.Errorf("call: %w", firstLine{inner})
	if got := err.Error(); got != "call: remote SERVICE_ERROR: Not found exported service […]" {
		t.Errorf("%q", got)
	}
	if !errors.Is(err, inner) {
		t.Error("firstLine hides the error it holds")
	}
	if got := (firstLine{errors.New("one line")}).Error(); got != "one line" {
		t.Errorf("%q", got)
	}
}
