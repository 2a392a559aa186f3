// stage3_segments/testing.h: what stage 3's own tests share: the stage's entry points, a
// reading of its counters, a scope that sets an option and restores it, and a page's count of
// blocks in use. main() for the test binaries is in testing.cc (doctest's runner comes from
// //tests:support, with run_in_child for death tests).
#pragma once

#include <cstdint>
#include <string>

#include "contract/allocator.h"
#include "stage3_segments/types.h"

namespace edu::stage3::testing {

const Api& api();                 // descriptor.single_thread in the current mode
bool set_option(const char* name, const char* value);
uint64_t footprint();
uint64_t os_calls(OsCall call);

// Sets an option of stage 3 for the lifetime of the scope, then restores the old value.
class OptionScope {
public:
    OptionScope(const char* name, const char* value);
    ~OptionScope();
    OptionScope(const OptionScope&) = delete;
    OptionScope& operator=(const OptionScope&) = delete;

private:
    const char* name_;
    std::string old_;
};

inline uint32_t used_of(const Page* page) { return page->used; }

}  // namespace edu::stage3::testing
