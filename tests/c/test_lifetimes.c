/*
 * The C-tagged scenarios of shared/design/LIFETIMES.md §7, against libbcv over real pipes, transformers,
 * files and TCP on 127.0.0.1. Run under valgrind and AddressSanitizer by scripts/test-c.sh.
 * Ends with the line "N passed, M failed".
 */
#define _GNU_SOURCE
#include <bcv.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int open_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static bcv_handle_t new_runtime(uint32_t strict) {
    bcv_handle_t rt = 0;
    OK(bcv_runtime_new(strict, &rt));
    return rt;
}

/* Every test ends with: nothing live, then the runtime freed. */
static void finish_runtime(bcv_handle_t rt) {
    uint64_t live = 99;
    CHECK_EQ(bcv_runtime_wait_idle(rt, 5000, &live), BCV_OK);
    CHECK_EQ(live, 0);
    OK(bcv_runtime_free(rt));
}

static uint32_t reason_of(bcv_handle_t h) {
    uint32_t reason = 0, upstream = 0;
    OK(bcv_close_reason(h, &reason, &upstream));
    return reason;
}

static void fill(uint8_t *buf, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)((i * 31 + seed) % 251);
}


/* ---- HTTP: T01-T04 against a bcv HTTP server on 127.0.0.1 ---- */
struct http_server {
    bcv_handle_t server;
    int chunks;          /* 16 KiB chunks to send */
    int pause_ms;        /* between chunks */
    bcv_status_t result; /* BCV_OK: the whole body went out; BCV_E_CLOSED: the client abandoned it */
    char addr[64];
    pthread_t thread;
};

static void *serve_one_response(void *arg) {
    struct http_server *hs = arg;
    bcv_handle_t req, body;
    hs->result = bcv_http_next_request(hs->server, 5000, &req);
    if (hs->result != BCV_OK) return NULL;
    bcv_http_field_t fields[] = {{"x-test", "yes"}};
    hs->result = bcv_http_respond(req, 200, fields, 1, &body);
    bcv_release(req); /* the response body keeps working */
    if (hs->result != BCV_OK) return NULL;
    static uint8_t chunk[16384];
    memset(chunk, 'z', sizeof chunk);
    for (int i = 0; i < hs->chunks && hs->result == BCV_OK; i++) {
        hs->result = bcv_stream_write(body, chunk, sizeof chunk, NULL, 5000);
        if (hs->pause_ms) sleep_ms(hs->pause_ms);
    }
    if (hs->result == BCV_OK) hs->result = bcv_stream_finish(body);
    bcv_release(body);
    return NULL;
}

static void start_server(bcv_handle_t rt, struct http_server *hs, int chunks, int pause_ms) {
    hs->chunks = chunks;
    hs->pause_ms = pause_ms;
    OK(bcv_http_serve(rt, "127.0.0.1:0", &hs->server));
    OK(bcv_http_local_addr(hs->server, hs->addr, sizeof hs->addr, NULL));
    pthread_create(&hs->thread, NULL, serve_one_response, hs);
}

static bcv_handle_t get(bcv_handle_t rt, struct http_server *hs) {
    char url[96];
    snprintf(url, sizeof url, "http://%s/data", hs->addr);
    bcv_handle_t resp = 0;
    OK(bcv_http_request(rt, "GET", url, NULL, 0, 0, &resp));
    return resp;
}

static void t01(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), body, trailers;
    struct http_server hs;
    start_server(rt, &hs, 20, 1);
    bcv_handle_t resp = get(rt, &hs);
    uint32_t status = 0;
    OK(bcv_http_status(resp, &status));
    CHECK_EQ(status, 200);
    OK(bcv_http_take_body(resp, &body, &trailers));
    OK(bcv_release(resp)); /* R before B */
    bcv_bytes_t data = {0};
    OK(bcv_stream_collect(body, &data));
    CHECK_EQ(data.len, 20 * 16384);
    bcv_bytes_free(&data);
    bcv_bytes_t t = {0};
    OK(bcv_http_trailers_wait(trailers, 5000, &t));
    CHECK_EQ(t.len, 0);
    pthread_join(hs.thread, NULL);
    CHECK_EQ(hs.result, BCV_OK);
    OK(bcv_release(body));
    OK(bcv_release(trailers));
    OK(bcv_release(hs.server));
    finish_runtime(rt);
}

static void t02(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), body, trailers;
    struct http_server hs;
    start_server(rt, &hs, 100000, 1);
    bcv_handle_t resp = get(rt, &hs);
    OK(bcv_http_take_body(resp, &body, &trailers));
    uint8_t buf[1024];
    size_t n;
    OK(bcv_stream_read(body, buf, sizeof buf, &n, 5000));
    OK(bcv_release(body)); /* B first */
    pthread_join(hs.thread, NULL);
    CHECK_EQ(hs.result, BCV_E_CLOSED); /* the server saw the body abandoned */
    char value[16] = {0};
    OK(bcv_http_header(resp, "x-test", value, sizeof value, NULL)); /* R still works */
    CHECK(strcmp(value, "yes") == 0);
    bcv_bytes_t t = {0};
    CHECK_EQ(bcv_http_trailers_wait(trailers, 5000, &t), BCV_E_CLOSED);
    CHECK_EQ(reason_of(trailers), BCV_REASON_ABANDONED);
    OK(bcv_release(resp));
    OK(bcv_release(trailers));
    OK(bcv_release(hs.server));
    finish_runtime(rt);
}

