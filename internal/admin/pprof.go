package admin

import (
	"net/http"
	"net/http/pprof" // also registers on http.DefaultServeMux, which Strait never serves
	"strconv"
)

// mountPprof mounts net/http/pprof's handlers on mux.
func mountPprof(mux *http.ServeMux) {
	mux.Handle("/debug/pprof/", getOnly(limitSeconds(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", getOnly(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", getOnly(limitSeconds(pprof.Profile)))
	mux.Handle("/debug/pprof/trace", getOnly(limitSeconds(pprof.Trace)))
	// go tool pprof posts program counters to symbolize.
	mux.Handle("/debug/pprof/symbol", allowMethods(http.HandlerFunc(pprof.Symbol),
		"GET, HEAD, POST", http.MethodGet, http.MethodHead, http.MethodPost))
}

// limitSeconds refuses a "seconds" parameter above MaxProfileSeconds (CPU profile, trace,
// delta profiles). The server's ReadTimeout does not cut a profile short (net/http clears
// the read deadline once the request is read) and pprof extends the write deadline itself
// to WriteTimeout + seconds.
func limitSeconds(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("seconds"); v != "" {
			// pprof rejects or defaults what does not parse; only the upper bound is ours.
			if f, err := strconv.ParseFloat(v, 64); err == nil && f > MaxProfileSeconds {
				writeText(w, http.StatusBadRequest,
					"seconds must be at most "+strconv.Itoa(MaxProfileSeconds))
				return
			}
		}
		h(w, r)
	})
}
