; stage1_brk/heap.asm: the heap as a chain of regions carved from the program break.
; Entry points: s1_heap_grow (make room for a block), s1_heap_trim (give the break back),
; s1_region_of (which region holds an address), s1_release and s1_purge (pages of free runs
; go back), s1_sbrk, s1_reset. Owns the heap's global state and tunables. Blocks and free
; lists are block.asm's and freelist.asm's business.

default rel
%include "types.inc"

extern sbrk                                     ; libc: keeps glibc's cached break in step
extern s1_list_push, s1_list_remove, s1_coalesce ; freelist.asm, block.asm
extern s1_free_heads, s1_class_map, s1_rover    ; freelist.asm
extern s1_free_bytes, s1_size_class             ; freelist.asm

; ---- State ---------------------------------------------------------------------------------
section .data
align 8
global s1_fit_policy:data hidden
global s1_grow_margin:data hidden
global s1_trim_threshold:data hidden
global s1_purge_floor:data hidden
global s1_trim_fixed:data hidden
s1_fit_policy:      dq S1_FIT_SEG               ; S1_FIT_*: how s1_find_fit searches
s1_grow_margin:     dq 1024 * 1024              ; the largest margin added to a growth [S1.31]
s1_trim_threshold:  dq 128 * 1024               ; trailing free bytes that make us lower the break
s1_purge_floor:     dq 4 * 1024 * 1024          ; dirty bytes a heap may always keep [S1.36]
s1_trim_fixed:      dq 0                        ; 1: the trim option set the threshold, no following [S1.43]

section .bss
align 8
global s1_first_region:data hidden
global s1_last_region:data hidden
global s1_heap_top:data hidden
global s1_sbrk_hook:data hidden
global s1_brk_calls:data hidden
global s1_footprint:data hidden
global s1_peak_footprint:data hidden
global s1_madvise_calls:data hidden
global s1_dirty_bytes:data hidden
global s1_trim_followed:data hidden
global s1_status:data hidden
s1_first_region:    resq 1                      ; lowest region, 0 before the first growth
s1_last_region:     resq 1                      ; newest region: the only one that can grow
s1_heap_top:        resq 1                      ; the highest region end: no region lies above it
s1_sbrk_hook:       resq 1                      ; sbrk replacement for tests; 0 = libc's sbrk
s1_brk_calls:       resq 1                      ; sbrk calls that moved the break
s1_footprint:       resq 1                      ; bytes we hold from sbrk
s1_peak_footprint:  resq 1                      ; high-water mark of s1_footprint
s1_madvise_calls:   resq 1                      ; madvise calls made by s1_release_pages
s1_dirty_bytes:     resq 1                      ; estimate: free bytes in large runs, resident
s1_trim_followed:   resq 1                      ; twice the largest large block freed, at most 64 MiB [S1.43]
s1_status:          resd 1                      ; S1_* status of the last failing call

section .text

