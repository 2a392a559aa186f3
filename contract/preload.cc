// contract/preload.cc: the drop-in (LD_PRELOAD) malloc family, written once for every stage
// (tools/preload.bzl compiles it per stage): malloc to pvalloc, malloc_usable_size,
// edu_preload_stage, and setrlimit/prlimit (passed to the kernel, then told to the stage). The
// first call picks the entry: the stage's `thread_safe` one, the debug layer over it (debug=on),
// the memcheck layer over that under valgrind; malloc, free, calloc, realloc jump to it through
// slots of their own. Statistics go off unless EDU_ALLOC_STATS or EDU_ALLOC_CHECK asks.
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "contract/allocator.h"
#include "contract/debug.h"
#include "contract/diagnostics.h"
#include "contract/mapped.h"
#include "contract/memcheck.h"
#include "contract/options.h"
#include "contract/report.h"

#if !defined(EDU_PRELOAD_NAMESPACE) || !defined(EDU_PRELOAD_DESCRIPTOR)
#error "build preload.cc through edu_preload_library (tools/preload.bzl)"
#endif

namespace EDU_PRELOAD_NAMESPACE {
extern const ::edu::Stage EDU_PRELOAD_DESCRIPTOR;
}

// A stage's inline fast paths, when tools/preload.bzl names their header (drop_in = ...).
#ifdef EDU_PRELOAD_DROP_IN
#define EDU_PRELOAD_STRING(x) #x
#define EDU_PRELOAD_HEADER(x) EDU_PRELOAD_STRING(x)
#include EDU_PRELOAD_HEADER(EDU_PRELOAD_DROP_IN)
#endif

// Project code is built with -fvisibility=hidden; only these names leave the shared object.
#define EDU_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

const edu::Stage& stage() { return EDU_PRELOAD_NAMESPACE::EDU_PRELOAD_DESCRIPTOR; }

// Settings read once, at the first call, so a program that edits its environment
// later does not change what happens at exit.
bool g_print_stats = false;
bool g_check_at_exit = false;
// Some programs close stderr on their way out (GNU coreutils do, in an atexit handler that
// runs before our destructor), so a copy taken at load time carries the report. The copy is
// trusted only while it is still that file (same device and inode): a program may close every
// descriptor above 2 and open its own file on the copy's number, and the report then went into
// that file, between the program's own lines.
int g_stderr_copy = -1;
struct stat g_stderr_file;   // what the copy referred to when it was taken

bool copy_is_stderrs() {
    struct stat now;
    return g_stderr_copy >= 0 && fstat(g_stderr_copy, &now) == 0 && now.st_dev == g_stderr_file.st_dev &&
           now.st_ino == g_stderr_file.st_ino;
}

bool env_is_one(const char* name) {
    const char* value = getenv(name);  // getenv does not allocate
    return value != nullptr && value[0] == '1' && value[1] == 0;
}

// The entry every call goes to, chosen once, inside the first call (libstdc++ and ld.so
// allocate before any constructor of ours runs, so EDU_OPTIONS is read there, while no block
// exists: an option that reshapes blocks, like debug=on, can still be taken).
pthread_once_t g_api_once = PTHREAD_ONCE_INIT;
bool g_debug = false;
extern const edu::Api* g_api;
void publish_slots(const edu::Api& entry);

void choose_entry() {
    const edu::Stage& s = stage();
    g_print_stats = env_is_one("EDU_ALLOC_STATS");
    g_check_at_exit = env_is_one("EDU_ALLOC_CHECK");
    // Counting costs the fast paths of stages 2-4 a few percent (up to a fifth on stage 4):
    // a stage with a "stats" switch counts only when someone reads the counters. Stage 1
    // always counts (a handful of adds on a path that is long anyway); EDU_OPTIONS,
    // applied next, can still say stageN.stats=on.
    if (!g_print_stats && !g_check_at_exit && s.get_option("stats") != nullptr)
        s.set_option("stats", "off");
    edu::apply_environment_options(s);  // a bad entry is reported on stderr, the rest applies
    edu::ContractOptions options = edu::contract_options();
    g_debug = options.debug;
    const edu::Api* chosen = &edu::entry_for(s, *s.thread_safe, options);
    if (edu::running_on_memcheck()) chosen = &edu::memcheck_entry(*chosen);
    __atomic_store_n(&g_api, chosen, __ATOMIC_RELEASE);
    publish_slots(*chosen);
}

