package e2e

import "go.uber.org/goleak"

// leakAllowed lists goroutines that libraries start once per process and never stop.
func leakAllowed() []goleak.Option {
	return []goleak.Option{
		// grpc-go's and etcd's process-wide background workers.
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	}
}