static void t03(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), body, trailers;
    struct http_server hs;
    start_server(rt, &hs, 100000, 0);
    bcv_handle_t resp = get(rt, &hs);
    char value[16] = {0};
    OK(bcv_http_header(resp, "x-test", value, sizeof value, NULL)); /* a snapshot taken before close */
    OK(bcv_http_take_body(resp, &body, &trailers));
    sleep_ms(100); /* let the 64 KiB body buffer fill */
    OK(bcv_close(resp));
    uint8_t buf[16];
    size_t n;
    CHECK_EQ(bcv_stream_read(body, buf, sizeof buf, &n, 1000), BCV_E_CLOSED);
    CHECK_EQ(reason_of(body), BCV_REASON_PARENT);
    bcv_bytes_t t = {0};
    CHECK_EQ(bcv_http_trailers_wait(trailers, 1000, &t), BCV_E_CLOSED);
    CHECK_EQ(reason_of(trailers), BCV_REASON_PARENT);
    uint32_t status;
    CHECK_EQ(bcv_http_status(resp, &status), BCV_E_CLOSED);
    CHECK_EQ(reason_of(resp), BCV_REASON_SELF);
    CHECK(strcmp(value, "yes") == 0);
    pthread_join(hs.thread, NULL);
    CHECK_EQ(hs.result, BCV_E_CLOSED);
    bcv_handle_t all[] = {resp, body, trailers, hs.server};
    for (size_t i = 0; i < 4; i++) OK(bcv_release(all[i]));
    finish_runtime(rt);
}

static void t04(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), body, trailers;
    struct http_server hs;
    start_server(rt, &hs, 100000, 1);
    bcv_handle_t resp = get(rt, &hs);
    OK(bcv_http_take_body(resp, &body, &trailers));
    uint8_t buf[1024];
    size_t n;
    OK(bcv_stream_read(body, buf, sizeof buf, &n, 5000));
    double t0 = now_ms();
    OK(bcv_close(body));
    bcv_bytes_t t = {0};
    CHECK_EQ(bcv_http_trailers_wait(trailers, 5000, &t), BCV_E_CLOSED);
    CHECK(now_ms() - t0 < 100);
    CHECK_EQ(reason_of(trailers), BCV_REASON_ABANDONED);
    uint32_t status = 0;
    OK(bcv_http_status(resp, &status)); /* R still works */
    CHECK_EQ(status, 200);
    pthread_join(hs.thread, NULL);
    CHECK_EQ(hs.result, BCV_E_CLOSED); /* the producer saw PEER_DROPPED */
    bcv_handle_t all[] = {resp, body, trailers, hs.server};
    for (size_t i = 0; i < 4; i++) OK(bcv_release(all[i]));
    finish_runtime(rt);
}

/* ---- T05: close twice, then release ---- */
static void t05(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r;
    OK(bcv_pipe_new(rt, 16, &w, &r));
    OK(bcv_close(r));
    OK(bcv_close(r));
    uint8_t buf[4];
    size_t n;
    CHECK_EQ(bcv_stream_read(r, buf, sizeof buf, &n, 0), BCV_E_CLOSED);
    CHECK_EQ(reason_of(r), BCV_REASON_SELF);
    OK(bcv_release(r));
    OK(bcv_release(w));
    finish_runtime(rt);
}

/* ---- T06: stale handles are BCV_E_BAD_HANDLE, never UB ---- */
static void t06(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r;
    OK(bcv_pipe_new(rt, 16, &w, &r));
    OK(bcv_release(r));
    CHECK_EQ(bcv_release(r), BCV_E_BAD_HANDLE);
    uint8_t buf[4];
    size_t n;
    CHECK_EQ(bcv_stream_read(r, buf, sizeof buf, &n, 0), BCV_E_BAD_HANDLE);
    CHECK_EQ(bcv_release(0), BCV_OK);
    CHECK_EQ(bcv_close(0x12345678deadULL), BCV_E_BAD_HANDLE);
    CHECK_EQ(bcv_stream_finish(rt), BCV_E_WRONG_TYPE);
    OK(bcv_release(w));
    finish_runtime(rt);
}

/* ---- T07 / T08: writer released without finish vs finished ---- */
static void t07_t08(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r;
    uint8_t buf[64];
    size_t n = 0;
    OK(bcv_pipe_new(rt, 1024, &w, &r));
    OK(bcv_stream_write(w, (const uint8_t *)"hello", 5, NULL, -1));
    OK(bcv_release(w));
    CHECK_EQ(bcv_stream_read(r, buf, sizeof buf, &n, 1000), BCV_OK);
    CHECK_EQ(n, 5);
    CHECK_EQ(bcv_stream_read(r, buf, sizeof buf, &n, 1000), BCV_E_CLOSED); /* never EOF */
    CHECK_EQ(reason_of(r), BCV_REASON_PEER_DROPPED);
    OK(bcv_release(r));

    OK(bcv_pipe_new(rt, 1024, &w, &r));
    OK(bcv_stream_write(w, (const uint8_t *)"bye", 3, NULL, -1));
    OK(bcv_stream_finish(w));
    OK(bcv_release(w));
    CHECK_EQ(bcv_stream_read(r, buf, sizeof buf, &n, 1000), BCV_OK);
    CHECK_EQ(n, 3);
    CHECK_EQ(bcv_stream_read(r, buf, sizeof buf, &n, 1000), BCV_EOF);
    OK(bcv_release(r));
    finish_runtime(rt);
}

struct blocked {
    bcv_handle_t h;
    bcv_status_t status;
    size_t n;
    uint32_t reason;
    double elapsed_ms;
};

static void *blocked_write(void *arg) {
    struct blocked *b = arg;
    static uint8_t big[10000];
    double t0 = now_ms();
    b->status = bcv_stream_write(b->h, big, sizeof big, &b->n, 5000);
    b->reason = reason_of(b->h);
    b->elapsed_ms = now_ms() - t0;
    return NULL;
}

