// The comparison for bench/run.sh's tiny-job scenario: Go's net/http computing the job in its
// handler goroutine — what "just compute in the handler" gives, with no queue, deadline or
// back-pressure. Same answers as crunchd's /fib/{n} and /healthz.
// usage: fibserver PORT
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func fib(n uint64) uint64 {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

func main() {
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}`))
	})
	http.HandleFunc("/fib/", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseUint(strings.TrimPrefix(r.URL.Path, "/fib/"), 10, 64)
		if err != nil || n > 92 {
			http.Error(w, `{"error":{"code":"invalid_argument"}}`, http.StatusBadRequest)
			return
		}
		v := fib(n)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"n":%d,"result":%d,"result_string":"%d"}`, n, v, v)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
