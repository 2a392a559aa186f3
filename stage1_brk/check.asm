; stage1_brk/check.asm: looking at the whole heap, for tests, tools and students.
; Entry points: s1_check (verify every invariant, report the first one broken) and s1_walk
; (call a visitor for each region, fence and block). Neither changes the heap; neither is on
; any allocation path.

default rel
%include "types.inc"

extern s1_region_of, s1_first_region, s1_heap_top   ; heap.asm
extern s1_free_heads, s1_class_map, s1_size_class   ; freelist.asm

section .text

; [S1.20] s1_check: the heap's invariants, checked in one pass over every region and one
; over the free list:
;   regions:  ascending and not overlapping; the end word 16-aligned with room for a block
;             and the epilogue; the blocks reach the epilogue exactly; the epilogue intact, its
;             link (the next region) checked as that region's start
;   blocks:   size >= S1_MIN_BLOCK (tags hold multiples of 16); inside the region; a free
;             block's footer == its header; flags 0 (free) or S1_ALLOC, plus S1_PREV_FREE
;             exactly when the previous block is free (used blocks and the epilogue); never
;             two free blocks side by side (coalescing is eager)
;   lists:    every node a free block inside the heap; node.next.prev == node; every node
;             on the list of its size class, and the class map's bit set exactly for the
;             non-empty lists; total length == free blocks found in the heap (which also
;             rules out cycles)
;   IN:  rdi = S1Report* to fill (counts are filled up to the failure)
;   OUT: rax = S1_CHECK_OK or the first broken invariant (also in report.code, with the
;        offending address in report.address)
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
;   Stack: six pushes + 8 bytes + return address = 64 bytes (aligned calls).
global s1_check:function hidden
s1_check:
        push    rbx                             ; rbx = report
        push    rbp                             ; rbp = previous block was free (0/1)
        push    r12                             ; r12 = region
        push    r13                             ; r13 = end of the previous region
        push    r14                             ; r14 = region end
        push    r15                             ; r15 = block cursor
        sub     rsp, 8
        mov     rbx, rdi
        xor     eax, eax
        mov     ecx, 8
        rep     stosq                           ; zero the 8 report fields
        mov     r12, [s1_first_region]
        xor     r13d, r13d