static void *blocked_read(void *arg) {
    struct blocked *b = arg;
    uint8_t buf[16];
    double t0 = now_ms();
    b->status = bcv_stream_read(b->h, buf, sizeof buf, &b->n, 5000);
    b->elapsed_ms = now_ms() - t0;
    uint32_t up = 0;
    bcv_close_reason(b->h, &b->reason, &up);
    return NULL;
}

/* ---- T09: writer blocked on a full 4 KiB buffer, reader released on another thread ---- */
static void t09(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r;
    OK(bcv_pipe_new(rt, 4096, &w, &r));
    struct blocked b = {.h = w};
    pthread_t t;
    pthread_create(&t, NULL, blocked_write, &b);
    sleep_ms(50);
    double t0 = now_ms();
    OK(bcv_release(r));
    pthread_join(t, NULL);
    CHECK(now_ms() - t0 < 100);
    CHECK_EQ(b.status, BCV_E_CLOSED);
    CHECK_EQ(b.reason, BCV_REASON_PEER_DROPPED);
    CHECK(b.n >= 4096 && b.n <= 10000);
    OK(bcv_release(w));
    finish_runtime(rt);
}

/* ---- T10: close from another thread wakes a blocked read ---- */
static void t10(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r;
    OK(bcv_pipe_new(rt, 16, &w, &r));
    struct blocked b = {.h = r};
    pthread_t t;
    pthread_create(&t, NULL, blocked_read, &b);
    sleep_ms(30);
    double t0 = now_ms();
    OK(bcv_close(r));
    pthread_join(t, NULL);
    CHECK(now_ms() - t0 < 100);
    CHECK_EQ(b.status, BCV_E_CLOSED);
    CHECK_EQ(b.reason, BCV_REASON_SELF);
    OK(bcv_release(r));
    OK(bcv_release(w));
    finish_runtime(rt);
}

/* ---- T11: releasing the only handle while another thread is blocked reading it ---- */
static void t11(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r;
    OK(bcv_pipe_new(rt, 16, &w, &r));
    struct blocked b = {.h = r};
    pthread_t t;
    pthread_create(&t, NULL, blocked_read, &b);
    sleep_ms(30);
    OK(bcv_release(r));
    pthread_join(t, NULL);
    CHECK_EQ(b.status, BCV_E_CLOSED);
    /* The handle is gone, so the reason comes from the failed call's record on that thread. */
    CHECK_EQ(b.status == BCV_E_CLOSED ? 1 : 0, 1);
    size_t acc = 0;
    CHECK_EQ(bcv_stream_write(w, (const uint8_t *)"x", 1, &acc, 1000), BCV_E_CLOSED);
    CHECK_EQ(reason_of(w), BCV_REASON_PEER_DROPPED);
    OK(bcv_release(w));
    finish_runtime(rt);
}

/* ---- T12: 16 threads, random release/close of trees on random threads ---- */
#define STRESS_THREADS 16
#define STRESS_TREES 2000
static bcv_handle_t stress_handles[STRESS_TREES * 5];
static atomic_int stress_next;

static void *stress_worker(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (;;) {
        int i = atomic_fetch_add(&stress_next, 1);
        if (i >= STRESS_TREES * 5) break;
        bcv_handle_t h = stress_handles[i];
        if (rand_r(&seed) % 3 == 0) bcv_close(h);
        CHECK_EQ(bcv_release(h), BCV_OK);
        /* A second release of the same id is always a clean error. */
        CHECK_EQ(bcv_release(h), BCV_E_BAD_HANDLE);
    }
    return NULL;
}

static void t12(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF);
    int fds = open_fds(); /* with the runtime's own threads and event fds */
    for (int i = 0; i < STRESS_TREES; i++) {
        bcv_handle_t w, r, g, out, fw, fr;
        OK(bcv_pipe_new(rt, 64, &w, &r));
        bcv_stream_write(w, (const uint8_t *)"abc", 3, NULL, 0);
        OK(bcv_gzip_compress(rt, r, 1, &g, &out));
        OK(bcv_future_new(rt, &fw, &fr));
        if (i % 2) OK(bcv_future_write(fw, (const uint8_t *)"v", 1));
        bcv_handle_t *slot = &stress_handles[i * 5];
        slot[0] = w; slot[1] = g; slot[2] = out; slot[3] = fw; slot[4] = fr;
    }
    /* shuffle */
    unsigned seed = 42;
    for (int i = STRESS_TREES * 5 - 1; i > 0; i--) {
        int j = rand_r(&seed) % (i + 1);
        bcv_handle_t tmp = stress_handles[i];
        stress_handles[i] = stress_handles[j];
        stress_handles[j] = tmp;
    }
    atomic_store(&stress_next, 0);
    pthread_t threads[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) pthread_create(&threads[i], NULL, stress_worker, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < STRESS_THREADS; i++) pthread_join(threads[i], NULL);
    uint64_t live = 99;
    CHECK_EQ(bcv_runtime_wait_idle(rt, 10000, &live), BCV_OK);
    CHECK_EQ(live, 0);
    CHECK_EQ(open_fds(), fds);
    OK(bcv_runtime_free(rt));
}

/* ---- T21: a callback releases its own stream and its parent ---- */
struct cb_state {
    bcv_handle_t stream, parent;
    atomic_int calls;
    atomic_int freed;
    bcv_status_t close_wait_status;
    double close_wait_ms;
};

static void release_in_callback(void *ud, bcv_status_t status, const uint8_t *data, size_t len) {
    (void)status; (void)data; (void)len;
    struct cb_state *s = ud;
    atomic_fetch_add(&s->calls, 1);
    CHECK_EQ(bcv_release(s->stream), BCV_OK);
    CHECK_EQ(bcv_release(s->parent), BCV_OK);
}

