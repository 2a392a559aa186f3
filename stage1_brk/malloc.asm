; stage1_brk/malloc.asm: the malloc family over blocks and regions.
; Entry points: s1_malloc, s1_free, s1_realloc, s1_memalign, s1_usable_size, s1_validate.
; Everything a caller can get wrong is caught here, before any block is touched; errno, the
; lock and the diagnostics belong to the C++ adapter (stage1.cc).

default rel
%include "types.inc"

extern s1_find_fit, s1_find_aligned              ; freelist.asm
extern s1_list_remove, s1_list_push              ; freelist.asm
extern s1_place, s1_coalesce, s1_split_tail      ; block.asm
extern s1_heap_grow, s1_heap_trim, s1_region_of  ; heap.asm
extern s1_release                                ; heap.asm
extern s1_status, s1_last_region, s1_fit_policy  ; heap.asm
extern s1_trim_fixed, s1_trim_followed         ; heap.asm [S1.43]

section .text

; [S1.15] ADJUST_SIZE dst, src: the block size for a request of `src` payload bytes: room for
; the header (a used block has no footer), rounded up to 16, at least S1_MIN_BLOCK (so
; malloc(0) gets a real, unique block, and the block can hold a free block's tags and links).
; The caller has already refused requests above S1_MAX_REQUEST.
%macro ADJUST_SIZE 2
        lea     %1, [%2 + S1_OVERHEAD + S1_ALIGN - 1]
        and     %1, -S1_ALIGN
        cmp     %1, S1_MIN_BLOCK
        jae     %%big_enough
        mov     %1, S1_MIN_BLOCK
%%big_enough:
%endmacro

; TOO_LARGE reg, label: jump to label when reg > S1_MAX_REQUEST (clobbers rax).
%macro TOO_LARGE 2
        mov     rax, S1_MAX_REQUEST
        cmp     %1, rax
        ja      %2
%endmacro

; [S1.48] s1_malloc: a block with at least `size` usable bytes, 16-byte aligned. Adjust the
; size, find a fit, and grow the heap only when none fits; both paths join at .found, where
; s1_place splits the block and the payload lies just past its header.
;   IN:  rdi = size in bytes (0 is fine)
;   OUT: rax = payload address, or 0 with s1_status = S1_ENOMEM (heap unchanged)
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_malloc:function hidden
s1_malloc:
        TOO_LARGE rdi, .too_large
        push    rbx                             ; rbx = asize (one push: calls see rsp aligned)
        ADJUST_SIZE rbx, rdi
        mov     rdi, rbx
        call    s1_find_fit                     ; a free block that is large enough?
        test    rax, rax
        jnz     .found
        ; [S1.42] How much room the growth adds. A block for the back (S1_SPLIT_BACK bytes or
        ; more) takes exactly what is missing [S1.38], so the margin serves small blocks only,
        ; which go at the front of the grown block. Under the segregated fit that margin is the
        ; room in which [S1.32] keeps small blocks (from the front) and large ones (from the
        ; back) apart, so it is a 32nd of the heap there (S1_SMALL_GROW_SHIFT) rather than a
        ; 256th: with a 256th a growth holds a pair or two of blocks and nothing is kept apart.
        ; The list policies place every block at the front and keep a 256th.
        mov     rdi, rbx
        mov     esi, S1_GROW_EXACT              ; a block for the back: exact growth [S1.38]
        cmp     rbx, S1_SPLIT_BACK
        jae     .grow
        xor     esi, esi                        ; a small block: the margin [S1.31]...
        cmp     qword [s1_fit_policy], S1_FIT_SEG
        jne     .grow
        mov     esi, S1_GROW_WIDE               ; ...a 32nd of the heap under the seg fit
.grow:
        call    s1_heap_grow                    ; no: make one from the break
        test    rax, rax
        jz      .out                            ; s1_status already says ENOMEM
.found:
        mov     rdi, rax
        mov     rsi, rbx
        call    s1_place                        ; rax = the used block's header
        add     rax, 8                          ; payload just past the header
.out:
        pop     rbx
        ret
.too_large:
        mov     dword [s1_status], S1_ENOMEM
        xor     eax, eax
        ret

; [S1.16] s1_validate: is `ptr` a used block of this heap? Checked in order of cost: alignment,
; region, poison (a block absorbed by coalescing), size within the region, then the flags: a
; used block's (allocated, perhaps PREV_FREE, nothing else), and the header at header + size
; must be one that can follow a used block: the region's epilogue, or a block of at least
; S1_MIN_BLOCK bytes inside the region with no flag but "allocated" (PREV_FREE there would say
; we are free). A free block's header must equal its footer (a double free). Catches double
; frees, foreign and interior pointers without walking the blocks (only the short region
; list); an interior pointer whose bytes happen to look like a used header, with a plausible
; header at the right distance, would pass: the price of not walking.
;   IN:  rdi = pointer (not 0)
;   OUT: eax = S1_OK, S1_MISALIGNED, S1_FOREIGN, S1_NOT_A_BLOCK, S1_DOUBLE_FREE or
;        S1_HEAP_DAMAGED (the region walk met a damaged word, [S1.40])
;   Clobbers: rax, rcx, rdx, rsi, rdi, r8. Preserves: everything else.
global s1_validate:function hidden
s1_validate:
        test    dil, S1_ALIGN - 1
        jnz     .misaligned
        call    s1_region_of                    ; rdi untouched; a leaf, so the unaligned
                                                ; stack (no push before the call) is harmless
        jc      .damaged                        ; [S1.40]
        test    rax, rax
        jz      .foreign
        lea     rcx, [rax + S1_FIRST_BLOCK + 8]
        cmp     rdi, rcx
        jb      .not_a_block                    ; points at the region's end word
        mov     rdx, [rax + S1_REGION_END]      ; rdx = region end
        mov     rcx, [rdi - 8]                  ; rcx = header
        mov     rsi, S1_POISON
        cmp     rcx, rsi
        je      .double_free                    ; its block was merged into a free one
        mov     rsi, rcx
        and     rsi, ~S1_FLAGS                  ; rsi = size
        cmp     rsi, S1_MIN_BLOCK
        jb      .not_a_block
        mov     rax, rdx
        sub     rax, rdi                        ; room from the payload to the region end
        cmp     rsi, rax
        ja      .not_a_block                    ; would run past the epilogue
        mov     r8, rcx                         ; r8 = header
        and     ecx, S1_FLAGS
        jz      .free_tag
        and     ecx, ~S1_PREV_FREE
        cmp     ecx, S1_ALLOC
        jne     .not_a_block                    ; flag bits no header has
        lea     rax, [rdi + rsi - 8]            ; rax = the next block's header
        sub     rdx, 8                          ; rdx = the region's epilogue
        mov     rcx, [rax]
        cmp     rax, rdx
        je      .next_epilogue
        test    cl, S1_FLAGS & ~S1_ALLOC
        jnz     .not_a_block                    ; PREV_FREE (we would be free) or junk
        and     rcx, ~S1_FLAGS
        cmp     rcx, S1_MIN_BLOCK
        jb      .not_a_block
        sub     rdx, rax                        ; room from the next header to the epilogue
        cmp     rcx, rdx
        jbe     .ok                             ; a plausible next block: we are used
        jmp     .not_a_block
.next_epilogue:                                 ; we are the region's last block, if the epilogue
        and     ecx, S1_FLAGS                   ; says "allocated" without PREV_FREE (its size
        cmp     ecx, S1_EPILOGUE_TAG            ; bits are the link to the next region)
        je      .ok
        jmp     .not_a_block
.free_tag:
        cmp     r8, [rdi + rsi - 16]            ; a free block's footer: header + size - 8
        je      .double_free                    ; a well-formed free block
.not_a_block:
        mov     eax, S1_NOT_A_BLOCK
        ret
.ok:
        xor     eax, eax
        ret
.misaligned:
        mov     eax, S1_MISALIGNED
        ret
.foreign:
        mov     eax, S1_FOREIGN
        ret
.double_free:
        mov     eax, S1_DOUBLE_FREE
        ret
.damaged:
        mov     eax, S1_HEAP_DAMAGED
        ret

; [S1.17] s1_free: validate, then mark the block free, coalesce it and maybe trim the heap.
;   IN:  rdi = pointer from s1_malloc / s1_realloc / s1_memalign, or 0 (ignored)
;   OUT: eax = S1_OK, or the status of a bad pointer (then the heap is unchanged)
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_free:function hidden
s1_free:
        test    rdi, rdi
        jz      .null
        push    rbx
        mov     rbx, rdi
        call    s1_validate
        test    eax, eax
        jnz     .out                            ; bad pointer: touch nothing
        lea     rdi, [rbx - 8]
        call    s1_free_block
        xor     eax, eax
.out:
        pop     rbx
        ret
.null:
        xor     eax, eax
        ret

; s1_free_block: free a block already known to be used.
;   IN:  rdi = header of a used block
;   OUT: nothing
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_free_block:function hidden
s1_free_block:
        push    rbx                             ; rbx = the block's size
        mov     rax, [rdi]
        and     rax, ~S1_ALLOC                  ; free now; PREV_FREE stays for s1_coalesce,
        mov     [rdi], rax                      ; which writes the footer
        and     rax, ~S1_FLAGS
        mov     rbx, rax
        cmp     qword [s1_trim_fixed], 0        ; [S1.43] the trim follows large frees...
        jne     .followed                       ; ...unless the trim option fixed it
        cmp     rax, S1_TRIM_FOLLOW_MIN
        jb      .followed                       ; not large enough to follow
        cmp     rax, S1_TRIM_FOLLOW_MAX
        ja      .followed                       ; glibc would have unmapped it for good
        add     rax, rax
        cmp     rax, [s1_trim_followed]
        jbe     .followed
        mov     [s1_trim_followed], rax         ; twice the largest so far
.followed:
        call    s1_coalesce
        push    rax
        sub     rsp, 8
        mov     rdi, rax
        mov     rsi, rbx
        call    s1_release                      ; pages inside a large free run go back
        add     rsp, 8
        pop     rdi
        call    s1_heap_trim                    ; a free tail lowers the break
        pop     rbx
        ret

; s1_usable_size: the payload bytes of a used block (at least what was asked for).
;   IN:  rdi = pointer
;   OUT: rax = usable bytes, or 0 with s1_status set for a bad pointer (0 for a null pointer)
;   Clobbers: rax, rcx, rdx, rsi, rdi, r8. Preserves: everything else.
global s1_usable_size:function hidden
s1_usable_size:
        test    rdi, rdi
        jz      .zero
        push    rbx
        mov     rbx, rdi
        call    s1_validate
        test    eax, eax
        jnz     .bad
        mov     rax, [rbx - 8]
        and     rax, ~S1_FLAGS
        sub     rax, S1_OVERHEAD                ; block minus its header
        pop     rbx
        ret
.bad:
        mov     [s1_status], eax
        pop     rbx
.zero:
        xor     eax, eax
        ret

; [S1.18] s1_realloc: resize a block, in place whenever the neighbours allow.
;   shrink -> keep it; split the tail off when it can stand as a block of its own;
;   grow, next block free and large enough -> absorb it (forward);
;   grow, block ends the heap (or only a free block follows it) -> extend the break by what
;     is missing, so the new memory joins that free tail, then absorb it;
;   grow, previous block free, and previous + block (+ next, when free) large enough -> take
;     them and move the payload down (backward);
;   otherwise -> allocate, copy the old payload, free the old block.
; [S1.33] A grown block takes exactly its new size: what it absorbs beyond that goes back as
; a free block when it can stand alone. No slack is kept for the next growth: with the growth
; rule [S1.31] and the path at the break, slack costs more heap than it saves (the chapter's
; [S1.33] measures it).
;   IN:  rdi = pointer or 0 (then this is s1_malloc), rsi = new size
;   OUT: rax = the block (same or moved), or 0 with s1_status = S1_ENOMEM (old block intact)
;        or a bad-pointer status (nothing touched)
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
;   Stack: five pushes + return address = 48 bytes (aligned calls).
global s1_realloc:function hidden
s1_realloc:
        ; [lab S1.realloc begin]
        test    rdi, rdi
        jnz     .resize
        mov     rdi, rsi
        jmp     s1_malloc                       ; realloc(NULL, n) is malloc(n)
.resize:
        push    rbx                             ; rbx = payload
        push    r12                             ; r12 = requested size
        push    r13                             ; r13 = asize
        push    r14                             ; r14 = header
        push    r15                             ; r15 = current block size
        mov     rbx, rdi
        mov     r12, rsi
        call    s1_validate
        test    eax, eax
        jnz     .bad_pointer
        TOO_LARGE r12, .too_large
        ADJUST_SIZE r13, r12
        lea     r14, [rbx - 8]
        mov     r15, [r14]
        and     r15, ~S1_FLAGS
        cmp     r13, r15
        ja      .grow
        mov     rdi, r14                        ; shrink (or stay) in place: a tail that can
        mov     rsi, r13                        ; stand alone goes back
        call    s1_split_tail
        mov     rax, rbx
        jmp     .out

.grow:
        lea     rdi, [r14 + r15]                ; rdi = the next block's header
        mov     rax, [rdi]
        mov     rcx, rdi                        ; rcx = where the heap must end to grow here
        test    al, S1_ALLOC
        jnz     .at_end                         ; next is used, or the epilogue
        lea     rdx, [r15 + rax]
        cmp     rdx, r13
        jae     .forward                        ; next is free and large enough
        add     rcx, rax                        ; next is free but short: what follows it?
.at_end:
        mov     rax, [s1_last_region]
        mov     rax, [rax + S1_REGION_END]
        sub     rax, 8
        cmp     rcx, rax
        jne     .backward                       ; not the epilogue at the break: no room here
        mov     rdi, r13
        sub     rdi, r15                        ; only what the block lacks: asize - size
        xor     esi, esi                        ; with the margin: this block may grow again
        call    s1_heap_grow                    ; extend: the new memory joins the free tail
        test    rax, rax
        jz      .backward                       ; no more break: other ways may still work
        lea     rdi, [r14 + r15]
.forward:                                       ; IN: rdi = next block's header
        mov     rax, [rdi]
        test    al, S1_ALLOC
        jnz     .backward                       ; next is used (the growth made a new region)
        lea     rcx, [r15 + rax]                ; rcx = combined size
        cmp     rcx, r13
        jb      .backward                       ; not enough even together
        push    rcx
        push    rdi
        call    s1_list_remove
        pop     rdi
        pop     rcx
        mov     rax, S1_POISON
        mov     [rdi], rax                      ; the absorbed header is gone
        mov     rdx, r14                        ; the block stays where it is
        jmp     .fit

.backward:
        test    qword [r14], S1_PREV_FREE
        jz      .move                           ; previous is used (or there is none)
        mov     rax, [r14 - 8]                  ; the previous block's footer: its size
        lea     rcx, [r15 + rax]                ; rcx = previous + block
        mov     rdx, [r14 + r15]
        test    dl, S1_ALLOC
        jnz     .backward_sum
        add     rcx, rdx                        ; + next, when it is free
.backward_sum:
        cmp     rcx, r13
        jb      .move                           ; not enough even together
        push    rcx
        push    rax
        mov     rdi, r14
        sub     rdi, rax                        ; the previous block's header
        call    s1_list_remove
        lea     rdi, [r14 + r15]
        test    qword [rdi], S1_ALLOC
        jnz     .backward_copy
        call    s1_list_remove                  ; the next block joins too
        mov     rax, S1_POISON
        mov     [r14 + r15], rax
.backward_copy:
        pop     rax
        pop     rcx
        mov     rdx, r14
        sub     rdx, rax                        ; rdx = the run's header (the previous block's)
        push    rdx
        push    rcx
        lea     rdi, [rdx + 8]
        mov     rsi, rbx
        lea     rcx, [r15 - S1_OVERHEAD]
        rep     movsb                           ; down: a forward copy is safe as they overlap
        pop     rcx
        pop     rdx

