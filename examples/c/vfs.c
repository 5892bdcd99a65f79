/*
 * examples/c/vfs.c — SQLite databases kept in a container (a local directory here; S3, Azure or GCS
 * work the same with their URLs), read and written through the bcv block-cache VFS.
 *
 *   cc -Wall -Wextra -Werror $(pkg-config --cflags bcv) vfs.c $(pkg-config --libs --static bcv) -o vfs
 *   ./vfs
 *
 * libbcv carries no SQLite: the VFS registers into the SQLite this program links (-lsqlite3, which
 * pkg-config adds), and databases are opened with the usual sqlite3_open_v2 and the VFS's name.
 *
 * Steps: build a database file; create a container and upload the file into it (container tools, no
 * cache); two clients, "alice" and "bob", each with their own cache directory, attach the container;
 * alice writes and uploads; bob polls and sees her rows.
 */
#define _GNU_SOURCE
#include <bcv.h>
#include <sqlite3.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call)                                                                                   \
    do {                                                                                            \
        bcv_status_t st_ = (call);                                                                  \
        if (st_ != BCV_OK) {                                                                        \
            fprintf(stderr, "%s failed: %s: %s\n", #call, bcv_status_name(st_), bcv_last_error_message()); \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

static char dir[64];

static const char *in_dir(const char *name) {
    static char paths[4][128];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    return p;
}

/* Runs `sql` on `path` through the VFS named `vfs` (NULL: SQLite's default); prints the first column of
 * each result row. */
static void sql(const char *vfs, const char *path, const char *text) {
    sqlite3 *db = NULL;
    char *err = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, text, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        /* An I/O error inside the VFS has its reason on this thread. */
        char why[512];
        bcv_vfs_last_error(why, sizeof why, NULL);
        fprintf(stderr, "%s: %s (bcv: %s)\n", text, err ? err : sqlite3_errmsg(db), why);
        exit(1);
    }
    sqlite3_free(err);
    sqlite3_close(db);
}

static long long count(const char *vfs, const char *path) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, vfs) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT count(*) FROM items", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* A client: a VFS with its own cache directory and SQLite name, with the container attached as "shop". */
static bcv_handle_t client(bcv_handle_t rt, const char *name, const char *container) {
    bcv_vfs_config_t config;
    TRY(bcv_vfs_config_init(&config));
    char cache[32];
    snprintf(cache, sizeof cache, "cache-%s", name);
    config.cache_dir = in_dir(cache);
    config.name = name;
    bcv_handle_t vfs;
    TRY(bcv_vfs_new(rt, &config, &vfs));
    TRY(bcv_vfs_attach(vfs, container, "shop", 0, NULL, 0, NULL));
    return vfs;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/bcv-vfs-example-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    printf("bcv %s (ABI %u), SQLite %s, working in %s\n", bcv_version(), bcv_abi_version(), sqlite3_libversion(),
           dir);

    /* 1. An ordinary SQLite database file. */
    sql(NULL, in_dir("shop.db"),
        "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL);"
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<1000)"
        " INSERT INTO items SELECT i, 'item ' || i, i * 0.25 FROM c;");

    /* 2. A container (here a directory) holding it: the container tools need no cache. */
    const char *container = in_dir("container");
    bcv_handle_t tools;
    TRY(bcv_container_open(container, NULL, 4, &tools));
    TRY(bcv_container_create(tools, 64 * 1024, 0, false)); /* 64 KiB blocks; 0 means CBS's 4 MiB */
    uint32_t version;
    TRY(bcv_container_upload_file(tools, in_dir("shop.db"), "shop.db", NULL, NULL, &version));
    bcv_bytes_t list = {0};
    TRY(bcv_container_list(tools, &list));
    printf("uploaded shop.db (version %u); the container lists %.*s\n", version, (int)list.len,
           (const char *)list.data);
    bcv_bytes_free(&list);
    TRY(bcv_release(tools));

    /* 3. Two clients. Their databases are /shop/shop.db under their own VFS names. */
    bcv_handle_t rt;
    TRY(bcv_runtime_new(BCV_STRICT_WARN, &rt));
    bcv_handle_t alice = client(rt, "alice", container);
    bcv_handle_t bob = client(rt, "bob", container);
    printf("alice sees %lld items, bob sees %lld\n", count("alice", "/shop/shop.db"), count("bob", "/shop/shop.db"));

    /* 4. Alice writes: the change stays in her cache until she uploads it. */
    sql("alice", "/shop/shop.db", "INSERT INTO items(name, price) VALUES ('fresh bread', 3.5), ('olive oil', 9.9)");
    bcv_upload_report_t up;
    TRY(bcv_vfs_upload(alice, "shop", -1, &up, NULL));
    printf("alice uploaded %u database(s): %llu new block(s), %llu bytes\n", up.databases,
           (unsigned long long)up.blocks_written, (unsigned long long)up.bytes_written);

    /* 5. Bob polls (one conditional request) and sees the new rows. A second writer of the same database
     *    would get BCV_E_CONFLICT from its upload instead, and keep its own changes until it reverts. */
    printf("before polling, bob sees %lld items\n", count("bob", "/shop/shop.db"));
    bcv_poll_report_t poll;
    TRY(bcv_vfs_poll(bob, "shop", &poll, NULL));
    printf("bob polled: manifest changed %s, %u database(s) updated; bob sees %lld items\n",
           poll.manifest_changed ? "yes" : "no", poll.updated, count("bob", "/shop/shop.db"));

    /* 6. Release in any order; then nothing is left. */
    TRY(bcv_release(alice));
    TRY(bcv_release(bob));
    uint64_t live = 0;
    TRY(bcv_runtime_wait_idle(rt, 5000, &live));
    printf("live nodes after releasing everything: %llu\n", (unsigned long long)live);
    TRY(bcv_runtime_free(rt));
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
