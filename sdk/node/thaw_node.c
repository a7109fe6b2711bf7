/* The native half of the `thaw` npm package: a Node-API addon over libthaw.so (sdk/include/thaw.h).
 * Node-API only, so one build serves every Node.js version that has Node-API 8 (12.22+, 14.17+, 16+):
 * compiled against the `node-api-headers` npm package, never against one Node's own headers.
 * Built by sdk/node/build.sh; index.js is the API (hooks, options, result objects).
 *
 * Exports:
 *   checkpoint(image, key|null, flags) -> 0 (saved: first life) | 1 (restored: second life);
 *       throws an Error with .code ("THAW_ERR_IO", ...) and .errno (the C code, -3, ...)
 *   reseedOpenSSL() -> true when the running process's OpenSSL DRBGs were reseeded
 *   releaseMemory() -> malloc_trim(0): free malloc memory goes back to the kernel, not into the image
 *   reduceHeap() -> true when V8's memory-reducing full GC ran (memory pressure: critical)
 *   restoredArgs() -> [string], restoredEnv() -> ["KEY=VALUE"]
 *   setFdPolicy(spec|null)
 *   restores() -> how many times this process was restored (one count for every thread)
 *   watch(fn) -> calls fn in this thread (a Worker's, say) at its next turn after a restore made
 *       by another thread's checkpoint: each V8 isolate keeps its own caches and hooks
 *   EXIT_AFTER_SAVE, LEAVE_CHILDREN_OUT, SAVED, RESTORED                                     */
#define NAPI_VERSION 8
#include <dlfcn.h>
#include <malloc.h>
#include <node_api.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "thaw.h"

#define CHECK(env, call)                                                                       \
    do {                                                                                       \
        if ((call) != napi_ok) {                                                               \
            fail_napi(env, #call);                                                             \
            return NULL;                                                                       \
        }                                                                                      \
    } while (0)

/* Throws what Node-API reported (unless an exception is already pending). */
static void fail_napi(napi_env env, const char *what) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) return;
    const napi_extended_error_info *info = NULL;
    napi_get_last_error_info(env, &info);
    const char *msg = info && info->error_message ? info->error_message : "Node-API call failed";
    (void)what;
    napi_throw_error(env, "THAW_ERR_NAPI", msg);
}

static const char *code_name(int r) {
    switch (r) {
    case THAW_ERR_INVALID: return "THAW_ERR_INVALID";
    case THAW_ERR_UNSUPPORTED: return "THAW_ERR_UNSUPPORTED";
    case THAW_ERR_IO: return "THAW_ERR_IO";
    default: return "THAW_ERR_FAILED";
    }
}

/* Throws an Error carrying thaw's message, .code (the C macro's name) and .errno (its value). */
static void throw_thaw(napi_env env, int r) {
    const char *msg = thaw_last_error();
    napi_value code, text, err, num;
    if (napi_create_string_utf8(env, code_name(r), NAPI_AUTO_LENGTH, &code) != napi_ok ||
        napi_create_string_utf8(env, msg && *msg ? msg : "thaw failed", NAPI_AUTO_LENGTH, &text) !=
            napi_ok ||
        napi_create_error(env, code, text, &err) != napi_ok ||
        napi_create_int32(env, r, &num) != napi_ok ||
        napi_set_named_property(env, err, "errno", num) != napi_ok) {
        fail_napi(env, "throw_thaw");
        return;
    }
    napi_throw(env, err);
}

/* A JS string argument copied to the heap (NULL and no exception for null/undefined when
 * `optional`); NULL with a TypeError thrown otherwise. */
static char *string_arg(napi_env env, napi_value v, bool optional, const char *what) {
    napi_valuetype t;
    if (napi_typeof(env, v, &t) != napi_ok) return NULL;
    if (optional && (t == napi_null || t == napi_undefined)) return NULL;
    size_t len = 0;
    if (t != napi_string || napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
        napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", what);
        return NULL;
    }
    char *s = malloc(len + 1);
    if (!s || napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
        free(s);
        napi_throw_error(env, "THAW_ERR_NAPI", "out of memory");
        return NULL;
    }
    if (strlen(s) != len) { /* an embedded NUL would silently shorten a path */
        free(s);
        napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", what);
        return NULL;
    }
    return s;
}