; [S1.31] GROW_MARGIN dst, shift: the room added to a growth beyond what the request needs,
; and kept by a trim: a 256th of what the heap holds (footprint >> S1_GROW_SHIFT; a 32nd for
; a small block's growth under the segregated fit, [S1.42]), at most s1_grow_margin, in
; 16-byte units. A small heap grows (and shrinks) by little more than it needs, so short
; programs and traces are not charged for room they never use; a large one grows
; geometrically, so the number of sbrk calls grows with the log of the heap, not its size.
; `shift` is an immediate or cl.
%macro GROW_MARGIN 2
        mov     %1, [s1_footprint]
        shr     %1, %2
        cmp     %1, [s1_grow_margin]
        jbe     %%bounded
        mov     %1, [s1_grow_margin]
%%bounded:
        and     %1, -16
%endmacro

; RAISE_TOP end: a region now ends at `end`; s1_heap_top follows it up [S1.40].
%macro RAISE_TOP 1
        cmp     %1, [s1_heap_top]
        jbe     %%kept
        mov     [s1_heap_top], %1
%%kept:
%endmacro

; [S1.3] s1_sbrk: the only place the break moves. Counts every call that moves it and keeps
; the footprint, so statistics can never disagree with what the kernel was asked for.
;   IN:  rdi = increment in bytes (0 asks for the current break; negative gives memory back)
;   OUT: rax = the break before the call, or -1 on failure (nothing changed)
;   Clobbers: the caller-saved registers (it calls sbrk). Preserves: rbx, rbp, r12-r15.
global s1_sbrk:function hidden
s1_sbrk:
        push    rbx                             ; also aligns the stack for the call
        mov     rbx, rdi                        ; rbx = increment, kept across the call
        mov     rax, [s1_sbrk_hook]
        test    rax, rax
        jz      .libc
        call    rax                             ; a test's simulated break
        jmp     .called
.libc:
        call    sbrk wrt ..plt
.called:
        cmp     rax, -1
        je      .out                            ; failure: nothing moved, nothing to count
        test    rbx, rbx
        jz      .out                            ; a query moves nothing
        inc     qword [s1_brk_calls]
        mov     rcx, [s1_footprint]
        add     rcx, rbx                        ; signed: a trim makes the footprint fall
        mov     [s1_footprint], rcx
        cmp     rcx, [s1_peak_footprint]
        jbe     .out
        mov     [s1_peak_footprint], rcx
.out:
        pop     rbx
        ret

; [S1.7] s1_region_of: the region whose range [R, R.end) holds an address. Regions are in
; address order, so the walk stops at the first region that starts above it. A region's link
; to the next one is its epilogue's size bits [S1.2].
; [S1.40] The end words and the links live in the heap, where a program's stray write can
; reach them: a block written past its end overwrites the epilogue (the link), one written
; before its start overwrites the end word of the region it opens. The walk follows neither
; blindly: an end must be 16-aligned, leave room for a region and not lie above s1_heap_top
; (the highest end the heap has made, kept outside the heap), and a link must point above its
; region's end and below that top. Everything from the first region up to the top is mapped
; while the heap grows from one source (the real break, or one reservation: a switch between
; them, by the `break` option or by [S1.41], leaves an unmapped gap where a damaged link could
; still point), so no read through a word that passes can fault. A word that fails is reported, not
; followed. An end equal to the top is the top region's (regions do not overlap, so no other
; end can be the highest) and needs none of the end tests: that is every walk in a heap of one
; region, and the tests cost seven instructions each (the walk runs once per free and once per
; link safe unlinking checks).
;   IN:  rdi = address
;   OUT: rax = region start, or 0 when no region holds it; CF set (with rax = 0) when the
;        walk met a damaged end word or link before it could tell
;   Clobbers: rax, flags. Preserves: everything else.
global s1_region_of:function hidden
s1_region_of:
        push    rcx
        mov     rax, [s1_first_region]
.next:
        test    rax, rax
        jz      .done                           ; past the last region: not ours (CF clear)
        cmp     rdi, rax
        jb      .miss                           ; below this region, so below all later ones
        mov     rcx, [rax + S1_REGION_END]      ; rcx = end: rax is checked to lie below the top
        cmp     rcx, [s1_heap_top]
        jne     .check_end                      ; the top itself needs no test (see above)
        cmp     rdi, rcx
        jb      .found
        jmp     .link                           ; nothing of ours lies above; the link says so
.check_end:
        test    cl, 15
        jnz     .damaged
        cmp     rcx, [s1_heap_top]
        ja      .damaged
        sub     rcx, rax
        jb      .damaged                        ; an end below its region's start
        cmp     rcx, S1_REGION_MIN
        jb      .damaged                        ; too short to hold a region
        add     rcx, rax
        cmp     rdi, rcx
        jb      .found                          ; R <= address < end: found
.link:
        mov     rax, [rcx - 8]                  ; the epilogue: next | P | 1
        and     rax, ~S1_FLAGS                  ; next region, or 0
        jz      .done
        cmp     rax, rcx
        jb      .damaged                        ; links go up: the next region lies above
        cmp     rax, [s1_heap_top]
        jb      .next
