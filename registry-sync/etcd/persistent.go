package etcd

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

// RegisterPersistent puts the instance's key (same key and value as Register) without a
// lease: it outlives this process. It is for copies a sync job leaves behind (strait sync
// --once), which carry ownership marks in their URL and are removed by the job's next run
// once their source is gone.
func (r *Registry) RegisterPersistent(ctx context.Context, inst mesh.Instance) error {
	if _, err := r.cli.Put(ctx, Key(inst), dubbourl.Format(inst)); err != nil {
		return fmt.Errorf("etcd registry: register %s: %w", inst, err)
	}
	return nil
}

// DeregisterPersistent deletes the instance's key if it has no lease; a key under a lease
// (a live process's) is left alone.
func (r *Registry) DeregisterPersistent(ctx context.Context, inst mesh.Instance) error {
	k := Key(inst)
	_, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(k), "=", clientv3.NoLease)).
		Then(clientv3.OpDelete(k)).
		Commit()
	if err != nil {
		return fmt.Errorf("etcd registry: deregister %s: %w", inst, err)
	}
	return nil
}

var _ registrysync.PersistentRegistry = (*Registry)(nil)
