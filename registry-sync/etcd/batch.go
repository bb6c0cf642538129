package etcd

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/strait-mesh/strait/internal/mesh"
	registrysync "github.com/strait-mesh/strait/registry-sync"
	"github.com/strait-mesh/strait/registry-sync/dubbourl"
)

// batchOps is how many keys one transaction writes (etcd's default limit is 128).
const batchOps = 128

// RegisterAll registers many instances, batchOps per transaction, under this process's
// lease, as Register does one.
func (r *Registry) RegisterAll(ctx context.Context, insts []mesh.Instance) error {
	lease, err := r.ensureLease(ctx)
	if err != nil {
		return err
	}
	return r.txns(ctx, insts, func(i mesh.Instance) clientv3.Op {
		return clientv3.OpPut(Key(i), dubbourl.Format(i), clientv3.WithLease(lease))
	}, true)
}

// DeregisterAll withdraws many instances this process registered.
func (r *Registry) DeregisterAll(ctx context.Context, insts []mesh.Instance) error {
	return r.txns(ctx, insts, func(i mesh.Instance) clientv3.Op { return clientv3.OpDelete(Key(i)) }, false)
}

func (r *Registry) txns(ctx context.Context, insts []mesh.Instance, op func(mesh.Instance) clientv3.Op, mine bool) error {
	for len(insts) > 0 {
		n := min(len(insts), batchOps)
		ops := make([]clientv3.Op, n)
		for i, inst := range insts[:n] {
			ops[i] = op(inst)
		}
		if _, err := r.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("etcd registry: write %d instances: %w", n, err)
		}
		r.mu.Lock()
		for _, inst := range insts[:n] {
			if mine {
				r.mine[Key(inst)] = true
			} else {
				delete(r.mine, Key(inst))
			}
		}
		r.mu.Unlock()
		insts = insts[n:]
	}
	return nil
}

var _ registrysync.BatchRegistry = (*Registry)(nil)
