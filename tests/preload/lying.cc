// tests/preload/lying.cc: a drop-in library with a known bug, for fuzz_test.py to check that
// tools/fuzz.py catches a wrong answer, says what was wrong and how to repeat it. It keeps the C
// library's malloc and replaces one entry: malloc_usable_size answers 8 bytes short, so a block
// that fills its chunk seems smaller than the request (churn.cc checks every block's usable
// size). With EDU_TEST_HANG=1 in the environment the first call never returns instead (a hang),
// with EDU_TEST_ABORT=1 it aborts (a crash).
#include <dlfcn.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>

extern "C" std::size_t malloc_usable_size(void* p) {
    if (std::getenv("EDU_TEST_HANG") != nullptr)
        for (;;) pause();
    if (std::getenv("EDU_TEST_ABORT") != nullptr) std::abort();
    using Real = std::size_t (*)(void*);
    static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "malloc_usable_size"));
    std::size_t n = real(p);
    return n >= 8 ? n - 8 : 0;
}
