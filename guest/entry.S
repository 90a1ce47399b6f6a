/* Entry points at the start of the protected-mode part (the load address):
 * +0x000 the 32-bit entry (unsupported: halts), +0x200 the 64-bit entry.
 *
 * 64-bit entry state (Linux boot protocol): long mode, identity-mapped
 * page tables, flat segments, interrupts off, RSI = boot_params. */
#include "layout.h"

	.section .head, "ax"
	.code32
	.globl rz_entry32
rz_entry32:
	cli
1:	hlt
	jmp 1b

	.org RZT_ENTRY64_OFFSET
	.code64
	.globl rz_entry64
rz_entry64:
	cli
	cld
	lea _stack_top(%rip), %rsp
	xor %ebp, %ebp
	mov %rsi, %rbx
	/* .bss is not in the file; memory may hold anything (e.g. after a
	 * reboot), so clear it. The stack is left alone. */
	lea _bss_start(%rip), %rdi
	lea _bss_end(%rip), %rcx
	sub %rdi, %rcx
	xor %eax, %eax
	rep stosb
	mov %rbx, %rdi
	call rz_main
2:	cli
	hlt
	jmp 2b

	.text
/* rzt.mode=triplefault: with an empty IDT no exception can be delivered,
 * so the first fault escalates to a triple fault (KVM_EXIT_SHUTDOWN). */
	.globl rz_triple_fault
rz_triple_fault:
	cli
	lidt empty_idtr(%rip)
	ud2
3:	hlt
	jmp 3b

	.section .rodata
	.balign 16
empty_idtr:
	.word 0
	.quad 0
