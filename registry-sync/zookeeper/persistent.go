package zookeeper

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-zookeeper/zk"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

// RegisterPersistent creates the instance's node as a persistent znode (same path and data
// as Register's ephemeral one): it outlives this process and its session. It is for copies
// a sync job leaves behind (strait sync --once), which carry ownership marks in their URL
// and are removed by the job's next run once their source is gone. An existing persistent
// node of the same URL is left as it is; an ephemeral one of another session is replaced.
func (r *Registry) RegisterPersistent(ctx context.Context, inst mesh.Instance) error {
	if err := checkName(inst.Service.Name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	path, data := Path(inst), []byte(dubbourl.Format(inst))
	r.mu.Lock()
	defer r.mu.Unlock()
	for range 3 {
		_, err := r.conn.Create(path, data, zk.FlagPersistent, acl)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, zk.ErrNoNode):
			if err := r.createParents(path); err != nil {
				return fmt.Errorf("zookeeper registry: register %s: %w", inst, err)
			}
			continue
		case !errors.Is(err, zk.ErrNodeExists):
			return fmt.Errorf("zookeeper registry: register %s: %w", inst, err)
		}
		ok, st, err := r.conn.Exists(path)
		if err != nil {
			return fmt.Errorf("zookeeper registry: register %s: %w", inst, err)
		}
		if !ok {
			continue
		}
		if st.EphemeralOwner == 0 {
			return nil
		}
		if err := r.conn.Delete(path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) && !errors.Is(err, zk.ErrBadVersion) {
			return fmt.Errorf("zookeeper registry: register %s: %w", inst, err)
		}
	}
	return fmt.Errorf("zookeeper registry: register %s: created and deleted concurrently by another client", inst)
}

// DeregisterPersistent deletes the instance's node if it is persistent; an ephemeral node
// of the same URL (a live process's) is left alone, as is a missing one.
func (r *Registry) DeregisterPersistent(ctx context.Context, inst mesh.Instance) error {
	if err := checkName(inst.Service.Name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	path := Path(inst)
	r.mu.Lock()
	defer r.mu.Unlock()
	ok, st, err := r.conn.Exists(path)
	if err != nil {
		return fmt.Errorf("zookeeper registry: deregister %s: %w", inst, err)
	}
	if !ok || st.EphemeralOwner != 0 {
		return nil
	}
	if err := r.conn.Delete(path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("zookeeper registry: deregister %s: %w", inst, err)
	}
	return nil
}

var _ registrysync.PersistentRegistry = (*Registry)(nil)
