// tests/preload/lying.cc: a drop-in library with a known bug, for fuzz_test.py to check that
// tools/fuzz.py catches a wrong answer, says what was wrong and how to repeat it. It keeps the C
// library's malloc and replaces one entry: malloc_usable_size answers 0 for every block, so
// any block of a byte or more seems smaller than its request (churn.cc checks every block's
// usable size). Not "8 bytes short": under an address-space limit glibc may serve every request
// from a page of its own, whose slack hides such a lie, and a run then passes (4 of 40 did).
// Other failures, chosen by a variable in the environment: EDU_TEST_HANG=1, the first call
// never returns (a hang); EDU_TEST_ABORT=1, it aborts (a crash); EDU_TEST_SILENT=1, no lie, but
// the program's standard output goes to /dev/null from the start (an exit 0 without the verdict).
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>

extern "C" std::size_t malloc_usable_size(void* p) {
    if (std::getenv("EDU_TEST_HANG") != nullptr)
        for (;;) pause();
    if (std::getenv("EDU_TEST_ABORT") != nullptr) std::abort();
    if (std::getenv("EDU_TEST_SILENT") != nullptr) {
        using Real = std::size_t (*)(void*);
        static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "malloc_usable_size"));
        return real(p);
    }
    return 0;
}

__attribute__((constructor)) static void silence() {
    if (std::getenv("EDU_TEST_SILENT") == nullptr) return;
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, STDOUT_FILENO);
}
