; stage1_brk/block.asm: what happens to one block and its neighbours.
; Entry points: s1_place (allocate a free block, splitting off the rest), s1_coalesce (merge a
; free block with free neighbours), s1_split_tail (give back the end of a used block).
; Boundary tags make every neighbour one load away; the epilogue gives every block a next one.

default rel
%include "types.inc"

extern s1_list_push, s1_list_remove             ; freelist.asm
extern s1_heap_trim, s1_fit_policy, s1_last_region ; heap.asm
extern s1_trim_threshold, s1_dirty_bytes        ; heap.asm

section .text

; [S1.12] s1_place: turn a free block into a used one of `asize` bytes. When what is left
; can stand as a block of its own (>= S1_MIN_BLOCK) it is split off and goes on a free list;
; otherwise the whole block is used and the few spare bytes are internal fragmentation.
; The remainder never needs coalescing: a free block's neighbours are both used.
; [S1.32] Where the used part goes: at the front of the free block, except under the
; segregated fit for blocks of S1_SPLIT_BACK bytes or more, which go at its back. Small and
; large blocks then grow from opposite ends of the same free space, so when the large ones
; die together their holes merge instead of being pinned apart by small survivors; and a
; large block carved from the heap's trailing free block ends the heap, where realloc can
; extend it with the break. One exception: in the trailing free block (the wilderness), a
; large block goes at the back only when what stays in front is at least as large as the
; block. A smaller front piece would be stranded below a used block, too small for most
; requests and unable to grow; placed at the front, the block leaves the rest as the
; wilderness, which the next growth extends.
; [S1.44] One more exception, for holes (free blocks other than the wilderness): a large block
; takes the whole hole when what would stay is under a 16th of the block. Such a sliver,
; left beside a large block, is soon taken by a small one, which then pins the hole apart
; when the large block dies; kept inside the block, it comes back with it.
;   IN:  rdi = header of a block on a free list, rsi = asize (<= its size)
;   OUT: rax = header of the used block (rdi, or inside it when placed at the back)
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_place:function hidden
s1_place:
        push    rbx                             ; rbx = block
        push    r12                             ; r12 = asize
        push    r13                             ; r13 = block's size
        mov     rbx, rdi
        mov     r12, rsi
        call    s1_list_remove
        mov     r13, [rbx]                      ; free tag = size
        cmp     r13, [s1_trim_threshold]
        jb      .counted
        mov     rax, [s1_dirty_bytes]           ; [S1.36] carved from a large block: taken
        sub     rax, r12                        ; from the bytes waiting to be released
        jae     .less
        xor     eax, eax
.less:
        mov     [s1_dirty_bytes], rax
.counted:
        mov     rax, r13
        sub     rax, r12                        ; rax = what would remain
        cmp     rax, S1_MIN_BLOCK
        jb      .whole
        cmp     qword [s1_fit_policy], S1_FIT_SEG
        jne     .front
        cmp     r12, S1_SPLIT_BACK
        jb      .front
        cmp     rax, r12
        jae     .back                           ; room in front: a real hole, not a sliver
        mov     rcx, [s1_last_region]
        mov     rcx, [rcx + S1_REGION_END]
        lea     rdx, [rbx + r13 + 8]            ; where the block's epilogue would be
        cmp     rdx, rcx
        je      .front                          ; the wilderness keeps its rest at the end
        mov     rcx, rax                        ; [S1.44] a hole: is the rest a sliver?
        shl     rcx, S1_SLIVER_SHIFT            ; (rest < asize here: no overflow)
        cmp     rcx, r12
        jb      .whole                          ; under a 16th of the block: keep it all
.back:
        SET_TAGS rbx, rax, rdx                  ; the rest stays at the front, free
        mov     rdi, rbx
        add     rbx, rax                        ; the used block: the last asize bytes
        lea     rcx, [r12 + S1_ALLOC + S1_PREV_FREE]
        mov     [rbx], rcx                      ; its header (no footer); the front is free
        and     qword [rbx + r12], ~S1_PREV_FREE ; the next block follows a used one now
        call    s1_list_push                    ; rdi = the free front
        jmp     .out
