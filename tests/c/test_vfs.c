/*
 * The block-cache VFS and the container tools through the C ABI, with the system SQLite:
 * a container in a temporary directory, two clients with their own caches (write, upload, poll), a
 * conflict between two writers, background jobs (prefetch, cancel, release in any order), a store
 * implemented here in C, the credentials callback (against Azurite when BCV_TEST_AZURE_URL is set),
 * secure containers (key ring, key provider, a cipher written in C; the bucket and caches are searched for
 * known plaintext), the lease lock, multi-process mode (this binary re-runs itself as the daemon's client
 * process), and bad handles and arguments. Run plain, under valgrind and with AddressSanitizer by
 * scripts/test-c.sh. Ends with the line "N passed, M failed".
 */
#define _GNU_SOURCE
#include <bcv.h>
#include <sqlite3.h>

#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

/* Generous limits: valgrind runs this 30-50 times slower. */
#define WAIT_MS 60000

static char base_dir[64];
/* This test binary, for re-running it as a child process (read at start: under valgrind, /proc/self/exe is
 * only the program's own path through readlink). */
static char self_exe[4096];

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A path under the test's temporary directory (static storage, one of 16 slots). */
static const char *path_of(const char *name) {
    static char slots[16][160];
    static int next;
    char *p = slots[next++ % 16];
    snprintf(p, sizeof slots[0], "%s/%s", base_dir, name);
    return p;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
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

/* True when the JSON text in `b` contains `needle`. */
static int has(const bcv_bytes_t *b, const char *needle) {
    return b->data && memmem(b->data, b->len, needle, strlen(needle)) != NULL;
}

/* ---- SQLite helpers ---- */

/* Builds a plain database file with `rows` rows in table items (about 130 bytes each). */
static void make_db(const char *path, int rows) {
    sqlite3 *db = NULL;
    unlink(path);
    CHECK_EQ(sqlite3_open(path, &db), SQLITE_OK);
    char sql[512];
    snprintf(sql, sizeof sql,
             "PRAGMA page_size=4096;"
             "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, pad BLOB);"
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<%d)"
             " INSERT INTO items SELECT i, 'item ' || i, randomblob(100) FROM c;",
             rows);
    char *err = NULL;
    CHECK_EQ(sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK);
    if (err) fprintf(stderr, "  make_db: %s\n", err);
    sqlite3_free(err);
    sqlite3_close(db);
}

/* The first column of the first row of `sql` on database `path` through VFS `vfs` (NULL: the default);
 * -1 on failure (printed with the VFS's reason). */
static long long query_int(const char *vfs, const char *path, const char *sql) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, vfs);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    } else {
        char why[512];
        bcv_vfs_last_error(why, sizeof why, NULL);
        fprintf(stderr, "  query %s on %s: %s (vfs: %s)\n", sql, path, db ? sqlite3_errmsg(db) : "?", why);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int exec_sql(const char *vfs, const char *path, const char *sql) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, vfs);
    char *err = NULL;
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) fprintf(stderr, "  exec %s on %s: %s\n", sql, path, err ? err : sqlite3_errmsg(db));
    sqlite3_free(err);
    sqlite3_close(db);
    return rc;
}

/* ---- Progress callbacks ---- */

struct progress {
    atomic_int calls;
    atomic_ullong done, total;
};

static void on_progress(void *user_data, uint64_t done, uint64_t total) {
    struct progress *p = user_data;
    atomic_fetch_add(&p->calls, 1);
    unsigned long long seen = atomic_load(&p->done);
    while (done > seen && !atomic_compare_exchange_weak(&p->done, &seen, done)) {
    }
    atomic_store(&p->total, total);
}

/* ---- A VFS with its own cache directory ---- */

static bcv_handle_t new_vfs(bcv_handle_t rt, const char *cache, const char *name, uint32_t nrequest) {
    bcv_vfs_config_t cfg;
    OK(bcv_vfs_config_init(&cfg));
    CHECK(cfg.name && strcmp(cfg.name, "bcv") == 0);
    CHECK_EQ(cfg.nrequest, 8);
    cfg.cache_dir = path_of(cache);
    cfg.name = name;
    cfg.cache_size = 64ull << 20;
    cfg.nrequest = nrequest;
    bcv_handle_t vfs = 0;
    OK(bcv_vfs_new(rt, &cfg, &vfs));
    return vfs;
}

/* A container in base_dir/container holding main.db (a copy of src.db, 2000 rows, 64 KiB blocks). */
static const char *container_url(void) {
    return path_of("container");
}

/* ---- Tests ---- */

static void statuses_and_bad_arguments(void) {
    bcv_handle_t rt = new_runtime(), tools = 0, vfs = 0;
    CHECK(strcmp(bcv_status_name(BCV_E_CONFLICT), "BCV_E_CONFLICT") == 0);
    CHECK(strcmp(bcv_status_name(BCV_E_NOT_FOUND), "BCV_E_NOT_FOUND") == 0);
    CHECK(strcmp(bcv_status_name(BCV_E_STORE), "BCV_E_STORE") == 0);
    CHECK(strcmp(bcv_status_name(BCV_E_CACHE_BUSY), "BCV_E_CACHE_BUSY") == 0);
    CHECK(strcmp(bcv_status_name(BCV_E_EXISTS), "BCV_E_EXISTS") == 0);
    CHECK(strcmp(bcv_status_name(BCV_E_SQLITE), "BCV_E_SQLITE") == 0);

    /* NULLs and bad configuration. */
    CHECK_EQ(bcv_vfs_config_init(NULL), BCV_E_INVALID);
    CHECK_EQ(bcv_vfs_new(rt, NULL, &vfs), BCV_E_INVALID);
    bcv_vfs_config_t cfg;
    OK(bcv_vfs_config_init(&cfg));
    CHECK_EQ(bcv_vfs_new(rt, &cfg, &vfs), BCV_E_INVALID); /* no cache_dir */
    CHECK(strstr(bcv_last_error_message(), "cache_dir") != NULL);
    cfg.cache_dir = path_of("cache-bad");
    CHECK_EQ(bcv_vfs_new(rt, &cfg, NULL), BCV_E_INVALID);
    CHECK_EQ(bcv_vfs_new(0, &cfg, &vfs), BCV_E_BAD_HANDLE);
    CHECK_EQ(bcv_container_open(NULL, NULL, 1, &tools), BCV_E_INVALID);
    CHECK_EQ(bcv_container_open("relative/dir", NULL, 1, &tools), BCV_E_INVALID);
    CHECK_EQ(bcv_container_open("ftp://host/x", NULL, 1, &tools), BCV_E_INVALID);
    CHECK(strstr(bcv_last_error_message(), "scheme") != NULL);
    CHECK_EQ(bcv_container_open("file:///tmp/bcv-c-bad?colour=blue", NULL, 1, &tools), BCV_E_INVALID);
    CHECK(strstr(bcv_last_error_message(), "colour") != NULL);
    bcv_store_option_t opt = {"azure_storage_account_name", "x"};
    bcv_store_options_t so;
    OK(bcv_store_options_init(&so));
    so.options = &opt;
    so.option_count = 1;
    CHECK_EQ(bcv_container_open(path_of("opts"), &so, 1, &tools), BCV_E_INVALID); /* no options on local */
    CHECK_EQ(bcv_store_options_init(NULL), BCV_E_INVALID);

    /* A container that was never created. */
    OK(bcv_container_open(path_of("never-created"), NULL, 2, &tools));
    bcv_bytes_t json = {0};
    CHECK_EQ(bcv_container_list(tools, &json), BCV_E_NOT_FOUND);
    CHECK(strstr(bcv_last_error_message(), "manifest.bcv") != NULL);
    CHECK_EQ(bcv_container_list(tools, NULL), BCV_E_INVALID);

    /* Wrong kinds of handle, in both directions. */
    CHECK_EQ(bcv_vfs_poll(rt, "a", NULL, NULL), BCV_E_WRONG_TYPE);
    CHECK(strstr(bcv_last_error_message(), "not a vfs") != NULL);
    CHECK_EQ(bcv_vfs_poll(tools, "a", NULL, NULL), BCV_E_WRONG_TYPE);
    CHECK_EQ(bcv_container_list(rt, &json), BCV_E_WRONG_TYPE);
    CHECK_EQ(bcv_job_wait(tools, 0, NULL), BCV_E_WRONG_TYPE);
    CHECK_EQ(bcv_job_status(rt, NULL), BCV_E_INVALID);
    uint32_t st;
    CHECK_EQ(bcv_job_status(tools, &st), BCV_E_WRONG_TYPE);
    CHECK_EQ(bcv_close(tools), BCV_E_WRONG_TYPE); /* container tools are not a node */
    CHECK_EQ(bcv_handle_state(tools, &st), BCV_E_WRONG_TYPE);
    CHECK_EQ(bcv_vfs_new(tools, &cfg, &vfs), BCV_E_WRONG_TYPE);

    /* Released and null handles. */
    OK(bcv_release(tools));
    CHECK_EQ(bcv_release(tools), BCV_E_BAD_HANDLE);
    CHECK_EQ(bcv_container_list(tools, &json), BCV_E_BAD_HANDLE);
    CHECK_EQ(bcv_vfs_attach(0, "/tmp/x", NULL, 0, NULL, 0, NULL), BCV_E_BAD_HANDLE);
    CHECK_EQ(bcv_job_progress(0, NULL, NULL), BCV_E_BAD_HANDLE);
    CHECK_EQ(bcv_vfs_last_error(NULL, 0, NULL), BCV_OK);

    /* Custom store tables must be complete. */
    bcv_store_callbacks_t empty = {0};
    CHECK_EQ(bcv_container_open_custom(&empty, "empty", NULL, 1, &tools), BCV_E_INVALID);
    CHECK_EQ(bcv_container_open_custom(NULL, "empty", NULL, 1, &tools), BCV_E_INVALID);
    finish_runtime(rt);
}