static bool pending(napi_env env) {
    bool p = false;
    napi_is_exception_pending(env, &p);
    return p;
}

/* Isolates that asked to hear of a restore made by another thread's checkpoint. */
struct watcher {
    napi_env env;
    napi_threadsafe_function tsfn;
    struct watcher *next;
};
static struct watcher *watchers;
static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;

static void call_watcher(napi_env env, napi_value fn, void *context, void *data) {
    (void)context;
    (void)data;
    if (!env || !fn) return; /* the isolate is going away */
    napi_value undefined;
    if (napi_get_undefined(env, &undefined) == napi_ok) napi_call_function(env, undefined, fn, 0, NULL, NULL);
}

/* The isolate ends (a Worker exits): it is told nothing more. */
static void forget_watcher(void *arg) {
    struct watcher *w = arg;
    pthread_mutex_lock(&watch_lock);
    for (struct watcher **p = &watchers; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    pthread_mutex_unlock(&watch_lock);
    napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort);
    free(w);
}

static napi_value watch(napi_env env, napi_callback_info info) {
    size_t argc = 1;
    napi_value fn, name;
    CHECK(env, napi_get_cb_info(env, info, &argc, &fn, NULL, NULL));
    napi_valuetype t;
    if (argc < 1 || napi_typeof(env, fn, &t) != napi_ok || t != napi_function) {
        napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "watch(fn)");
        return NULL;
    }
    struct watcher *w = calloc(1, sizeof *w);
    if (!w) {
        napi_throw_error(env, "THAW_ERR_NAPI", "out of memory");
        return NULL;
    }
    w->env = env;
    CHECK(env, napi_create_string_utf8(env, "thaw restore", NAPI_AUTO_LENGTH, &name));
    if (napi_create_threadsafe_function(env, fn, NULL, name, 0, 1, NULL, NULL, NULL, call_watcher,
                                        &w->tsfn) != napi_ok) {
        free(w);
        fail_napi(env, "napi_create_threadsafe_function");
        return NULL;
    }
    /* It never keeps the isolate's event loop alive by itself. */
    napi_unref_threadsafe_function(env, w->tsfn);
    pthread_mutex_lock(&watch_lock);
    w->next = watchers;
    watchers = w;
    pthread_mutex_unlock(&watch_lock);
    CHECK(env, napi_add_env_cleanup_hook(env, forget_watcher, w));
    return NULL;
}

/* After a restore: every other isolate that watches runs its part at its next turn. */
static void tell_watchers(napi_env self) {
    pthread_mutex_lock(&watch_lock);
    for (struct watcher *w = watchers; w; w = w->next)
        if (w->env != self) napi_call_threadsafe_function(w->tsfn, NULL, napi_tsfn_nonblocking);
    pthread_mutex_unlock(&watch_lock);
}

static napi_value restores(napi_env env, napi_callback_info info) {
    (void)info;
    napi_value out;
    /* The SDK's count, right in every thread as soon as the process runs (a thread released
     * before the checkpointing one returns would read a count kept here as 0). */
    CHECK(env, napi_create_int32(env, thaw_restores(), &out));
    return out;
}

/* A signal from outside while checkpoint() runs (a supervisor's SIGTERM) is the first life's:
 * libuv would write it into its signal pipe at once, and every restore would act on it. */
static napi_value hold_signals(napi_env env, napi_callback_info info) {
    (void)env;
    (void)info;
    thaw_hold_signals();
    return NULL;
}

static napi_value release_signals(napi_env env, napi_callback_info info) {
    (void)env;
    (void)info;
    thaw_release_signals();
    return NULL;
}

