/* tsan_encode.c - many threads encoding on one model, for ThreadSanitizer (built with OpenMP
 * compiled out by tests/sanitize/run.sh). Each thread encodes its own batches and checks every
 * row against the result computed alone before the threads started.
 * usage: tsan_encode MODEL_DIR [threads] [rounds]; exit 0 when every result matches. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embgemma.h"

#define N_SEQ 6
static eg_model *model;
static int32_t ids[512];
static int64_t offsets[N_SEQ + 1];
static float *expected;
static int64_t dim;
static int rounds = 4;

static int encode_into(float *out, int64_t first, int64_t count) {
    char err[256];
    eg_encode_opts o = {dim, 1, 1};
    int64_t off[N_SEQ + 1];
    for (int64_t i = 0; i <= count; i++) off[i] = offsets[first + i];
    if (eg_encode(model, ids, off, count, &o, out, dim, NULL, err, sizeof err) != EG_OK) {
        fprintf(stderr, "encode failed: %s\n", err);
        return 1;
    }
    return 0;
}

static void *worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    float *out = malloc(sizeof(float) * (size_t)(N_SEQ * dim));
    long bad = 0;
    for (int r = 0; r < rounds && out; r++) {
        const int64_t first = (id + r) % N_SEQ, count = N_SEQ - first; /* different batch shapes per thread */
        if (encode_into(out, first, count)) bad++;
        else if (memcmp(out, expected + first * dim, sizeof(float) * (size_t)(count * dim)) != 0) bad++;
    }
    free(out);
    return (void *)bad;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [threads] [rounds]\n", argv[0]);
        return 2;
    }
    const int n_threads = argc > 2 ? atoi(argv[2]) : 8;
    if (argc > 3) rounds = atoi(argv[3]);
    char err[1024];
    if (eg_model_load(argv[1], NULL, &model, err, sizeof err) != EG_OK) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    const eg_model_info *info = eg_model_get_info(model);
    dim = info->out_dim;
    const int lens[N_SEQ] = {1, 2, 7, 33, 64, 130};
    for (int s = 0, t = 0; s < N_SEQ; s++) {
        offsets[s] = t;
        for (int i = 0; i < lens[s]; i++, t++) ids[t] = (int32_t)(3 + (t * 7919) % (info->vocab - 3));
        offsets[s + 1] = t;
    }
    expected = malloc(sizeof(float) * (size_t)(N_SEQ * dim));
    if (!expected || encode_into(expected, 0, N_SEQ)) return 1;
    pthread_t th[64];
    long bad = 0;
    for (int i = 0; i < n_threads && i < 64; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < n_threads && i < 64; i++) {
        void *r;
        pthread_join(th[i], &r);
        bad += (long)r;
    }
    printf("tsan_encode: %d threads x %d rounds on one model: %ld mismatching calls\n", n_threads, rounds, bad);
    eg_model_free(model);
    free(expected);
    return bad != 0;
}