.region:
        test    r12, r12
        jz      .list
        inc     qword [rbx + REPORT_REGIONS]
        mov     rcx, r12                        ; rcx = address blamed on failure
        mov     eax, S1_CHECK_REGION_ORDER
        cmp     r12, r13
        jb      .fail                           ; starts inside the previous region
        test    r12, 15
        jnz     .fail
        cmp     r12, [s1_heap_top]
        jae     .fail                           ; a link above every region ([S1.40])
        ; [S1.39] The end word. A damaged one is caught here when it is misaligned or too
        ; small, and otherwise by the walk below: the blocks must reach end - 8 exactly
        ; (PAST_END, or BLOCK_SIZE at the real epilogue's size-0 tag) and find an epilogue
        ; there. These and the order of the links catch a damaged end: no magic word needed.
        mov     eax, S1_CHECK_REGION_END
        mov     r14, [r12 + S1_REGION_END]
        test    r14, 15
        jnz     .fail                           ; an end is 16-aligned
        lea     rdx, [r12 + S1_REGION_MIN]
        cmp     r14, rdx
        jb      .fail                           ; too small to hold a block and the epilogue
        cmp     r14, [s1_heap_top]
        ja      .fail                           ; past the highest end the heap made ([S1.40])
        mov     rdx, r14
        sub     rdx, r12
        add     [rbx + REPORT_HEAP_BYTES], rdx
        lea     r15, [r12 + S1_FIRST_BLOCK]
        xor     ebp, ebp                        ; nothing free before the first block [S1.37]

.block:
        lea     rdx, [r14 - 8]                  ; rdx = the epilogue
        cmp     r15, rdx
        jae     .region_end
        mov     rcx, r15
        mov     rsi, [r15]                      ; rsi = header
        mov     rdi, rsi
        and     rdi, ~S1_FLAGS                  ; rdi = size
        mov     eax, S1_CHECK_BLOCK_SIZE
        cmp     rdi, S1_MIN_BLOCK
        jb      .fail
        sub     rdx, r15                        ; room up to the epilogue
        mov     eax, S1_CHECK_PAST_END
        cmp     rdi, rdx
        ja      .fail
        and     esi, S1_FLAGS
        jz      .free_block
        mov     eax, S1_CHECK_FLAGS
        mov     edx, esi
        and     edx, ~S1_PREV_FREE
        cmp     edx, S1_ALLOC
        jne     .fail                           ; flag bits no header has
        shr     esi, 1                          ; esi = the PREV_FREE bit
        cmp     esi, ebp
        jne     .fail                           ; it disagrees with the previous block
        inc     qword [rbx + REPORT_USED_BLOCKS]
        lea     rdx, [rdi - S1_OVERHEAD]
        add     [rbx + REPORT_USED_BYTES], rdx
        xor     ebp, ebp
        jmp     .block_next
.free_block:
        mov     eax, S1_CHECK_FOOTER
        cmp     rdi, [r15 + rdi - 8]
        jne     .fail                           ; a free block's footer is its header, its size
        mov     eax, S1_CHECK_ADJACENT_FREE
        test    ebp, ebp
        jnz     .fail                           ; a coalesce was missed
        inc     qword [rbx + REPORT_FREE_BLOCKS]
        add     [rbx + REPORT_FREE_BYTES], rdi
        mov     ebp, 1
.block_next:
        add     r15, rdi
        jmp     .block

.region_end:
        lea     rcx, [r14 - 8]
        mov     eax, S1_CHECK_EPILOGUE
        lea     rdx, [rbp*2 + S1_EPILOGUE_TAG]  ; PREV_FREE when the last block is free
        mov     r12, [rcx]                      ; r12 = next | flags
        mov     rsi, r12
        and     esi, S1_FLAGS
        cmp     rsi, rdx
        jne     .fail
        mov     r13, r14
        and     r12, ~S1_FLAGS                  ; the next region: the loop checks its order
        jmp     .region

.list:
        xor     r14d, r14d                      ; r14 = nodes seen, over all lists
        xor     ebp, ebp                        ; rbp = class
.class:
        cmp     ebp, S1_CLASSES
        jae     .count
        lea     rax, [s1_free_heads]
        mov     r15, [rax + rbp*8]              ; r15 = node
        mov     rax, [s1_class_map]
        bt      rax, rbp                        ; CF = the map says "not empty"
        setc    al
        test    r15, r15
        setnz   dl
        xor     ecx, ecx
        cmp     al, dl
        mov     eax, S1_CHECK_LIST_CLASS
        jne     .fail                           ; the class map disagrees with the list
        xor     r13d, r13d                      ; r13 = previous node
.node:
        test    r15, r15
        jz      .next_class
        mov     rcx, r15
        inc     r14
        mov     eax, S1_CHECK_LIST_COUNT
        cmp     r14, [rbx + REPORT_FREE_BLOCKS]
        ja      .fail                           ; longer than the heap's free blocks: a cycle
        mov     rdi, r15
        call    s1_region_of
        mov     rcx, r15
        test    rax, rax
        mov     eax, S1_CHECK_LIST_FOREIGN
        jz      .fail
        mov     rdx, r15
        and     edx, 15
        cmp     edx, 8
        jne     .fail                           ; not where a header can be
        test    qword [r15], S1_FLAGS
        jnz     .fail                           ; not a free block
        mov     eax, S1_CHECK_LIST_LINK
        cmp     [r15 + S1_PREV], r13
        jne     .fail
        mov     rdi, [r15]
        call    s1_size_class
        mov     rcx, r15
        cmp     rax, rbp
        mov     eax, S1_CHECK_LIST_CLASS
        jne     .fail                           ; filed under the wrong class
        mov     r13, r15
        mov     r15, [r15 + S1_NEXT]
        jmp     .node
.next_class:
        inc     ebp
        jmp     .class
.count:
        xor     ecx, ecx
        mov     eax, S1_CHECK_LIST_COUNT
        cmp     r14, [rbx + REPORT_FREE_BLOCKS]
        jne     .fail                           ; a free block missing from the list
        xor     eax, eax
.fail:                                          ; IN: eax = code, rcx = address
        mov     [rbx + REPORT_CODE], rax
        test    eax, eax
        jnz     .blame
        xor     ecx, ecx
.blame:
        mov     [rbx + REPORT_ADDRESS], rcx
        add     rsp, 8
        pop     r15
        pop     r14
        pop     r13
        pop     r12
        pop     rbp
        pop     rbx
        ret

; [S1.21] s1_walk: visit every region, then each of its blocks and its epilogue, in address
; order. The visitor must not allocate or free (it would change what is being walked).
; A block whose size is impossible ends the walk rather than looping (s1_check says why).
;   IN:  rdi = visitor(context, kind, address, size) returning 0 to stop, rsi = context
;   OUT: nothing
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_walk:function hidden
s1_walk:
        push    rbx                             ; rbx = visitor
        push    rbp                             ; rbp = context
        push    r12                             ; r12 = region
        push    r13                             ; r13 = region end
        push    r14                             ; r14 = block cursor
        push    r15                             ; r15 = block size
        sub     rsp, 8
        mov     rbx, rdi
        mov     rbp, rsi
        mov     r12, [s1_first_region]
.region:
        test    r12, r12
        jz      .done
        mov     r13, [r12 + S1_REGION_END]
        mov     rdi, rbp
        mov     esi, S1_KIND_REGION
        mov     rdx, r12
        mov     rcx, r13
        sub     rcx, r12
        call    rbx
        test    eax, eax
        jz      .done
        lea     r14, [r12 + S1_FIRST_BLOCK]
.block:
        lea     rax, [r13 - 8]
        cmp     r14, rax
        jae     .epilogue
        mov     rax, [r14]
        mov     r15, rax
        and     r15, ~S1_FLAGS
        cmp     r15, S1_MIN_BLOCK
        jb      .done                           ; corrupt: stop rather than spin
        mov     esi, S1_KIND_FREE
        test    al, S1_ALLOC
        jz      .visit
        mov     esi, S1_KIND_USED
.visit:
        mov     rdi, rbp
        mov     rdx, r14
        mov     rcx, r15
        call    rbx
        test    eax, eax
        jz      .done
        add     r14, r15
        jmp     .block
.epilogue:
        mov     rdi, rbp
        mov     esi, S1_KIND_FENCE
        lea     rdx, [r13 - 8]
        mov     ecx, 8
        call    rbx
        test    eax, eax
        jz      .done
        mov     r12, [r13 - 8]                  ; the epilogue: next | P | 1
        and     r12, ~S1_FLAGS
        jmp     .region
.done:
        add     rsp, 8
        pop     r15
        pop     r14
        pop     r13
        pop     r12
        pop     rbp
        pop     rbx
        ret

section .note.GNU-stack noalloc noexec nowrite progbits
; EOF
