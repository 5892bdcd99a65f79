/*
 * The Proxy-Wasm host through the C ABI, with the `testkit` plugin built from source with the proxy-wasm
 * Rust SDK (tests/proxy-plugins; scripts/test-c.sh builds it). Each plugin picks a mode from its
 * configuration: a header filter, a buffering body filter, an HTTP callout answered from another thread
 * (pause, wait, resume), a gRPC callout, a foreign function, properties, metrics, shared data with CAS, a
 * TCP filter, and a panicking plugin (fail-closed: a 503; fail-open: continue) after which the host keeps
 * working; logs are read back through the callback and bcv_proxy_vm_take_logs.
 *
 * Usage: test_proxy [path/to/testkit.wasm] (or BCV_TEST_PROXY_PLUGIN). BCV_TEST_PROXY_POOLING=0 turns the
 * pooling allocator off (memory checkers); BCV_TEST_PROXY_DEADLINE_MS raises the per-callback CPU limit;
 * BCV_TEST_PROXY_CACHE_DIR keeps compiled modules there across runs; BCV_TEST_ONLY=text runs only the tests
 * whose name contains it.
 * Run plain and with AddressSanitizer by scripts/test-c.sh. Ends with the line "N passed, M failed".
 */
#define _GNU_SOURCE
#include <bcv.h>

#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed, failed;
static const char *current;
static int current_failed;

#define CHECK(cond)                                                                                  \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            fprintf(stderr, "  %s:%d: %s: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__,  \
                    current, #cond, bcv_last_error_message());                                       \
            current_failed = 1;                                                                      \
        }                                                                                            \
    } while (0)
#define CHECK_EQ(a, b) CHECK((a) == (b))
#define OK(call) CHECK_EQ((call), BCV_OK)
/* NUL-terminated bcv texts compared with C strings; NULL never equals anything. */
#define CHECK_STR(a, b) CHECK((a) != NULL && strcmp((const char *)(a), (b)) == 0)

/* Generous limits: memory checkers run this many times slower. */
#define WAIT_MS 30000

static uint8_t *plugin_wasm;
static size_t plugin_len;
static int pooling = 1;
static uint64_t deadline_ms = 0;
/* The module cache every host shares: the first load compiles, later ones deserialize. A fresh temporary
 * directory, or BCV_TEST_PROXY_CACHE_DIR (kept, so that later runs, e.g. under valgrind, skip compiling). */
static char cache_dir[4096];
static int cache_given;
static const char *only;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bcv_handle_t new_runtime(void) {
    bcv_handle_t rt = 0;
    OK(bcv_runtime_new(BCV_STRICT_OFF, &rt));
    return rt;
}

/* Every test ends with: nothing live, then the runtime freed. */
static void finish_runtime(bcv_handle_t rt) {
    uint64_t live = 99;
    CHECK_EQ(bcv_runtime_wait_idle(rt, WAIT_MS, &live), BCV_OK);
    CHECK_EQ(live, 0);
    OK(bcv_runtime_free(rt));
}

static bcv_proxy_header_t hdr(const char *name, const char *value) {
    bcv_proxy_header_t h = {(const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value)};
    return h;
}

/* The first value of `name` in a list bcv returned (NUL-terminated by bcv), or NULL. */
static const char *find(const bcv_proxy_headers_t *list, const char *name) {
    for (size_t i = 0; i < list->count; i++) {
        const bcv_proxy_header_t *h = &list->headers[i];
        if (h->name_len == strlen(name) && memcmp(h->name, name, h->name_len) == 0) return (const char *)h->value;
    }
    return NULL;
}

static int bytes_eq(const bcv_bytes_t *b, const char *text) {
    return b->len == strlen(text) && (b->len == 0 || memcmp(b->data, text, b->len) == 0);
}

/* The value of request header `name` after the plugin ran, copied into `out` ("" when absent). */
static const char *request_header(bcv_handle_t ctx, const char *name, char *out, size_t cap) {
    bcv_proxy_headers_t h = {0};
    out[0] = 0;
    OK(bcv_proxy_http_request_headers(ctx, &h));
    const char *v = find(&h, name);
    if (v) snprintf(out, cap, "%s", v);
    bcv_proxy_headers_free(&h);
    return out;
}

/* A GET request's headers for `path`; `extra` more headers may follow in the caller's array. */
static size_t request_for(bcv_proxy_header_t *h, const char *path) {
    h[0] = hdr(":method", "GET");
    h[1] = hdr(":path", path);
    h[2] = hdr(":authority", "example.test");
    h[3] = hdr(":scheme", "http");
    return 4;
}

/* ---- The embedder's side of a VM: what its callbacks saw, and the callouts they were handed ---- */

struct services {
    atomic_int frees;           /* user_data_free calls: must end at exactly 1 */
    atomic_int log_records;     /* records seen by the log callback */
    atomic_int configure_seen;  /* a "configure: ..." record with its plugin name and level */
    atomic_int property_calls;
    char property_plugin[64];
    char property_path[64];
    size_t property_path_len;
    atomic_int foreign_calls;
    int foreign_fail;           /* make "reverse" fail */
    bcv_handle_t reenter;       /* a context of the running VM that "reverse" tries to call into */
    bcv_status_t reentered;     /* what that call returned */
    bcv_status_t callout_answer; /* what the callout callbacks return */
    atomic_ullong callout;      /* the last callout handed over (0: none) */
    atomic_int callouts;
};

static void services_free(void *user_data) {
    struct services *s = user_data;
    atomic_fetch_add(&s->frees, 1);
}

static void on_log(void *user_data, const bcv_proxy_log_record_t *r) {
    struct services *s = user_data;
    atomic_fetch_add(&s->log_records, 1);
    if (r->message_len == strlen(r->message) && strncmp(r->message, "configure: ", 11) == 0 &&
        r->level == BCV_PROXY_LOG_INFO && r->plugin_len > 0 && strcmp(r->vm_id, "test") == 0 &&
        r->vm_id_len == 4)
        atomic_fetch_add(&s->configure_seen, 1);
}

static bcv_status_t on_callout(void *user_data, bcv_handle_t callout) {
    struct services *s = user_data;
    atomic_fetch_add(&s->callouts, 1);
    if (s->callout_answer != BCV_OK) return s->callout_answer;
    atomic_store(&s->callout, callout);
    return BCV_OK;
}

static bcv_status_t on_property(void *user_data, const char *plugin, uint32_t context_id, const uint8_t *path,
                                size_t path_len, bcv_proxy_reply_t *reply) {
    struct services *s = user_data;
    (void)context_id;
    atomic_fetch_add(&s->property_calls, 1);
    snprintf(s->property_plugin, sizeof s->property_plugin, "%s", plugin);
    s->property_path_len = path_len < sizeof s->property_path ? path_len : sizeof s->property_path;
    memcpy(s->property_path, path, s->property_path_len);
    if (path_len == 7 && memcmp(path, "missing", 7) == 0) {
        bcv_proxy_reply_set(reply, (const uint8_t *)"from-c", 6);
        return BCV_OK;
    }
    if (path_len == 14 && memcmp(path, "source\0address", 14) == 0) {
        bcv_proxy_reply_set(reply, (const uint8_t *)"10.0.0.1:5555", 13);
        return BCV_OK;
    }
    return BCV_E_NOT_FOUND;
}

static bcv_status_t reverse(void *user_data, const char *name, const uint8_t *args, size_t len,
                            bcv_proxy_reply_t *reply) {
    struct services *s = user_data;
    atomic_fetch_add(&s->foreign_calls, 1);
    if (strcmp(name, "reverse") != 0) return BCV_E_NOT_FOUND;
    if (s->reenter) {
        /* Calling into the VM that is running this callback is refused, never a deadlock. */
        bcv_proxy_headers_t h = {0};
        s->reentered = bcv_proxy_http_request_headers(s->reenter, &h);
        bcv_proxy_headers_free(&h);
    }
    if (s->foreign_fail) {
        bcv_proxy_reply_set_error(reply, "reverse is broken on purpose");
        return BCV_E_INVALID;
    }
    uint8_t out[256];
    if (len > sizeof out) return BCV_E_INVALID;
    for (size_t i = 0; i < len; i++) out[i] = args[len - 1 - i];
    return bcv_proxy_reply_set(reply, out, len);
}