.fit:   ; IN: rdx = header of the run the block now starts, rcx = the run's size (>= asize).
        ; The block takes asize; a rest that can stand alone goes back as free. The run's
        ; first header says what precedes it: our own block's (forward) or a free block's,
        ; whose predecessor is used (backward).
        mov     r8, [rdx]
        and     r8d, S1_PREV_FREE               ; r8 = the run's PREV_FREE, kept
        mov     rax, r13                        ; rax = used
        mov     rsi, rcx
        sub     rsi, rax                        ; rsi = rest
        cmp     rsi, S1_MIN_BLOCK
        jae     .fit_split
        lea     r8, [r8 + rcx + S1_ALLOC]
        mov     [rdx], r8                       ; used, the whole run (a header only)
        and     qword [rdx + rcx], ~S1_PREV_FREE ; the block after the run follows a used one
        jmp     .fit_done
.fit_split:
        lea     r8, [r8 + rax + S1_ALLOC]
        mov     [rdx], r8                       ; used, `used` bytes (a header only)
        lea     rdi, [rdx + rax]
        SET_TAGS rdi, rsi, r9                   ; the rest is a free block (its next is used)
        or      qword [rdi + rsi], S1_PREV_FREE ; which follows the free rest now
        push    rdx
        sub     rsp, 8
        call    s1_list_push
        add     rsp, 8
        pop     rdx
