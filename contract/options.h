// contract/options.h: options from the environment, for every stage at once.
// EDU_OPTIONS="debug=on stage1_brk.fit=best stage2_pools.geometry=modern" (spaces or commas
// between entries). "<stage>.<option>=<value>" sets an option of that stage; an entry without
// a stage prefix is a contract option, the same for every stage (today: debug=on|off, the
// debug layer of contract/debug.h). Nothing here allocates: the preload shim reads it inside
// the first malloc.
#pragma once

#include "contract/allocator.h"

namespace edu {

// Applies every EDU_OPTIONS entry addressed to `stage`. Returns false (after one line on
// stderr per entry, saying why: no such option, not one of its values, or refused and the
// condition the option states) when an entry could not be applied.
bool apply_environment_options(const Stage& stage);

// The contract options: the EDU_OPTIONS entries without a stage prefix. An entry whose prefix
// names none of the course's four stages is refused here (one line on stderr, ok false): a
// misspelt stage would otherwise be skipped as another stage's.
struct ContractOptions {
    bool debug = false;   // debug=on: every call goes through the debug layer
    bool ok = true;       // false when an entry was not understood (reported on stderr)
};
ContractOptions contract_options();

// The entry a program should call: `inner`, or the debug layer over it when the options ask.
const Api& entry_for(const Stage& stage, const Api& inner, const ContractOptions& options);

}  // namespace edu