static bcv_handle_t host_new(bcv_handle_t rt) {
    bcv_proxy_host_config_t cfg;
    OK(bcv_proxy_host_config_init(&cfg));
    CHECK_EQ(cfg.memory_limit, 64ull << 20);
    CHECK_EQ(cfg.callback_deadline_ms, 1000);
    CHECK(cfg.pooling);
    cfg.pooling = pooling;
    cfg.max_instances = 16;
    if (deadline_ms) cfg.callback_deadline_ms = deadline_ms;
    cfg.module_cache_dir = cache_dir;
    bcv_handle_t host = 0;
    OK(bcv_proxy_host_new(rt, &cfg, &host));
    return host;
}

static bcv_handle_t module_load(bcv_handle_t host) {
    bcv_handle_t module = 0;
    OK(bcv_proxy_module_load(host, "testkit", plugin_wasm, plugin_len, &module));
    return module;
}

/* A VM with every callback wired to `s`. */
static bcv_handle_t vm_start_restarting(bcv_handle_t host, bcv_handle_t module, struct services *s,
                                        const char *vm_id, uint32_t restart_max) {
    static const bcv_proxy_foreign_function_t functions[] = {{"reverse", reverse}};
    bcv_proxy_vm_config_t cfg;
    OK(bcv_proxy_vm_config_init(&cfg));
    cfg.vm_id = vm_id;
    cfg.configuration = (const uint8_t *)"vm-config";
    cfg.configuration_len = 9;
    cfg.http_call = on_callout;
    cfg.grpc_call = on_callout;
    cfg.property = on_property;
    cfg.foreign_functions = functions;
    cfg.foreign_function_count = 1;
    cfg.log = on_log;
    cfg.user_data = s;
    cfg.user_data_free = services_free;
    cfg.restart_max = restart_max;
    cfg.restart_backoff_ms = 0;
    bcv_handle_t vm = 0;
    OK(bcv_proxy_vm_start(host, module, &cfg, &vm));
    return vm;
}

static bcv_handle_t vm_start(bcv_handle_t host, bcv_handle_t module, struct services *s, const char *vm_id) {
    return vm_start_restarting(host, module, s, vm_id, 0);
}

static bcv_handle_t add_plugin(bcv_handle_t vm, const char *name, const char *mode, bool fail_open) {
    bcv_proxy_plugin_config_t cfg;
    OK(bcv_proxy_plugin_config_init(&cfg));
    cfg.name = name;
    cfg.root_id = name;
    cfg.configuration = (const uint8_t *)mode;
    cfg.configuration_len = strlen(mode);
    cfg.fail_open = fail_open;
    bcv_handle_t plugin = 0;
    OK(bcv_proxy_vm_add_plugin(vm, &cfg, &plugin));
    return plugin;
}

static bcv_handle_t http_new(bcv_handle_t plugin) {
    bcv_handle_t ctx = 0;
    OK(bcv_proxy_http_context_new(plugin, &ctx));
    return ctx;
}

/* Feeds GET `path` (with `extra` headers) and returns the action (~0u on error). */
static uint32_t send_request(bcv_handle_t ctx, const char *path, const bcv_proxy_header_t *extra, size_t n_extra,
                             bcv_proxy_local_response_t *response) {
    bcv_proxy_header_t h[16];
    size_t n = request_for(h, path);
    for (size_t i = 0; i < n_extra; i++) h[n++] = extra[i];
    uint32_t action = ~0u;
    OK(bcv_proxy_http_on_request_headers(ctx, h, n, true, &action, response));
    return action;
}

/* True when one of the VM's kept log records has exactly `message` (or contains it, when `contains`). */
static int logs_have(bcv_proxy_logs_t *logs, const char *message, int contains, uint32_t *level) {
    for (size_t i = 0; i < logs->count; i++) {
        const bcv_proxy_log_record_t *r = &logs->records[i];
        if (contains ? strstr(r->message, message) != NULL : strcmp(r->message, message) == 0) {
            if (level) *level = r->level;
            return 1;
        }
    }
    return 0;
}

/* Releases the VM's handles and checks that the services' user data was freed exactly once. */
static void release_all(bcv_handle_t *handles, size_t n) {
    for (size_t i = 0; i < n; i++) OK(bcv_release(handles[i]));
}

/* ---- Tests ---- */

/* The header filter: request and response headers changed, on_log at the end, a metric, log callback. */
static void header_filter(void) {
    bcv_handle_t rt = new_runtime();
    struct services s = {0};
    bcv_handle_t host = host_new(rt), module = module_load(host);
    uint32_t abi = 0;
    bool cached = true;
    OK(bcv_proxy_module_info(module, &abi, &cached));
    CHECK_EQ(abi, BCV_PROXY_ABI_0_2_1);
    CHECK(cache_given || !cached); /* the first test compiles it */
    bcv_handle_t again = module_load(host);
    OK(bcv_proxy_module_info(again, &abi, &cached));
    CHECK(cached);
    OK(bcv_release(again));
    bcv_handle_t vm = vm_start(host, module, &s, "test");
    bcv_handle_t plugin = add_plugin(vm, "headers", "headers", false);
    CHECK(atomic_load(&s.configure_seen) >= 1);
    bcv_handle_t ctx = http_new(plugin);

    bcv_proxy_header_t extra[] = {hdr("x-replace", "old"), hdr("x-remove", "gone")};
    CHECK_EQ(send_request(ctx, "/items?id=7", extra, 2, NULL), BCV_PROXY_CONTINUE);
    bcv_proxy_headers_t out = {0};
    OK(bcv_proxy_http_request_headers(ctx, &out));
    CHECK_STR(find(&out, "x-added"), "yes");
    CHECK_STR(find(&out, "x-replace"), "replaced");
    CHECK(find(&out, "x-remove") == NULL);
    CHECK_STR(find(&out, "x-count"), "6");
    CHECK_STR(find(&out, "x-path"), "/items?id=7");
    CHECK_STR(find(&out, ":method"), "GET");
    bcv_proxy_headers_free(&out);
    CHECK(out.headers == NULL && out.count == 0);

    bcv_proxy_header_t resp[] = {hdr(":status", "200")};
    uint32_t action = ~0u;
    OK(bcv_proxy_http_on_response_headers(ctx, resp, 1, true, &action, NULL));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    OK(bcv_proxy_http_response_headers(ctx, &out));
    CHECK_STR(find(&out, "x-response-added"), "yes");
    CHECK_STR(find(&out, ":status"), "200");
    bcv_proxy_headers_free(&out);
    bcv_proxy_local_response_t lr = {0};
    CHECK_EQ(bcv_proxy_http_local_response(ctx, &lr), BCV_EOF);
    CHECK_EQ(lr.status, 0);

    bool done = false;
    OK(bcv_proxy_http_finish(ctx, &done));
    CHECK(done);
    CHECK_EQ(bcv_proxy_http_request_headers(ctx, &out), BCV_E_PROXY_FINISHED);
    CHECK(strstr(bcv_last_error_message(), "finished") != NULL);
    CHECK_EQ(bcv_proxy_http_on_request_headers(ctx, NULL, 0, true, &action, NULL), BCV_E_PROXY_FINISHED);

    bcv_proxy_logs_t logs = {0};
    OK(bcv_proxy_vm_take_logs(vm, &logs));
    uint32_t level = 99;
    CHECK(logs_have(&logs, "log: /items?id=7 200", 0, &level));
    CHECK_EQ(level, BCV_PROXY_LOG_INFO);
    CHECK(logs_have(&logs, "vm_start: vm-config", 0, NULL));
    CHECK(logs_have(&logs, "configure: headers", 0, NULL));
    for (size_t i = 0; i < logs.count; i++) CHECK_EQ(logs.records[i].message_len, strlen(logs.records[i].message));
    CHECK(atomic_load(&s.log_records) >= (int)logs.count);
    bcv_proxy_logs_free(&logs);
    CHECK(logs.records == NULL && logs.count == 0);
    OK(bcv_proxy_vm_take_logs(vm, &logs));
    CHECK_EQ(logs.count, 0); /* taken */
    bcv_proxy_logs_free(&logs);

    bcv_proxy_metric_t m = {0};
    OK(bcv_proxy_host_metric(host, "requests_total", &m));
    CHECK_EQ(m.kind, BCV_PROXY_METRIC_COUNTER);
    CHECK_EQ(m.value, 1);
    CHECK_EQ(bcv_proxy_host_metric(host, "no_such_metric", &m), BCV_EOF);

    bcv_proxy_vm_stats_t st = {0};
    OK(bcv_proxy_vm_stats(vm, &st));
    CHECK(st.memory_bytes >= 65536);
    CHECK_EQ(st.contexts, 1); /* the root context; the finished one is gone */
    CHECK_EQ(bcv_proxy_vm_failure(vm, NULL, NULL, 0, NULL), BCV_EOF);

    bcv_handle_t handles[] = {ctx, plugin, vm, module, host};
    release_all(handles, 5);
    CHECK_EQ(bcv_release(ctx), BCV_E_BAD_HANDLE);
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s.frees), 1);
}