.fit_done:
        lea     rax, [rdx + 8]
        jmp     .out

.move:
        lea     rdi, [r13 - S1_OVERHEAD]
        call    s1_malloc
        test    rax, rax
        jz      .out                            ; ENOMEM: the old block is untouched
        mov     r13, rax
        mov     rdi, rax                        ; copy the whole old payload
        mov     rsi, rbx
        lea     rcx, [r15 - S1_OVERHEAD]
        rep     movsb
        mov     rdi, r14
        call    s1_free_block
        mov     rax, r13
        jmp     .out

.too_large:
        mov     eax, S1_ENOMEM
.bad_pointer:
        mov     [s1_status], eax
        xor     eax, eax
.out:
        pop     r15
        pop     r14
        pop     r13
        pop     r12
        pop     rbx
        ret
        ; [lab S1.realloc end]

; [S1.19] s1_memalign: a block whose payload is a multiple of `alignment`. Allocate enough to
; slide forward to an aligned payload with a free block's worth of room behind it, give the
; leading piece back as a free block (coalescing it with a free predecessor), then give back
; the tail past the requested size.
;
;      p (from malloc)          q (aligned)
;   +--+------------------------+--+---------------------+----------+
;   |h |   lead: freed, >= 32   |h | asize               | tail     |
;   +--+------------------------+--+---------------------+----------+
;
;   IN:  rdi = alignment (a power of two <= S1_MAX_ALIGNMENT), rsi = size
;   OUT: rax = aligned payload, or 0 with s1_status = S1_ENOMEM
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_memalign:function hidden
s1_memalign:
        cmp     rdi, S1_ALIGN
        ja      .large
        mov     rdi, rsi
        jmp     s1_malloc                       ; every payload is 16-aligned already
