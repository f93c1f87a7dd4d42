/* libdeepchain.so: lib_enter -> lib_level_1 -> lib_level_2 -> lib_level_3 -> the caller's leaf.
 * Each function keeps a local buffer and uses the result of its call, so none is inlined,
 * cloned or turned into a tail call at -O2, and every frame is a real frame. */
#include "deepchain.h"

#define FRAME(name, next_call)                                             \
    __attribute__((noinline, noclone)) long name(long n, deepchain_leaf leaf) \
    {                                                                      \
        volatile char pad[48];                                             \
        pad[n & 31] = (char)n;                                             \
        long r = next_call;                                                \
        return r + pad[n & 31];                                            \
    }

static long lib_level_3(long n, deepchain_leaf leaf);
static long lib_level_2(long n, deepchain_leaf leaf);
static long lib_level_1(long n, deepchain_leaf leaf);

FRAME(static lib_level_3, leaf(n + 3))
FRAME(static lib_level_2, lib_level_3(n + 2, leaf))
FRAME(static lib_level_1, lib_level_2(n + 1, leaf))
FRAME(lib_enter, lib_level_1(n, leaf))