.front:
        lea     rcx, [r12 + S1_ALLOC]           ; (a free block's predecessor is used)
        mov     [rbx], rcx                      ; the used front part: its header only
        lea     rdi, [rbx + r12]                ; the remainder's header
        SET_TAGS rdi, rax, rdx                  ; a free block of the rest (the next block's
        call    s1_list_push                    ; PREV_FREE stays set)
        jmp     .out
.whole:
        lea     rcx, [r13 + S1_ALLOC]
        mov     [rbx], rcx                      ; used, all of it
        and     qword [rbx + r13], ~S1_PREV_FREE ; the next block follows a used one now
.out:
        mov     rax, rbx
        pop     r13
        pop     r12
        pop     rbx
        ret

; [S1.13] s1_coalesce: merge a newly free block with its free neighbours and put the result on
; the free list. Four cases, by the allocated bits of the two neighbours:
;     prev used, next used  ->  the block alone
;     prev used, next free  ->  block + next
;     prev free, next used  ->  prev + block
;     prev free, next free  ->  prev + block + next
; The next block's header is at block + size. The block's own PREV_FREE bit says whether the
; previous block is free; only then is the word below our header that block's footer, which
; says how far back it starts; the first block's bit is always clear [S1.37]. The epilogue is
; marked used, so the region's end needs no test either. An absorbed header is overwritten
; with S1_POISON so that freeing its old payload again reads as a double free, not as a valid
; block. The block after the merged run
; (used, or the epilogue) gets its PREV_FREE bit set.
;   IN:  rdi = header of a block tagged free (its size, and PREV_FREE kept from when it was
;        used), not on the list
;   OUT: rax = header of the merged block (on the list)
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
;   Stack: four pushes + 8 bytes + return address = 48 bytes (aligned calls).
global s1_coalesce:function hidden
s1_coalesce:
        ; [lab S1.coalesce begin]
        push    rbx                             ; rbx = merged block's header
        push    r12                             ; r12 = merged size
        push    r13                             ; r13 = next block
        push    r14                             ; r14 = previous block, or 0 when it is used
        sub     rsp, 8
        mov     rbx, rdi
        mov     r12, [rbx]                      ; size | PREV_FREE
        xor     r14d, r14d
        test    r12b, S1_PREV_FREE
        jz      .size
        mov     r14, rbx
        sub     r14, [rbx - 8]                  ; the previous block's footer: its size
.size:
        and     r12, ~S1_FLAGS
        lea     r13, [rbx + r12]                ; next block's header
        test    qword [r13], S1_ALLOC
        jnz     .prev                           ; next is used (or the epilogue)
        mov     rdi, r13
        call    s1_list_remove
        add     r12, [r13]                      ; absorb next
        mov     rax, S1_POISON
        mov     [r13], rax
.prev:
        test    r14, r14
        jz      .write                          ; previous is used (or there is none)
        mov     rdi, r14
        call    s1_list_remove
        add     r12, [r14]                      ; absorb into previous
        mov     rax, S1_POISON
        mov     [rbx], rax
        mov     rbx, r14
.write:
        SET_TAGS rbx, r12, rax                  ; one free block over the whole run
        or      qword [rbx + r12], S1_PREV_FREE ; the block after the run follows a free one
        mov     rdi, rbx
        call    s1_list_push
        mov     rax, rbx
        add     rsp, 8
        pop     r14
        pop     r13
        pop     r12
        pop     rbx
        ret
        ; [lab S1.coalesce end]

; [S1.14] s1_split_tail: shrink a used block to `asize` bytes when the tail can stand as a block,
; free the tail (coalescing it with a free successor) and trim the heap if the tail ends it.
; realloc uses it to shrink in place; memalign to drop what lies past the aligned block.
;   IN:  rdi = header of a used block, rsi = asize (<= its size)
;   OUT: nothing
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_split_tail:function hidden
s1_split_tail:
        mov     rax, [rdi]
        mov     rcx, rax
        and     rax, ~S1_FLAGS                  ; current size
        sub     rax, rsi                        ; tail size
        cmp     rax, S1_MIN_BLOCK
        jb      .keep                           ; too small to stand alone: keep it all
        push    rbx
        and     ecx, S1_FLAGS                   ; its flags (allocated, PREV_FREE) stay
        add     rcx, rsi
        mov     [rdi], rcx                      ; the used block, shortened (a header only)
        lea     rbx, [rdi + rsi]                ; the tail's header
        SET_TAGS rbx, rax, rdx                  ; a free tail
        mov     rdi, rbx
        call    s1_coalesce
        mov     rdi, rax
        call    s1_heap_trim
        pop     rbx
.keep:
        ret

section .note.GNU-stack noalloc noexec nowrite progbits
; EOF