// The entry after the first call. Another thread's first call may be choosing it right now:
// pthread_once makes this one wait until the choice is made, and publishes it.
const edu::Api& chosen_entry() {
    pthread_once(&g_api_once, choose_entry);
    return *g_api;
}

// Before the first call, g_api points at this table, whose every entry chooses the real entry
// and then forwards to it; choose_entry replaces the pointer. So g_api is never null, and a
// call through it is one load and one indirect jump, with no test (mimalloc's heap starts out
// pointing at a static empty page for the same reason).
void* first_malloc(std::size_t n) { return chosen_entry().malloc(n); }
void first_free(void* p) { chosen_entry().free(p); }
void* first_calloc(std::size_t n, std::size_t size) { return chosen_entry().calloc(n, size); }
void* first_realloc(void* p, std::size_t n) { return chosen_entry().realloc(p, n); }
void* first_aligned_alloc(std::size_t a, std::size_t n) { return chosen_entry().aligned_alloc(a, n); }
std::size_t first_usable_size(const void* p) { return chosen_entry().usable_size(p); }
edu::CheckResult first_check() { return chosen_entry().check(); }
void first_walk(edu::WalkFn visit, void* context) { chosen_entry().walk(visit, context); }
edu::Stats first_stats() { return chosen_entry().stats(); }
constexpr edu::Api kFirstCall = {&first_malloc,  &first_free,          &first_calloc,
                                 &first_realloc, &first_aligned_alloc, &first_usable_size,
                                 &first_check,   &first_walk,          &first_stats};
const edu::Api* g_api = &kFirstCall;

// A plain load (x86-64 loads acquire): kFirstCall, or the entry choose_entry published.
const edu::Api& api() { return *__atomic_load_n(&g_api, __ATOMIC_ACQUIRE); }

// The four calls a program makes most have a slot each, a copy of the chosen entry's function,
// so that `malloc` is one instruction, `jmp *g_malloc(%rip)`, where the path through g_api is
// two (load the table, jump through it); mimalloc's malloc is the exported symbol itself. The
// slot is loaded relaxed, because gcc 12 folds only a relaxed load into the jump, and that
// orders enough: a slot holds its first_* function, whose pthread_once synchronises with the
// choice, or a function choose_entry stored (release) once everything it reads was set up, and
// nothing of the callee can run before the load of its own address (the compiler cannot see
// past the indirect jump; x86-64 keeps loads in order). The slots copy the table, so they are
// published again whenever it may change: set_option through edu_preload_stage's descriptor.
// A fork child does not publish them: a stage that rewrites its table there (stage 3, S3.50)
// changes only which mode a copy's never-taken unlocked branch names, since glibc leaves
// __libc_single_threaded false in the child of a threaded process.
void* (*g_malloc)(std::size_t) = &first_malloc;
void (*g_free)(void*) = &first_free;
void* (*g_calloc)(std::size_t, std::size_t) = &first_calloc;
void* (*g_realloc)(void*, std::size_t) = &first_realloc;

// Better than a slot: a stage that names a DropIn header (tools/preload.bzl) has its own fast
// paths compiled into the exported malloc and free, as mimalloc's malloc is its fast path.
// DropIn keeps a gate, closed until publish_slots sees that the chosen entry's malloc and free
// are DropIn's (the drop-in library's usual mode) and opens it; an entry that is not DropIn's
// (another mode, the debug or memcheck layer) closes it again. DropIn's exported_malloc and
// exported_free run the fast paths while it is open and call the slot (`closed`) otherwise, so
// the first call still goes to first_malloc and chooses the entry. The gate is written with
// the slots and read like them (relaxed). How each stage's gate is tested, and what it gained:
// the `DropIn` comments of stage3_segments/drop_in.h and stage4_threads/drop_in.h.
#ifdef EDU_PRELOAD_DROP_IN
using DropIn = EDU_PRELOAD_NAMESPACE::DropIn;
// The exported malloc and free start where DropIn says (kEntryAlignment: a cache line, so that
// each fast path spans the fewest lines wherever the linker happens to put it; see the stage's
// drop_in.h for what it measured).
#define EDU_EXPORT_ALIGNED __attribute__((aligned(DropIn::kEntryAlignment)))
#else
#define EDU_EXPORT_ALIGNED
#endif

void publish_slots(const edu::Api& entry) {
    __atomic_store_n(&g_malloc, entry.malloc, __ATOMIC_RELEASE);
    __atomic_store_n(&g_free, entry.free, __ATOMIC_RELEASE);
    __atomic_store_n(&g_calloc, entry.calloc, __ATOMIC_RELEASE);
    __atomic_store_n(&g_realloc, entry.realloc, __ATOMIC_RELEASE);
#ifdef EDU_PRELOAD_DROP_IN
    DropIn::open(entry.malloc == &DropIn::malloc && entry.free == &DropIn::free);
#endif
}

