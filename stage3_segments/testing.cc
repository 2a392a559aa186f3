// stage3_segments/testing.cc: the shared test helpers and main() of stage 3's test binaries.
#include "stage3_segments/testing.h"

#include <doctest/doctest.h>

#include "stage3_segments/os.h"
#include "stage3_segments/stage3.h"

namespace edu::stage3::testing {

const Api& api() { return *descriptor.single_thread; }
bool set_option(const char* name, const char* value) { return descriptor.set_option(name, value); }
uint64_t footprint() { return os_counters().footprint; }
uint64_t os_calls(OsCall call) { return os_counters().calls[static_cast<unsigned>(call)]; }

OptionScope::OptionScope(const char* name, const char* value)
    : name_(name), old_(descriptor.get_option(name)) {
    REQUIRE(descriptor.set_option(name, value));
}

OptionScope::~OptionScope() { descriptor.set_option(name_, old_.c_str()); }

}  // namespace edu::stage3::testing

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    return context.run();
}