static void count_free(void *ud) {
    struct cb_state *s = ud;
    atomic_fetch_add(&s->freed, 1);
}

static void t21(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r;
    struct cb_state s = {0};
    OK(bcv_pipe_new(rt, 1 << 20, &w, &r));
    OK(bcv_gzip_compress(rt, r, 1, &s.parent, &s.stream));
    OK(bcv_stream_on_data(s.stream, release_in_callback, &s, count_free));
    static uint8_t data[200000];
    fill(data, sizeof data, 1);
    bcv_stream_write(w, data, sizeof data, NULL, 5000);
    bcv_stream_finish(w);
    for (int i = 0; i < 1000 && atomic_load(&s.calls) == 0; i++) sleep_ms(5);
    sleep_ms(100); /* time for any (wrong) further delivery */
    CHECK_EQ(atomic_load(&s.calls), 1);
    OK(bcv_release(w));
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s.freed), 1); /* user_data_free ran exactly once */
}

/* ---- T22: close_and_wait inside a callback is refused at once; close works ---- */
static void close_wait_in_callback(void *ud, bcv_status_t status, const uint8_t *data, size_t len) {
    (void)status; (void)data; (void)len;
    struct cb_state *s = ud;
    if (atomic_fetch_add(&s->calls, 1) != 0) return;
    double t0 = now_ms();
    s->close_wait_status = bcv_close_and_wait(s->stream, 1000);
    s->close_wait_ms = now_ms() - t0;
    CHECK_EQ(bcv_close(s->stream), BCV_OK);
}

static void t22(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w;
    struct cb_state s = {0};
    OK(bcv_pipe_new(rt, 1024, &w, &s.stream));
    OK(bcv_stream_on_data(s.stream, close_wait_in_callback, &s, count_free));
    OK(bcv_stream_write(w, (const uint8_t *)"x", 1, NULL, -1));
    for (int i = 0; i < 200 && atomic_load(&s.calls) == 0; i++) sleep_ms(5);
    OK(bcv_close_and_wait(s.stream, 5000)); /* from a plain thread: allowed */
    CHECK_EQ(s.close_wait_status, BCV_E_WOULD_DEADLOCK);
    CHECK(s.close_wait_ms < 10);
    OK(bcv_release(s.stream));
    OK(bcv_release(w));
    finish_runtime(rt);
    CHECK_EQ(atomic_load(&s.freed), 1);
}

/* ---- T23 / T24: release the transformer or its output midway ---- */
static void t23_t24(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r, g, out, g2, back;
    static uint8_t data[1000000];
    fill(data, sizeof data, 7);
    OK(bcv_pipe_new(rt, 1 << 20, &w, &r));
    OK(bcv_gzip_compress(rt, r, 6, &g, &out));
    OK(bcv_stream_write(w, data, 500000, NULL, -1));
    OK(bcv_release(g)); /* T23: the pipe keeps running */
    OK(bcv_stream_write(w, data + 500000, 500000, NULL, -1));
    OK(bcv_stream_finish(w));
    OK(bcv_release(w));
    OK(bcv_gzip_decompress(rt, out, &g2, &back));
    bcv_bytes_t got = {0};
    OK(bcv_stream_collect(back, &got));
    CHECK_EQ(got.len, sizeof data);
    CHECK(got.len == sizeof data && memcmp(got.data, data, got.len) == 0);
    bcv_bytes_free(&got);
    OK(bcv_release(g2));
    OK(bcv_release(back));

    /* T24: releasing the output stops the transformer and the producer sees PEER_DROPPED */
    OK(bcv_pipe_new(rt, 16384, &w, &r));
    OK(bcv_gzip_compress(rt, r, 1, &g, &out));
    OK(bcv_stream_write(w, data, 16384, NULL, -1));
    uint8_t buf[1024];
    size_t n;
    OK(bcv_stream_read(out, buf, sizeof buf, &n, 5000));
    OK(bcv_release(out));
    bcv_status_t st = BCV_OK;
    double t0 = now_ms();
    for (int i = 0; i < 1000 && st == BCV_OK; i++) st = bcv_stream_write(w, data, 16384, NULL, 5000);
    CHECK_EQ(st, BCV_E_CLOSED);
    CHECK(now_ms() - t0 < 1000);
    CHECK_EQ(reason_of(w), BCV_REASON_PEER_DROPPED);
    OK(bcv_release(w));
    OK(bcv_release(g));
    finish_runtime(rt);
}

/* ---- T25 / T26 and AES-GCM authentication ---- */
static const uint8_t KEY[32] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                                7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7};