/* A buffering body filter fed chunk by chunk, then through a stream. */
static void body_filter(void) {
    bcv_handle_t rt = new_runtime();
    bcv_handle_t host = host_new(rt), module = module_load(host);
    bcv_handle_t vm = 0;
    OK(bcv_proxy_vm_start(host, module, NULL, &vm)); /* no services at all */
    bcv_handle_t plugin = add_plugin(vm, "body", "body", false);
    bcv_handle_t ctx = http_new(plugin);
    bcv_proxy_header_t h[4];
    size_t n = request_for(h, "/upload");
    uint32_t action = ~0u;
    OK(bcv_proxy_http_on_request_headers(ctx, h, n, false, &action, NULL));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    OK(bcv_proxy_http_on_request_body(ctx, (const uint8_t *)"abc", 3, false, &action, NULL));
    CHECK_EQ(action, BCV_PROXY_PAUSE); /* buffering until the end */
    OK(bcv_proxy_http_on_request_body(ctx, (const uint8_t *)"def", 3, true, &action, NULL));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    bcv_bytes_t body = {0};
    OK(bcv_proxy_http_take_request_body(ctx, &body));
    CHECK(bytes_eq(&body, "ABCDEF"));
    bcv_bytes_free(&body);
    OK(bcv_proxy_http_take_request_body(ctx, &body));
    CHECK_EQ(body.len, 0); /* taken */
    bcv_proxy_header_t trailers[] = {hdr("x-checksum", "1")};
    OK(bcv_proxy_http_on_request_trailers(ctx, trailers, 1, &action, NULL));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    bcv_proxy_headers_t out = {0};
    OK(bcv_proxy_http_request_trailers(ctx, &out));
    CHECK_STR(find(&out, "x-body-length"), "6");
    CHECK_STR(find(&out, "x-checksum"), "1");
    bcv_proxy_headers_free(&out);
    bcv_proxy_header_t resp[] = {hdr(":status", "200")};
    OK(bcv_proxy_http_on_response_headers(ctx, resp, 1, false, &action, NULL));
    OK(bcv_proxy_http_on_response_body(ctx, (const uint8_t *)"resp", 4, true, &action, NULL));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    OK(bcv_proxy_http_take_response_body(ctx, &body));
    CHECK(bytes_eq(&body, "resp\n-- filtered"));
    bcv_bytes_free(&body);
    bcv_proxy_header_t rtrl[] = {hdr("grpc-status", "0")};
    OK(bcv_proxy_http_on_response_trailers(ctx, rtrl, 1, &action, NULL));
    OK(bcv_proxy_http_response_trailers(ctx, &out));
    CHECK_STR(find(&out, "grpc-status"), "0");
    bcv_proxy_headers_free(&out);
    OK(bcv_release(ctx));

    /* The same filter over streams: the output ends cleanly once the plugin continued the last chunk. */
    ctx = http_new(plugin);
    OK(bcv_proxy_http_on_request_headers(ctx, h, n, false, &action, NULL));
    bcv_handle_t input = 0, output = 0;
    OK(bcv_stream_from_bytes(rt, (const uint8_t *)"streamed body", 13, &input));
    OK(bcv_proxy_http_filter_request_body(ctx, input, WAIT_MS, &output));
    CHECK_EQ(bcv_release(input), BCV_E_BAD_HANDLE); /* consumed */
    OK(bcv_stream_collect(output, &body));
    CHECK(bytes_eq(&body, "STREAMED BODY"));
    bcv_bytes_free(&body);
    bcv_handle_t handles[] = {output, ctx, plugin, vm, module, host};
    release_all(handles, 6);
    finish_runtime(rt);
}

struct answer {
    bcv_handle_t callout;
    int delay_ms;
    const char *body;           /* HTTP: answer 200 with this body; NULL: leave it */
    bcv_status_t result, second;
};

static void *answer_later(void *arg) {
    struct answer *a = arg;
    sleep_ms(a->delay_ms);
    bcv_proxy_header_t h[] = {hdr(":status", "200"), hdr("content-type", "text/plain")};
    a->result = bcv_proxy_callout_respond(a->callout, h, 2, (const uint8_t *)a->body, strlen(a->body));
    a->second = bcv_proxy_callout_respond(a->callout, h, 2, NULL, 0);
    bcv_release(a->callout);
    return NULL;
}