static void tools_and_two_clients(void) {
    bcv_handle_t rt = new_runtime(), tools = 0;
    make_db(path_of("src.db"), 2000);

    /* Create the container and upload the database with the tools (no cache). */
    OK(bcv_container_open(container_url(), NULL, 4, &tools));
    OK(bcv_container_create(tools, 65536, 0, false));
    CHECK_EQ(bcv_container_create(tools, 65536, 0, false), BCV_E_EXISTS);
    CHECK_EQ(bcv_container_create(tools, 1000, 0, true), BCV_E_INVALID); /* not a power of two */
    struct progress up = {0};
    uint32_t version = 0;
    OK(bcv_container_upload_file(tools, path_of("src.db"), "main.db", on_progress, &up, &version));
    CHECK_EQ(version, 1);
    CHECK(atomic_load(&up.calls) > 1);
    CHECK(atomic_load(&up.done) == atomic_load(&up.total) && atomic_load(&up.total) > 65536);
    CHECK_EQ(bcv_container_upload_file(tools, path_of("missing.db"), "x.db", NULL, NULL, NULL), BCV_E_IO);
    bcv_bytes_t json = {0};
    OK(bcv_container_list(tools, &json));
    CHECK(has(&json, "\"name\":\"main.db\""));
    bcv_bytes_free(&json);
    CHECK(json.data == NULL && json.len == 0);
    OK(bcv_container_manifest_json(tools, &json));
    CHECK(has(&json, "\"block_size\":65536"));
    bcv_bytes_free(&json);

    /* Download it back: the same rows, read with SQLite's own VFS. */
    uint64_t got = 0;
    struct progress down = {0};
    OK(bcv_container_download_file(tools, "main.db", path_of("down.db"), on_progress, &down, &got));
    CHECK(got > 0 && got % 65536 == 0);
    CHECK(atomic_load(&down.calls) > 0);
    CHECK_EQ(query_int(NULL, path_of("down.db"), "SELECT count(*) FROM items"), 2000);
    CHECK_EQ(bcv_container_download_file(tools, "nope.db", path_of("nope.db"), NULL, NULL, NULL), BCV_E_NOT_FOUND);

    /* Client one: attach (alias from the URL), query through SQLite. */
    bcv_handle_t one = new_vfs(rt, "cache-one", "bcv-c-one", 4);
    char alias[64], name[32];
    size_t alias_len = 0;
    OK(bcv_vfs_attach(one, container_url(), NULL, 0, alias, sizeof alias, &alias_len));
    CHECK(strcmp(alias, "container") == 0 && alias_len == 9);
    OK(bcv_vfs_attach(one, container_url(), NULL, BCV_ATTACH_IF_NOT_ATTACHED, NULL, 0, NULL));
    CHECK_EQ(bcv_vfs_attach(one, container_url(), NULL, 0, NULL, 0, NULL), BCV_E_EXISTS);
    CHECK_EQ(bcv_vfs_attach(one, container_url(), "x", 0x80, NULL, 0, NULL), BCV_E_INVALID);
    CHECK_EQ(bcv_vfs_attach(one, path_of("no-container"), "y", 0, NULL, 0, NULL), BCV_E_NOT_FOUND);
    OK(bcv_vfs_name(one, name, sizeof name, NULL));
    CHECK(strcmp(name, "bcv-c-one") == 0);
    OK(bcv_vfs_attached_json(one, &json));
    CHECK(has(&json, "\"container\""));
    bcv_bytes_free(&json);
    CHECK_EQ(query_int("bcv-c-one", "/container/main.db", "SELECT count(*) FROM items"), 2000);

    /* An unknown alias: SQLite says CANTOPEN, bcv says why. */
    sqlite3 *db = NULL;
    CHECK(sqlite3_open_v2("/nosuch/main.db", &db, SQLITE_OPEN_READWRITE, "bcv-c-one") != SQLITE_OK);
    sqlite3_close(db);
    char why[256];
    size_t why_len = 0;
    OK(bcv_vfs_last_error(why, sizeof why, &why_len));
    CHECK(why_len > 0 && strstr(why, "nosuch") != NULL);

    /* Client two: its own cache and VFS name, attached before client one writes. */
    bcv_handle_t two = new_vfs(rt, "cache-two", "bcv-c-two", 4);
    OK(bcv_vfs_attach(two, container_url(), "shared", 0, NULL, 0, NULL));
    CHECK_EQ(query_int("bcv-c-two", "/shared/main.db", "SELECT count(*) FROM items"), 2000);
    /* The cache directory belongs to one VFS. */
    bcv_vfs_config_t cfg;
    OK(bcv_vfs_config_init(&cfg));
    cfg.cache_dir = path_of("cache-two");
    cfg.name = "bcv-c-dup";
    bcv_handle_t dup = 0;
    CHECK_EQ(bcv_vfs_new(rt, &cfg, &dup), BCV_E_CACHE_BUSY);

    /* Client one writes and uploads; client two polls and sees the rows. */
    CHECK_EQ(exec_sql("bcv-c-one", "/container/main.db",
                      "WITH RECURSIVE c(i) AS (SELECT 2001 UNION ALL SELECT i+1 FROM c WHERE i<2010)"
                      " INSERT INTO items SELECT i, 'new', randomblob(100) FROM c"),
             SQLITE_OK);
    OK(bcv_vfs_databases(one, "container", &json));
    CHECK(has(&json, "\"has_local_changes\":true"));
    bcv_bytes_free(&json);
    CHECK_EQ(bcv_vfs_detach(one, "container"), BCV_E_BUSY); /* local changes not uploaded */
    bcv_upload_report_t ur;
    memset(&ur, 0xff, sizeof ur);
    OK(bcv_vfs_upload(one, "container", -1, &ur, &json));
    CHECK_EQ(ur.databases, 1);
    CHECK(ur.blocks_written >= 1 && ur.bytes_written == ur.blocks_written * 65536);
    CHECK(has(&json, "[\"main.db\",2]"));
    bcv_bytes_free(&json);
    bcv_poll_report_t pr;
    OK(bcv_vfs_poll(two, "shared", &pr, &json));
    CHECK(pr.manifest_changed && pr.updated == 1 && pr.conflicts == 0);
    CHECK(has(&json, "\"updated\":[\"main.db\"]"));
    bcv_bytes_free(&json);
    CHECK_EQ(query_int("bcv-c-two", "/shared/main.db", "SELECT count(*) FROM items"), 2010);
    OK(bcv_vfs_poll(two, "shared", &pr, NULL));
    CHECK(!pr.manifest_changed && pr.updated == 0);

    /* Two writers: one uploads first; the other's upload conflicts and loses nothing. */
    CHECK_EQ(exec_sql("bcv-c-one", "/container/main.db", "INSERT INTO items VALUES (5000, 'one', NULL)"), SQLITE_OK);
    CHECK_EQ(exec_sql("bcv-c-two", "/shared/main.db", "INSERT INTO items VALUES (6000, 'two', NULL)"), SQLITE_OK);
    OK(bcv_vfs_upload(one, "container", -1, NULL, NULL));
    CHECK_EQ(bcv_vfs_upload(two, "shared", -1, &ur, NULL), BCV_E_CONFLICT);
    CHECK(strstr(bcv_last_error_message(), "poll") != NULL);
    CHECK_EQ(query_int("bcv-c-two", "/shared/main.db", "SELECT count(*) FROM items WHERE id = 6000"), 1);
    OK(bcv_vfs_databases(two, "shared", &json));
    CHECK(has(&json, "\"has_local_changes\":true"));
    bcv_bytes_free(&json);
    CHECK_EQ(query_int("bcv-c-one", "/container/main.db", "SELECT count(*) FROM items WHERE id = 5000"), 1);
    /* Take the other version, redo the change on top of it, upload. */
    OK(bcv_vfs_revert(two, "shared", "main.db", &json));
    CHECK(has(&json, "[\"main.db\"]"));
    bcv_bytes_free(&json);
    CHECK_EQ(query_int("bcv-c-two", "/shared/main.db", "SELECT count(*) FROM items WHERE id IN (5000, 6000)"), 1);
    CHECK_EQ(exec_sql("bcv-c-two", "/shared/main.db", "INSERT INTO items VALUES (6000, 'two', NULL)"), SQLITE_OK);
    OK(bcv_vfs_upload(two, "shared", -1, &ur, NULL));
    OK(bcv_vfs_poll(one, "container", &pr, NULL));
    CHECK_EQ(pr.updated, 1);
    CHECK_EQ(query_int("bcv-c-one", "/container/main.db", "SELECT count(*) FROM items"), 2012);

    /* Copy and delete through a VFS, then garbage collection with the tools. */
    OK(bcv_vfs_copy(one, "container", "main.db", "copy.db"));
    CHECK_EQ(bcv_vfs_copy(one, "container", "main.db", "copy.db"), BCV_E_EXISTS);
    CHECK_EQ(bcv_vfs_copy(one, "container", "absent.db", "z.db"), BCV_E_NOT_FOUND);
    CHECK_EQ(query_int("bcv-c-one", "/container/copy.db", "SELECT count(*) FROM items"), 2012);
    OK(bcv_vfs_manifest_json(one, "container", &json));
    CHECK(has(&json, "\"copy.db\""));
    bcv_bytes_free(&json);
    OK(bcv_vfs_delete(one, "container", "copy.db"));
    CHECK_EQ(bcv_vfs_delete(one, "container", "copy.db"), BCV_E_NOT_FOUND);
    bcv_cleanup_report_t cr;
    OK(bcv_container_cleanup(tools, 0, true, &cr));
    CHECK(cr.deleted >= 1 && cr.waiting == 0);
    OK(bcv_container_meter_json(tools, &json));
    CHECK(has(&json, "\"conditional_put\""));
    bcv_bytes_free(&json);
    OK(bcv_vfs_meter_json(one, "container", &json));
    CHECK(has(&json, "\"total\""));
    bcv_bytes_free(&json);
    bcv_cache_stats_t cs;
    bcv_cache_usage_t cu;
    OK(bcv_vfs_cache_stats(one, &cs, &cu));
    CHECK(cs.bytes_fetched > 0 && cu.block_size == 65536 && cu.capacity == 64ull << 20);

    /* The poll reports the deletion; both clients still read everything after the cleanup. */
    OK(bcv_vfs_poll(two, "shared", &pr, NULL));
    CHECK_EQ(query_int("bcv-c-two", "/shared/main.db", "SELECT count(*) FROM items"), 2012);

    /* Detach once everything is uploaded; the alias is gone. */
    OK(bcv_vfs_detach(one, "container"));
    CHECK_EQ(bcv_vfs_poll(one, "container", NULL, NULL), BCV_E_NOT_FOUND);
    CHECK_EQ(bcv_vfs_detach(one, "container"), BCV_E_NOT_FOUND);

    OK(bcv_release(one));
    OK(bcv_release(two));
    OK(bcv_release(tools));
    finish_runtime(rt);
}