.damaged:
        xor     eax, eax
        stc
        pop     rcx
        ret
.found:
        clc
        pop     rcx
        ret
.miss:
        xor     eax, eax                        ; clears CF
.done:
        pop     rcx
        ret

; s1_heap_grow: obtain memory from the break so that a free block of at least `asize` bytes
; exists, and return it (already on the free list).
;   IN:  rdi = asize, the free bytes needed (a multiple of 16)
;        rsi = S1_GROW_MARGIN: add the growth margin, a 256th of the heap [S1.31];
;              S1_GROW_EXACT: grow by exactly what is missing [S1.38];
;              S1_GROW_WIDE: add a 32nd of the heap, a small block under the seg fit [S1.42]
;   OUT: rax = header of a free block of >= asize bytes, or 0 with s1_status = S1_ENOMEM
;        (heap unchanged)
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
;   Stack: six pushes + 8 bytes of padding + return address = 64 bytes, so calls see rsp
;   aligned to 16.
global s1_heap_grow:function hidden
s1_heap_grow:
        push    rbp                             ; rbp = S1_GROW_MARGIN, _EXACT or _WIDE
        push    rbx                             ; rbx = last region
        push    r12                             ; r12 = asize
        push    r13                             ; r13 = current break
        push    r14                             ; r14 = increment asked of sbrk
        push    r15                             ; r15 = start of the new range
        sub     rsp, 8                          ; keep rsp aligned for our calls
        mov     r12, rdi
        mov     rbp, rsi
.retry:
        xor     edi, edi
        call    s1_sbrk                         ; where is the break now?
        cmp     rax, -1
        je      .fail
        mov     r13, rax
        mov     rbx, [s1_last_region]
        test    rbx, rbx
        jz      .new_region                     ; no heap yet
        cmp     r13, [rbx + S1_REGION_END]
        jne     .new_region                     ; someone moved the break: we cannot extend

        ; [S1.4] Contiguous growth. The old epilogue becomes the header of a new free block;
        ; if the heap ends in a free block, only the difference is needed, because the new
        ; block will coalesce with it. Ask for need + margin [S1.31], in 16-byte units:
        ; sbrk moves the break by any amount (the kernel maps whole pages behind it), so
        ; rounding to pages would only charge a small heap for room it never uses.
        xor     eax, eax                        ; rax = trailing free bytes (0 if none)
        test    qword [r13 - 8], S1_PREV_FREE   ; the epilogue: is the last block free?
        jz      .have
        mov     rax, [r13 - 16]                 ; its footer: a free tag is its own size
.have:
        mov     r14, r12
        sub     r14, rax                        ; need = asize - trailing free bytes
        cmp     r14, S1_MIN_BLOCK
        jge     .round
        mov     r14, S1_MIN_BLOCK               ; never extend by less than a block
.round:
        call    .margin
        add     r14, rax                        ; increment = need + margin (16-byte units)
        mov     rdi, r14
        call    s1_sbrk
        cmp     rax, -1
        je      .fail
        cmp     rax, r13
        jne     .fresh_range                    ; the break moved under us: a new region
        mov     rdi, r13
        sub     rdi, 8                          ; rdi = old epilogue = new block's header
        mov     rdx, [rdi]                      ; rdx = its tag: next | P | 1
        mov     ecx, edx
        and     ecx, S1_PREV_FREE               ; keep the epilogue's PREV_FREE for s1_coalesce
        or      rcx, r14
        mov     [rdi], rcx                      ; a free block of `increment` bytes (s1_coalesce
                                                ; writes its footer)
        lea     rax, [r13 + r14]                ; new end of the region
        mov     [rbx + S1_REGION_END], rax
        RAISE_TOP rax
        and     rdx, ~S1_FLAGS                  ; the link to the next region moves along
        or      rdx, S1_EPILOGUE_TAG
        mov     [rax - 8], rdx                  ; new epilogue at the new end
        call    s1_coalesce                     ; join the trailing free block, push on list
        jmp     .out