/* An HTTP callout handed to the embedder, answered from another thread: pause, wait, resume. */
static void http_callout(void) {
    bcv_handle_t rt = new_runtime();
    struct services s = {0};
    bcv_handle_t host = host_new(rt), module = module_load(host);
    bcv_handle_t vm = vm_start(host, module, &s, "test");
    bcv_handle_t plugin = add_plugin(vm, "callout", "callout", false);

    /* 1: answered 200 from another thread; the plugin resumes the request with the body in a header. */
    bcv_handle_t ctx = http_new(plugin);
    bcv_proxy_header_t auth[] = {hdr("authorization", "Bearer t0k")};
    CHECK_EQ(send_request(ctx, "/private", auth, 1, NULL), BCV_PROXY_PAUSE);
    bcv_handle_t callout = atomic_exchange(&s.callout, 0);
    CHECK(callout != 0);
    bcv_proxy_callout_info_t info = {0};
    OK(bcv_proxy_callout_get(callout, &info));
    CHECK_EQ(info.kind, BCV_PROXY_CALLOUT_HTTP);
    CHECK(info.call_id != 0);
    CHECK_EQ(info.timeout_ms, 1000);
    CHECK_STR(info.upstream, "auth");
    CHECK_STR(info.plugin, "callout");
    CHECK_STR(info.service, "");
    CHECK_STR(find(&info.headers, "x-token"), "Bearer t0k");
    CHECK_STR(find(&info.headers, ":path"), "/check");
    CHECK_STR(find(&info.headers, ":authority"), "auth.local");
    CHECK_EQ(info.body.len, 0);
    bcv_proxy_callout_info_free(&info);
    CHECK(info.upstream == NULL && info.headers.headers == NULL);
    uint32_t action = ~0u;
    CHECK_EQ(bcv_proxy_http_wait(ctx, BCV_PROXY_STREAM_REQUEST, 0, &action, NULL), BCV_E_TIMEOUT);
    struct answer a = {callout, 50, "ok-from-c", 99, 99};
    pthread_t t;
    pthread_create(&t, NULL, answer_later, &a);
    OK(bcv_proxy_http_wait(ctx, BCV_PROXY_STREAM_REQUEST, WAIT_MS, &action, NULL));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    pthread_join(t, NULL);
    CHECK_EQ(a.result, BCV_OK);
    CHECK_EQ(a.second, BCV_E_ALREADY_TAKEN);
    char v[64];
    CHECK_STR(request_header(ctx, "x-auth-body", v, sizeof v), "ok-from-c");
    OK(bcv_release(ctx));

    /* 2: released unanswered: the call fails and the plugin answers 503 itself. */
    ctx = http_new(plugin);
    CHECK_EQ(send_request(ctx, "/private", auth, 1, NULL), BCV_PROXY_PAUSE);
    callout = atomic_exchange(&s.callout, 0);
    CHECK(callout != 0);
    OK(bcv_release(callout));
    bcv_proxy_local_response_t lr = {0};
    OK(bcv_proxy_http_wait(ctx, BCV_PROXY_STREAM_REQUEST, WAIT_MS, &action, &lr));
    CHECK_EQ(action, BCV_PROXY_LOCAL_RESPONSE);
    CHECK_EQ(lr.status, 503);
    CHECK(bytes_eq(&lr.body, "callout failed"));
    CHECK(!lr.has_grpc_status);
    bcv_proxy_local_response_free(&lr);
    CHECK(lr.body.data == NULL && lr.details == NULL);
    OK(bcv_proxy_http_local_response(ctx, &lr)); /* the plugin sent it: readable afterwards too */
    CHECK_EQ(lr.status, 503);
    bcv_proxy_local_response_free(&lr);
    OK(bcv_release(ctx));

    /* 3: answered with bcv_proxy_callout_fail on this thread, then a 403 for a non-200 answer. */
    ctx = http_new(plugin);
    CHECK_EQ(send_request(ctx, "/private", auth, 1, NULL), BCV_PROXY_PAUSE);
    callout = atomic_exchange(&s.callout, 0);
    OK(bcv_proxy_callout_fail(callout));
    CHECK_EQ(bcv_proxy_callout_fail(callout), BCV_E_ALREADY_TAKEN);
    OK(bcv_proxy_callout_get(callout, &info)); /* still readable after the answer */
    CHECK_STR(info.upstream, "auth");
    bcv_proxy_callout_info_free(&info);
    OK(bcv_release(callout));
    OK(bcv_proxy_http_wait(ctx, BCV_PROXY_STREAM_REQUEST, WAIT_MS, &action, &lr));
    CHECK_EQ(action, BCV_PROXY_LOCAL_RESPONSE);
    CHECK_EQ(lr.status, 503);
    bcv_proxy_local_response_free(&lr);
    OK(bcv_release(ctx));
    ctx = http_new(plugin);
    CHECK_EQ(send_request(ctx, "/private", auth, 1, NULL), BCV_PROXY_PAUSE);
    callout = atomic_exchange(&s.callout, 0);
    bcv_proxy_header_t denied[] = {hdr(":status", "401")};
    OK(bcv_proxy_callout_respond(callout, denied, 1, NULL, 0));
    OK(bcv_release(callout));
    OK(bcv_proxy_http_wait(ctx, BCV_PROXY_STREAM_REQUEST, WAIT_MS, &action, &lr));
    CHECK_EQ(action, BCV_PROXY_LOCAL_RESPONSE);
    CHECK_EQ(lr.status, 403);
    CHECK(bytes_eq(&lr.body, "forbidden"));
    bcv_proxy_local_response_free(&lr);
    OK(bcv_release(ctx));

    /* 4: refused by the callback (unknown upstream): the plugin's dispatch fails, it answers 500. */
    s.callout_answer = BCV_E_NOT_FOUND;
    ctx = http_new(plugin);
    CHECK_EQ(send_request(ctx, "/private", auth, 1, &lr), BCV_PROXY_LOCAL_RESPONSE);
    CHECK_EQ(lr.status, 500);
    CHECK(bytes_eq(&lr.body, "dispatch failed"));
    bcv_proxy_local_response_free(&lr);
    CHECK_EQ(atomic_load(&s.callout), 0);
    OK(bcv_release(ctx));

    /* 5: a late answer (after the plugin's 1 s timeout) is ignored; the timeout already failed the call. */
    s.callout_answer = BCV_OK;
    ctx = http_new(plugin);
    CHECK_EQ(send_request(ctx, "/private", auth, 1, NULL), BCV_PROXY_PAUSE);
    callout = atomic_exchange(&s.callout, 0);
    OK(bcv_proxy_http_wait(ctx, BCV_PROXY_STREAM_REQUEST, WAIT_MS, &action, &lr));
    CHECK_EQ(action, BCV_PROXY_LOCAL_RESPONSE);
    CHECK_EQ(lr.status, 503);
    bcv_proxy_local_response_free(&lr);
    bcv_proxy_header_t okh[] = {hdr(":status", "200")};
    OK(bcv_proxy_callout_respond(callout, okh, 1, (const uint8_t *)"late", 4));
    OK(bcv_proxy_vm_wait_idle(vm, WAIT_MS));
    OK(bcv_release(callout));
    CHECK_EQ(bcv_proxy_callout_fail(callout), BCV_E_BAD_HANDLE);
    CHECK_EQ(bcv_proxy_vm_failure(vm, NULL, NULL, 0, NULL), BCV_EOF);
    OK(bcv_release(ctx));
    CHECK_EQ(atomic_load(&s.callouts), 6);

    bcv_handle_t handles[] = {plugin, vm, module, host};
    release_all(handles, 4);
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s.frees), 1);
}

/* A gRPC unary callout: the request path goes out as the message, the reply comes back in a header. */
static void grpc_callout(void) {
    bcv_handle_t rt = new_runtime();
    struct services s = {0};
    bcv_handle_t host = host_new(rt), module = module_load(host);
    bcv_handle_t vm = vm_start(host, module, &s, "test");
    bcv_handle_t plugin = add_plugin(vm, "grpc", "grpc", false);
    bcv_handle_t ctx = http_new(plugin);
    CHECK_EQ(send_request(ctx, "/ping", NULL, 0, NULL), BCV_PROXY_PAUSE);
    bcv_handle_t callout = atomic_exchange(&s.callout, 0);
    bcv_proxy_callout_info_t info = {0};
    OK(bcv_proxy_callout_get(callout, &info));
    CHECK_EQ(info.kind, BCV_PROXY_CALLOUT_GRPC);
    CHECK_STR(info.upstream, "grpc-upstream");
    CHECK_STR(info.service, "svc.Echo");
    CHECK_STR(info.method, "Say");
    CHECK_STR(find(&info.headers, "x-md"), "1");
    CHECK(bytes_eq(&info.body, "/ping"));
    bcv_proxy_callout_info_free(&info);
    OK(bcv_proxy_callout_respond_grpc(callout, 0, NULL, (const uint8_t *)"pong", 4));
    OK(bcv_release(callout));
    uint32_t action = ~0u;
    OK(bcv_proxy_http_wait(ctx, BCV_PROXY_STREAM_REQUEST, WAIT_MS, &action, NULL));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    char v[64];
    CHECK_STR(request_header(ctx, "x-grpc-reply", v, sizeof v), "pong");
    OK(bcv_release(ctx));

    /* A gRPC error status: the plugin answers 502 with it. */
    ctx = http_new(plugin);
    CHECK_EQ(send_request(ctx, "/ping", NULL, 0, NULL), BCV_PROXY_PAUSE);
    callout = atomic_exchange(&s.callout, 0);
    OK(bcv_proxy_callout_respond_grpc(callout, 5, "not found", NULL, 0));
    OK(bcv_release(callout));
    bcv_proxy_local_response_t lr = {0};
    OK(bcv_proxy_http_wait(ctx, BCV_PROXY_STREAM_REQUEST, WAIT_MS, &action, &lr));
    CHECK_EQ(action, BCV_PROXY_LOCAL_RESPONSE);
    CHECK_EQ(lr.status, 502);
    CHECK(bytes_eq(&lr.body, "grpc status 5"));
    bcv_proxy_local_response_free(&lr);
    bcv_handle_t handles[] = {ctx, plugin, vm, module, host};
    release_all(handles, 5);
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s.frees), 1);
}