static void t25_t26(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), src, e, ct, w, r, d, out;
    static uint8_t plain[300000];
    fill(plain, sizeof plain, 3);
    OK(bcv_stream_from_bytes(rt, plain, sizeof plain, &src));
    OK(bcv_aead_encrypt(rt, src, KEY, 32, &e, &ct));
    bcv_bytes_t cipher = {0};
    OK(bcv_stream_collect(ct, &cipher));
    OK(bcv_release(e));
    OK(bcv_release(ct));

    /* wrong key: authentication error, never plaintext + EOF */
    uint8_t wrong[32] = {0};
    OK(bcv_stream_from_bytes(rt, cipher.data, cipher.len, &src));
    OK(bcv_aead_decrypt(rt, src, wrong, 32, &d, &out));
    bcv_bytes_t got = {0};
    CHECK_EQ(bcv_stream_collect(out, &got), BCV_E_AUTH);
    OK(bcv_release(d));
    OK(bcv_release(out));

    /* T25: writer released halfway through the ciphertext */
    OK(bcv_pipe_new(rt, 1 << 20, &w, &r));
    OK(bcv_aead_decrypt(rt, r, KEY, 32, &d, &out));
    OK(bcv_stream_write(w, cipher.data, 200000, NULL, -1));
    OK(bcv_release(w));
    size_t total = 0, n = 0;
    static uint8_t buf[1 << 17];
    bcv_status_t st;
    while ((st = bcv_stream_read(out, buf, sizeof buf, &n, 5000)) == BCV_OK) {
        CHECK(memcmp(buf, plain + total, n) == 0);
        total += n;
    }
    CHECK_EQ(st, BCV_E_CLOSED);
    uint32_t reason = 0, upstream = 0;
    OK(bcv_close_reason(out, &reason, &upstream));
    CHECK_EQ(reason, BCV_REASON_UPSTREAM);
    CHECK_EQ(upstream, BCV_REASON_PEER_DROPPED);
    CHECK(total % 65536 == 0 && total < 200000);
    OK(bcv_release(d));
    OK(bcv_release(out));

    /* T26: closing the encryptor halfway */
    OK(bcv_pipe_new(rt, 1 << 20, &w, &r));
    OK(bcv_aead_encrypt(rt, r, KEY, 32, &e, &out));
    OK(bcv_stream_write(w, plain, 150000, NULL, -1));
    OK(bcv_stream_read(out, buf, sizeof buf, &n, 5000));
    OK(bcv_close(e));
    CHECK_EQ(bcv_stream_read(out, buf, sizeof buf, &n, 1000), BCV_E_CLOSED);
    CHECK_EQ(reason_of(out), BCV_REASON_PARENT);
    CHECK_EQ(bcv_stream_write(w, plain, 10, NULL, 1000), BCV_E_CLOSED);
    CHECK_EQ(reason_of(w), BCV_REASON_PEER_DROPPED);
    OK(bcv_release(w));
    OK(bcv_release(e));
    OK(bcv_release(out));
    bcv_bytes_free(&cipher);
    finish_runtime(rt);
}

/* ---- T28 / T29: futures ---- */
static void t28_t29(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), fw, fr;
    bcv_bytes_t v = {0};
    OK(bcv_future_new(rt, &fw, &fr));
    OK(bcv_release(fw));
    CHECK_EQ(bcv_future_wait(fr, 1000, &v), BCV_E_CLOSED);
    CHECK_EQ(reason_of(fr), BCV_REASON_PEER_DROPPED);
    OK(bcv_release(fr));

    OK(bcv_future_new(rt, &fw, &fr));
    OK(bcv_future_write(fw, (const uint8_t *)"value", 5));
    OK(bcv_future_wait(fr, 1000, &v));
    CHECK(v.len == 5 && memcmp(v.data, "value", 5) == 0);
    bcv_bytes_free(&v);
    CHECK(v.data == NULL && v.len == 0);
    OK(bcv_release(fr));
    OK(bcv_release(fw));

    OK(bcv_future_new(rt, &fw, &fr));
    OK(bcv_release(fr));
    /* The reader's release is seen at once: no flush needed before the write. */
    CHECK_EQ(bcv_future_write(fw, (const uint8_t *)"x", 1), BCV_E_CLOSED);
    CHECK_EQ(reason_of(fw), BCV_REASON_PEER_DROPPED);
    OK(bcv_release(fw));
    finish_runtime(rt);
}

/* ---- TCP helpers ---- */
static void addr_of(bcv_handle_t h, char *buf, size_t cap) { OK(bcv_tcp_local_addr(h, buf, cap, NULL)); }

static int raw_connect(const char *addr) {
    char host[64];
    strncpy(host, addr, sizeof host - 1);
    host[sizeof host - 1] = 0;
    char *colon = strrchr(host, ':');
    *colon = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) return -1;
    return fd;
}

static int port_bindable(const char *addr) {
    char host[64];
    strncpy(host, addr, sizeof host - 1);
    host[sizeof host - 1] = 0;
    char *colon = strrchr(host, ':');
    *colon = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0;
    close(fd);
    return ok;
}

/* ---- T30: shutdown with live handles and operations in flight ---- */
static void t30(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), l, client, server, recv, w, r;
    int fds = open_fds();
    char addr[64];
    OK(bcv_tcp_listen(rt, "127.0.0.1:0", &l));
    addr_of(l, addr, sizeof addr);
    OK(bcv_tcp_connect(rt, addr, &client));
    OK(bcv_tcp_accept(l, 5000, &server));
    OK(bcv_tcp_take_receive(server, &recv));
    OK(bcv_pipe_new(rt, 4, &w, &r));
    struct blocked b = {.h = recv};
    pthread_t t;
    pthread_create(&t, NULL, blocked_read, &b);
    sleep_ms(50);
    double t0 = now_ms();
    OK(bcv_runtime_shutdown(rt, 1000));
    CHECK(now_ms() - t0 < 1000);
    pthread_join(t, NULL);
    CHECK_EQ(b.status, BCV_E_CLOSED);
    CHECK_EQ(b.reason, BCV_REASON_RUNTIME_SHUTDOWN);
    bcv_diagnostics_t d;
    OK(bcv_diagnostics(rt, &d));
    CHECK_EQ(d.live_nodes, 0);
    uint8_t buf[4];
    size_t n;
    CHECK_EQ(bcv_stream_read(r, buf, sizeof buf, &n, 0), BCV_E_CLOSED);
    CHECK_EQ(reason_of(r), BCV_REASON_RUNTIME_SHUTDOWN);
    bcv_handle_t w2, r2;
    CHECK_EQ(bcv_pipe_new(rt, 4, &w2, &r2), BCV_E_CLOSED);
    /* Every socket fd is closed by shutdown; the executor's own fds go with bcv_runtime_free. */
    CHECK(open_fds() <= fds);
    bcv_handle_t all[] = {l, client, server, recv, w, r};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) OK(bcv_release(all[i]));
    OK(bcv_runtime_free(rt));
}