.large:
        TOO_LARGE rsi, .too_large
        push    rbx                             ; rbx = alignment
        push    r12                             ; r12 = asize
        push    r13                             ; r13 = payload from malloc
        push    r14                             ; r14 = aligned payload
        push    r15                             ; (alignment)
        mov     rbx, rdi
        ADJUST_SIZE r12, rsi
        cmp     qword [s1_fit_policy], S1_FIT_SEG
        jne     .slide
        ; [S1.35] Under the segregated fit, first look for a free block in which the aligned
        ; block fits as it is: a bounded search (s1_find_aligned), and the hole an identical
        ; aligned block left behind is found again. Carve it: a lead of >= 32 bytes stays
        ; free (its predecessor is used: no coalescing), the tail goes back below.
        mov     rdi, r12
        mov     rsi, rbx
        call    s1_find_aligned                 ; rax = free block, rdx = aligned payload
        test    rax, rax
        jz      .slide                          ; none: the general way
        mov     r13, rax
        mov     r14, rdx
        mov     rdi, rax
        call    s1_list_remove
        lea     rsi, [r14 - 8]                  ; the aligned block's header
        mov     rax, r13
        add     rax, [r13]                      ; the free block's end
        and     qword [rax], ~S1_PREV_FREE      ; the block there follows a used one now
        sub     rax, rsi                        ; bytes from the aligned header to that end
        lea     rdx, [rax + S1_ALLOC]
        mov     [rsi], rdx                      ; the aligned block, used, up to the end
        cmp     rsi, r13
        je      .tail                           ; no lead: the hole's predecessor is used
        or      qword [rsi], S1_PREV_FREE       ; it follows the lead, free
        mov     rcx, rsi
        sub     rcx, r13                        ; the lead's size (>= S1_MIN_BLOCK)
        SET_TAGS r13, rcx, rax                  ; the lead, a free block
        mov     rdi, r13
        call    s1_list_push
        jmp     .tail