template <class F>
F slot(F* at) {
    return __atomic_load_n(at, __ATOMIC_RELAXED);
}

// The stage as edu_preload_stage shows it: its own descriptor but for set_option, which also
// publishes the slots again (a stage may rewrite its table when an option changes, S4.38).
edu::Stage g_exported_stage;
pthread_once_t g_exported_once = PTHREAD_ONCE_INIT;

bool set_option_and_publish(const char* name, const char* value) {
    bool ok = stage().set_option(name, value);
    publish_slots(api());
    return ok;
}

void make_exported_stage() {
    g_exported_stage = stage();
    g_exported_stage.set_option = &set_option_and_publish;
}

bool is_power_of_two(std::size_t n) { return n != 0 && (n & (n - 1)) == 0; }

// The one aligned path. A power of two above the stage's limit is a valid request this stage
// cannot serve: nullptr with ENOMEM, like any other allocation it cannot serve.
void* aligned(std::size_t alignment, std::size_t size) {
    if (alignment > stage().max_alignment) return edu::enomem();
    return api().aligned_alloc(alignment, size);
}

std::size_t page_size() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

// fork: the debug layers' locks first (a layer calls into its stage), then the stage's, then
// that of the over-aligned blocks (contract/mapped.h), which a stage calls into.
void prepare_fork() {
    edu::debug_prepare_fork();
    stage().prepare_fork();
    edu::mapped_prepare_fork();
}
void after_fork_parent() {
    edu::mapped_after_fork_parent();
    stage().after_fork_parent();
    edu::debug_after_fork_parent();
}
void after_fork_child() {
    edu::mapped_after_fork_child();
    stage().after_fork_child();
    edu::debug_after_fork_child();
}

// C has errno 0 when main begins, and this runs before it: nothing here may leave errno set
// (the copy of a stderr the program was started without fails with EBADF).
__attribute__((constructor)) void preload_start() {
    int saved = errno;
    chosen_entry();  // a program that has not allocated yet chooses its entry now
    if (g_print_stats || g_check_at_exit || g_debug) {
        g_stderr_copy = fcntl(2, F_DUPFD_CLOEXEC, 3);
        if (g_stderr_copy >= 0 && fstat(g_stderr_copy, &g_stderr_file) != 0) {
            close(g_stderr_copy);
            g_stderr_copy = -1;
        }
    }
    if (pthread_atfork(prepare_fork, after_fork_parent, after_fork_child) != 0)
        edu::die(stage().name, "pthread_atfork", nullptr, "cannot register the fork hooks");
    errno = saved;
}

// Runs after the program's own destructors and atexit handlers: the numbers are final.
// Debug mode checks every block and lists the leaks.
__attribute__((destructor)) void preload_finish() {
    if (!g_print_stats && !g_check_at_exit && !g_debug) return;
    if (fcntl(2, F_GETFD) == -1 && copy_is_stderrs()) dup2(g_stderr_copy, 2);
    const edu::Stage& s = stage();
    if (g_print_stats) edu::print_stats(s, api().stats());
    if (g_debug) edu::debug_finish(edu::debug_entry(s, *s.thread_safe), 10);
    if (g_check_at_exit) {
        edu::CheckResult verdict = api().check();
        if (!verdict.ok) edu::die(s.name, "heap check at exit", nullptr, verdict.message);
    }
}

}  // namespace

// ---- The malloc family ----------------------------------------------------------------------
// Each definition repeats glibc's declaration (<stdlib.h>, <malloc.h>) exactly, `noexcept`
// included, so the compiler checks the signatures.

EDU_EXPORT EDU_EXPORT_ALIGNED void* malloc(size_t size) noexcept {
#ifdef EDU_PRELOAD_DROP_IN
    return DropIn::exported_malloc(size, [](size_t n) { return slot(&g_malloc)(n); });
#else
    return slot(&g_malloc)(size);
#endif
}

EDU_EXPORT EDU_EXPORT_ALIGNED void free(void* ptr) noexcept {
#ifdef EDU_PRELOAD_DROP_IN
    DropIn::exported_free(ptr, [](void* p) { slot(&g_free)(p); });
#else
    slot(&g_free)(ptr);
#endif
}