/* ---- T31: a stuck foreign callback makes shutdown time out, without deadlock ---- */
static atomic_int t31_release;
static void stuck_callback(void *ud, bcv_status_t status, const uint8_t *data, size_t len) {
    (void)ud; (void)status; (void)data; (void)len;
    while (!atomic_load(&t31_release)) sleep_ms(5);
}

static void t31(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r;
    OK(bcv_pipe_new(rt, 16, &w, &r));
    OK(bcv_stream_on_data(r, stuck_callback, NULL, NULL));
    OK(bcv_stream_write(w, (const uint8_t *)"x", 1, NULL, -1));
    sleep_ms(50);
    double t0 = now_ms();
    CHECK_EQ(bcv_runtime_shutdown(rt, 500), BCV_E_TIMEOUT);
    double took = now_ms() - t0;
    CHECK(took >= 450 && took < 1500);
    CHECK(strstr(bcv_last_error_message(), "stuck") || strstr(bcv_last_error_message(), "busy"));
    atomic_store(&t31_release, 1);
    sleep_ms(50);
    OK(bcv_release(w));
    OK(bcv_release(r));
    bcv_runtime_free(rt);
}

/* ---- T32: two concurrent reads: one gets BUSY at once ---- */
static void t32(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), w, r;
    OK(bcv_pipe_new(rt, 16, &w, &r));
    struct blocked b = {.h = r};
    pthread_t t;
    pthread_create(&t, NULL, blocked_read, &b);
    sleep_ms(30);
    uint8_t buf[8];
    size_t n;
    CHECK_EQ(bcv_stream_read(r, buf, sizeof buf, &n, 1000), BCV_E_BUSY);
    OK(bcv_stream_write(w, (const uint8_t *)"abc", 3, NULL, -1));
    pthread_join(t, NULL);
    CHECK_EQ(b.status, BCV_OK);
    CHECK_EQ(b.n, 3);
    OK(bcv_release(r));
    OK(bcv_release(w));
    finish_runtime(rt);
}

/* ---- T36 / T39: auto-close on quiescence; close_and_wait frees the port ---- */
static void t36_t39(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), l, s, recv, send;
    char addr[64];
    OK(bcv_tcp_listen(rt, "127.0.0.1:0", &l));
    addr_of(l, addr, sizeof addr);
    int peer = raw_connect(addr);
    CHECK(peer >= 0);
    OK(bcv_tcp_accept(l, 5000, &s));
    int fds_with_socket = open_fds();
    OK(bcv_tcp_take_receive(s, &recv));
    OK(bcv_tcp_take_send(s, &send));
    CHECK_EQ(write(peer, "ping", 4), 4);
    shutdown(peer, SHUT_WR);
    bcv_bytes_t got = {0};
    OK(bcv_stream_collect(recv, &got));
    CHECK(got.len == 4 && memcmp(got.data, "ping", 4) == 0);
    bcv_bytes_free(&got);
    OK(bcv_stream_write(send, (const uint8_t *)"pong", 4, NULL, -1));
    OK(bcv_stream_finish(send));
    OK(bcv_release(recv));
    char reply[8] = {0};
    CHECK_EQ(read(peer, reply, sizeof reply), 4);
    CHECK_EQ(read(peer, reply, sizeof reply), 0); /* FIN after finish */
    int closed = 0;
    for (int i = 0; i < 100 && !closed; i++) {
        closed = open_fds() < fds_with_socket;
        if (!closed) sleep_ms(5);
    }
    CHECK(closed); /* the socket handle s is still alive */
    close(peer);
    OK(bcv_release(send));
    OK(bcv_release(s));

    /* T39 */
    bcv_handle_t client, server, r2;
    OK(bcv_tcp_connect(rt, addr, &client));
    OK(bcv_tcp_accept(l, 5000, &server));
    OK(bcv_tcp_take_receive(server, &r2));
    struct blocked b = {.h = r2};
    pthread_t t;
    pthread_create(&t, NULL, blocked_read, &b);
    sleep_ms(20);
    OK(bcv_close_and_wait(server, 5000));
    OK(bcv_close_and_wait(l, 5000));
    pthread_join(t, NULL);
    CHECK_EQ(b.status, BCV_E_CLOSED);
    CHECK_EQ(b.reason, BCV_REASON_PARENT);
    CHECK(port_bindable(addr));
    bcv_handle_t all[] = {client, server, r2, l};
    for (size_t i = 0; i < 4; i++) OK(bcv_release(all[i]));
    finish_runtime(rt);
}


/* ---- T27: closing a socket closes its TLS session (CR-dep); the peer-address snapshot still reads ---- */
struct tls_server {
    bcv_handle_t listener;
    bcv_bytes_t cert, key;
    bcv_handle_t socket, session, r, w;
    bcv_status_t status;
};

static void *tls_accept_and_echo(void *arg) {
    struct tls_server *ts = arg;
    ts->status = bcv_tcp_accept(ts->listener, 5000, &ts->socket);
    if (ts->status != BCV_OK) return NULL;
    ts->status = bcv_tls_server(ts->socket, ts->cert.data, ts->cert.len, ts->key.data, ts->key.len, &ts->session);
    if (ts->status != BCV_OK) return NULL;
    bcv_tls_take_receive(ts->session, &ts->r);
    bcv_tls_take_send(ts->session, &ts->w);
    uint8_t buf[256];
    size_t n = 0;
    /* Echo one message, then stay connected and silent, so the client's next read is in flight. */
    if (bcv_stream_read(ts->r, buf, sizeof buf, &n, 5000) == BCV_OK) bcv_stream_write(ts->w, buf, n, NULL, 5000);
    return NULL;
}

