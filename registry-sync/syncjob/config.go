// Package syncjob copies services between two registries: a standalone sync job, `strait
// sync -c job.yaml`, for a migration (ZooKeeper → Nacos) or for keeping two registries in
// step both ways.
//
// A copy is the source instance with the ownership marks of registry-sync's Publisher:
// strait.managed=true, strait.origin=<source kind>://<address>, strait.owner=sync/<job>.
// Instances that are already managed (imports of Strait's federation, copies of this or
// another job) are never copied, so two directions, or two jobs in opposite directions,
// make no loop; a job only ever changes or deletes instances it owns.
//
// Copies are persistent (ZooKeeper persistent znodes, etcd keys without a lease, Nacos
// persistent instances): they outlive the job's process, so `--once` leaves them behind,
// and a new leader takes over without a gap. A copy whose source instance is gone is
// removed by the job's next reconcile (the next change in continuous mode, the next run
// with --once).
package syncjob

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/strait-mesh/strait/internal/config"
	"github.com/strait-mesh/strait/internal/configerr"
)

// Job is a sync job file.
type Job struct {
	// Name identifies the job: its copies are owned by "sync/<name>", its election is
	// /strait/sync/<name>/leader. A DNS label.
	Name   string `yaml:"name"`
	Source Side   `yaml:"source"`
	Target Side   `yaml:"target"`
	// Direction is "one-way" (source → target, the default) or "both".
	Direction string `yaml:"direction"`
	// Services are the service (interface) names to copy, or patterns with * and ?
	// (path.Match); empty copies every service that is not managed.
	Services []string `yaml:"services"`
	Leader   Leader   `yaml:"leader"`
}

// Side is one registry of a job.
type Side struct {
	// Kind is zookeeper, nacos or etcd.
	Kind      string   `yaml:"kind"`
	Addresses []string `yaml:"addresses"`
	// Namespace is the Nacos namespace ID (nacos only; empty is the public namespace).
	Namespace string `yaml:"namespace"`
}

// Leader says where the job's processes elect their one writer.
type Leader struct {
	// On is "target", "source" or "none". Default: the target if it is ZooKeeper or etcd,
	// else the source if it is, else none (run one process only).
	On string `yaml:"on"`
	// TTL is how long a crashed leader keeps the leadership: its ZooKeeper session timeout
	// or etcd lease TTL. Default 10s.
	TTL config.Duration `yaml:"ttl"`
}

// Directions.
const (
	OneWay = "one-way"
	Both   = "both"
)

var (
	labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	kinds   = []string{"zookeeper", "nacos", "etcd"}
)

// Load reads and validates a job file.
func Load(file string) (*Job, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("sync job: %w", err)
	}
	j, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("sync job %s: %w", file, err)
	}
	return j, nil
}

// Parse decodes a job document (unknown keys are errors), fills the defaults and validates
// it; a configerr.Errors lists every problem with its path (and, for a decode error, its
// line).
func Parse(b []byte) (*Job, error) {
	var j Job
	if _, err := configerr.Decode(b, &j); err != nil {
		return nil, err
	}
	if err := j.Validate(); err != nil {
		return nil, err
	}
	return &j, nil
}

// Validate fills the defaults and returns configerr.Errors listing every problem, or nil.
func (j *Job) Validate() error {
	var es configerr.Errors
	add := es.Add
	switch {
	case j.Name == "":
		add("name", "required")
	case !labelRE.MatchString(j.Name):
		add("name", "%q is not a DNS label (lower-case letters, digits, '-')", j.Name)
	}
	j.Source.validate(add, "source")
	j.Target.validate(add, "target")
	if j.Source.Kind == j.Target.Kind && len(j.Source.Addresses) > 0 && slices.Equal(j.Source.Addresses, j.Target.Addresses) &&
		j.Source.Namespace == j.Target.Namespace {
		add("target", "is the same registry as the source")
	}
	switch j.Direction {
	case "":
		j.Direction = OneWay
	case OneWay, Both:
	default:
		add("direction", "%q is not one-way or both", j.Direction)
	}
	for i, s := range j.Services {
		if s == "" {
			add(fmt.Sprintf("services[%d]", i), "empty")
		} else if _, err := path.Match(s, ""); err != nil {
			add(fmt.Sprintf("services[%d]", i), "%q: %v", s, err)
		}
	}
	elects := func(k string) bool { return k == "zookeeper" || k == "etcd" }
	switch j.Leader.On {
	case "":
		switch {
		case elects(j.Target.Kind):
			j.Leader.On = "target"
		case elects(j.Source.Kind):
			j.Leader.On = "source"
		default:
			j.Leader.On = "none"
		}
	case "target", "source":
		side := j.Target
		if j.Leader.On == "source" {
			side = j.Source
		}
		if side.Kind == "nacos" {
			add("leader.on", "leader election runs on ZooKeeper or etcd, and the %s is nacos (use the other side, or none to run one process)", j.Leader.On)
		}
	case "none":
	default:
		add("leader.on", "%q is not target, source or none", j.Leader.On)
	}
	switch ttl := j.Leader.TTL.D(); {
	case ttl == 0:
		j.Leader.TTL = config.Duration(10 * time.Second)
	case ttl < time.Second:
		add("leader.ttl", "%v is less than 1s", ttl)
	}
	return es.Err()
}

func (s *Side) validate(add func(string, string, ...any), p string) {
	switch {
	case s.Kind == "":
		add(p+".kind", "required: one of zookeeper, nacos, etcd")
	case !slices.Contains(kinds, s.Kind):
		add(p+".kind", "%q is not one of zookeeper, nacos, etcd", s.Kind)
	}
	if len(s.Addresses) == 0 {
		add(p+".addresses", "required: at least one host:port")
	}
	for i, a := range s.Addresses {
		host, port, err := net.SplitHostPort(a)
		if err == nil && host == "" {
			err = errors.New("no host")
		}
		if err == nil {
			if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || n == 0 {
				err = fmt.Errorf("port %q", port)
			}
		}
		if err != nil {
			add(fmt.Sprintf("%s.addresses[%d]", p, i), "%q is not host:port: %v", a, err)
		}
	}
	if s.Namespace != "" && s.Kind != "nacos" {
		add(p+".namespace", "only for nacos")
	}
}

// Owner is the strait.owner mark of the job's copies.
func (j *Job) Owner() string { return "sync/" + j.Name }

// Label names a side in marks and reports: kind://first-address.
func (s Side) Label() string {
	if len(s.Addresses) == 0 {
		return s.Kind + "://"
	}
	return s.Kind + "://" + s.Addresses[0]
}

// copies reports whether service name is one the job copies.
func (j *Job) copies(name string) bool {
	if len(j.Services) == 0 {
		return true
	}
	for _, p := range j.Services {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
