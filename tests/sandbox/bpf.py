"""A classic-BPF interpreter for seccomp programs, to check the compiled filter rule by rule.

Independent of libseccomp (which compiles the filter): it runs the exported bytes on a
`seccomp_data` the way the kernel does, so a binding or library bug shows up here as a wrong
action. Only the instructions seccomp allows are implemented; anything else fails loudly.
"""

from __future__ import annotations

import operator
import struct
from dataclasses import dataclass

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
RET_ACTION = 0xFFFF0000
RET_DATA = 0x0000FFFF


@dataclass(frozen=True)
class Verdict:
    action: int
    data: int

    @property
    def allowed(self) -> bool:
        return self.action == RET_ALLOW

    @property
    def killed(self) -> bool:
        return self.action in (RET_KILL_PROCESS, RET_KILL_THREAD)

    def errno(self) -> int | None:
        return self.data if self.action == RET_ERRNO else None


_ALU = {
    0x00: operator.add,
    0x10: operator.sub,
    0x20: operator.mul,
    0x40: operator.or_,
    0x50: operator.and_,
    0x60: operator.lshift,
    0x70: operator.rshift,
    0x80: lambda a, _: -a,
    0xA0: operator.xor,
}


def seccomp_data(nr: int, arch: int, args: tuple[int, ...] = ()) -> bytes:
    padded = [a & 0xFFFFFFFFFFFFFFFF for a in args] + [0] * (6 - len(args))
    return struct.pack("<iIQ6Q", nr, arch, 0, *padded)


def run(program: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, *args: int) -> Verdict:
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    data = seccomp_data(nr, arch, args)
    acc = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        if not 0 <= pc < len(insns):
            raise AssertionError(f"BPF ran off the program at {pc}")
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x00:  # ld #k
            acc = k
        elif code == 0x01:  # ldx #k
            x = k
        elif code == 0x60:  # ld M[k]
            acc = mem[k]
        elif code == 0x61:  # ldx M[k]
            x = mem[k]
        elif code == 0x02:  # st M[k]
            mem[k] = acc
        elif code == 0x03:  # stx M[k]
            mem[k] = x
        elif code == 0x07:  # tax
            x = acc
        elif code == 0x87:  # txa
            acc = x
        elif cls == 0x04:  # alu
            op, operand = code & 0xF0, (x if code & 0x08 else k)
            acc = _ALU[op](acc, operand) & 0xFFFFFFFF
        elif code == 0x05:  # ja
            pc += k
        elif cls == 0x05:  # conditional jumps
            op, operand = code & 0xF0, (x if code & 0x08 else k)
            taken = {
                0x10: acc == operand,
                0x20: acc > operand,
                0x30: acc >= operand,
                0x40: bool(acc & operand),
            }[op]
            pc += jt if taken else jf
        elif code == 0x06:  # ret #k
            return Verdict(k & RET_ACTION, k & RET_DATA)
        elif code == 0x16:  # ret a
            return Verdict(acc & RET_ACTION, acc & RET_DATA)
        else:
            raise AssertionError(f"unexpected BPF instruction {code:#x} at {pc - 1}")
