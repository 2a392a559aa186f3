// stage3_segments/free.h: checking a pointer handed back by the program (free, realloc,
// usable_size). Entry point: validate_block. The fast path's version is in alloc.h.
#pragma once

#include "stage3_segments/types.h"

namespace edu::stage3 {

// [S3.28] The page of `p` when p is a live block of this stage. Otherwise edu::die prints one
// line, "edu-alloc stage3_segments: <call>(<p>): <what is wrong>", and aborts: the contract's
// answer to a pointer it never handed out, whatever the secure option says.
Page* validate_block(const void* p, const char* call);

}  // namespace edu::stage3
