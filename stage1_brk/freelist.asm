; stage1_brk/freelist.asm: the explicit free lists and the four fit policies.
; Entry points: s1_list_push, s1_list_remove, s1_find_fit (s1_wilderness: the seg fit's last
; resort), s1_find_aligned (memalign's search), s1_set_fit, s1_size_class. Free blocks are
; doubly linked, LIFO-ordered lists threaded through their dead payloads: one list for first,
; next and best fit, one per size class for the segregated fit. Splitting, coalescing: block.asm.

default rel
%include "types.inc"

extern s1_fit_policy, s1_first_region, s1_last_region ; heap.asm
extern s1_region_of                             ; heap.asm
extern s1_list_corrupted                        ; stage1.cc: reports a broken link, aborts

section .bss
align 8
global s1_free_heads:data hidden
global s1_class_map:data hidden
global s1_free_bytes:data hidden
global s1_rover:data hidden
s1_free_heads:  resq S1_CLASSES                 ; head of each list (most recently pushed), or 0;
                                                ; first/next/best fit use list 0 only
s1_class_map:   resq 1                          ; bit c set <=> list c is not empty
s1_free_bytes:  resq 1                          ; bytes of the blocks on the lists [S1.36]
s1_rover:       resq 1                          ; next fit: where the next search starts, or 0

section .text

; [S1.28] s1_size_class: the list a free block of `size` bytes belongs on. With the segregated
; fit there are S1_CLASSES lists: exact classes 16 bytes apart below 512 bytes, then four
; classes per power of two, the last class open-ended:
;
;   class   0    1    2   ...  29  | 30       31       32       33       | 34        ...  63
;   sizes   32   48   64  ...  496 | 512-639  640-767  768-895  896-1023 | 1024-1279 ...  >= 160 KiB
;
; Every other policy keeps one list, class 0.
;   IN:  rdi = block size (a multiple of 16, >= S1_MIN_BLOCK)
;   OUT: rax = class, 0 .. S1_CLASSES-1
;   Clobbers: rax, rcx. Preserves: everything else.
global s1_size_class:function hidden
s1_size_class:
        xor     eax, eax
        cmp     qword [s1_fit_policy], S1_FIT_SEG
        jne     .done                           ; one list for the other policies
        cmp     rdi, 512
        jae     .ranges
        mov     rax, rdi
        shr     rax, 4
        sub     rax, 2                          ; 32 -> 0, 48 -> 1, ..., 496 -> 29
        ret
.ranges:
        bsr     rcx, rdi                        ; e = index of the top bit, >= 9
        sub     ecx, 2
        mov     rax, rdi
        shr     rax, cl                         ; the top three bits: 4..7
        and     eax, 3                          ; m = the two bits below the top one
        lea     rax, [rax + rcx*4 + 2]          ; 4 * (e - 2) + m + 2: 512 -> 30, 1024 -> 34
        cmp     rax, S1_CLASSES - 1
        jbe     .done
        mov     eax, S1_CLASSES - 1             ; everything from 160 KiB on
.done:
        ret

; [S1.8] s1_list_push: put a free block at the head of its list (LIFO: the block freed last
; is found first, while its memory is still warm in the cache), and mark the list non-empty.
;   IN:  rdi = header of a free block that is not on a list
;   OUT: nothing
;   Clobbers: rax, rcx, rdx. Preserves: everything else.
global s1_list_push:function hidden
s1_list_push:
        mov     rcx, [rdi]
        add     [s1_free_bytes], rcx            ; counted while listed
        push    rdi
        mov     rdi, [rdi]                      ; free tag = size
        call    s1_size_class
        pop     rdi
        lea     rdx, [s1_free_heads]
        lea     rdx, [rdx + rax*8]              ; rdx = &heads[class]
        mov     rcx, [s1_class_map]
        bts     rcx, rax
        mov     [s1_class_map], rcx             ; the list is not empty now
        mov     rax, [rdx]
        mov     [rdi + S1_NEXT], rax            ; block.next = old head
        mov     qword [rdi + S1_PREV], 0        ; block.prev = none
        test    rax, rax
        jz      .empty
        mov     [rax + S1_PREV], rdi            ; old head.prev = block
.empty:
        mov     [rdx], rdi
        ret

; [S1.25] s1_list_remove: unlink a free block, after checking that its neighbours on the list
; point back at it. The links live in the dead payload, where a write after free can reach
; them; unchecked, `prev.next = next` and `next.prev = prev` would store two values the program
; chose at two addresses it chose (the classic unlink attack). A link that does not point back,
; or points outside the heap (reading through it could fault), is reported by
; s1_list_corrupted (the adapter's one-line diagnostic), which never returns.
; If the next-fit rover points at the block, the rover moves on to the block's successor, so it
; never points at memory that is no longer a free block.
;   IN:  rdi = header of a block on a list
;   OUT: nothing
;   Clobbers: rax, rcx, rdx, r8, r9, r10. Preserves: everything else.
global s1_list_remove:function hidden
s1_list_remove:
        mov     rcx, [rdi]
        sub     [s1_free_bytes], rcx
        push    rdi
        mov     rdi, [rdi]                      ; free tag = size
        call    s1_size_class
        pop     rdi
        lea     rdx, [s1_free_heads]
        lea     rdx, [rdx + rax*8]              ; rdx = &heads[class]
        mov     r8, rax                         ; r8 = class
        mov     r9, [rdi + S1_NEXT]             ; r9 = next
        test    r9, r9
        jz      .next_checked
        call    .link_in_heap                   ; (r9) before reading through it
        cmp     [r9 + S1_PREV], rdi
        jne     .corrupted                      ; next.prev != block
.next_checked:
        mov     r9, [rdi + S1_PREV]             ; r9 = prev
        test    r9, r9
        jz      .head_checked
        call    .link_in_heap
        cmp     [r9 + S1_NEXT], rdi
        jne     .corrupted                      ; prev.next != block
        jmp     .checked
.head_checked:
        cmp     [rdx], rdi
        jne     .corrupted                      ; no prev, yet not the head of its list
.checked:
        mov     rax, [rdi + S1_NEXT]            ; rax = next
        mov     rcx, [rdi + S1_PREV]            ; rcx = prev
        cmp     rdi, [s1_rover]
        jne     .unlink
        mov     [s1_rover], rax                 ; the rover steps past the removed block
.unlink:
        test    rcx, rcx
        jz      .was_head
        mov     [rcx + S1_NEXT], rax            ; prev.next = next
        jmp     .fix_next
.was_head:
        mov     [rdx], rax                      ; head = next
        test    rax, rax
        jnz     .fix_next
        mov     rcx, [s1_class_map]             ; (rcx = prev = 0 is not needed any more)
        btr     rcx, r8
        mov     [s1_class_map], rcx             ; the list is empty now
        ret
.fix_next:
        test    rax, rax
        jz      .done
        mov     [rax + S1_PREV], rcx            ; next.prev = prev
.done:
        ret
.corrupted:
        jmp     s1_list_corrupted wrt ..plt     ; rdi = the block; a tail call that never returns

        ; .link_in_heap: a link must be where a header can be (8 mod 16) inside a region, with
        ; its links before the region's end; otherwise reading through it could fault, so it
        ; is reported like a link that does not point back. Returns only if it is.
        ;   IN: r9 = the link, rdi = the block. Clobbers rax, r10.
.link_in_heap:
        mov     eax, r9d
        and     eax, 15
        cmp     eax, 8
        jne     .corrupted_in_call
        push    rdi
        mov     rdi, r9
        call    s1_region_of                    ; rax = the region holding it, or 0
        pop     rdi
        test    rax, rax
        jz      .corrupted_in_call
        lea     r10, [r9 + S1_PREV + 8]
        cmp     r10, [rax + S1_REGION_END]
        ja      .corrupted_in_call
        ret
.corrupted_in_call:
        add     rsp, 8                          ; drop .link_in_heap's return address
        jmp     .corrupted

; s1_find_fit: a free block of at least `asize` bytes, chosen by s1_fit_policy. The block
; stays on its list (s1_place takes it off). A free block's header holds its size with no flag
; bits set, so the size compare reads the header as it is.
;   IN:  rdi = asize (adjusted block size)
;   OUT: rax = header of the chosen block, or 0 if no block is large enough
;   Clobbers: rax, rcx, rdx, r8, r9, r10, r11. Preserves: everything else.
global s1_find_fit:function hidden
s1_find_fit:
        ; [lab S1.find_fit begin]
        mov     rax, [s1_fit_policy]
        cmp     rax, S1_FIT_NEXT
        je      .next_fit
        cmp     rax, S1_FIT_BEST
        je      .best_fit
        cmp     rax, S1_FIT_SEG
        je      .seg_fit

        ; [S1.9] First fit: the first block on the list that is large enough.
        mov     rax, [s1_free_heads]
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
        mov     rcx, [s1_free_heads]             ; no rover: start at the head
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
        mov     rax, [s1_free_heads]             ; fell off the end: wrap to the head
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
        mov     rax, [s1_free_heads]
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

        ; [S1.29] Segregated fit. Look in the request's own class first: its blocks are
        ; near the request's size, but in a range class some may be smaller, so take the best
        ; fit among its first S1_SEG_SCAN blocks (all of them in the last, open-ended class).
        ; If none fits, every block of every higher class does: the class map names the
        ; non-empty classes above, nearest first (bsf), and the best of the first S1_SEG_SCAN
        ; blocks of the first such class is taken. One block is passed over everywhere: the
        ; heap's trailing free block, the "wilderness", which is used only when nothing else
        ; fits, because it is the one block that can grow with the break (dlmalloc's "top").
        ; A search costs at most one walk of S1_SEG_SCAN blocks per class, however many free
        ; blocks the heap holds.
.seg_fit:
        push    rdi
        call    s1_size_class                   ; rax = the request's class (rdi kept)
        pop     rdi
        mov     r9, rax                         ; r9 = class
        call    s1_wilderness
        mov     r10, rax                        ; r10 = the wilderness, or 0
.seg_own:
        lea     rdx, [s1_free_heads]
        mov     rax, [rdx + r9*8]
        mov     ecx, S1_SEG_SCAN
        cmp     r9, S1_CLASSES - 1
        jne     .seg_scan_own
        mov     rcx, -1                         ; the open-ended class: walk all of it
.seg_scan_own:
        call    .seg_best                       ; rax = best fit in the own class, or 0
        test    rax, rax
        jnz     .seg_done
.seg_above:
        inc     r9
        cmp     r9, S1_CLASSES
        jae     .seg_wilderness                 ; no class left above
        mov     rdx, [s1_class_map]
        mov     ecx, r9d
        shr     rdx, cl
        shl     rdx, cl                         ; only the classes from r9 on
        bsf     r9, rdx
        jz      .seg_wilderness                 ; all empty
        lea     rdx, [s1_free_heads]
        mov     rax, [rdx + r9*8]               ; the nearest non-empty class above
        mov     ecx, S1_SEG_SCAN
        call    .seg_best
        test    rax, rax
        jz      .seg_above                      ; only the wilderness was there: go on
.seg_done:
        ret
.seg_wilderness:
        mov     rax, r10
        test    rax, rax
        jz      .seg_done                       ; no wilderness: no fit
        cmp     [rax], rdi
        jae     .seg_done                       ; the wilderness fits: take it
        xor     eax, eax
        ret

        ; .seg_best: the smallest block >= rdi among the first rcx blocks of a list, the
        ; wilderness (r10) excepted.
        ;   IN: rax = first node, rdi = asize, rcx = how many nodes to look at, r10
        ;   OUT: rax = best node or 0. Clobbers rcx, rdx, r8, r11. A link that cannot be a
        ;   header's address (its low three bits set) is reported, not followed.
.seg_best:
        xor     edx, edx                        ; rdx = best block so far
        mov     r8, -1                          ; r8  = its size
.seg_loop:
        test    rax, rax
        jz      .seg_best_done                  ; end of the list
        cmp     rax, r10
        je      .seg_next                       ; the wilderness: kept for last
        cmp     [rax], rdi
        jb      .seg_next                       ; too small
        cmp     [rax], r8
        jae     .seg_next                       ; not better than what we have
        mov     rdx, rax
        mov     r8, [rax]
        cmp     r8, rdi
        je      .seg_best_done                  ; exact: nothing can beat it
.seg_next:
        mov     r11, rax                        ; r11 = the node whose link we follow
        mov     rax, [rax + S1_NEXT]
        test    al, 7
        jnz     .seg_bad_link                   ; never a header's address (8 mod 16) [S1.25]
        dec     rcx
        jnz     .seg_loop
.seg_best_done:
        mov     rax, rdx
        ret
.seg_bad_link:                                  ; a write after free reached r11's link:
        mov     rdi, r11                        ; report it before anything reads through it
        and     rsp, -16                        ; (a call that never returns: realign for C++)
        call    s1_list_corrupted wrt ..plt
        ; [lab S1.find_fit end]

; s1_wilderness: the heap's trailing free block (the last block of the newest region, when
; it is free), which the segregated fit keeps for last.
;   IN:  nothing
;   OUT: rax = its header, or 0
;   Clobbers: rax, rcx. Preserves: everything else.
global s1_wilderness:function hidden
s1_wilderness:
        mov     rax, [s1_last_region]
        test    rax, rax
        jz      .done                           ; no heap
        mov     rax, [rax + S1_REGION_END]
        test    qword [rax - 8], S1_PREV_FREE   ; the epilogue: is the block before it free?
        jz      .none
        mov     rcx, [rax - 16]                 ; then this is its footer: its size
        sub     rax, 8
        sub     rax, rcx                        ; its header
        ret
.none:
        xor     eax, eax
.done:
        ret

; [S1.34] s1_find_aligned: under the segregated fit, a free block that holds a block of
; `asize` bytes whose payload is a multiple of `alignment`, either at the block's own payload
; or at least S1_MIN_BLOCK further on (the lead must stand as a free block). The search is
; the segregated fit's: the request's class and the non-empty classes above it, the first
; S1_SEG_SCAN blocks of each, the wilderness last; the first block that fits is taken. So an
; aligned request costs a bounded number of steps, never a walk of every free block.
;   IN:  rdi = asize, rsi = alignment (a power of two > 16)
;   OUT: rax = the free block's header (still on its list), rdx = the aligned payload;
;        rax = 0 if no block fits
;   Clobbers: rax, rcx, rdx, r8, r9, r10, r11. Preserves: everything else.
global s1_find_aligned:function hidden
s1_find_aligned:
        push    rdi
        call    s1_size_class
        pop     rdi
        mov     r9, rax                         ; r9 = class
        call    s1_wilderness
        mov     r10, rax                        ; r10 = the wilderness, or 0
        lea     r11, [rsi - 1]                  ; r11 = alignment mask
        jmp     .scan
.above:
        inc     r9
        cmp     r9, S1_CLASSES
        jae     .wilderness
        mov     rdx, [s1_class_map]
        mov     ecx, r9d
        shr     rdx, cl
        shl     rdx, cl                         ; only the classes from r9 on
        bsf     r9, rdx
        jz      .wilderness
.scan:
        lea     rdx, [s1_free_heads]
        mov     rax, [rdx + r9*8]
        mov     ecx, S1_SEG_SCAN
.node:
        test    rax, rax
        jz      .above                          ; end of this list
        cmp     rax, r10
        je      .skip                           ; the wilderness: kept for last
        call    .fits
        test    rdx, rdx
        jnz     .found
.skip:
        mov     rax, [rax + S1_NEXT]
        dec     rcx
        jnz     .node
        jmp     .above
.wilderness:
        mov     rax, r10
        test    rax, rax
        jz      .found                          ; no wilderness: rax = 0, no fit
        call    .fits
        test    rdx, rdx
        jnz     .found
        xor     eax, eax
.found:
        ret

        ; .fits: does the aligned block fit in the free block at rax?
        ;   IN: rax = header, rdi = asize, r11 = alignment - 1
        ;   OUT: rdx = the aligned payload, or 0. Clobbers r8.
.fits:
        lea     rdx, [rax + 8]                  ; the block's own payload
        test    rdx, r11
        jz      .fits_room                      ; already aligned: no lead
        lea     rdx, [rax + r11 + 8 + S1_MIN_BLOCK]
        mov     r8, r11
        not     r8
        and     rdx, r8                         ; the first aligned payload >= own + 32
.fits_room:
        lea     r8, [rdx + rdi - 8]             ; where the aligned block would end
        sub     r8, rax
        cmp     r8, [rax]
        jbe     .fits_done                      ; inside the free block
        xor     edx, edx
.fits_done:
        ret

; [S1.30] s1_set_fit: change the fit policy. Between first, next and best fit the list stays
; as it is; moving to or from the segregated fit changes how free blocks are filed, so every
; list is emptied and the heap's free blocks are pushed again, in address order, onto the
; lists of the new policy (a walk of the heap: rare, and never on an allocation path).
;   IN:  rdi = S1_FIT_* policy
;   OUT: nothing
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_set_fit:function hidden
s1_set_fit:
        mov     rax, [s1_fit_policy]
        mov     [s1_fit_policy], rdi
        cmp     rax, S1_FIT_SEG
        sete    al
        cmp     rdi, S1_FIT_SEG
        sete    cl
        cmp     al, cl
        je      .same_lists                     ; same organisation: nothing to refile
        push    rbx                             ; rbx = region
        push    r12                             ; r12 = block cursor
        push    r13                             ; r13 = region's epilogue
        lea     rdi, [s1_free_heads]
        xor     eax, eax
        mov     ecx, S1_CLASSES
        rep     stosq                           ; every list empty
        mov     [s1_class_map], rax
        mov     [s1_rover], rax
        mov     [s1_free_bytes], rax            ; counted again as they are pushed
        mov     rbx, [s1_first_region]
.region:
        test    rbx, rbx
        jz      .refiled
        mov     r13, [rbx + S1_REGION_END]
        sub     r13, 8
        lea     r12, [rbx + S1_FIRST_BLOCK]
.block:
        cmp     r12, r13
        jae     .region_done
        mov     rax, [r12]
        test    al, S1_ALLOC
        jnz     .block_next
        mov     rdi, r12
        call    s1_list_push                    ; a free block, filed under the new policy
        mov     rax, [r12]
.block_next:
        and     rax, ~S1_FLAGS
        add     r12, rax
        jmp     .block
.region_done:
        mov     rbx, [r13]                      ; the epilogue: next | P | 1
        and     rbx, ~S1_FLAGS                  ; the next region, or 0
        jmp     .region
.refiled:
        pop     r13
        pop     r12
        pop     rbx
.same_lists:
        ret

section .note.GNU-stack noalloc noexec nowrite progbits
; EOF