static napi_value checkpoint(napi_env env, napi_callback_info info) {
    size_t argc = 3;
    napi_value argv[3];
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    if (argc < 3) {
        napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "checkpoint(image, key, flags)");
        return NULL;
    }
    uint32_t flags = 0;
    if (napi_get_value_uint32(env, argv[2], &flags) != napi_ok) {
        napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "flags must be a number");
        return NULL;
    }
    char *image = string_arg(env, argv[0], false, "the image path must be a string");
    if (!image) return NULL;
    char *key = string_arg(env, argv[1], true, "key must be a string path, null or undefined");
    if (!key && pending(env)) {
        free(image);
        return NULL;
    }
    int r = thaw_checkpoint(image, key, flags);
    free(image);
    free(key);
    if (r < 0) {
        throw_thaw(env, r);
        return NULL;
    }
    if (r == THAW_RESTORED) tell_watchers(env);
    napi_value out;
    CHECK(env, napi_create_int32(env, r, &out));
    return out;
}

/* OpenSSL keeps its DRBGs across a restore and reseeds them only when the PID changes, which a
 * restore never does: every restore of one image would draw the same crypto.randomBytes.
 * Node links OpenSSL statically and exports its symbols (Debian's build links libcrypto.so.3,
 * which is in the global scope too), so RAND_poll is found in the running process. In OpenSSL 3
 * RAND_poll reseeds the primary DRBG from the OS; the per-thread public and private DRBGs see the
 * primary's reseed counter move and reseed on their next use. RAND_add then mixes in fresh bytes
 * from getrandom as additional input, which changes the primary's state even where RAND_poll is
 * a no-op (an engine or provider that does not reseed). */
static napi_value reseed_openssl(napi_env env, napi_callback_info info) {
    (void)info;
    int (*rand_poll)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "RAND_poll");
    void (*rand_add)(const void *, int, double) =
        (void (*)(const void *, int, double))dlsym(RTLD_DEFAULT, "RAND_add");
    bool ok = false;
    if (rand_poll) ok = rand_poll() == 1;
    if (rand_add) {
        unsigned char buf[48];
        if (getrandom(buf, sizeof buf, 0) == (ssize_t)sizeof buf) {
            rand_add(buf, (int)sizeof buf, (double)sizeof buf);
            ok = true;
        }
    }
    napi_value out;
    CHECK(env, napi_get_boolean(env, ok, &out));
    return out;
}

/* V8 compiles and parses on its platform threads with malloc'd zones: glibc keeps what they
 * freed in per-thread arenas (tens of MiB after loading a large package), resident and dirty, so
 * a checkpoint would write it into the image and every restore would read it back. malloc_trim(0)
 * returns the free pages of every arena to the kernel (MADV_DONTNEED: no longer in the image). */
static napi_value release_memory(napi_env env, napi_callback_info info) {
    (void)info;
    napi_value out;
    CHECK(env, napi_get_boolean(env, malloc_trim(0) == 1, &out));
    return out;
}

/* A full GC that reduces memory, as V8 runs under memory pressure: it compacts the old generation
 * (a plain full GC evacuates only a few MiB, so a heap fragmented by the warm-up keeps its live
 * objects spread over up to four times as many pages: a restored process that touches them all
 * reads them all), shrinks the young generation to its minimum and releases the pages it freed.
 * V8's API for it, v8::Isolate::MemoryPressureNotification(kCritical), is C++; node exports V8's
 * symbols (for addons), so it is found in the running process. On the isolate's own thread the GC
 * runs at once, and the pressure level is back to kNone when the call returns: nothing stays
 * changed but the heap. The same as V8's memory reducer does to an idle process. */
static napi_value reduce_heap(napi_env env, napi_callback_info info) {
    (void)info;
    void *(*get_current)(void) =
        (void *(*)(void))dlsym(RTLD_DEFAULT, "_ZN2v87Isolate10GetCurrentEv");
    void (*notify)(void *, int) = (void (*)(void *, int))dlsym(
        RTLD_DEFAULT, "_ZN2v87Isolate26MemoryPressureNotificationENS_19MemoryPressureLevelE");
    void *isolate = get_current ? get_current() : NULL;
    if (isolate && notify) notify(isolate, 2 /* v8::MemoryPressureLevel::kCritical */);
    napi_value out;
    CHECK(env, napi_get_boolean(env, isolate && notify, &out));
    return out;
}

