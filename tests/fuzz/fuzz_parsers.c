/* fuzz_parsers.c - libFuzzer entry points for the parsers of user files.
 *
 * Built twice by tests/fuzz/run.sh, with -DFUZZ_GGUF or -DFUZZ_SAFETENSORS,
 * against every csrc/ file but the Python boundary, with AddressSanitizer and
 * UndefinedBehaviorSanitizer. The GGUF target runs what loading does after
 * the parse too (architecture from the metadata, a row of every tensor);
 * the safetensors target also feeds the bytes to the JSON reader alone.
 */
#include <stddef.h>
#include <stdint.h>

#include "embgemma.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[1024];
#if defined(FUZZ_GGUF)
    (void)eg_test_parse("gguf", data, size, err, sizeof err);
#elif defined(FUZZ_SAFETENSORS)
    (void)eg_test_parse("safetensors", data, size, err, sizeof err);
    json_doc *doc = json_parse((const char *)data, size, err, sizeof err);
    if (doc) json_free(doc);
#else
#error "define FUZZ_GGUF or FUZZ_SAFETENSORS"
#endif
    return 0;
}