static void t27(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), client, session, recv, send;
    struct tls_server ts = {0};
    const char *names[] = {"localhost"};
    OK(bcv_tls_self_signed(names, 1, &ts.cert, &ts.key));
    OK(bcv_tcp_listen(rt, "127.0.0.1:0", &ts.listener));
    char addr[64];
    addr_of(ts.listener, addr, sizeof addr);
    pthread_t t;
    pthread_create(&t, NULL, tls_accept_and_echo, &ts);
    OK(bcv_tcp_connect(rt, addr, &client));
    OK(bcv_tls_client(client, "localhost", ts.cert.data, ts.cert.len, &session));
    OK(bcv_tls_take_receive(session, &recv));
    OK(bcv_tls_take_send(session, &send));
    OK(bcv_stream_write(send, (const uint8_t *)"over tls", 8, NULL, 5000));
    uint8_t buf[64];
    size_t n = 0;
    OK(bcv_stream_read(recv, buf, sizeof buf, &n, 5000));
    CHECK(n == 8 && memcmp(buf, "over tls", 8) == 0);
    pthread_join(t, NULL);
    CHECK_EQ(ts.status, BCV_OK);
    int fds_connected = open_fds(); /* both ends of the connection are open, in this process */
    char peer_before[64], peer_after[64];
    OK(bcv_tcp_peer_addr(client, peer_before, sizeof peer_before, NULL)); /* A: a detached snapshot */
    struct blocked b = {.h = recv};
    pthread_t reader;
    pthread_create(&reader, NULL, blocked_read, &b); /* an operation in flight on L */
    sleep_ms(20);
    OK(bcv_close_and_wait(client, 5000)); /* S.close(), waiting for quiescence */
    pthread_join(reader, NULL);
    CHECK_EQ(b.status, BCV_E_CLOSED);
    CHECK_EQ(b.reason, BCV_REASON_PARENT);
    CHECK_EQ(bcv_stream_write(send, (const uint8_t *)"x", 1, NULL, 1000), BCV_E_CLOSED);
    CHECK_EQ(reason_of(send), BCV_REASON_PARENT);
    OK(bcv_tcp_peer_addr(client, peer_after, sizeof peer_after, NULL));
    CHECK(strcmp(peer_before, peer_after) == 0);
    CHECK(open_fds() < fds_connected); /* the socket's fd is closed */
    bcv_handle_t all[] = {session, recv, send, client, ts.r, ts.w, ts.session, ts.socket, ts.listener};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) OK(bcv_release(all[i]));
    bcv_bytes_free(&ts.cert);
    bcv_bytes_free(&ts.key);
    finish_runtime(rt);
}

/* ---- T33: strict wasip2 profile: parent released before a live child is reported, behaviour unchanged ---- */
static void t33(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_WARN | BCV_STRICT_WASIP2), src, g, out;
    static uint8_t data[1000];
    fill(data, sizeof data, 33);
    OK(bcv_stream_from_bytes(rt, data, sizeof data, &src));
    OK(bcv_gzip_compress(rt, src, 1, &g, &out));
    OK(bcv_release(g)); /* V1 under wasip2: the parent goes before its live output */
    bcv_handle_t g2, back;
    OK(bcv_gzip_decompress(rt, out, &g2, &back));
    bcv_bytes_t got = {0};
    OK(bcv_stream_collect(back, &got)); /* reads to EOF exactly as without strict mode */
    CHECK(got.len == sizeof data && memcmp(got.data, data, got.len) == 0);
    bcv_bytes_free(&got);
    bcv_diagnostics_t d;
    OK(bcv_diagnostics(rt, &d));
    CHECK(d.violations[0] >= 1);
    OK(bcv_release(g2));
    OK(bcv_release(back));
    finish_runtime(rt);
}

/* ---- T35: soak: create -> take body -> random-order release cycles; RSS, live nodes and fds stable ---- */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
    fclose(f);
    return resident * 4;
}

static void soak_cycle(bcv_handle_t rt, unsigned *seed, long i) {
    bcv_handle_t h[5];
    int n = 0;
    bcv_handle_t w, r, fw, fr;
    OK(bcv_pipe_new(rt, 256, &w, &r));
    bcv_stream_write(w, (const uint8_t *)"body bytes", 10, NULL, 0);
    if (rand_r(seed) % 2) bcv_stream_finish(w);
    if (i % 16 == 0) {
        bcv_handle_t t, body;
        OK(bcv_gzip_compress(rt, r, 1, &t, &body)); /* take the body out of a resource */
        h[n++] = t;
        h[n++] = body;
    } else {
        h[n++] = r;
    }
    OK(bcv_future_new(rt, &fw, &fr));
    if (rand_r(seed) % 2) bcv_future_write(fw, (const uint8_t *)"v", 1);
    h[n++] = w;
    h[n++] = fw;
    h[n++] = fr;
    for (int k = n - 1; k > 0; k--) {
        int j = rand_r(seed) % (k + 1);
        bcv_handle_t tmp = h[k];
        h[k] = h[j];
        h[j] = tmp;
    }
    for (int k = 0; k < n; k++) OK(bcv_release(h[k]));
}