.new_region:
        ; [S1.5] A fresh region: pad the break to 16 bytes, then room for the end word, the
        ; block and the epilogue, plus the margin.
        mov     r14, r12
        add     r14, S1_FIRST_BLOCK + 8         ; end word + block + epilogue
        call    .margin
        add     r14, rax
        mov     rax, r13
        neg     rax
        and     rax, 15                         ; pad that brings the break to 16 bytes
        add     r14, rax
        mov     rdi, r14
        call    s1_sbrk
        cmp     rax, -1
        je      .fail
.fresh_range:                                   ; IN: rax = start of a range of r14 bytes
        mov     r15, rax
        lea     rbx, [r15 + 15]
        and     rbx, -16                        ; rbx = R, the region start
        lea     rcx, [r15 + r14]
        and     rcx, -16                        ; rcx = end (equal to the break when padded)
        lea     rax, [rbx + S1_REGION_MIN]
        cmp     rax, rcx
        ja      .retry                          ; too short for a region (see below): leave it
        mov     [rbx + S1_REGION_END], rcx
        lea     rdi, [rbx + S1_FIRST_BLOCK]     ; the one free block, up to the epilogue
        lea     rax, [rcx - 8]
        sub     rax, rdi                        ; its size: up to the epilogue
        SET_TAGS rdi, rax, rcx
        ; [S1.39] Link the region in address order. A new range usually lies above every
        ; region, but not always (a break of another origin, see the `break` option), so walk
        ; to the first region above it, keeping rdx = the address of the word that links to
        ; it: s1_first_region, or the epilogue of the region below. Both hold the link in their
        ; bits above the low four (s1_first_region's low bits are 0), so one masked read and
        ; one masked write serve both.
        lea     rdx, [s1_first_region]
.find_link:
        mov     rax, [rdx]
        and     rax, ~S1_FLAGS                  ; the link, without an epilogue's flags
        jz      .link
        cmp     rax, rbx
        ja      .link                           ; rax lies above us: insert before it
        mov     rdx, [rax + S1_REGION_END]
        sub     rdx, 8                          ; rdx = its epilogue, which links onward
        jmp     .find_link
.link:
        mov     rcx, [rbx + S1_REGION_END]
        RAISE_TOP rcx
        or      rax, S1_EPILOGUE_TAG + S1_PREV_FREE
        mov     [rcx - 8], rax                  ; our epilogue, after a free block: -> above
        mov     rax, [rdx]
        and     eax, S1_FLAGS                   ; keep the linking word's flags...
        or      rax, rbx
        mov     [rdx], rax                      ; ...and make it point at us
        mov     [s1_last_region], rbx           ; the newest region is the one that grows
        lea     rdi, [rbx + S1_FIRST_BLOCK]
        mov     r15, rdi
        call    s1_list_push
        mov     rax, r15
        cmp     [r15], r12
        jae     .out                            ; the usual case: the block is large enough
        ; Tricky: the break moved between our query and our sbrk, and the range we got was
        ; sized for something else (an extension, or a pad for another break). It is a valid
        ; region now, with its free block listed; start over, which extends it contiguously.
        ; A range too short to hold a region at all (S1_REGION_MIN: an extension of 32 bytes
        ; after the break moved by 8) was left untouched above: its few bytes stay counted in
        ; the footprint, unused, and the retry builds a fresh region past them.
        jmp     .retry

.fail:
        mov     dword [s1_status], S1_ENOMEM
        xor     eax, eax
.out:
        add     rsp, 8
        pop     r15
        pop     r14
        pop     r13
        pop     r12
        pop     rbx
        pop     rbp
        ret

; [S1.38] .margin: the room this growth adds beyond the need. A block of S1_SPLIT_BACK bytes or
; more, which the segregated fit puts at the back of the grown block ([S1.32]), asks for none:
; with a margin, the margin would lie in front of the block, below it, where the next growth
; cannot reach it. s1_malloc tests the size alone, so the list policies grow exactly for it too.
;   IN: rbp = S1_GROW_MARGIN, S1_GROW_EXACT or S1_GROW_WIDE. OUT: rax = bytes, a multiple
;   of 16. Clobbers: rax, rcx.
.margin:
        xor     eax, eax
        cmp     rbp, S1_GROW_EXACT
        je      .margin_done                    ; exact: nothing beyond the need
        mov     ecx, S1_GROW_SHIFT              ; a 256th [S1.31]...
        cmp     rbp, S1_GROW_WIDE
        jne     .margin_shift
        mov     ecx, S1_SMALL_GROW_SHIFT        ; ...or a 32nd [S1.42]
.margin_shift:
        GROW_MARGIN rax, cl
.margin_done:
        ret

; [S1.6] s1_heap_trim: lower the break when the heap ends in a large free block. Keeps
; `margin` bytes so a program that frees and allocates in a loop does not pay two sbrk calls a
; round; gives back whole pages only; does nothing if anyone moved the break after us, even
; between its query of the break and its call to lower it.
; [S1.43] A tail is large when it reaches s1_trim_threshold and s1_trim_followed, twice the
; largest block of 1 to 32 MiB freed so far (s1_free_block): glibc's dynamic threshold, which
; rises to twice the size of each block it unmapped, up to 64 MiB. A program that replaces big
; buffers keeps the tail the next one needs, instead of giving it back with one sbrk and taking
; it again with another (and a page fault per page touched). Smaller blocks leave it alone:
; the margin serves them, and traces of small blocks keep the footprints the chapter quotes.
; The tail kept is never larger than the live bytes (as [S1.36]'s budget): a program that
; frees everything gets it back at once.
;   IN:  rdi = header of a free block that is on the free list
;   OUT: nothing (the block may have shrunk)
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
;   Stack: four pushes + 8 bytes of padding + return address = 48 bytes (aligned calls), made
;   only past the first tests: most frees leave no large block at the end, and return at once.
global s1_heap_trim:function hidden
s1_heap_trim:
        mov     rcx, [s1_last_region]
        test    rcx, rcx
        jz      .done
        mov     rax, [rdi]                      ; free tag = size
        lea     rdx, [rdi + rax]
        mov     rcx, [rcx + S1_REGION_END]
        sub     rcx, 8                          ; rcx = the last epilogue
        cmp     rdx, rcx
        jne     .done                           ; not the block before the last epilogue
        mov     rdx, [s1_footprint]             ; [S1.43] the tail a large block freed may want
        sub     rdx, [s1_free_bytes]            ; again, while no larger than the live bytes
        cmp     rdx, [s1_trim_followed]
        jbe     .live
        mov     rdx, [s1_trim_followed]
.live:
        cmp     rdx, [s1_trim_threshold]
        jae     .threshold
        mov     rdx, [s1_trim_threshold]
.threshold:
        cmp     rax, rdx
        jb      .done                           ; not large enough to be worth a syscall
        push    rbx                             ; rbx = last region
        push    r12                             ; r12 = block header
        push    r13                             ; r13 = bytes to give back
        push    r14                             ; r14 = the epilogue's tag: next | P | 1
        sub     rsp, 8
        mov     r12, rdi
        mov     rbx, [s1_last_region]
        mov     r14, [rcx]                      ; read now: its page may be given back
        GROW_MARGIN rcx, S1_GROW_SHIFT          ; keep = the growth margin...
        cmp     rcx, S1_MIN_BLOCK
        jae     .keep
        mov     rcx, S1_MIN_BLOCK               ; ...and at least one block
.keep:
        mov     r13, rax
        sub     r13, rcx
        jbe     .out                            ; nothing beyond what we keep
        and     r13, -S1_PAGE                   ; whole pages only
        jz      .out
        xor     edi, edi
        call    s1_sbrk
        cmp     rax, [rbx + S1_REGION_END]
        jne     .out                            ; the break is not ours to lower
        mov     rdi, r13
        neg     rdi
        call    s1_sbrk
        cmp     rax, -1
        je      .out                            ; refused: keep everything as it was
        ; [S1.26] The query and the call are two steps: another sbrk user may have moved the
        ; break in between, and then we have just released the top of *their* memory. The old
        ; break the call returns says whose pages went: if it is not our region's end, put the
        ; break back where it was and leave the heap alone.
        cmp     rax, [rbx + S1_REGION_END]
        je      .lowered
        mov     rdi, r13
        call    s1_sbrk                         ; restore: raise the break by what we took
        jmp     .out
.lowered:
        ; The region's new end and epilogue first: the pages past them are gone, and the unlink
        ; below checks the block's links with s1_region_of, which walks every region through
        ; its end word and epilogue [S1.39] (the old end's epilogue can no longer be read).
        mov     rax, [rbx + S1_REGION_END]
        cmp     rax, [s1_heap_top]
        jne     .top_kept                       ; a region above this one keeps the top
        sub     [s1_heap_top], r13              ; [S1.40]
.top_kept:
        sub     rax, r13
        mov     [rbx + S1_REGION_END], rax
        mov     [rax - 8], r14                  ; the epilogue, unchanged, at the new end
        mov     rdi, r12
        call    s1_list_remove                  ; its size changes, and with it its class
        mov     rax, [r12]
        sub     rax, r13                        ; the block keeps what was not given back
        SET_TAGS r12, rax, rcx
        mov     rdi, r12
        call    s1_list_push
.out:
        add     rsp, 8
        pop     r14
        pop     r13
        pop     r12
        pop     rbx
        ret
.done:
        ret

; [S1.36] s1_release: account for a large free run, and give pages back when too many wait.
; The break can fall only past a free tail (s1_heap_trim); a free block below used ones keeps
; its pages resident until we say they are not needed: madvise(MADV_DONTNEED) drops them, and
; they come back zero-filled if the block is reused. A system call per free is too dear when
; large blocks are freed and reused at once (malloc-large churn: 17,475 calls in 20,000
; steps), so the pages wait: s1_dirty_bytes estimates the free bytes in large runs (at least
; s1_trim_threshold, not the wilderness) that may still be resident. A free adds what it makes
; large (the whole run when the run has just reached the threshold); s1_place subtracts what it
; carves from a large block. Only when the estimate exceeds the live bytes (footprint minus
; free bytes), and at least s1_purge_floor, does s1_purge release every large free run at once.
; So a heap that frees half of itself keeps its pages for reuse, and one that empties itself
; gives back all but max(floor, live) bytes, in a few rounds as live bytes fall.
;   IN:  rdi = header of a free block, just coalesced; rsi = bytes the free itself added
;   OUT: nothing
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_release:function hidden
s1_release:
        mov     rax, [rdi]                      ; rax = the run's size
        mov     r8, [s1_trim_threshold]
        cmp     rax, r8
        jb      .out                            ; small: its pages stay
        mov     rcx, [s1_last_region]
        lea     rdx, [rdi + rax + 8]
        cmp     rdx, [rcx + S1_REGION_END]
        je      .out                            ; the wilderness: s1_heap_trim's business
        mov     rdx, rax
        sub     rdx, rsi                        ; rdx = what was free here before this free
        cmp     rdx, r8
        jae     .add                            ; already large: the free adds its own bytes
        mov     rsi, rax                        ; just became large: all of it counts
.add:
        add     rsi, [s1_dirty_bytes]
        mov     [s1_dirty_bytes], rsi
        mov     rax, [s1_footprint]
        sub     rax, [s1_free_bytes]            ; rax = live bytes (used blocks and fences)
        cmp     rax, [s1_purge_floor]
        jae     .bound
        mov     rax, [s1_purge_floor]
.bound:
        cmp     rsi, rax
        ja      s1_purge                        ; tail call: too many pages wait
.out:
        ret

; [S1.36] s1_purge: madvise the pages of every large free run but the wilderness, and start
; counting again from zero. Walks the lists that can hold such runs (from the threshold's
; class up); a run already released costs one more call that finds nothing resident.
;   IN: nothing. OUT: nothing.
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
global s1_purge:function hidden
s1_purge:
        push    rbx                             ; rbx = class
        push    r12                             ; r12 = block
        sub     rsp, 8                          ; calls see rsp aligned to 16
        mov     qword [s1_dirty_bytes], 0
        mov     rdi, [s1_trim_threshold]
        call    s1_size_class
        mov     rbx, rax
.class:
        cmp     rbx, S1_CLASSES
        jae     .done
        lea     rax, [s1_free_heads]
        mov     r12, [rax + rbx*8]
.block:
        test    r12, r12
        jz      .next_class
        mov     rdi, r12
        call    s1_release_pages
        mov     r12, [r12 + S1_NEXT]
        jmp     .block
.next_class:
        inc     rbx
        jmp     .class
.done:
        add     rsp, 8
        pop     r12
        pop     rbx
        ret

; [S1.49] s1_release_pages: madvise(MADV_DONTNEED) the whole pages strictly inside a free block
; of at least s1_trim_threshold bytes that is not the wilderness; the header, the two links and
; the footer stay. A free must leave errno as it was (POSIX), and libc's madvise sets it when
; the kernel refuses (EINVAL for locked pages, under mlockall every page): so this makes the
; system call itself, whose answer nobody needs (refused, the pages just stay resident).
;   IN:  rdi = header of a free block
;   OUT: nothing
;   Clobbers: caller-saved registers. Preserves: rbx, rbp, r12-r15.
s1_release_pages:
        mov     rax, [rdi]                      ; rax = the block's size
        cmp     rax, [s1_trim_threshold]
        jb      .out
        mov     rcx, [s1_last_region]
        lea     rdx, [rdi + rax + 8]
        cmp     rdx, [rcx + S1_REGION_END]
        je      .out                            ; the wilderness
        lea     rsi, [rdi + 24 + S1_PAGE - 1]   ; keep the header and both links
        and     rsi, -S1_PAGE                   ; the first whole page inside
        lea     rdx, [rdi + rax - 8]            ; keep the footer
        and     rdx, -S1_PAGE                   ; the end of the last whole page inside
        cmp     rdx, rsi
        jbe     .out
        sub     rdx, rsi
        mov     rdi, rsi                        ; madvise(start, length, MADV_DONTNEED)
        mov     rsi, rdx
        mov     edx, S1_MADV_DONTNEED
        mov     eax, S1_SYS_MADVISE
        syscall                                 ; clobbers rcx and r11; rax = 0 or -error, unread
        inc     qword [s1_madvise_calls]
.out:
        ret

; s1_reset: forget the whole heap without touching memory. Only for tests that serve the
; break from a buffer of their own (s1_sbrk_hook); with libc's sbrk the memory would leak.
;   IN: nothing. OUT: nothing. Clobbers: rax, rcx, rdi. Preserves: everything else.
global s1_reset:function hidden
s1_reset:
        lea     rdi, [s1_free_heads]
        xor     eax, eax
        mov     ecx, S1_CLASSES
        rep     stosq                           ; every free list empty
        mov     [s1_class_map], rax
        mov     [s1_first_region], rax
        mov     [s1_last_region], rax
        mov     [s1_heap_top], rax
        mov     [s1_rover], rax
        mov     [s1_brk_calls], rax
        mov     [s1_footprint], rax
        mov     [s1_peak_footprint], rax
        mov     [s1_madvise_calls], rax
        mov     [s1_dirty_bytes], rax
        mov     [s1_trim_followed], rax
        mov     [s1_free_bytes], rax
        mov     [s1_status], eax
        ret

section .note.GNU-stack noalloc noexec nowrite progbits
; EOF