/* The plugin calls the host's "reverse"; the host calls the plugin's on_foreign_function. */
static void foreign_function(void) {
    bcv_handle_t rt = new_runtime();
    struct services s = {0};
    bcv_handle_t host = host_new(rt), module = module_load(host);
    bcv_handle_t vm = vm_start(host, module, &s, "test");
    bcv_handle_t plugin = add_plugin(vm, "foreign", "foreign", false);
    bcv_handle_t ctx = http_new(plugin);
    char v[64];
    CHECK_EQ(send_request(ctx, "/abc?x=1", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-foreign", v, sizeof v), "1=x?cba/");
    CHECK_EQ(atomic_load(&s.foreign_calls), 1);
    OK(bcv_release(ctx));

    /* A failing function: the plugin sees an error status and the VM logs the reason. */
    s.foreign_fail = 1;
    ctx = http_new(plugin);
    CHECK_EQ(send_request(ctx, "/abc", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-foreign", v, sizeof v), "error");
    OK(bcv_release(ctx));

    /* A callback calling back into its own VM gets BCV_E_WOULD_DEADLOCK. */
    s.foreign_fail = 0;
    ctx = http_new(plugin);
    s.reenter = ctx;
    s.reentered = 99;
    CHECK_EQ(send_request(ctx, "/xy", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_EQ(s.reentered, BCV_E_WOULD_DEADLOCK);
    CHECK_STR(request_header(ctx, "x-foreign", v, sizeof v), "yx/");
    s.reenter = 0;
    OK(bcv_release(ctx));

    OK(bcv_proxy_plugin_call_foreign_function(plugin, 7, (const uint8_t *)"hello", 5));
    bcv_proxy_logs_t logs = {0};
    OK(bcv_proxy_vm_take_logs(vm, &logs));
    uint32_t level = 99;
    CHECK(logs_have(&logs, "foreign function reverse failed: reverse is broken on purpose", 0, &level));
    CHECK_EQ(level, BCV_PROXY_LOG_WARN);
    CHECK(logs_have(&logs, "foreign_function: 7 5", 0, NULL));
    CHECK(logs_have(&logs, "foreign_function arguments: hello", 0, &level));
    CHECK_EQ(level, BCV_PROXY_LOG_DEBUG);
    bcv_proxy_logs_free(&logs);

    /* A VM without the function: the plugin gets NOT_FOUND. */
    bcv_handle_t vm2 = 0;
    OK(bcv_proxy_vm_start(host, module, NULL, &vm2));
    bcv_handle_t plugin2 = add_plugin(vm2, "foreign", "foreign", false);
    ctx = http_new(plugin2);
    CHECK_EQ(send_request(ctx, "/abc", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-foreign", v, sizeof v), "not-found");
    bcv_handle_t handles[] = {ctx, plugin2, vm2, plugin, vm, module, host};
    release_all(handles, 7);
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s.frees), 1);
}

/* Properties: derived from headers, the plugin's own, set by the embedder, answered by the callback. */
static void properties(void) {
    bcv_handle_t rt = new_runtime();
    struct services s = {0};
    bcv_handle_t host = host_new(rt), module = module_load(host);
    bcv_handle_t vm = vm_start(host, module, &s, "test");
    bcv_handle_t plugin = add_plugin(vm, "props", "properties", false);
    bcv_handle_t ctx = http_new(plugin);
    char v[64];
    CHECK_EQ(send_request(ctx, "/p/q?r=1", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-prop-path", v, sizeof v), "/p/q?r=1");
    CHECK_STR(request_header(ctx, "x-plugin-name", v, sizeof v), "props");
    CHECK_STR(request_header(ctx, "x-prop-seen", v, sizeof v), "yes");
    CHECK_STR(request_header(ctx, "x-prop-missing", v, sizeof v), "from-c"); /* the callback's answer */
    CHECK_STR(s.property_plugin, "props");
    CHECK(atomic_load(&s.property_calls) >= 1);

    /* The embedder reads what the plugin set, derived ones, and the callback's (path with a NUL). */
    bcv_bytes_t value = {0};
    OK(bcv_proxy_http_property(ctx, "bcv.seen", &value));
    CHECK(bytes_eq(&value, "yes"));
    bcv_bytes_free(&value);
    OK(bcv_proxy_http_property(ctx, "request.path", &value));
    CHECK(bytes_eq(&value, "/p/q?r=1"));
    bcv_bytes_free(&value);
    OK(bcv_proxy_http_property(ctx, "plugin_name", &value));
    CHECK(bytes_eq(&value, "props"));
    bcv_bytes_free(&value);
    OK(bcv_proxy_http_property(ctx, "source.address", &value));
    CHECK(bytes_eq(&value, "10.0.0.1:5555"));
    bcv_bytes_free(&value);
    CHECK_EQ(s.property_path_len, 14);
    CHECK(memcmp(s.property_path, "source\0address", 14) == 0);
    CHECK_EQ(bcv_proxy_http_property(ctx, "no.such", &value), BCV_EOF);
    CHECK_EQ(value.len, 0);
    OK(bcv_release(ctx));

    /* A property the embedder sets on the context comes before the callback. */
    ctx = http_new(plugin);
    OK(bcv_proxy_http_set_property(ctx, "missing", (const uint8_t *)"set-by-c", 8));
    CHECK_EQ(send_request(ctx, "/", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-prop-missing", v, sizeof v), "set-by-c");
    OK(bcv_release(ctx));

    /* Plugin properties from its configuration. */
    bcv_proxy_plugin_config_t pc;
    OK(bcv_proxy_plugin_config_init(&pc));
    pc.name = "props2";
    pc.configuration = (const uint8_t *)"properties";
    pc.configuration_len = 10;
    bcv_proxy_header_t props[] = {hdr("missing", "configured")};
    pc.properties = props;
    pc.property_count = 1;
    bcv_handle_t plugin2 = 0;
    OK(bcv_proxy_vm_add_plugin(vm, &pc, &plugin2));
    ctx = http_new(plugin2);
    CHECK_EQ(send_request(ctx, "/", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-prop-missing", v, sizeof v), "configured");
    CHECK_STR(request_header(ctx, "x-plugin-name", v, sizeof v), "props2");
    bcv_handle_t handles[] = {ctx, plugin2, plugin, vm, module, host};
    release_all(handles, 6);
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s.frees), 1);
}

/* A counter, a gauge and a histogram read back; shared data with CAS from both sides. */
static void metrics_and_shared_data(void) {
    bcv_handle_t rt = new_runtime();
    struct services s = {0};
    bcv_handle_t host = host_new(rt), module = module_load(host);
    bcv_handle_t vm = vm_start(host, module, &s, "test");
    bcv_handle_t plugin = add_plugin(vm, "metrics", "metrics", false);
    char v[64];
    bcv_handle_t ctx = http_new(plugin);
    CHECK_EQ(send_request(ctx, "/a", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-counter-value", v, sizeof v), "1");
    OK(bcv_release(ctx));
    ctx = http_new(plugin);
    bcv_proxy_header_t extra[] = {hdr("x-one", "1")};
    CHECK_EQ(send_request(ctx, "/abcd", extra, 1, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-counter-value", v, sizeof v), "2");
    OK(bcv_release(ctx));
    bcv_proxy_metric_t m = {0};
    OK(bcv_proxy_host_metric(host, "m_counter", &m));
    CHECK_EQ(m.kind, BCV_PROXY_METRIC_COUNTER);
    CHECK_EQ(m.value, 2);
    OK(bcv_proxy_host_metric(host, "m_gauge", &m));
    CHECK_EQ(m.kind, BCV_PROXY_METRIC_GAUGE);
    CHECK_EQ(m.value, 5); /* the headers of the last request */
    OK(bcv_proxy_host_metric(host, "m_hist", &m));
    CHECK_EQ(m.kind, BCV_PROXY_METRIC_HISTOGRAM);
    CHECK_EQ(m.value, 2);
    CHECK_EQ(m.sum, 7);
    CHECK_EQ(m.min, 2);
    CHECK_EQ(m.max, 5);
    bcv_bytes_t json = {0};
    OK(bcv_proxy_host_metrics_json(host, &json));
    CHECK(json.data && memmem(json.data, json.len, "\"name\":\"m_hist\"", 15));
    CHECK(json.data && memmem(json.data, json.len, "\"kind\":\"histogram\"", 18));
    CHECK(json.data && memmem(json.data, json.len, "\"sum\":7", 7));
    bcv_bytes_free(&json);

    /* Shared data: the embedder seeds "counter" of VM id "test"; the cas plugin increments it. */
    uint32_t cas = 0, cas2 = 0;
    OK(bcv_proxy_host_shared_data_set(host, "test", (const uint8_t *)"counter", 7, (const uint8_t *)"41", 2, 0, &cas));
    CHECK(cas != 0);
    CHECK_EQ(bcv_proxy_host_shared_data_set(host, "test", (const uint8_t *)"counter", 7, (const uint8_t *)"0", 1,
                                            cas + 1000, NULL),
             BCV_E_CONFLICT);
    bcv_handle_t cas_plugin = add_plugin(vm, "cas", "cas", false);
    ctx = http_new(cas_plugin);
    CHECK_EQ(send_request(ctx, "/", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-cas", v, sizeof v), "ok");
    CHECK_STR(request_header(ctx, "x-counter", v, sizeof v), "42");
    OK(bcv_release(ctx));
    bcv_bytes_t value = {0};
    OK(bcv_proxy_host_shared_data_get(host, "test", (const uint8_t *)"counter", 7, &value, &cas2));
    CHECK(bytes_eq(&value, "42"));
    CHECK(cas2 != cas);
    bcv_bytes_free(&value);
    CHECK_EQ(bcv_proxy_host_shared_data_get(host, "other-vm", (const uint8_t *)"counter", 7, &value, NULL), BCV_EOF);
    bool existed = false;
    OK(bcv_proxy_host_shared_data_remove(host, "test", (const uint8_t *)"counter", 7, &existed));
    CHECK(existed);
    CHECK_EQ(bcv_proxy_host_shared_data_get(host, "test", (const uint8_t *)"counter", 7, NULL, NULL), BCV_EOF);
    CHECK_EQ(bcv_proxy_host_enqueue(host, "test", "no-such-queue", (const uint8_t *)"x", 1), BCV_E_NOT_FOUND);

    /* A shared queue a plugin registered: the embedder enqueues, the plugin drains it on its driver thread. */
    bcv_handle_t consumer = add_plugin(vm, "consumer", "queue-consumer", false);
    OK(bcv_proxy_host_enqueue(host, "test", "events", (const uint8_t *)"a", 1));
    OK(bcv_proxy_host_enqueue(host, "test", "events", (const uint8_t *)"bc", 2));
    OK(bcv_proxy_vm_wait_idle(vm, WAIT_MS));
    OK(bcv_proxy_host_shared_data_get(host, "test", (const uint8_t *)"consumed", 8, &value, NULL));
    CHECK(bytes_eq(&value, "a;bc;"));
    bcv_bytes_free(&value);
    OK(bcv_proxy_host_metric(host, "consumed_total", &m));
    CHECK_EQ(m.value, 2);
    bcv_handle_t handles[] = {consumer, cas_plugin, plugin, vm, module, host};
    release_all(handles, 6);
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s.frees), 1);
}

/* A TCP filter: client data upper-cased, server data prefixed, "BLOCK" closes; close and log callbacks. */
static void tcp_filter(void) {
    bcv_handle_t rt = new_runtime();
    struct services s = {0};
    bcv_handle_t host = host_new(rt), module = module_load(host);
    bcv_handle_t vm = vm_start(host, module, &s, "test");
    bcv_handle_t plugin = add_plugin(vm, "tcp", "tcp", false);
    bcv_handle_t ctx = 0;
    OK(bcv_proxy_tcp_context_new(plugin, &ctx));
    uint32_t action = ~0u;
    OK(bcv_proxy_tcp_on_new_connection(ctx, &action));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    OK(bcv_proxy_tcp_on_downstream_data(ctx, (const uint8_t *)"hello", 5, false, &action));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    bcv_bytes_t data = {0};
    OK(bcv_proxy_tcp_take_downstream_data(ctx, &data));
    CHECK(bytes_eq(&data, "HELLO"));
    bcv_bytes_free(&data);
    OK(bcv_proxy_tcp_on_upstream_data(ctx, (const uint8_t *)"data", 4, false, &action));
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    OK(bcv_proxy_tcp_take_upstream_data(ctx, &data));
    CHECK(bytes_eq(&data, "[up]data"));
    bcv_bytes_free(&data);
    bcv_proxy_metric_t m = {0};
    OK(bcv_proxy_host_metric(host, "tcp_bytes", &m));
    CHECK_EQ(m.value, 5);
    OK(bcv_proxy_tcp_set_property(ctx, "source.address", (const uint8_t *)"192.0.2.1:4000", 14));
    bcv_bytes_t value = {0};
    OK(bcv_proxy_tcp_property(ctx, "source.address", &value));
    CHECK(bytes_eq(&value, "192.0.2.1:4000"));
    bcv_bytes_free(&value);
    OK(bcv_proxy_tcp_wait(ctx, BCV_PROXY_STREAM_DOWNSTREAM, 0, &action)); /* not paused: at once */
    CHECK_EQ(action, BCV_PROXY_CONTINUE);
    OK(bcv_proxy_tcp_on_downstream_data(ctx, (const uint8_t *)"xxBLOCKxx", 9, false, &action));
    CHECK_EQ(action, BCV_PROXY_CLOSE);
    OK(bcv_proxy_tcp_on_downstream_close(ctx, BCV_PROXY_PEER_REMOTE));
    OK(bcv_proxy_tcp_on_upstream_close(ctx, BCV_PROXY_PEER_LOCAL));
    CHECK_EQ(bcv_proxy_tcp_on_upstream_close(ctx, 77), BCV_E_INVALID);
    bool done = false;
    OK(bcv_proxy_tcp_finish(ctx, &done));
    CHECK(done);
    CHECK_EQ(bcv_proxy_tcp_on_downstream_data(ctx, (const uint8_t *)"x", 1, true, &action), BCV_E_PROXY_FINISHED);
    bcv_proxy_logs_t logs = {0};
    OK(bcv_proxy_vm_take_logs(vm, &logs));
    CHECK(logs_have(&logs, "downstream closed 2", 0, NULL));
    CHECK(logs_have(&logs, "upstream closed 1", 0, NULL));
    CHECK(logs_have(&logs, "tcp log", 0, NULL));
    bcv_proxy_logs_free(&logs);
    /* An HTTP call on a TCP context is a type error, and the other way round. */
    CHECK_EQ(bcv_proxy_http_on_request_headers(ctx, NULL, 0, true, &action, NULL), BCV_E_WRONG_TYPE);
    bcv_handle_t handles[] = {ctx, plugin, vm, module, host};
    release_all(handles, 5);
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s.frees), 1);
}

/* A panicking plugin fails its VM only: fail-closed answers 503 (TCP: close), fail-open continues, a VM
 * with restart_max comes back once on its next use, and
 * the host starts and runs other VMs as before. */
static void failing_plugin(void) {
    bcv_handle_t rt = new_runtime();
    struct services s1 = {0}, s2 = {0}, s3 = {0};
    bcv_handle_t host = host_new(rt), module = module_load(host);

    bcv_handle_t vm1 = vm_start(host, module, &s1, "test");
    bcv_handle_t closed = add_plugin(vm1, "panicky", "panic", false);
    bcv_handle_t ctx = http_new(closed);
    bcv_proxy_local_response_t lr = {0};
    CHECK_EQ(send_request(ctx, "/boom", NULL, 0, &lr), BCV_PROXY_LOCAL_RESPONSE);
    CHECK_EQ(lr.status, 503);
    CHECK(bytes_eq(&lr.body, "plugin failed\n"));
    CHECK(lr.details && strstr(lr.details, "plugin panicky failed") != NULL);
    bcv_proxy_local_response_free(&lr);
    CHECK_EQ(bcv_proxy_http_local_response(ctx, &lr), BCV_EOF); /* not one the plugin sent */
    uint32_t reason = 0;
    char why[8192] = "";
    size_t why_len = 0;
    OK(bcv_proxy_vm_failure(vm1, &reason, why, sizeof why, &why_len));
    CHECK_EQ(reason, BCV_PROXY_FAIL_TRAP);
    CHECK(strncmp(why, "trap: ", 6) == 0);
    CHECK(strstr(why, "unreachable") != NULL);
    CHECK_EQ(why_len, strlen(why));
    /* Calls after the failure do not run the guest: the same answer, the same for new contexts. */
    uint32_t action = ~0u;
    bcv_proxy_header_t resp[] = {hdr(":status", "200")};
    OK(bcv_proxy_http_on_response_headers(ctx, resp, 1, true, &action, NULL));
    CHECK_EQ(action, BCV_PROXY_LOCAL_RESPONSE);
    OK(bcv_release(ctx));
    ctx = http_new(closed);
    CHECK_EQ(send_request(ctx, "/again", NULL, 0, NULL), BCV_PROXY_LOCAL_RESPONSE);
    OK(bcv_release(ctx));
    OK(bcv_proxy_tcp_context_new(closed, &ctx));
    OK(bcv_proxy_tcp_on_new_connection(ctx, &action));
    CHECK_EQ(action, BCV_PROXY_CLOSE);
    OK(bcv_release(ctx));
    bcv_handle_t refused = 0;
    bcv_proxy_plugin_config_t pc;
    OK(bcv_proxy_plugin_config_init(&pc));
    CHECK_EQ(bcv_proxy_vm_add_plugin(vm1, &pc, &refused), BCV_E_PROXY_VM_FAILED);
    CHECK(strstr(bcv_last_error_message(), "has failed") != NULL);
    CHECK_EQ(bcv_proxy_plugin_call_foreign_function(closed, 1, NULL, 0), BCV_E_PROXY_VM_FAILED);
    bcv_proxy_logs_t logs = {0};
    OK(bcv_proxy_vm_take_logs(vm1, &logs));
    uint32_t level = 0;
    CHECK(logs_have(&logs, "testkit panic on purpose", 1, &level));
    CHECK(logs_have(&logs, "vm failed: trap", 1, &level));
    CHECK_EQ(level, BCV_PROXY_LOG_CRITICAL);
    bcv_proxy_logs_free(&logs);

    /* Fail-open: the request passes unfiltered. */
    bcv_handle_t vm2 = vm_start(host, module, &s2, "test");
    bcv_handle_t open = add_plugin(vm2, "panicky-open", "panic", true);
    ctx = http_new(open);
    CHECK_EQ(send_request(ctx, "/boom", NULL, 0, &lr), BCV_PROXY_CONTINUE);
    CHECK_EQ(lr.status, 0);
    CHECK_EQ(bcv_proxy_vm_failure(vm2, &reason, NULL, 0, NULL), BCV_OK);
    CHECK_EQ(reason, BCV_PROXY_FAIL_TRAP);
    OK(bcv_release(ctx));

    /* The host keeps working: a new VM of the same module filters as usual. */
    bcv_handle_t vm3 = vm_start(host, module, &s3, "test");
    bcv_handle_t good = add_plugin(vm3, "headers", "headers", false);
    ctx = http_new(good);
    char v[64];
    CHECK_EQ(send_request(ctx, "/fine", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(ctx, "x-added", v, sizeof v), "yes");
    CHECK_EQ(bcv_proxy_vm_failure(vm3, &reason, NULL, 0, NULL), BCV_EOF);
    CHECK_EQ(reason, BCV_PROXY_FAIL_NONE);

    uint32_t restarts = ~0u;
    OK(bcv_proxy_vm_restarts(vm3, &restarts));
    CHECK_EQ(restarts, 0);
    CHECK_EQ(bcv_proxy_vm_restarts(vm3, NULL), BCV_E_INVALID);

    /* With restart_max 1: the next use after a failure re-creates the VM once, then it stays failed. */
    struct services s4 = {0};
    bcv_handle_t vm4 = vm_start_restarting(host, module, &s4, "restarting", 1);
    bcv_handle_t survivor = add_plugin(vm4, "headers", "headers", false);
    bcv_handle_t crasher = add_plugin(vm4, "panicky", "panic", false);
    bcv_handle_t c4 = http_new(crasher);
    CHECK_EQ(send_request(c4, "/boom", NULL, 0, NULL), BCV_PROXY_LOCAL_RESPONSE);
    OK(bcv_release(c4));
    c4 = http_new(survivor);
    OK(bcv_proxy_vm_restarts(vm4, &restarts));
    CHECK_EQ(restarts, 1);
    CHECK_EQ(bcv_proxy_vm_failure(vm4, &reason, NULL, 0, NULL), BCV_EOF);
    CHECK_EQ(send_request(c4, "/fine", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(c4, "x-added", v, sizeof v), "yes");
    OK(bcv_release(c4));
    c4 = http_new(crasher);
    CHECK_EQ(send_request(c4, "/boom", NULL, 0, NULL), BCV_PROXY_LOCAL_RESPONSE);
    OK(bcv_release(c4));
    c4 = http_new(survivor);
    CHECK_EQ(send_request(c4, "/blocked", NULL, 0, NULL), BCV_PROXY_LOCAL_RESPONSE);
    OK(bcv_proxy_vm_restarts(vm4, &restarts));
    CHECK_EQ(restarts, 1);

    /* Released parent-first, in no particular order. */
    bcv_handle_t handles[] = {host, vm1, module, closed, vm2, open, good, vm3, ctx, vm4, survivor, crasher, c4};
    release_all(handles, 13);
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s4.frees), 1);
    CHECK_EQ(atomic_load(&s1.frees), 1);
    CHECK_EQ(atomic_load(&s2.frees), 1);
    CHECK_EQ(atomic_load(&s3.frees), 1);
}

/* Refusals and bad arguments: a module that is not one, a plugin whose configure fails, NULLs, stale and
 * wrong handles, closing the host under live contexts. */
static void errors_and_closing(void) {
    bcv_handle_t rt = new_runtime();
    CHECK_EQ(bcv_abi_version(), BCV_ABI_VERSION);
    CHECK_EQ(BCV_ABI_VERSION, 5);
    CHECK_STR(bcv_status_name(BCV_E_PROXY_VM_FAILED), "BCV_E_PROXY_VM_FAILED");
    CHECK_STR(bcv_status_name(BCV_E_PROXY_INVALID_MODULE), "BCV_E_PROXY_INVALID_MODULE");
    CHECK_STR(bcv_status_name(BCV_E_PROXY_PLUGIN_REJECTED), "BCV_E_PROXY_PLUGIN_REJECTED");
    CHECK_STR(bcv_status_name(BCV_E_PROXY_FINISHED), "BCV_E_PROXY_FINISHED");

    bcv_proxy_host_config_t hc;
    OK(bcv_proxy_host_config_init(&hc));
    hc.memory_limit = 1000;
    bcv_handle_t host = 0;
    CHECK_EQ(bcv_proxy_host_new(rt, &hc, &host), BCV_E_INVALID);
    CHECK(strstr(bcv_last_error_message(), "memory_limit") != NULL);
    CHECK_EQ(bcv_proxy_host_new(rt, NULL, NULL), BCV_E_INVALID);
    host = host_new(rt);

    bcv_handle_t module = 0;
    static const uint8_t garbage[] = "\0asm\x01\0\0\0garbage";
    CHECK_EQ(bcv_proxy_module_load(host, "garbage", garbage, sizeof garbage - 1, &module), BCV_E_PROXY_INVALID_MODULE);
    CHECK(strstr(bcv_last_error_message(), "garbage") != NULL);
    CHECK_EQ(bcv_proxy_module_load(host, "empty", NULL, 0, &module), BCV_E_PROXY_INVALID_MODULE);
    CHECK_EQ(bcv_proxy_module_load(host, "null", NULL, 10, &module), BCV_E_INVALID);
    CHECK_EQ(bcv_proxy_module_load(rt, "testkit", plugin_wasm, plugin_len, &module), BCV_E_WRONG_TYPE);
    module = module_load(host);
    CHECK_EQ(bcv_close(module), BCV_E_WRONG_TYPE); /* modules are not nodes */

    /* vm_start failing still frees the user data, exactly once, before it returns. */
    struct services s = {0};
    bcv_proxy_vm_config_t vc;
    OK(bcv_proxy_vm_config_init(&vc));
    vc.user_data = &s;
    vc.user_data_free = services_free;
    bcv_handle_t vm = 0;
    CHECK_EQ(bcv_proxy_vm_start(host, host, &vc, &vm), BCV_E_WRONG_TYPE);
    CHECK_EQ(atomic_load(&s.frees), 1);
    vc.foreign_function_count = 1; /* with a NULL array */
    CHECK_EQ(bcv_proxy_vm_start(host, module, &vc, &vm), BCV_E_INVALID);
    CHECK_EQ(atomic_load(&s.frees), 2);
    vc.foreign_function_count = 0;
    vc.configuration = (const uint8_t *)"fail-vm-start";
    vc.configuration_len = 13;
    vc.user_data_free = NULL;
    OK(bcv_proxy_vm_start(host, module, &vc, &vm));
    bcv_handle_t plugin = 0;
    CHECK_EQ(bcv_proxy_vm_add_plugin(vm, NULL, &plugin), BCV_E_PROXY_PLUGIN_REJECTED);
    CHECK(strstr(bcv_last_error_message(), "on_vm_start returned false") != NULL);
    OK(bcv_release(vm));

    struct services s2 = {0};
    bcv_handle_t more_vm = 0;
    vm = vm_start(host, module, &s2, "test");
    bcv_proxy_plugin_config_t pc;
    OK(bcv_proxy_plugin_config_init(&pc));
    pc.name = "bad";
    pc.configuration = (const uint8_t *)"fail-configure";
    pc.configuration_len = 14;
    CHECK_EQ(bcv_proxy_vm_add_plugin(vm, &pc, &plugin), BCV_E_PROXY_PLUGIN_REJECTED);
    CHECK(strstr(bcv_last_error_message(), "on_configure returned false") != NULL);
    CHECK(strstr(bcv_last_error_message(), "bad") != NULL);
    CHECK_EQ(bcv_proxy_vm_failure(vm, NULL, NULL, 0, NULL), BCV_EOF); /* the VM is fine */
    plugin = add_plugin(vm, "headers", "headers", false);
    bcv_handle_t ctx = http_new(plugin);
    uint32_t action = 0;
    CHECK_EQ(bcv_proxy_http_on_request_headers(ctx, NULL, 0, true, NULL, NULL), BCV_E_INVALID);
    CHECK_EQ(bcv_proxy_http_on_request_headers(ctx, NULL, 3, true, &action, NULL), BCV_E_INVALID);
    CHECK_EQ(bcv_proxy_http_wait(ctx, 99, 0, &action, NULL), BCV_E_INVALID);
    CHECK_EQ(bcv_proxy_http_on_request_headers(plugin, NULL, 0, true, &action, NULL), BCV_E_WRONG_TYPE);
    CHECK_EQ(bcv_proxy_http_request_headers(ctx, NULL), BCV_E_INVALID);
    CHECK_EQ(bcv_proxy_callout_respond(ctx, NULL, 0, NULL, 0), BCV_E_WRONG_TYPE);
    CHECK_EQ(bcv_proxy_http_context_new(0, &ctx), BCV_E_BAD_HANDLE);
    uint32_t state = 99;
    OK(bcv_handle_state(ctx, &state));
    CHECK_EQ(state, BCV_STATE_OPEN);
    bcv_proxy_headers_free(NULL);
    bcv_proxy_local_response_free(NULL);
    bcv_proxy_logs_free(NULL);
    bcv_proxy_callout_info_free(NULL);

    /* The guest's environment is the configured one only; WASI stdout/stderr lines become log records. */
    bcv_proxy_header_t env[] = {hdr("BCV_PLUGIN_ENV", "from-c")};
    OK(bcv_proxy_vm_config_init(&vc));
    vc.vm_id = "env";
    vc.environment = env;
    vc.environment_count = 1;
    bcv_handle_t env_vm = 0;
    OK(bcv_proxy_vm_start(host, module, &vc, &env_vm));
    bcv_handle_t env_plugin = add_plugin(env_vm, "env", "env", false);
    bcv_handle_t env_ctx = http_new(env_plugin);
    char v[64];
    CHECK_EQ(send_request(env_ctx, "/", NULL, 0, NULL), BCV_PROXY_CONTINUE);
    CHECK_STR(request_header(env_ctx, "x-env", v, sizeof v), "from-c");
    CHECK_STR(request_header(env_ctx, "x-home", v, sizeof v), "absent");
    CHECK_STR(request_header(env_ctx, "x-time-ok", v, sizeof v), "yes");
    bcv_proxy_logs_t logs = {0};
    OK(bcv_proxy_vm_take_logs(env_vm, &logs));
    uint32_t level = 99;
    CHECK(logs_have(&logs, "stdout from plugin", 0, &level));
    CHECK_EQ(level, BCV_PROXY_LOG_INFO);
    CHECK(logs_have(&logs, "stderr from plugin", 0, &level));
    CHECK_EQ(level, BCV_PROXY_LOG_ERROR);
    for (size_t i = 0; i < logs.count; i++) CHECK_STR(logs.records[i].vm_id, "env");
    bcv_proxy_logs_free(&logs);
    vc.environment_count = 2; /* NULL with a count is refused */
    vc.environment = NULL;
    CHECK_EQ(bcv_proxy_vm_start(host, module, &vc, &more_vm), BCV_E_INVALID);

    /* Closing the host closes everything under it; handles stay safe to use and release. */
    OK(bcv_close(host));
    CHECK_EQ(bcv_proxy_http_on_request_headers(ctx, NULL, 0, true, &action, NULL), BCV_E_CLOSED);
    uint32_t r = 0, up = 0;
    OK(bcv_close_reason(ctx, &r, &up));
    CHECK(r == BCV_REASON_PARENT || r == BCV_REASON_SELF);
    bcv_handle_t more = 0;
    CHECK_EQ(bcv_proxy_http_context_new(plugin, &more), BCV_E_CLOSED);
    bcv_handle_t handles[] = {ctx, plugin, vm, env_ctx, env_plugin, env_vm, module, host};
    release_all(handles, 8);
    CHECK_EQ(more_vm, 0);
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s2.frees), 1);
}

static void run(const char *name, void (*test)(void)) {
    if (only && !strstr(name, only)) return;
    current = name;
    current_failed = 0;
    double t0 = now_ms();
    test();
    if (current_failed) {
        failed++;
        printf("FAIL %s\n", name);
    } else {
        passed++;
        printf("ok   %s (%.0f ms)\n", name, now_ms() - t0);
    }
    fflush(stdout);
}

/* The tests run on a joined thread so its thread-local storage is torn down before exit and memory
 * checkers see every allocation freed. */
static void *all_tests(void *arg) {
    (void)arg;
    run("header filter, logs, a metric, finish", header_filter);
    run("body filter: chunks, trailers, a stream through the plugin", body_filter);
    run("HTTP callout answered from another thread: pause, wait, resume; fail, refuse, late", http_callout);
    run("gRPC callout: reply and error status", grpc_callout);
    run("foreign functions both ways", foreign_function);
    run("properties: derived, set, configured, from the callback", properties);
    run("metrics read back; shared data with CAS", metrics_and_shared_data);
    run("TCP filter", tcp_filter);
    run("a failing plugin: fail-closed 503, fail-open, a bounded restart, the host keeps working", failing_plugin);
    run("errors, refusals, closing the host", errors_and_closing);
    return NULL;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    plugin_wasm = malloc(n > 0 ? (size_t)n : 1);
    plugin_len = n > 0 ? fread(plugin_wasm, 1, (size_t)n, f) : 0;
    fclose(f);
    return plugin_len == (size_t)n ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : getenv("BCV_TEST_PROXY_PLUGIN");
    if (!path || read_file(path) != 0) {
        fprintf(stderr, "usage: %s path/to/testkit.wasm (or BCV_TEST_PROXY_PLUGIN): cannot read %s\n", argv[0],
                path ? path : "(none)");
        return 2;
    }
    const char *p = getenv("BCV_TEST_PROXY_POOLING");
    if (p && strcmp(p, "0") == 0) pooling = 0;
    const char *d = getenv("BCV_TEST_PROXY_DEADLINE_MS");
    if (d) deadline_ms = strtoull(d, NULL, 10);
    only = getenv("BCV_TEST_ONLY");
    const char *given = getenv("BCV_TEST_PROXY_CACHE_DIR");
    cache_given = given && *given;
    snprintf(cache_dir, sizeof cache_dir, "%s", cache_given ? given : "/tmp/bcv-c-proxy-XXXXXX");
    if (!cache_given && !mkdtemp(cache_dir)) {
        perror("mkdtemp");
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, all_tests, NULL);
    pthread_join(t, NULL);
    if (!cache_given) nftw(cache_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(plugin_wasm);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