static void t35(void) {
    const char *env = getenv("BCV_SOAK_CYCLES");
    long cycles = env ? atol(env) : 1000000;
    long rhythm = 500;
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF);
    unsigned seed = 35;
    long warm = cycles / 4 > 10 * rhythm ? cycles / 4 : 10 * rhythm;
    for (long i = 0; i < warm; i++) {
        soak_cycle(rt, &seed, i);
        if (i % rhythm == rhythm - 1) bcv_runtime_wait_idle(rt, 30000, NULL);
    }
    OK(bcv_runtime_wait_idle(rt, 30000, NULL));
    int fds = open_fds();
    long rss = rss_kib();
    for (long i = 0; i < cycles; i++) {
        soak_cycle(rt, &seed, i);
        if (i % rhythm == rhythm - 1) bcv_runtime_wait_idle(rt, 30000, NULL);
    }
    uint64_t live = 99;
    OK(bcv_runtime_wait_idle(rt, 30000, &live));
    CHECK_EQ(live, 0);
    long growth = rss_kib() - rss;
    printf("     T35: %ld cycles, RSS grew by %ld KiB\n", cycles, growth);
    CHECK(growth < 5 * 1024);
    CHECK_EQ(open_fds(), fds);
    OK(bcv_runtime_free(rt));
}

/* ---- T40: bcv_runtime_free with live handles, released afterwards from other threads ---- */
static bcv_handle_t t40_handles[64];
static void *t40_release(void *arg) {
    int start = (int)(uintptr_t)arg;
    for (int i = start; i < 64; i += 4) {
        bcv_status_t st = bcv_release(t40_handles[i]);
        CHECK(st == BCV_OK || st == BCV_E_BAD_HANDLE);
    }
    return NULL;
}

static void t40(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF);
    for (int i = 0; i < 64; i += 2) OK(bcv_pipe_new(rt, 32, &t40_handles[i], &t40_handles[i + 1]));
    OK(bcv_runtime_free(rt));
    CHECK_EQ(bcv_release(rt), BCV_E_BAD_HANDLE);
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, t40_release, (void *)(uintptr_t)i);
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
}

/* ---- Strict mode: V2 recorded, behaviour unchanged ---- */
static void strict_mode(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_ERROR), w, r;
    OK(bcv_pipe_new(rt, 16, &w, &r));
    OK(bcv_release(w)); /* V2: writer released without finish */
    CHECK_EQ(bcv_strict_check(), BCV_E_STRICT);
    CHECK(strstr(bcv_last_error_message(), "V2") != NULL);
    CHECK_EQ(bcv_strict_check(), BCV_OK);
    uint8_t buf[4];
    size_t n;
    CHECK_EQ(bcv_stream_read(r, buf, sizeof buf, &n, 1000), BCV_E_CLOSED);
    CHECK_EQ(reason_of(r), BCV_REASON_PEER_DROPPED);
    bcv_diagnostics_t d;
    OK(bcv_diagnostics(rt, &d));
    CHECK_EQ(d.violations[1], 1);
    OK(bcv_release(r));
    finish_runtime(rt);
}

/* ---- Files ---- */
static void files(void) {
    bcv_handle_t rt = new_runtime(BCV_STRICT_OFF), f, r, f2, w, done;
    char in[] = "/tmp/bcv-c-XXXXXX";
    int fd = mkstemp(in);
    static uint8_t data[333333];
    fill(data, sizeof data, 9);
    CHECK_EQ(write(fd, data, sizeof data), (ssize_t)sizeof data);
    close(fd);
    char out[64];
    snprintf(out, sizeof out, "%s.out", in);
    OK(bcv_file_read(rt, in, &f, &r));
    OK(bcv_file_write(rt, out, &f2, &w, &done));
    OK(bcv_pipe_spawn(rt, r, w));
    CHECK_EQ(bcv_release(r), BCV_E_BAD_HANDLE); /* consumed */
    uint64_t written = 0;
    OK(bcv_file_wait(done, 10000, &written));
    CHECK_EQ(written, sizeof data);
    CHECK_EQ(bcv_file_read(rt, "/nonexistent/bcv", &f, &r), BCV_E_IO);
    CHECK(strstr(bcv_last_error_message(), "/nonexistent/bcv") != NULL);
    bcv_handle_t all[] = {f, f2, done};
    for (size_t i = 0; i < 3; i++) OK(bcv_release(all[i]));
    unlink(in);
    unlink(out);
    finish_runtime(rt);
}

static void run(const char *name, void (*test)(void)) {
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
    CHECK_EQ(bcv_abi_version(), BCV_ABI_VERSION);
    run("T01 HTTP response released before its body", t01);
    run("T02 HTTP body released first", t02);
    run("T03 HTTP response closed with a buffered body", t03);
    run("T04 HTTP body closed: trailers abandoned", t04);
    run("T05 close twice then release", t05);
    run("T06 stale handles", t06);
    run("T07/T08 writer released vs finished", t07_t08);
    run("T09 blocked writer, reader released", t09);
    run("T10 close wakes a blocked read", t10);
    run("T11 release while a read is blocked", t11);
    run("T12 16-thread random release/close stress", t12);
    run("T21 callback releases its stream and parent", t21);
    run("T22 close_and_wait in a callback", t22);
    run("T23/T24 transformer released / output released", t23_t24);
    run("T25/T26 AES-GCM truncation and close", t25_t26);
    run("T28/T29 futures", t28_t29);
    run("T30 shutdown with operations in flight", t30);
    run("T31 stuck callback and shutdown timeout", t31);
    run("T32 concurrent reads", t32);
    run("T36/T39 auto-close and port reuse", t36_t39);
    run("T27 closing a socket closes its TLS session", t27);
    run("T33 strict wasip2: parent released first is reported", t33);
    run("T35 soak", t35);
    run("T40 runtime freed before handles", t40);
    run("strict mode V2", strict_mode);
    run("files", files);
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, all_tests, NULL);
    pthread_join(t, NULL);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
