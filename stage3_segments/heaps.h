// stage3_segments/heaps.h: stage 3's own API beyond the contract: first-class heaps
// (create, allocate from, destroy with every block at once) and collection.
// Single-threaded like the stage: do not call these while another thread uses the stage.
// Blocks of any heap are released with the contract's free (or die with the heap).
#pragma once

#include <cstddef>

namespace edu::stage3 {

struct Heap;

// A new, empty heap; nullptr with errno = ENOMEM if its record cannot be mapped.
Heap* heap_create();
// A block of at least `size` bytes from `heap`, 16-aligned; nullptr with ENOMEM on failure.
void* heap_malloc(Heap* heap, std::size_t size);
// A block of at least `size` bytes from `heap` aligned to `alignment`, a power of two up to
// 2 MiB (kMaxAlignment); nullptr with ENOMEM when it cannot be served or the alignment is not one.
void* heap_aligned_alloc(Heap* heap, std::size_t alignment, std::size_t size);
// Zeroed memory for count * size bytes from `heap`; nullptr with ENOMEM on overflow/failure.
void* heap_calloc(Heap* heap, std::size_t count, std::size_t size);
// Frees every block of `heap` at once and the heap itself: its pages go straight back to
// their segments. Pointers into the heap are dangling afterwards.
void heap_destroy(Heap* heap);
// The heap behind the contract's malloc.
Heap* default_heap();

// Frees retired pages and cached segments whose delay has passed, or all of them (`force`):
// after freeing everything, collect(true) brings the footprint down to the metadata of
// segments that still hold live blocks.
void collect(bool force);

}  // namespace edu::stage3
