/* fuzz_parsers.c - libFuzzer entry points for the parsers of user files and for eg_encode.
 *
 * Built once per target by tests/fuzz/run.sh (-DFUZZ_GGUF, -DFUZZ_SAFETENSORS, -DFUZZ_CONFIG,
 * -DFUZZ_ENCODE) against every csrc/ file but the Python boundary, with AddressSanitizer and
 * UndefinedBehaviorSanitizer. The GGUF target runs what loading does after the parse too
 * (architecture from the metadata, a row of every tensor); the safetensors target also feeds the
 * bytes to the JSON reader alone; the config target gives one JSON document to every reader of a
 * model folder's JSON files (config.json, modules.json, Pooling and Dense configs, shard index);
 * the encode target decodes one eg_encode call (eg_test_encode in csrc/testing.c) on the committed
 * golden model (EG_FUZZ_MODEL overrides its folder) and traps when the call breaks the contract.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "embgemma.h"
#include "json.h"
#include "testing.h"

#if defined(FUZZ_ENCODE)
static eg_model *model;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("EG_FUZZ_MODEL");
    char err[1024];
    if (eg_model_load(dir && *dir ? dir : "tests/data/golden_model", NULL, &model, err, sizeof err) != EG_OK) {
        fprintf(stderr, "fuzz encode: cannot load the model: %s\n", err);
        exit(2);
    }
    return 0;
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[1024];
#if defined(FUZZ_GGUF)
    (void)eg_test_parse("gguf", data, size, err, sizeof err);
#elif defined(FUZZ_SAFETENSORS)
    (void)eg_test_parse("safetensors", data, size, err, sizeof err);
    json_doc *doc = json_parse((const char *)data, size, err, sizeof err);
    if (doc) json_free(doc);
#elif defined(FUZZ_CONFIG)
    (void)eg_test_parse("config", data, size, err, sizeof err);
#elif defined(FUZZ_ENCODE)
    if (eg_test_encode(model, data, size, err, sizeof err) == EG_ERR_INTERNAL) {
        fprintf(stderr, "fuzz encode: %s\n", err);
        abort();
    }
#else
#error "define FUZZ_GGUF, FUZZ_SAFETENSORS, FUZZ_CONFIG or FUZZ_ENCODE"
#endif
    return 0;
}