static napi_value string_list(napi_env env, int n, const char *(*get)(int)) {
    napi_value list;
    CHECK(env, napi_create_array_with_length(env, n > 0 ? (size_t)n : 0, &list));
    for (int i = 0; i < n; i++) {
        const char *s = get(i);
        napi_value v;
        CHECK(env, napi_create_string_utf8(env, s ? s : "", NAPI_AUTO_LENGTH, &v));
        CHECK(env, napi_set_element(env, list, (uint32_t)i, v));
    }
    return list;
}

static napi_value restored_args(napi_env env, napi_callback_info info) {
    (void)info;
    return string_list(env, thaw_restored_argc(), thaw_restored_arg);
}

static napi_value restored_env(napi_env env, napi_callback_info info) {
    (void)info;
    return string_list(env, thaw_restored_envc(), thaw_restored_env);
}

static napi_value set_fd_policy(napi_env env, napi_callback_info info) {
    size_t argc = 1;
    napi_value argv[1];
    CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    char *spec = NULL;
    if (argc > 0) {
        spec = string_arg(env, argv[0], true, "the descriptor policy must be a string or null");
        if (!spec && pending(env)) return NULL;
    }
    int r = thaw_set_fd_policy(spec);
    free(spec);
    if (r < 0) {
        throw_thaw(env, r);
        return NULL;
    }
    return NULL;
}

static napi_status export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
    napi_value fn;
    napi_status s = napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
    return s == napi_ok ? napi_set_named_property(env, exports, name, fn) : s;
}

static napi_status export_int(napi_env env, napi_value exports, const char *name, int value) {
    napi_value v;
    napi_status s = napi_create_int32(env, value, &v);
    return s == napi_ok ? napi_set_named_property(env, exports, name, v) : s;
}

/* Node sets O_NONBLOCK on the standard descriptors it makes streams of (pipes, sockets) and
 * changes a terminal's modes, and its exit handler puts them back (node::ResetStdio, registered
 * with atexit): a shell pipeline shares those pipes. A first life that exits after saving runs no
 * exit handlers, so that one runs on its own (it only calls fcntl and tcsetattr). */
static int reset_stdio(void *fn) {
    ((void (*)(void))fn)();
    return 0;
}

static void register_reset_stdio(void) {
    static int done;
    if (__atomic_exchange_n(&done, 1, __ATOMIC_ACQ_REL)) return;
    void *fn = dlsym(RTLD_DEFAULT, "_ZN4node10ResetStdioEv");
    if (fn) thaw_on_exit_after_save(reset_stdio, fn);
}

NAPI_MODULE_INIT() {
    register_reset_stdio();
    CHECK(env, export_fn(env, exports, "checkpoint", checkpoint));
    CHECK(env, export_fn(env, exports, "reseedOpenSSL", reseed_openssl));
    CHECK(env, export_fn(env, exports, "releaseMemory", release_memory));
    CHECK(env, export_fn(env, exports, "reduceHeap", reduce_heap));
    CHECK(env, export_fn(env, exports, "restoredArgs", restored_args));
    CHECK(env, export_fn(env, exports, "restoredEnv", restored_env));
    CHECK(env, export_fn(env, exports, "setFdPolicy", set_fd_policy));
    CHECK(env, export_fn(env, exports, "restores", restores));
    CHECK(env, export_fn(env, exports, "holdSignals", hold_signals));
    CHECK(env, export_fn(env, exports, "releaseSignals", release_signals));
    CHECK(env, export_fn(env, exports, "watch", watch));
    CHECK(env, export_int(env, exports, "EXIT_AFTER_SAVE", THAW_EXIT_AFTER_SAVE));
    CHECK(env, export_int(env, exports, "LEAVE_CHILDREN_OUT", THAW_LEAVE_CHILDREN_OUT));
    CHECK(env, export_int(env, exports, "SAVED", THAW_SAVED));
    CHECK(env, export_int(env, exports, "RESTORED", THAW_RESTORED));
    return exports;
}
