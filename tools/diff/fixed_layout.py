"""tools/diff/fixed_layout.py: run a command with the address-space layout tools/pictures draws
with, so that offsets between a stage's regions repeat from run to run and machine to machine.

Used as `preexec_fn=fixed_layout` by the tests that compare what the tools print or draw with
what the docs keep (pictures_test, answers_test, docs_commands_test). In the child, before exec:
  * randomised placement off (personality ADDR_NO_RANDOMIZE, as `setarch -R`); a system that
    refuses personality(2) runs the command with it, as before;
  * an 8 MiB soft stack limit (as `ulimit -S -s 8192` in tools/pictures): under an unlimited one
    Linux lays mappings out bottom-up, and stage 2's arena lands above the first region
    (+4301783168) instead of 1.5 MiB below it (-1572736).
"""
import ctypes
import resource

ADDR_NO_RANDOMIZE = 0x0040000  # <sys/personality.h>
STACK_LIMIT = 8 << 20


def fixed_layout():
    libc = ctypes.CDLL(None, use_errno=True)
    current = libc.personality(0xFFFFFFFF)  # 0xffffffff queries without changing
    if current != -1:
        libc.personality(current | ADDR_NO_RANDOMIZE)
    hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
    if hard == resource.RLIM_INFINITY or hard >= STACK_LIMIT:
        resource.setrlimit(resource.RLIMIT_STACK, (STACK_LIMIT, hard))