.slide:
        lea     rdi, [r12 + rbx + S1_MIN_BLOCK - S1_OVERHEAD]
        call    s1_malloc                       ; block of asize + alignment + S1_MIN_BLOCK
        test    rax, rax
        jz      .out
        mov     r13, rax
        mov     r14, rax
        lea     rcx, [rbx - 1]
        test    rax, rcx
        jz      .tail                           ; already aligned: no lead
        lea     r14, [r13 + S1_MIN_BLOCK + rbx - 1]
        neg     rbx
        and     r14, rbx                        ; first aligned payload >= p + 32
        neg     rbx
        lea     rdi, [r13 - 8]                  ; the malloc'd block's header
        mov     rax, [rdi]
        mov     r8, rax
        and     r8d, S1_PREV_FREE               ; what precedes it precedes the lead
        and     rax, ~S1_FLAGS                  ; its size
        mov     rcx, r14
        sub     rcx, r13                        ; lead bytes
        sub     rax, rcx                        ; bytes from the aligned header on
        lea     rdx, [rax + S1_ALLOC + S1_PREV_FREE]
        mov     [r14 - 8], rdx                  ; the aligned block, used, after the free lead
        or      rcx, r8
        mov     [rdi], rcx                      ; the lead, a free block (s1_coalesce writes
        call    s1_coalesce                     ; its footer), merged with a free predecessor
.tail:
        lea     rdi, [r14 - 8]
        mov     rsi, r12
        call    s1_split_tail                   ; drop what lies past asize
        mov     rax, r14
.out:
        pop     r15
        pop     r14
        pop     r13
        pop     r12
        pop     rbx
        ret
.too_large:
        mov     dword [s1_status], S1_ENOMEM
        xor     eax, eax
        ret

section .note.GNU-stack noalloc noexec nowrite progbits
; EOF
