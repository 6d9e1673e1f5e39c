// goworkers - a tether plugin in Go whose goroutines call back into guest
// code.
//
// gw_run(fn, ud, ngoroutines, calls) starts ngoroutines goroutines; each
// calls fn(ud, goroutine, call) `calls` times, each time holding the GIL of
// the interpreter the plugin was loaded into, taken with the host table's
// ensure and given back with its release.  The caller may hold that GIL or
// not: gw_run releases it while it waits, since the goroutines need it.  It
// returns the number of calls made, or a negative status (TETHER_ESTATE:
// not loaded; TETHER_EINVAL: bad arguments, or more than 1024 goroutines;
// the first failed ensure, e.g.
// TETHER_EFINALIZING at shutdown).
//
// The Go scheduler moves a goroutine between OS threads whenever it blocks
// or is preempted, but an ensure token belongs to the OS thread that took
// it ([owner-thread]).  So each goroutine pins itself with
// runtime.LockOSThread for as long as it holds the GIL.  gw_wrong_thread
// shows what the pin prevents: the token of one OS thread released on
// another is refused (TETHER_ESTATE) and the GIL stays with the first.
//
// The plugin cannot be unloaded (a Go runtime cannot): its descriptor (in
// shim.c) does not set TETHER_PLUGIN_UNLOADABLE and the loader keeps it
// mapped; fini only forgets the host.
package main

/*
#cgo CFLAGS: -Wall -Werror
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// The load in progress: set by init, cleared by fini (one runtime at a
// time).  Guarded by mu.
var (
	mu     sync.Mutex
	host   *C.tether_host_api
	interp C.tether_interp
)

// Calls that found the GIL held, since the process began.
var gilChecks int64

// maxGoroutines bounds gw_run's ngoroutines (more: TETHER_EINVAL, nothing
// starts).  Each goroutine is pinned to an OS thread while it waits for the
// GIL, and past the Go runtime's 10000-thread limit the whole host process
// dies, so a bad count must not reach the scheduler.
const maxGoroutines = 1024

// goReady returns once the Go runtime has started (shim.c's entry point).
//
//export goReady
func goReady() {}

//export goInit
func goInit(h *C.tether_host_api, i C.tether_interp, state *unsafe.Pointer) C.int {
	mu.Lock()
	defer mu.Unlock()
	host, interp = h, i
	*state = nil
	return C.TETHER_OK
}

//export goFini
func goFini(state unsafe.Pointer) {
	mu.Lock()
	defer mu.Unlock()
	host, interp = nil, 0
}

func loaded() (*C.tether_host_api, C.tether_interp) {
	mu.Lock()
	defer mu.Unlock()
	return host, interp
}

// withoutGIL runs f with the calling thread's GIL released, if it holds
// one.  The goroutine of an exported function stays on its C caller's
// thread, so save and restore pair on one OS thread.
func withoutGIL(h *C.tether_host_api, f func()) {
	var ts C.tether_tstate
	saved := C.gw_gil_held(h) == 1 && C.gw_save(h, &ts) == C.TETHER_OK
	f()
	if saved {
		C.gw_restore(h, ts)
	}
}

// docs:begin worker
// worker is one goroutine of gw_run: the right way to call guest code from
// a goroutine.
func worker(h *C.tether_host_api, i C.tether_interp, fn C.gw_guest_fn,
	ud unsafe.Pointer, no, calls C.int32_t, made *int64, firstErr *int32) {
	// Pin the goroutine to its OS thread from ensure to release: the token
	// and the GIL belong to the thread, not to the goroutine.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for k := C.int32_t(0); k < calls; k++ {
		var st C.tether_gilstate
		if rc := C.gw_ensure(h, i, &st); rc != C.TETHER_OK {
			atomic.CompareAndSwapInt32(firstErr, 0, int32(rc))
			return
		}
		if C.gw_gil_held(h) == 1 {
			atomic.AddInt64(&gilChecks, 1)
		}
		C.gw_call(fn, ud, no, k)
		C.gw_release(h, st) // same OS thread as the ensure: pinned
		atomic.AddInt64(made, 1)
	}
}
// docs:end worker

//export gw_run
func gw_run(fn C.gw_guest_fn, ud unsafe.Pointer, n, calls C.int32_t) C.int64_t {
	h, i := loaded()
	if h == nil {
		return C.TETHER_ESTATE
	}
	if fn == nil || n <= 0 || n > maxGoroutines || calls < 0 {
		return C.TETHER_EINVAL
	}
	var made int64
	var firstErr int32
	withoutGIL(h, func() {
		var wg sync.WaitGroup
		for no := C.int32_t(0); no < n; no++ {
			wg.Add(1)
			go func(no C.int32_t) {
				defer wg.Done()
				worker(h, i, fn, ud, no, calls, &made, &firstErr)
			}(no)
		}
		wg.Wait()
	})
	if firstErr != 0 {
		return C.int64_t(firstErr)
	}
	return C.int64_t(made)
}

//export gw_gil_checks
func gw_gil_checks() C.int64_t {
	return C.int64_t(atomic.LoadInt64(&gilChecks))
}

// gw_wrong_thread does on purpose what an unpinned goroutine does by
// accident when the scheduler moves it between its ensure and its release:
// one OS thread takes the GIL, and another releases the token.  It returns
// the second release's status (TETHER_ESTATE: refused, the token belongs
// to another thread); the GIL stayed with the first thread, which then
// releases it properly.  A host with TETHER_CONFIG_ABORT_ON_MISUSE aborts
// instead.
//
//export gw_wrong_thread
func gw_wrong_thread() C.int {
	h, i := loaded()
	if h == nil {
		return C.TETHER_ESTATE
	}
	var wrong C.int
	withoutGIL(h, func() {
		tokens := make(chan C.tether_gilstate)
		refused := make(chan C.int) // B's release status, to A
		verdict := make(chan C.int) // A's answer, to gw_wrong_thread
		go func() { // thread A: takes the GIL
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var st C.tether_gilstate
			if rc := C.gw_ensure(h, i, &st); rc != C.TETHER_OK {
				close(tokens)
				verdict <- rc
				return
			}
			tokens <- st
			rc := <-refused // B's release was refused: A still holds the GIL
			if C.gw_gil_held(h) != 1 {
				rc = C.TETHER_EINVAL
			}
			C.gw_release(h, st)
			verdict <- rc
		}()
		go func() { // thread B: a different OS thread, since A is pinned
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if st, ok := <-tokens; ok {
				refused <- C.gw_release(h, st)
			}
		}()
		wrong = <-verdict
	})
	return wrong
}

func main() {}