static void jobs(void) {
    bcv_handle_t rt = new_runtime();
    /* A fresh cache: everything has to be fetched. */
    bcv_handle_t three = new_vfs(rt, "cache-three", "bcv-c-three", 2);
    OK(bcv_vfs_attach(three, container_url(), "p", 0, NULL, 0, NULL));
    bcv_handle_t job = 0;
    CHECK_EQ(bcv_vfs_prefetch_start(three, "p", "absent.db", &job), BCV_E_NOT_FOUND);
    CHECK_EQ(bcv_vfs_prefetch_start(three, "nope", "main.db", &job), BCV_E_NOT_FOUND);
    OK(bcv_vfs_prefetch_start(three, "p", "main.db", &job));
    char what[64];
    OK(bcv_job_description(job, what, sizeof what, NULL));
    CHECK(strcmp(what, "prefetch of p/main.db") == 0);
    uint32_t st = 99;
    OK(bcv_job_status(job, &st));
    CHECK(st == BCV_JOB_RUNNING || st == BCV_JOB_DONE);
    bcv_bytes_t outcome = {0};
    OK(bcv_job_wait(job, WAIT_MS, &outcome));
    CHECK(has(&outcome, "\"prefetch\""));
    bcv_bytes_free(&outcome);
    OK(bcv_job_wait(job, 0, NULL)); /* the same answer again */
    uint64_t done = 0, total = 0;
    OK(bcv_job_progress(job, &done, &total));
    CHECK(done == total && total >= 4 * 65536);
    OK(bcv_job_status(job, &st));
    CHECK_EQ(st, BCV_JOB_DONE);
    uint32_t state = 99;
    OK(bcv_handle_state(job, &state));
    OK(bcv_release(job));
    bcv_cache_stats_t cs;
    OK(bcv_vfs_cache_stats(three, &cs, NULL));
    CHECK(cs.bytes_fetched >= total);

    /* A synchronous prefetch of a cached database fetches nothing; progress is still reported. */
    struct progress pf = {0};
    bcv_prefetch_report_t rep;
    OK(bcv_vfs_prefetch(three, "p", "main.db", on_progress, &pf, &rep));
    CHECK(rep.blocks >= 4 && rep.bytes_fetched == 0);
    CHECK_EQ((uint64_t)atomic_load(&pf.calls), rep.blocks);
    CHECK_EQ(bcv_vfs_prefetch(three, "p", "absent.db", NULL, NULL, NULL), BCV_E_NOT_FOUND);

    /* An upload job with something to upload. */
    CHECK_EQ(exec_sql("bcv-c-three", "/p/main.db", "UPDATE items SET name = 'three' WHERE id < 50"), SQLITE_OK);
    OK(bcv_vfs_upload_start(three, "p", 0, &job));
    OK(bcv_job_wait(job, WAIT_MS, &outcome));
    CHECK(has(&outcome, "\"upload\"") && has(&outcome, "\"main.db\""));
    bcv_bytes_free(&outcome);
    OK(bcv_release(job));

    /* A job released before it ends keeps working; closing the VFS afterwards is fine. */
    OK(bcv_vfs_prefetch_start(three, "p", "main.db", &job));
    OK(bcv_release(job));
    CHECK_EQ(bcv_job_wait(job, 0, NULL), BCV_E_BAD_HANDLE);

    /* A closed VFS refuses further calls but stays a valid handle until released. */
    OK(bcv_close(three));
    OK(bcv_close(three)); /* idempotent */
    CHECK_EQ(bcv_vfs_poll(three, "p", NULL, NULL), BCV_E_CLOSED);
    CHECK_EQ(bcv_vfs_prefetch_start(three, "p", "main.db", &job), BCV_E_CLOSED);
    OK(bcv_handle_state(three, &state));
    CHECK(state == BCV_STATE_CLOSED || state == BCV_STATE_CLOSING);
    OK(bcv_close_and_wait(three, WAIT_MS));
    OK(bcv_release(three));
    finish_runtime(rt);
}

/* ---- A store implemented in C: an in-memory map with a gate that holds block reads ---- */

struct mem_obj {
    char *name;
    uint8_t *data;
    size_t len;
    unsigned long etag;
    struct mem_obj *next;
};

struct mem_store {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mem_obj *objs;
    unsigned long next_etag;
    int gate_closed; /* block-object reads wait while set */
    int waiting;     /* reads waiting at the gate */
    atomic_int calls;
    atomic_int destroyed;
};

static struct mem_obj *mem_find(struct mem_store *s, const char *name) {
    for (struct mem_obj *o = s->objs; o; o = o->next)
        if (strcmp(o->name, name) == 0) return o;
    return NULL;
}

static int is_block(const char *name) {
    return strcmp(name, "manifest.bcv") != 0 && strcmp(name, "bcv_kv.bcv") != 0;
}

static void mem_gate(struct mem_store *s, const char *name) {
    if (!is_block(name)) return;
    s->waiting++;
    pthread_cond_broadcast(&s->cv);
    while (s->gate_closed) pthread_cond_wait(&s->cv, &s->mu);
    s->waiting--;
}

static void set_etag(bcv_store_reply_t *reply, unsigned long etag) {
    char tag[32];
    snprintf(tag, sizeof tag, "e%lu", etag);
    bcv_store_reply_set_etag(reply, tag);
}