EDU_EXPORT void* calloc(size_t count, size_t size) noexcept { return slot(&g_calloc)(count, size); }

EDU_EXPORT void* realloc(void* ptr, size_t size) noexcept { return slot(&g_realloc)(ptr, size); }

// realloc(ptr, count * size), refusing a product that overflows (ptr stays valid).
EDU_EXPORT void* reallocarray(void* ptr, size_t count, size_t size) noexcept {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) return edu::enomem();
    return slot(&g_realloc)(ptr, total);
}

// glibc's memalign rounds an alignment that is not a power of two up to the next one; one
// above 2^63 has none to round to and is invalid (EINVAL, as glibc says), not too large.
EDU_EXPORT void* memalign(size_t alignment, size_t size) noexcept {
    if (alignment > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return nullptr;
    }
    if (alignment > stage().max_alignment) return aligned(alignment, size);  // ENOMEM
    size_t power = 1;
    while (power < alignment) power <<= 1;
    return aligned(power, size);
}

// POSIX: EINVAL unless alignment is a power-of-two multiple of sizeof(void*); ENOMEM when it
// cannot be served. The result is returned, errno is left as it was.
EDU_EXPORT int posix_memalign(void** out, size_t alignment, size_t size) noexcept {
    if (!is_power_of_two(alignment) || alignment % sizeof(void*) != 0) return EINVAL;
    int saved = errno;
    void* p = aligned(alignment, size);
    if (p == nullptr) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

// C17 aligned_alloc: an alignment that is not a power of two is invalid (EINVAL).
EDU_EXPORT void* aligned_alloc(size_t alignment, size_t size) noexcept {
    if (!is_power_of_two(alignment)) {
        errno = EINVAL;
        return nullptr;
    }
    return aligned(alignment, size);
}

EDU_EXPORT void* valloc(size_t size) noexcept { return aligned(page_size(), size); }

// valloc of the size rounded up to whole pages (pvalloc(0) gives one page, as in glibc).
EDU_EXPORT void* pvalloc(size_t size) noexcept {
    size_t page = page_size();
    size_t rounded;
    if (__builtin_add_overflow(size, page - 1, &rounded)) return edu::enomem();
    rounded &= ~(page - 1);
    return aligned(page, rounded == 0 ? page : rounded);
}

EDU_EXPORT size_t malloc_usable_size(void* ptr) noexcept {
    return ptr == nullptr ? 0 : api().usable_size(ptr);
}

// Which stage serves this process: lets tests and tools confirm the preload is active, and read
// or set its options (the copy whose set_option keeps the slots in step).
EDU_EXPORT const edu::Stage* edu_preload_stage() noexcept {
    pthread_once(&g_exported_once, make_exported_stage);
    return &g_exported_stage;
}

// ---- Resource limits ------------------------------------------------------------------------
// A stage that reserved address space before the program lowered its own RLIMIT_AS must hear of
// it before the program's next mapping (a thread's stack, right after setrlimit), or that
// mapping is refused: stage 4's arena (S4.68). So the four calls that set a limit are the
// library's: each is the kernel's prlimit64 (glibc's own are that one system call; called raw,
// there is no lookup of the next definition to get wrong before the library is initialised),
// and once the kernel has taken a new RLIMIT_AS for this process, the stage's limit_set runs.
// Raising or keeping a limit tells it too; the stage asks getrlimit what is in force.
namespace {

int set_limit(pid_t pid, int resource, const void* limit, void* old) {
    long result = syscall(SYS_prlimit64, pid, resource, limit, old);   // -1 and errno, as glibc's
    if (result == 0 && limit != nullptr && resource == RLIMIT_AS && (pid == 0 || pid == getpid()) &&
        stage().limit_set != nullptr)
        stage().limit_set();
    return static_cast<int>(result);
}

}  // namespace

EDU_EXPORT int setrlimit(__rlimit_resource_t resource, const struct rlimit* limit) noexcept {
    return set_limit(0, resource, limit, nullptr);
}

EDU_EXPORT int setrlimit64(__rlimit_resource_t resource, const struct rlimit64* limit) noexcept {
    return set_limit(0, resource, limit, nullptr);
}

EDU_EXPORT int prlimit(pid_t pid, __rlimit_resource resource, const struct rlimit* limit, struct rlimit* old) noexcept {
    return set_limit(pid, resource, limit, old);
}

EDU_EXPORT int prlimit64(pid_t pid, __rlimit_resource resource, const struct rlimit64* limit,
                         struct rlimit64* old) noexcept {
    return set_limit(pid, resource, limit, old);
}
