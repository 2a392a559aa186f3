; stage1_brk/freelist.asm: the explicit free list and the three fit policies.
; Entry points: s1_list_push, s1_list_remove, s1_find_fit. Free blocks form one doubly linked,
; LIFO-ordered list threaded through their dead payloads, so a search costs as many steps as
; there are free blocks, not blocks. Splitting and coalescing are block.asm's.

default rel
%include "types.inc"

extern s1_fit_policy                            ; heap.asm
extern s1_list_corrupted                        ; stage1.cc: reports a broken link, aborts

section .bss
align 8
global s1_free_head:data hidden
global s1_rover:data hidden
s1_free_head:   resq 1                          ; header of the most recently freed block, or 0
s1_rover:       resq 1                          ; next fit: where the next search starts, or 0

section .text

; [S1.8] s1_list_push: put a free block at the head of the list (LIFO: the block freed last
; is found first, while its memory is still warm in the cache).
;   IN:  rdi = header of a free block that is not on the list
;   OUT: nothing
;   Clobbers: rax. Preserves: everything else.
global s1_list_push:function hidden
s1_list_push:
        mov     rax, [s1_free_head]
        mov     [rdi + S1_NEXT], rax            ; block.next = old head
        mov     qword [rdi + S1_PREV], 0        ; block.prev = none
        test    rax, rax
        jz      .empty
        mov     [rax + S1_PREV], rdi            ; old head.prev = block
.empty:
        mov     [s1_free_head], rdi
        ret

; [S1.25] s1_list_remove: unlink a free block, after checking that its neighbours on the list
; point back at it. The links live in the dead payload, where a write after free can reach
; them; unchecked, `prev.next = next` and `next.prev = prev` would store two values the program
; chose at two addresses it chose (the classic unlink attack). A link that does not point back
; is reported by s1_list_corrupted (the adapter's one-line diagnostic), which never returns.
; If the next-fit rover points at the block, the rover moves on to the block's successor, so it
; never points at memory that is no longer a free block.
;   IN:  rdi = header of a block on the list
;   OUT: nothing
;   Clobbers: rax, rcx. Preserves: everything else.
global s1_list_remove:function hidden
s1_list_remove:
        mov     rax, [rdi + S1_NEXT]            ; rax = next
        mov     rcx, [rdi + S1_PREV]            ; rcx = prev
        test    rax, rax
        jz      .next_checked
        cmp     [rax + S1_PREV], rdi
        jne     .corrupted                      ; next.prev != block
.next_checked:
        test    rcx, rcx
        jz      .head_checked
        cmp     [rcx + S1_NEXT], rdi
        jne     .corrupted                      ; prev.next != block
        jmp     .checked
.head_checked:
        cmp     [s1_free_head], rdi
        jne     .corrupted                      ; no prev, yet not the head
.checked:
        cmp     rdi, [s1_rover]
        jne     .unlink
        mov     [s1_rover], rax                 ; the rover steps past the removed block
.unlink:
        test    rcx, rcx
        jz      .was_head
        mov     [rcx + S1_NEXT], rax            ; prev.next = next
        jmp     .fix_next
.was_head:
        mov     [s1_free_head], rax             ; head = next
.fix_next:
        test    rax, rax
        jz      .done
        mov     [rax + S1_PREV], rcx            ; next.prev = prev
.done:
        ret
.corrupted:
        jmp     s1_list_corrupted wrt ..plt     ; rdi = the block; a tail call that never returns

; s1_find_fit: a free block of at least `asize` bytes, chosen by s1_fit_policy. The block
; stays on the list (s1_place takes it off). A free block's header holds its size with no flag
; bits set, so the size compare reads the header as it is.
;   IN:  rdi = asize (adjusted block size)
;   OUT: rax = header of the chosen block, or 0 if no block is large enough
;   Clobbers: rax, rcx, rdx, r8. Preserves: everything else.
global s1_find_fit:function hidden
s1_find_fit:
        mov     rax, [s1_fit_policy]
        cmp     rax, S1_FIT_NEXT
        je      .next_fit
        cmp     rax, S1_FIT_BEST
        je      .best_fit

        ; [S1.9] First fit: the first block on the list that is large enough.
        mov     rax, [s1_free_head]
.first_loop:
        test    rax, rax
        jz      .done                           ; end of list: no fit
        cmp     [rax], rdi
        jae     .done                           ; size >= asize: take it
        mov     rax, [rax + S1_NEXT]
        jmp     .first_loop

        ; [S1.10] Next fit: start where the last search stopped and go round the list once.
        ; After a hit the rover moves to the hit's successor.
.next_fit:
        mov     rcx, [s1_rover]                 ; rcx = where this search started
        test    rcx, rcx
        jnz     .next_start
        mov     rcx, [s1_free_head]             ; no rover: start at the head
        test    rcx, rcx
        jz      .none                           ; empty list
.next_start:
        mov     rax, rcx
.next_loop:
        cmp     [rax], rdi
        jae     .next_hit
        mov     rax, [rax + S1_NEXT]
        test    rax, rax
        jnz     .next_wrapped
        mov     rax, [s1_free_head]             ; fell off the end: wrap to the head
.next_wrapped:
        cmp     rax, rcx
        jne     .next_loop                      ; back at the start: no fit
.none:
        xor     eax, eax
        ret
.next_hit:
        mov     rdx, [rax + S1_NEXT]
        mov     [s1_rover], rdx                 ; resume after the hit next time
        ret

        ; [S1.11] Best fit: the smallest block that is large enough; an exact fit ends the
        ; search early. Costs a full list walk otherwise.
.best_fit:
        xor     edx, edx                        ; rdx = best block so far
        mov     r8, -1                          ; r8  = its size
        mov     rax, [s1_free_head]
.best_loop:
        test    rax, rax
        jz      .best_done
        mov     rcx, [rax]                      ; size
        cmp     rcx, rdi
        jb      .best_next                      ; too small
        cmp     rcx, r8
        jae     .best_next                      ; not better than what we have
        mov     rdx, rax
        mov     r8, rcx
        cmp     rcx, rdi
        je      .best_done                      ; exact: nothing can beat it
.best_next:
        mov     rax, [rax + S1_NEXT]
        jmp     .best_loop
.best_done:
        mov     rax, rdx
.done:
        ret

section .note.GNU-stack noalloc noexec nowrite progbits
; EOF
