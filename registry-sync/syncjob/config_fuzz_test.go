package syncjob

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// FuzzParse: a job document gives a value or an error, never a panic or a hang; a value
// (defaults filled) survives marshal → Parse (which validates) unchanged.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../deploy/examples/sync/jobs/*.yaml")
	if len(files) == 0 {
		f.Fatal("no example jobs for seeds")
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"", "name: x", "name: X\nsource: {kind: consul}\n",
		"name: j\nsource: {kind: etcd, addresses: ['h:1']}\ntarget: {kind: etcd, addresses: ['h:1']}\n",
		"name: j\nsource: {kind: nacos, addresses: ['h:8848'], namespace: ns}\ntarget: {kind: zookeeper, addresses: ['[::1]:2181']}\nservices: ['a.*', '[']\n",
		"name: j\nsource: {kind: etcd, addresses: ['h:0']}\ntarget: {kind: nacos, addresses: ['h:65536']}\nleader: {on: target, ttl: 500ms}\n",
		"name: j\nsource: {kind: etcd, addresses: ['h:1']}\ntarget: {kind: nacos, addresses: ['h:2']}\nleader: {on: none, ttl: 9223372036s}\ndirection: both\n",
		"leader: {ttl: 5}\n", "a: &a [*a, *a]\n", "{{{{", "\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var j *Job
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			j, err = Parse(b)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("Parse did not return within 2s")
		}
		if err != nil {
			if j != nil {
				t.Fatalf("value and error %v", err)
			}
			return
		}
		out, err := yaml.Marshal(j)
		if err != nil {
			t.Fatalf("marshal %+v: %v", j, err)
		}
		j2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-marshalled job does not parse: %v\n%s", err, out)
		}
		out2, err := yaml.Marshal(j2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the job:\n%s\n---\n%s", out, out2)
		}
	})
}