static bcv_status_t mem_get(void *user, const char *name, bcv_store_reply_t *reply) {
    struct mem_store *s = user;
    atomic_fetch_add(&s->calls, 1);
    pthread_mutex_lock(&s->mu);
    mem_gate(s, name);
    struct mem_obj *o = mem_find(s, name);
    bcv_status_t rc = BCV_E_NOT_FOUND;
    if (o) {
        bcv_store_reply_set_data(reply, o->data, o->len);
        set_etag(reply, o->etag);
        rc = BCV_OK;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static bcv_status_t mem_get_range(void *user, const char *name, uint64_t start, uint64_t len,
                                  bcv_store_reply_t *reply) {
    struct mem_store *s = user;
    atomic_fetch_add(&s->calls, 1);
    pthread_mutex_lock(&s->mu);
    mem_gate(s, name);
    struct mem_obj *o = mem_find(s, name);
    bcv_status_t rc = BCV_E_NOT_FOUND;
    if (o) {
        size_t from = start < o->len ? (size_t)start : o->len;
        size_t n = o->len - from < len ? o->len - from : (size_t)len;
        uint8_t *buf = NULL;
        rc = bcv_store_reply_alloc(reply, n, &buf); /* written in place: no second copy */
        if (rc == BCV_OK && n > 0) memcpy(buf, o->data + from, n);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static bcv_status_t mem_head(void *user, const char *name, bcv_store_reply_t *reply) {
    struct mem_store *s = user;
    atomic_fetch_add(&s->calls, 1);
    pthread_mutex_lock(&s->mu);
    struct mem_obj *o = mem_find(s, name);
    if (o) {
        bcv_store_reply_set_size(reply, o->len);
        set_etag(reply, o->etag);
    }
    pthread_mutex_unlock(&s->mu);
    return o ? BCV_OK : BCV_E_NOT_FOUND;
}

/* Writes under the lock; `expect` is NULL (overwrite), "" (only if absent) or an ETag. */
static bcv_status_t mem_write(struct mem_store *s, const char *name, const uint8_t *data, size_t len,
                              const char *expect, bcv_store_reply_t *reply) {
    atomic_fetch_add(&s->calls, 1);
    pthread_mutex_lock(&s->mu);
    struct mem_obj *o = mem_find(s, name);
    bcv_status_t rc = BCV_OK;
    if (expect && !*expect && o) {
        rc = BCV_E_EXISTS;
    } else if (expect && *expect) {
        char tag[32];
        if (o) snprintf(tag, sizeof tag, "e%lu", o->etag);
        if (!o || strcmp(tag, expect) != 0) rc = BCV_E_CONFLICT;
    }
    if (rc == BCV_OK) {
        if (!o) {
            o = calloc(1, sizeof *o);
            o->name = strdup(name);
            o->next = s->objs;
            s->objs = o;
        }
        free(o->data);
        o->data = malloc(len ? len : 1);
        if (len) memcpy(o->data, data, len);
        o->len = len;
        o->etag = ++s->next_etag;
        set_etag(reply, o->etag);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static bcv_status_t mem_put(void *user, const char *name, const uint8_t *data, size_t len, bcv_store_reply_t *r) {
    return mem_write(user, name, data, len, NULL, r);
}

static bcv_status_t mem_put_if_absent(void *user, const char *name, const uint8_t *data, size_t len,
                                      bcv_store_reply_t *r) {
    return mem_write(user, name, data, len, "", r);
}

static bcv_status_t mem_put_if_match(void *user, const char *name, const uint8_t *data, size_t len,
                                     const char *etag, bcv_store_reply_t *r) {
    return mem_write(user, name, data, len, etag, r);
}

static bcv_status_t mem_delete(void *user, const char *name, bcv_store_reply_t *reply) {
    struct mem_store *s = user;
    (void)reply;
    atomic_fetch_add(&s->calls, 1);
    pthread_mutex_lock(&s->mu);
    bcv_status_t rc = BCV_E_NOT_FOUND;
    for (struct mem_obj **p = &s->objs; *p; p = &(*p)->next) {
        if (strcmp((*p)->name, name) == 0) {
            struct mem_obj *o = *p;
            *p = o->next;
            free(o->name);
            free(o->data);
            free(o);
            rc = BCV_OK;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static bcv_status_t mem_list(void *user, bcv_store_reply_t *reply) {
    struct mem_store *s = user;
    atomic_fetch_add(&s->calls, 1);
    pthread_mutex_lock(&s->mu);
    for (struct mem_obj *o = s->objs; o; o = o->next) bcv_store_reply_add_object(reply, o->name, o->len);
    pthread_mutex_unlock(&s->mu);
    return BCV_OK;
}

static void mem_destroy(void *user) {
    struct mem_store *s = user;
    atomic_fetch_add(&s->destroyed, 1);
}

static bcv_store_callbacks_t mem_callbacks(struct mem_store *s) {
    bcv_store_callbacks_t cb = {
        .user_data = s,
        .get = mem_get,
        .get_range = mem_get_range,
        .head = mem_head,
        .put = mem_put,
        .put_if_absent = mem_put_if_absent,
        .put_if_match = mem_put_if_match,
        .delete_object = mem_delete,
        .list = mem_list,
        .destroy = mem_destroy,
    };
    return cb;
}

static void mem_free(struct mem_store *s) {
    while (s->objs) {
        struct mem_obj *o = s->objs;
        s->objs = o->next;
        free(o->name);
        free(o->data);
        free(o);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static void set_gate(struct mem_store *s, int closed) {
    pthread_mutex_lock(&s->mu);
    s->gate_closed = closed;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Waits (up to WAIT_MS) until a read is held at the gate. */
static int wait_for_gate(struct mem_store *s) {
    double deadline = now_ms() + WAIT_MS;
    pthread_mutex_lock(&s->mu);
    while (s->waiting == 0 && now_ms() < deadline) {
        pthread_mutex_unlock(&s->mu);
        sleep_ms(5);
        pthread_mutex_lock(&s->mu);
    }
    int held = s->waiting > 0;
    pthread_mutex_unlock(&s->mu);
    return held;
}

static int wait_destroyed(struct mem_store *s, int n) {
    for (int i = 0; i < WAIT_MS / 10 && atomic_load(&s->destroyed) < n; i++) sleep_ms(10);
    return atomic_load(&s->destroyed);
}

static void custom_store_in_c(void) {
    bcv_handle_t rt = new_runtime(), tools = 0;
    struct mem_store s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    bcv_store_callbacks_t cb = mem_callbacks(&s);

    /* The tools over the C store: create, upload, list. */
    OK(bcv_container_open_custom(&cb, "c-memory", NULL, 4, &tools));
    OK(bcv_container_create(tools, 65536, 0, false));
    OK(bcv_container_upload_file(tools, path_of("src.db"), "main.db", NULL, NULL, NULL));
    bcv_bytes_t json = {0};
    OK(bcv_container_list(tools, &json));
    CHECK(has(&json, "\"main.db\""));
    bcv_bytes_free(&json);
    OK(bcv_release(tools));
    CHECK_EQ(wait_destroyed(&s, 1), 1); /* the tools' copy of the table is done with */

    /* A VFS attached to it: query, write, upload (conditional writes go through put_if_match). */
    bcv_handle_t four = new_vfs(rt, "cache-four", "bcv-c-four", 1);
    OK(bcv_vfs_attach_store(four, &cb, "c-memory", NULL, "mem"));
    CHECK_EQ(bcv_vfs_attach_store(four, &cb, "c-memory", NULL, "mem"), BCV_E_EXISTS);
    CHECK_EQ(wait_destroyed(&s, 2), 2); /* a failed attach runs destroy too */
    CHECK_EQ(query_int("bcv-c-four", "/mem/main.db", "SELECT count(*) FROM items"), 2000);
    CHECK_EQ(exec_sql("bcv-c-four", "/mem/main.db", "DELETE FROM items WHERE id > 1000"), SQLITE_OK);
    OK(bcv_vfs_upload(four, "mem", 0, NULL, NULL));
    CHECK(atomic_load(&s.calls) > 10);

    /* A second client over the same store with a fresh cache: its prefetch is held at the gate, then
     * cancelled with bcv_close. One request at a time, so the job stops after the block it is fetching. */
    bcv_handle_t five = new_vfs(rt, "cache-five", "bcv-c-five", 1);
    OK(bcv_vfs_attach_store(five, &cb, "c-memory", NULL, "mem2"));
    set_gate(&s, 1);
    bcv_handle_t job = 0;
    OK(bcv_vfs_prefetch_start(five, "mem2", "main.db", &job));
    CHECK(wait_for_gate(&s));
    CHECK_EQ(bcv_job_wait(job, 0, NULL), BCV_E_TIMEOUT);
    uint32_t st = 99;
    OK(bcv_job_status(job, &st));
    CHECK_EQ(st, BCV_JOB_RUNNING);
    OK(bcv_close(job)); /* cancel */
    OK(bcv_job_status(job, &st));
    CHECK_EQ(st, BCV_JOB_CANCELLED);
    set_gate(&s, 0);
    CHECK_EQ(bcv_job_wait(job, WAIT_MS, NULL), BCV_E_CLOSED);
    CHECK(strstr(bcv_last_error_message(), "cancelled") != NULL);
    CHECK_EQ(bcv_job_wait(job, WAIT_MS, NULL), BCV_E_CLOSED); /* the same status every time */
    uint32_t reason = 0;
    OK(bcv_close_reason(job, &reason, NULL));
    CHECK_EQ(reason, BCV_REASON_SELF);
    OK(bcv_release(job));

    /* Release in any order: the VFS first, while its next job is held at the gate; then the job. */
    set_gate(&s, 1);
    OK(bcv_vfs_prefetch_start(five, "mem2", "main.db", &job));
    CHECK(wait_for_gate(&s));
    OK(bcv_release(five));
    OK(bcv_job_status(job, &st));
    set_gate(&s, 0);
    bcv_status_t w = bcv_job_wait(job, WAIT_MS, NULL);
    CHECK(w == BCV_OK || w == BCV_E_CLOSED); /* it ran on, or its container was closed with the VFS */
    OK(bcv_release(job));

    OK(bcv_release(four));
    finish_runtime(rt);
    /* The tools, the failed attach, mem and mem2: each copy of the table destroyed exactly once. */
    CHECK_EQ(wait_destroyed(&s, 4), 4);
    sleep_ms(50);
    CHECK_EQ(atomic_load(&s.destroyed), 4);
    mem_free(&s);
}

/* ---- The credentials callback ---- */

struct auth_state {
    atomic_int calls;
    atomic_int freed;
    atomic_int refuse;
    char key[128];
    char storage[16], account[64], container[96];
};

static bcv_status_t auth_cb(void *user, const char *storage, const char *account, const char *container,
                            bcv_auth_answer_t *answer) {
    struct auth_state *a = user;
    atomic_fetch_add(&a->calls, 1);
    snprintf(a->storage, sizeof a->storage, "%s", storage);
    snprintf(a->account, sizeof a->account, "%s", account);
    snprintf(a->container, sizeof a->container, "%s", container);
    if (atomic_load(&a->refuse)) {
        bcv_auth_answer_refuse(answer, "no token for you");
        return BCV_E_AUTH;
    }
    return bcv_auth_answer_set(answer, BCV_AUTH_AZURE_ACCESS_KEY, a->key);
}

static void auth_free(void *user) {
    struct auth_state *a = user;
    atomic_fetch_add(&a->freed, 1);
}

static int wait_freed(struct auth_state *a, int n) {
    for (int i = 0; i < WAIT_MS / 10 && atomic_load(&a->freed) < n; i++) sleep_ms(10);
    return atomic_load(&a->freed);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Splits az://NAME?...&access_key=K&... into the URL without the key and the decoded key. */
static int split_key(const char *url, char *without, size_t cap, char *key, size_t key_cap) {
    const char *q = strchr(url, '?');
    if (!q) return 0;
    size_t n = (size_t)(q - url);
    if (n + 2 > cap) return 0;
    memcpy(without, url, n);
    without[n] = 0;
    int found = 0, first = 1;
    char *params = strdup(q + 1), *save = NULL;
    for (char *p = strtok_r(params, "&", &save); p; p = strtok_r(NULL, "&", &save)) {
        if (strncmp(p, "access_key=", 11) == 0) {
            size_t k = 0;
            for (const char *c = p + 11; *c && k + 1 < key_cap; c++) {
                if (*c == '%' && hexval(c[1]) >= 0 && hexval(c[2]) >= 0) {
                    key[k++] = (char)(hexval(c[1]) * 16 + hexval(c[2]));
                    c += 2;
                } else {
                    key[k++] = *c == '+' ? ' ' : *c;
                }
            }
            key[k] = 0;
            found = 1;
        } else if (strlen(without) + strlen(p) + 2 < cap) {
            strcat(without, first ? "?" : "&");
            strcat(without, p);
            first = 0;
        }
    }
    free(params);
    return found;
}

static void auth_callback(void) {
    bcv_handle_t rt = new_runtime(), tools = 0, vfs = 0;
    struct auth_state a = {0};
    bcv_store_options_t o;
    OK(bcv_store_options_init(&o));
    CHECK(o.retries == 4 && o.request_timeout_ms == 30000 && o.auth == NULL);
    o.auth = auth_cb;
    o.auth_user_data = &a;
    o.auth_user_data_free = auth_free;

    /* The user data is freed exactly once, also when the call fails, and after the last store otherwise. */
    CHECK_EQ(bcv_container_open("relative", &o, 1, &tools), BCV_E_INVALID);
    CHECK_EQ(wait_freed(&a, 1), 1);
    bcv_vfs_config_t cfg;
    OK(bcv_vfs_config_init(&cfg));
    cfg.store = o;
    CHECK_EQ(bcv_vfs_new(rt, &cfg, &vfs), BCV_E_INVALID); /* no cache_dir */
    CHECK_EQ(wait_freed(&a, 2), 2);
    OK(bcv_container_open(path_of("auth-unused"), &o, 1, &tools)); /* local stores never ask */
    OK(bcv_container_create(tools, 65536, 0, false));
    OK(bcv_release(tools));
    CHECK_EQ(wait_freed(&a, 3), 3);
    CHECK_EQ(atomic_load(&a.calls), 0);

    const char *azure = getenv("BCV_TEST_AZURE_URL");
    if (!azure || !*azure) {
        const char *require = getenv("BCV_REQUIRE_SERVERS");
        /* scripts/test-c.sh starts Azurite and requires it: a missing server is a failure there. */
        CHECK(!(require && strcmp(require, "1") == 0));
        printf("     (Azure part skipped: BCV_TEST_AZURE_URL is not set)\n");
        finish_runtime(rt);
        return;
    }
    char url[512];
    CHECK(split_key(azure, url, sizeof url, a.key, sizeof a.key));

    /* The tools against Azurite, the account key coming from the callback only. */
    OK(bcv_container_open(url, &o, 4, &tools));
    OK(bcv_container_create(tools, 65536, 0, true));
    OK(bcv_container_upload_file(tools, path_of("src.db"), "main.db", NULL, NULL, NULL));
    CHECK(atomic_load(&a.calls) > 0);
    CHECK(strcmp(a.storage, "azure") == 0);
    CHECK(strcmp(a.account, "devstoreaccount1") == 0);
    CHECK(strlen(a.container) > 0 && strstr(azure, a.container) != NULL);

    /* A VFS with the same callback in its configuration. */
    cfg.cache_dir = path_of("cache-azure");
    cfg.name = "bcv-c-azure";
    OK(bcv_vfs_new(rt, &cfg, &vfs));
    OK(bcv_vfs_attach(vfs, url, "az", 0, NULL, 0, NULL));
    CHECK_EQ(query_int("bcv-c-azure", "/az/main.db", "SELECT count(*) FROM items"), 2000);

    /* A refusal fails the request with the callback's reason. */
    atomic_store(&a.refuse, 1);
    bcv_bytes_t json = {0};
    CHECK_EQ(bcv_container_list(tools, &json), BCV_E_STORE);
    CHECK(strstr(bcv_last_error_message(), "no token for you") != NULL);
    atomic_store(&a.refuse, 0);
    uint64_t deleted = 0;
    OK(bcv_container_destroy(tools, &deleted));
    CHECK(deleted >= 4);
    OK(bcv_release(tools));
    OK(bcv_release(vfs));
    finish_runtime(rt);
    CHECK_EQ(wait_freed(&a, 5), 5);
}

static void runtime_freed_first(void) {
    bcv_handle_t rt = new_runtime();
    bcv_handle_t six = new_vfs(rt, "cache-six", "bcv-c-six", 2);
    OK(bcv_vfs_attach(six, container_url(), "c", 0, NULL, 0, NULL));
    bcv_handle_t job = 0;
    OK(bcv_vfs_prefetch_start(six, "c", "main.db", &job));
    OK(bcv_runtime_free(rt)); /* closes the VFS and its job */
    CHECK_EQ(bcv_vfs_poll(six, "c", NULL, NULL), BCV_E_CLOSED);
    bcv_status_t w = bcv_job_wait(job, WAIT_MS, NULL);
    CHECK(w == BCV_OK || w == BCV_E_CLOSED);
    OK(bcv_release(job));
    OK(bcv_release(six));
    CHECK_EQ(bcv_release(six), BCV_E_BAD_HANDLE);
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
/* The virtual tables on a connection the program opened with its own SQLite, and bcv_kv transactions. */
static void virtual_tables(void) {
    bcv_handle_t rt = new_runtime(), tools = 0;
    make_db(path_of("vt.db"), 500);
    char url[128];
    snprintf(url, sizeof url, "%s", path_of("vt-bucket"));
    OK(bcv_container_open(url, NULL, 4, &tools));
    OK(bcv_container_create(tools, 65536, 0, false));
    OK(bcv_container_upload_file(tools, path_of("vt.db"), "main.db", NULL, NULL, NULL));
    bcv_handle_t a = new_vfs(rt, "cache-vt-a", "bcv-c-vt-a", 4), b = new_vfs(rt, "cache-vt-b", "bcv-c-vt-b", 4);
    OK(bcv_vfs_attach(a, url, "vt", 0, NULL, 0, NULL));
    OK(bcv_vfs_attach(b, url, "vt", 0, NULL, 0, NULL));
    sqlite3 *da = NULL, *db = NULL;
    CHECK_EQ(sqlite3_open_v2("/vt/main.db", &da, SQLITE_OPEN_READWRITE, "bcv-c-vt-a"), SQLITE_OK);
    CHECK_EQ(sqlite3_open_v2("/vt/main.db", &db, SQLITE_OPEN_READWRITE, "bcv-c-vt-b"), SQLITE_OK);
    CHECK_EQ(bcv_vfs_register_vtabs(a, NULL), BCV_E_INVALID);
    OK(bcv_vfs_register_vtabs(a, da));
    OK(bcv_vfs_register_vtabs(b, db));
    sqlite3_stmt *st = NULL;
    CHECK_EQ(sqlite3_prepare_v2(da, "SELECT database, version, nblock >= 1, state FROM bcv_database", -1, &st, NULL),
             SQLITE_OK);
    CHECK_EQ(sqlite3_step(st), SQLITE_ROW);
    CHECK(strcmp((const char *)sqlite3_column_text(st, 0), "main.db") == 0);
    CHECK_EQ(sqlite3_column_int(st, 1), 1);
    CHECK_EQ(sqlite3_column_int(st, 2), 1);
    CHECK(strcmp((const char *)sqlite3_column_text(st, 3), "") == 0);
    CHECK_EQ(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    CHECK_EQ(sqlite3_exec(da, "INSERT INTO bcv_kv VALUES ('owner', 'c')", NULL, NULL, NULL), SQLITE_OK);
    /* The other client reads it from the container; then both race in transactions and one loses. */
    CHECK_EQ(sqlite3_exec(da, "BEGIN; SELECT * FROM bcv_kv", NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(db, "BEGIN; SELECT * FROM bcv_kv", NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(da, "UPDATE bcv_kv SET value = 'a' WHERE name = 'owner'; COMMIT", NULL, NULL, NULL),
             SQLITE_OK);
    CHECK_EQ(sqlite3_exec(db, "UPDATE bcv_kv SET value = 'b' WHERE name = 'owner'", NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_BUSY);
    CHECK_EQ(sqlite3_extended_errcode(db), SQLITE_BUSY_SNAPSHOT);
    CHECK(strstr(sqlite3_errmsg(db), "changed by another client") != NULL);
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    CHECK_EQ(sqlite3_prepare_v2(db, "SELECT value FROM bcv_kv WHERE name = 'owner'", -1, &st, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_step(st), SQLITE_ROW);
    CHECK(strcmp((const char *)sqlite3_column_text(st, 0), "a") == 0);
    sqlite3_finalize(st);
    sqlite3_close(da);
    sqlite3_close(db);
    OK(bcv_release(a));
    OK(bcv_release(b));
    OK(bcv_release(tools));
    finish_runtime(rt);
}

/* ---- Secure containers ---- */

/* Counts the files under a directory that contain `needle` (static state for nftw). */
static const char *scan_needle;
static int scan_hits;

static int scan_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)ftw;
    if (flag != FTW_F || sb->st_size == 0) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char *buf = malloc((size_t)sb->st_size);
    size_t n = buf ? fread(buf, 1, (size_t)sb->st_size, f) : 0;
    if (n && memmem(buf, n, scan_needle, strlen(scan_needle))) {
        fprintf(stderr, "  (scan) \"%s\" is in %s\n", scan_needle, path);
        scan_hits++;
    }
    free(buf);
    fclose(f);
    return 0;
}

static int files_containing(const char *dir, const char *needle) {
    scan_needle = needle;
    scan_hits = 0;
    nftw(dir, scan_entry, 16, FTW_PHYS);
    return scan_hits;
}

/* A key provider knowing the keys in a small table; counts its calls. */
struct key_table {
    uint32_t ids[2];
    uint8_t keys[2][BCV_KEY_LEN];
    atomic_int asked, freed;
};

static bcv_status_t provide_key(void *user, uint32_t id, uint8_t *key_out) {
    struct key_table *t = user;
    atomic_fetch_add(&t->asked, 1);
    for (int i = 0; i < 2; i++) {
        if (t->ids[i] == id) {
            memcpy(key_out, t->keys[i], BCV_KEY_LEN);
            return BCV_OK;
        }
    }
    return BCV_E_NOT_FOUND;
}

static void free_key_table(void *user) {
    atomic_fetch_add(&((struct key_table *)user)->freed, 1);
}

/* An application cipher written here (a test cipher, not a secure one): 16 random nonce bytes, the data XORed
 * with a keystream derived from a secret, the nonce and the context, then a 16-byte tag over all of it. */
struct toy_cipher {
    uint64_t secret;
    atomic_int seals, opens, freed;
    int refuse; /* open always fails */
};

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

static uint64_t hash_bytes(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = mix(h, p[i]);
    return h;
}

static void toy_stream(const struct toy_cipher *c, const uint8_t *nonce, const uint8_t *ctx, size_t ctx_len,
                       const uint8_t *in, size_t n, uint8_t *out) {
    uint64_t seed = hash_bytes(hash_bytes(c->secret, nonce, 16), ctx, ctx_len);
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0) seed = mix(seed, i);
        out[i] = in[i] ^ (uint8_t)(seed >> (8 * (i % 8)));
    }
}

static void toy_tag(const struct toy_cipher *c, const uint8_t *ctx, size_t ctx_len, const uint8_t *body, size_t n,
                    uint8_t *tag) {
    uint64_t a = hash_bytes(hash_bytes(mix(c->secret, 1), ctx, ctx_len), body, n);
    uint64_t b = mix(a, c->secret);
    memcpy(tag, &a, 8);
    memcpy(tag + 8, &b, 8);
}

static bcv_status_t toy_seal(void *user, const uint8_t *ctx, size_t ctx_len, const uint8_t *in, size_t n,
                             uint8_t *out) {
    struct toy_cipher *c = user;
    atomic_fetch_add(&c->seals, 1);
    uint64_t r1 = ((uint64_t)rand() << 32) ^ (uint64_t)rand() ^ (uint64_t)now_ms();
    uint64_t r2 = mix(r1, (uint64_t)atomic_load(&c->seals));
    memcpy(out, &r1, 8);
    memcpy(out + 8, &r2, 8);
    toy_stream(c, out, ctx, ctx_len, in, n, out + 16);
    toy_tag(c, ctx, ctx_len, out, 16 + n, out + 16 + n);
    return BCV_OK;
}

static bcv_status_t toy_open(void *user, const uint8_t *ctx, size_t ctx_len, const uint8_t *in, size_t n,
                             uint8_t *out) {
    struct toy_cipher *c = user;
    atomic_fetch_add(&c->opens, 1);
    uint8_t tag[16];
    toy_tag(c, ctx, ctx_len, in, n - 16, tag);
    if (c->refuse || memcmp(tag, in + n - 16, 16) != 0) return BCV_E_AUTH;
    toy_stream(c, in, ctx, ctx_len, in + 16, n - BCV_SEAL_OVERHEAD, out);
    return BCV_OK;
}

static void toy_free(void *user) {
    atomic_fetch_add(&((struct toy_cipher *)user)->freed, 1);
}

static bcv_secure_t ring_of(const bcv_key_t *keys, size_t n, uint32_t current_key) {
    bcv_secure_t s;
    OK(bcv_secure_init(&s));
    s.keys = keys;
    s.key_count = n;
    s.current_key = current_key;
    return s;
}

static bcv_secure_t toy_secure(struct toy_cipher *c, const char *name) {
    bcv_secure_t s;
    OK(bcv_secure_init(&s));
    s.cipher_name = name;
    s.seal = toy_seal;
    s.open = toy_open;
    s.user_data = c;
    s.user_data_free = toy_free;
    return s;
}

#define CANARY "CANARY-7f3a-plaintext"

static void secure_containers(void) {
    bcv_handle_t rt = new_runtime(), tools = 0;
    char bucket[128];
    snprintf(bucket, sizeof bucket, "%s", path_of("secure-bucket"));
    make_db(path_of("secure-src.db"), 300);
    CHECK_EQ(exec_sql(NULL, path_of("secure-src.db"), "INSERT INTO items VALUES (100000, '" CANARY "', NULL)"),
             SQLITE_OK);

    bcv_key_t k1 = {1, {0}}, k2 = {2, {0}}, wrong = {1, {0}};
    OK(bcv_key_generate(k1.key));
    OK(bcv_key_generate(k2.key));
    OK(bcv_key_generate(wrong.key));
    CHECK(memcmp(k1.key, k2.key, BCV_KEY_LEN) != 0);
    CHECK_EQ(bcv_key_generate(NULL), BCV_E_INVALID);

    /* The tools create a secure container and upload the file sealed. */
    bcv_secure_t s = ring_of(&k1, 1, 1);
    OK(bcv_container_open_secure(bucket, NULL, 4, &s, &tools));
    OK(bcv_container_create(tools, 65536, 0, false));
    OK(bcv_container_upload_file(tools, path_of("secure-src.db"), "main.db", NULL, NULL, NULL));
    OK(bcv_release(tools));

    /* A VFS with the key reads and writes it; the new rows are uploaded sealed. */
    bcv_handle_t one = new_vfs(rt, "cache-sec-one", "bcv-c-sec-one", 4);
    s = ring_of(&k1, 1, 1);
    OK(bcv_vfs_attach_secure(one, bucket, "sec", 0, &s, NULL, 0, NULL));
    CHECK_EQ(query_int("bcv-c-sec-one", "/sec/main.db", "SELECT count(*) FROM items"), 301);
    CHECK_EQ(exec_sql("bcv-c-sec-one", "/sec/main.db", "INSERT INTO items VALUES (100001, 'second " CANARY "', NULL)"),
             SQLITE_OK);
    OK(bcv_vfs_upload(one, "sec", -1, NULL, NULL));
    /* Without the key, or with a wrong one, attaching fails clearly. */
    CHECK_EQ(bcv_vfs_attach(one, bucket, "nokey", 0, NULL, 0, NULL), BCV_E_SECURE);
    s = ring_of(&wrong, 1, 1);
    CHECK_EQ(bcv_vfs_attach_secure(one, bucket, "wrong", 0, &s, NULL, 0, NULL), BCV_E_AUTH);
    CHECK(strstr(bcv_last_error_message(), "bcv_secure.json") != NULL);
    /* A key for a plaintext container is refused too. */
    s = ring_of(&k1, 1, 1);
    CHECK_EQ(bcv_vfs_attach_secure(one, container_url(), "plain", 0, &s, NULL, 0, NULL), BCV_E_SECURE);
    CHECK(strcmp(bcv_status_name(BCV_E_SECURE), "BCV_E_SECURE") == 0);

    /* Rotation: a ring of both keys seals new data with key 2; a key provider knowing both reads everything. */
    bcv_handle_t two = new_vfs(rt, "cache-sec-two", "bcv-c-sec-two", 4);
    bcv_key_t both[2] = {k1, k2};
    s = ring_of(both, 2, 2);
    OK(bcv_vfs_attach_secure(two, bucket, "sec", 0, &s, NULL, 0, NULL));
    CHECK_EQ(exec_sql("bcv-c-sec-two", "/sec/main.db", "INSERT INTO items VALUES (100002, 'third', NULL)"), SQLITE_OK);
    OK(bcv_vfs_upload(two, "sec", -1, NULL, NULL));
    s = ring_of(both, 2, 3); /* no key 3 */
    CHECK_EQ(bcv_vfs_attach_secure(two, bucket, "bad", 0, &s, NULL, 0, NULL), BCV_E_INVALID);
    OK(bcv_release(two));
    struct key_table table = {{1, 2}, {{0}}, 0, 0};
    memcpy(table.keys[0], k1.key, BCV_KEY_LEN);
    memcpy(table.keys[1], k2.key, BCV_KEY_LEN);
    bcv_handle_t three = new_vfs(rt, "cache-sec-three", "bcv-c-sec-three", 4);
    OK(bcv_secure_init(&s));
    s.key_provider = provide_key;
    s.current_key = 2;
    s.user_data = &table;
    s.user_data_free = free_key_table;
    OK(bcv_vfs_attach_secure(three, bucket, "sec", 0, &s, NULL, 0, NULL));
    CHECK_EQ(query_int("bcv-c-sec-three", "/sec/main.db", "SELECT count(*) FROM items WHERE id >= 100000"), 3);
    CHECK(atomic_load(&table.asked) >= 2); /* both keys were needed */
    CHECK_EQ(atomic_load(&table.freed), 0);
    OK(bcv_release(three));
    CHECK_EQ(atomic_load(&table.freed), 1);

    /* No plaintext anywhere: not in the bucket's objects, not in the caches. */
    CHECK_EQ(query_int("bcv-c-sec-one", "/sec/main.db", "SELECT count(*) FROM items WHERE id >= 100000"), 2);
    CHECK_EQ(files_containing(bucket, CANARY), 0);
    CHECK_EQ(files_containing(path_of("cache-sec-one"), CANARY), 0);
    CHECK_EQ(files_containing(path_of("cache-sec-three"), CANARY), 0);
    CHECK_EQ(files_containing(path_of("secure-src.db"), CANARY), 1); /* the scan does find it in plain files */
    OK(bcv_release(one));

    /* Bad configurations: none or two of the choices; the user data is freed once either way. */
    struct toy_cipher toy = {0x5eed, 0, 0, 0, 0};
    bcv_handle_t four = new_vfs(rt, "cache-sec-four", "bcv-c-sec-four", 4);
    OK(bcv_secure_init(&s));
    CHECK_EQ(bcv_vfs_attach_secure(four, bucket, "none", 0, &s, NULL, 0, NULL), BCV_E_INVALID);
    s = toy_secure(&toy, "toy-xor-1");
    s.keys = &k1;
    s.key_count = 1;
    CHECK_EQ(bcv_vfs_attach_secure(four, bucket, "two", 0, &s, NULL, 0, NULL), BCV_E_INVALID);
    CHECK_EQ(atomic_load(&toy.freed), 1);
    CHECK_EQ(bcv_secure_init(NULL), BCV_E_INVALID);
    CHECK_EQ(bcv_container_open_secure(bucket, NULL, 1, NULL, &tools), BCV_E_INVALID);

    /* An application cipher: a container made with it round-trips through SQL and upload (sealing runs on bcv
     * worker threads), another cipher name is refused, a cipher that cannot open fails authentication. */
    char toy_bucket[128];
    snprintf(toy_bucket, sizeof toy_bucket, "%s", path_of("toy-bucket"));
    atomic_store(&toy.freed, 0);
    s = toy_secure(&toy, "toy-xor-1");
    OK(bcv_container_open_secure(toy_bucket, NULL, 4, &s, &tools));
    OK(bcv_container_create(tools, 65536, 0, false));
    OK(bcv_container_upload_file(tools, path_of("secure-src.db"), "main.db", NULL, NULL, NULL));
    OK(bcv_release(tools));
    CHECK_EQ(atomic_load(&toy.freed), 1);
    CHECK(atomic_load(&toy.seals) > 1);
    s = toy_secure(&toy, "toy-xor-1");
    OK(bcv_vfs_attach_secure(four, toy_bucket, "toy", 0, &s, NULL, 0, NULL));
    CHECK_EQ(query_int("bcv-c-sec-four", "/toy/main.db", "SELECT count(*) FROM items"), 301);
    CHECK_EQ(exec_sql("bcv-c-sec-four", "/toy/main.db", "UPDATE items SET name = name || ' " CANARY "'"), SQLITE_OK);
    OK(bcv_vfs_upload(four, "toy", -1, NULL, NULL));
    CHECK(atomic_load(&toy.opens) > 0);
    CHECK_EQ(files_containing(toy_bucket, CANARY), 0);
    CHECK_EQ(files_containing(path_of("cache-sec-four"), CANARY), 0);
    struct toy_cipher other = {0x5eed, 0, 0, 0, 0};
    s = toy_secure(&other, "toy-xor-2");
    CHECK_EQ(bcv_vfs_attach_secure(four, toy_bucket, "toy2", 0, &s, NULL, 0, NULL), BCV_E_AUTH);
    CHECK(strstr(bcv_last_error_message(), "toy-xor-1") != NULL);
    struct toy_cipher refusing = {0x5eed, 0, 0, 0, 1};
    s = toy_secure(&refusing, "toy-xor-1");
    CHECK_EQ(bcv_vfs_attach_secure(four, toy_bucket, "toy3", 0, &s, NULL, 0, NULL), BCV_E_AUTH);
    CHECK_EQ(atomic_load(&refusing.freed), 1);
    CHECK_EQ(atomic_load(&other.freed), 1);
    OK(bcv_release(four));
    CHECK_EQ(atomic_load(&toy.freed), 2); /* the tools' copy, then the VFS's went with it */
    finish_runtime(rt);
}

/* ---- The lease lock ---- */

static void lease_lock(void) {
    bcv_handle_t rt = new_runtime(), tools = 0;
    char bucket[128];
    snprintf(bucket, sizeof bucket, "%s", path_of("lease-bucket"));
    make_db(path_of("lease-src.db"), 100);
    OK(bcv_container_open(bucket, NULL, 4, &tools));
    OK(bcv_container_create(tools, 65536, 0, false));
    OK(bcv_container_upload_file(tools, path_of("lease-src.db"), "main.db", NULL, NULL, NULL));
    OK(bcv_container_upload_file(tools, path_of("lease-src.db"), "other.db", NULL, NULL, NULL));

    bcv_lease_t lease, seen;
    bool found = true;
    OK(bcv_container_lease_status(tools, &seen, &found));
    CHECK(!found);
    CHECK_EQ(bcv_container_lease_obtain(tools, "writer-a", 1000, &lease), BCV_E_INVALID); /* <= safety margin */
    OK(bcv_container_lease_obtain(tools, "writer-a", 60000, &lease));
    CHECK(strcmp(lease.holder, "writer-a") == 0 && strlen(lease.token) == 32 && lease.generation >= 1);
    CHECK(lease.expires_unix_ms - lease.acquired_unix_ms == 60000);

    /* Two VFS clients: neither can obtain it, and an upload from either is refused while it is held. */
    bcv_handle_t one = new_vfs(rt, "cache-lease-one", "bcv-c-lease-one", 4);
    bcv_handle_t two = new_vfs(rt, "cache-lease-two", "bcv-c-lease-two", 4);
    OK(bcv_vfs_attach(one, bucket, "l", 0, NULL, 0, NULL));
    OK(bcv_vfs_attach(two, bucket, "l", 0, NULL, 0, NULL));
    CHECK_EQ(bcv_vfs_lease_obtain(two, "l", "writer-b", 60000, NULL), BCV_E_LEASE_HELD);
    CHECK(strstr(bcv_last_error_message(), "writer-a") != NULL);
    CHECK(strcmp(bcv_status_name(BCV_E_LEASE_HELD), "BCV_E_LEASE_HELD") == 0);
    CHECK_EQ(exec_sql("bcv-c-lease-two", "/l/other.db", "DELETE FROM items WHERE id <= 10"), SQLITE_OK);
    CHECK_EQ(bcv_vfs_upload(two, "l", -1, NULL, NULL), BCV_E_LEASE_HELD);
    OK(bcv_vfs_lease_status(two, "l", &seen, &found));
    CHECK(found && strcmp(seen.token, lease.token) == 0 && strcmp(seen.holder, "writer-a") == 0);
    OK(bcv_vfs_lease_held(two, "l", NULL, &found));
    CHECK(!found);

    /* VFS one adopts the holding by its token: it may upload (renewing the lease), extend and release it. */
    CHECK_EQ(bcv_vfs_lease_adopt(one, "l", "0123456789abcdef0123456789abcdef", NULL), BCV_E_LEASE_LOST);
    OK(bcv_vfs_lease_adopt(one, "l", lease.token, &seen));
    CHECK_EQ(seen.generation, lease.generation);
    CHECK_EQ(exec_sql("bcv-c-lease-one", "/l/main.db", "DELETE FROM items WHERE id > 90"), SQLITE_OK);
    OK(bcv_vfs_upload(one, "l", -1, NULL, NULL));
    OK(bcv_vfs_lease_extend(one, "l", 120000, &seen));
    CHECK(strcmp(seen.token, lease.token) == 0 && seen.expires_unix_ms > lease.expires_unix_ms);
    OK(bcv_vfs_lease_held(one, "l", &seen, &found));
    CHECK(found && strcmp(seen.holder, "writer-a") == 0);
    OK(bcv_vfs_lease_release(one, "l"));
    CHECK_EQ(bcv_vfs_lease_release(one, "l"), BCV_E_LEASE_LOST);
    /* The tools' own holding was released under them. */
    CHECK_EQ(bcv_container_lease_extend(tools, NULL, 60000, NULL), BCV_E_LEASE_LOST);

    /* Released: two obtains it, and its held-back upload now goes through. */
    OK(bcv_vfs_lease_obtain(two, "l", "writer-b", 60000, &lease));
    CHECK(strcmp(lease.holder, "writer-b") == 0);
    OK(bcv_vfs_upload(two, "l", -1, NULL, NULL));
    CHECK_EQ(query_int("bcv-c-lease-two", "/l/other.db", "SELECT count(*) FROM items"), 90);
    /* Another process of the application extends and releases it by token, through the tools. */
    OK(bcv_container_lease_extend(tools, lease.token, 60000, &seen));
    CHECK(strcmp(seen.holder, "writer-b") == 0);
    OK(bcv_container_lease_release(tools, lease.token));
    OK(bcv_container_lease_status(tools, NULL, &found));
    CHECK(!found);
    CHECK_EQ(bcv_vfs_lease_extend(two, "l", 60000, NULL), BCV_E_LEASE_LOST);
    CHECK_EQ(bcv_vfs_lease_obtain(two, "nosuch", "x", 60000, NULL), BCV_E_NOT_FOUND);
    OK(bcv_release(one));
    OK(bcv_release(two));
    OK(bcv_release(tools));
    finish_runtime(rt);
}

/* ---- Multi-process mode ---- */

/* The child side of daemon_mode: a VFS on the daemon's directory in another process. Exit status 0 when
 * everything behaved; the failures are printed. */
static int daemon_child(const char *dir, const char *plain_url, const char *secure_url) {
    snprintf(base_dir, sizeof base_dir, "%s", "/tmp");
    current = "daemon child";
    bcv_handle_t rt = new_runtime(), vfs = 0;
    bcv_vfs_config_t cfg;
    OK(bcv_vfs_config_init(&cfg));
    cfg.cache_dir = dir;
    cfg.name = "bcv-c-daemon-child";
    OK(bcv_vfs_new(rt, &cfg, &vfs));
    bool client = false;
    OK(bcv_vfs_is_daemon_client(vfs, &client));
    CHECK(client);
    OK(bcv_vfs_attach(vfs, plain_url, "p", 0, NULL, 0, NULL));
    CHECK_EQ(query_int("bcv-c-daemon-child", "/p/main.db", "SELECT count(*) FROM items"), 2000);
    CHECK_EQ(bcv_vfs_poll(vfs, "p", NULL, NULL), BCV_OK); /* asks the daemon */
    /* Read-only: SQLite refuses writes, bcv refuses uploads. */
    CHECK(exec_sql("bcv-c-daemon-child", "/p/main.db", "DELETE FROM items") != SQLITE_OK);
    CHECK_EQ(bcv_vfs_upload(vfs, "p", -1, NULL, NULL), BCV_E_READ_ONLY);
    CHECK_EQ(bcv_vfs_delete(vfs, "p", "main.db"), BCV_E_READ_ONLY);
    /* A secure container without a key of its own: the daemon hands the key over after the attach. */
    OK(bcv_vfs_attach(vfs, secure_url, "s", 0, NULL, 0, NULL));
    CHECK_EQ(query_int("bcv-c-daemon-child", "/s/main.db", "SELECT count(*) FROM items WHERE id >= 100000"), 3);
    OK(bcv_release(vfs));
    finish_runtime(rt);
    return current_failed;
}

static void daemon_mode(void) {
    bcv_handle_t rt = new_runtime(), daemon = 0;
    bcv_daemon_config_t cfg;
    CHECK_EQ(bcv_daemon_config_init(NULL), BCV_E_INVALID);
    OK(bcv_daemon_config_init(&cfg));
    CHECK_EQ(bcv_daemon_start(&cfg, &daemon), BCV_E_INVALID); /* no cache_dir */
    cfg.cache_dir = path_of("daemon-cache");
    cfg.cache_size = 32ull << 20;
    /* A secure container whose key only the daemon has. */
    bcv_key_t keys[1];
    bcv_handle_t probe = 0;
    OK(bcv_key_generate(keys[0].key));
    keys[0].id = 7;
    char own_secure[128];
    snprintf(own_secure, sizeof own_secure, "%s", path_of("daemon-secure-bucket"));
    bcv_secure_t s = ring_of(keys, 1, 7);
    bcv_handle_t tools = 0;
    OK(bcv_container_open_secure(own_secure, NULL, 4, &s, &tools));
    OK(bcv_container_create(tools, 65536, 0, false));
    make_db(path_of("daemon-src.db"), 50);
    CHECK_EQ(exec_sql(NULL, path_of("daemon-src.db"),
                      "INSERT INTO items VALUES (100000, '" CANARY "', NULL), (100001, 'b', NULL), (100002, 'c', NULL)"),
             SQLITE_OK);
    OK(bcv_container_upload_file(tools, path_of("daemon-src.db"), "main.db", NULL, NULL, NULL));
    OK(bcv_release(tools));
    char plain[128];
    snprintf(plain, sizeof plain, "%s", path_of("daemon-plain-bucket"));
    make_db(path_of("daemon-plain.db"), 2000);
    OK(bcv_container_open(plain, NULL, 4, &tools));
    OK(bcv_container_create(tools, 65536, 0, false));
    OK(bcv_container_upload_file(tools, path_of("daemon-plain.db"), "main.db", NULL, NULL, NULL));
    OK(bcv_release(tools));
    bcv_daemon_key_t dk = {own_secure, keys, 1, 7};
    cfg.keys = &dk;
    cfg.key_count = 1;
    OK(bcv_daemon_start(&cfg, &daemon));
    CHECK_EQ(bcv_daemon_start(&cfg, &probe), BCV_E_CACHE_BUSY);

    /* A reader in another process: this test binary again, in its child role. */
    pid_t pid = fork();
    if (pid == 0) {
        execl(self_exe, "test_vfs", "--daemon-child", path_of("daemon-cache"), plain, own_secure,
              (char *)NULL);
        _exit(127);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    bcv_daemon_stats_t stats = {0};
    OK(bcv_daemon_stats(daemon, &stats));
    CHECK_EQ(stats.clients_total, 1);
    CHECK(stats.cache.bytes_fetched > 0);
    CHECK(stats.usage.capacity == 32ull << 20);
    /* The shared cache holds the secure container's blocks sealed; the plain one's as they are. */
    CHECK_EQ(files_containing(path_of("daemon-cache"), CANARY), 0);
    CHECK(files_containing(path_of("daemon-cache"), "item 1999") > 0);
    OK(bcv_daemon_stop(daemon));
    OK(bcv_daemon_stop(daemon));
    CHECK_EQ(bcv_daemon_stats(daemon, &stats), BCV_E_CLOSED);
    CHECK_EQ(bcv_daemon_stats(rt, &stats), BCV_E_WRONG_TYPE);
    OK(bcv_release(daemon));
    CHECK_EQ(bcv_release(daemon), BCV_E_BAD_HANDLE);
    finish_runtime(rt);
}

static void *all_tests(void *arg) {
    (void)arg;
    CHECK_EQ(bcv_abi_version(), BCV_ABI_VERSION);
    run("statuses, NULLs, wrong and stale handles", statuses_and_bad_arguments);
    run("tools, two clients, upload, poll, conflict, copy, cleanup", tools_and_two_clients);
    run("jobs: prefetch, upload, release, close", jobs);
    run("a store implemented in C: attach, cancel, release order", custom_store_in_c);
    run("credentials callback", auth_callback);
    run("runtime freed before the VFS and its job", runtime_freed_first);
    run("virtual tables and bcv_kv transactions on the program's own connection", virtual_tables);
    run("secure containers: key ring, rotation, key provider, a C cipher, no plaintext at rest", secure_containers);
    run("the lease lock: held, fenced uploads, adopt, extend, release by token", lease_lock);
    run("multi-process mode: a reader process through the daemon, key handout", daemon_mode);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "--daemon-child") == 0) return daemon_child(argv[2], argv[3], argv[4]);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0) {
        perror("readlink /proc/self/exe");
        return 1;
    }
    self_exe[n] = 0;
    snprintf(base_dir, sizeof base_dir, "/tmp/bcv-c-vfs-XXXXXX");
    if (!mkdtemp(base_dir)) {
        perror("mkdtemp");
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, all_tests, NULL);
    pthread_join(t, NULL);
    nftw(base_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
