/*
 * examples/c/streams.c — pipe a file through gzip and AES-256-GCM streams and back with libbcv.
 *
 *   cc -Wall -Wextra -Werror $(pkg-config --cflags bcv) streams.c $(pkg-config --libs --static bcv) -o streams
 *   ./streams [FILE]
 *
 * The chain is built from handles: file -> gzip -> encrypt -> decrypt -> gunzip -> collected bytes. The
 * transformer handles are released as soon as the chain is built: each stage keeps what it needs alive,
 * so releasing in any order is safe (LIFETIMES.md, option 2).
 */
#include <bcv.h>

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

static unsigned char *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/tmp/bcv-example-input.txt";
    if (argc <= 1) {
        FILE *f = fopen(path, "wb");
        if (!f) return 1;
        for (int i = 0; i < 200000; i++) fprintf(f, "line %d: streams with resource lifetimes\n", i % 977);
        fclose(f);
    }
    printf("bcv %s (ABI %u)\n", bcv_version(), bcv_abi_version());

    bcv_handle_t rt, file, source, gz, gz_out, enc, enc_out, dec, dec_out, gunz, plain;
    uint8_t key[32];
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(i * 7 + 1);

    TRY(bcv_runtime_new(BCV_STRICT_WARN, &rt));
    TRY(bcv_file_read(rt, path, &file, &source));
    TRY(bcv_gzip_compress(rt, source, 6, &gz, &gz_out));     /* consumes source */
    TRY(bcv_aead_encrypt(rt, gz_out, key, sizeof key, &enc, &enc_out));
    TRY(bcv_aead_decrypt(rt, enc_out, key, sizeof key, &dec, &dec_out));
    TRY(bcv_gzip_decompress(rt, dec_out, &gunz, &plain));
    /* Release the resources right away: the chain keeps running. */
    TRY(bcv_release(file));
    TRY(bcv_release(gz));
    TRY(bcv_release(enc));
    TRY(bcv_release(dec));
    TRY(bcv_release(gunz));

    bcv_bytes_t out = {0};
    TRY(bcv_stream_collect(plain, &out));
    TRY(bcv_release(plain));

    size_t len = 0;
    unsigned char *original = read_whole(path, &len);
    int same = original && len == out.len && memcmp(original, out.data, len) == 0;
    printf("piped %s (%zu bytes) through gzip -> AES-256-GCM -> decrypt -> gunzip: %zu bytes back, %s\n", path,
           len, out.len, same ? "identical" : "DIFFERENT");
    bcv_bytes_free(&out);
    free(original);

    uint64_t live = 0;
    TRY(bcv_runtime_wait_idle(rt, 5000, &live));
    printf("live nodes after releasing everything: %llu\n", (unsigned long long)live);
    TRY(bcv_runtime_free(rt));
    return same ? 0 : 1;
}
