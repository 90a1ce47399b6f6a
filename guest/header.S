/* The real-mode part of the bzImage: the boot sector and RZT_SETUP_SECTS
 * setup sectors, holding the Linux boot protocol setup header. Loaders that
 * use the 64-bit entry only read the header; the 16-bit code here merely
 * halts if something jumps to it. */
#include "layout.h"

	.section .setup, "a"
	.code16
	.globl _setup_start
_setup_start:
	cli
1:	hlt
	jmp 1b

	.org 0x1f1
setup_sects:		.byte RZT_SETUP_SECTS
root_flags:		.word 0
syssize:		.long rz_syssize	/* 16-byte units, from the linker */
ram_size:		.word 0
vid_mode:		.word 0xffff		/* NORMAL_VGA */
root_dev:		.word 0
boot_flag:		.word 0xaa55

	/* 0x200: a short jump past the header (its target gives the header's
	 * size), as the protocol asks. */
	.byte 0xeb, setup_code - 1f
1:
header:			.ascii "HdrS"
version:		.word RZT_BOOT_PROTOCOL
realmode_swtch:		.long 0
start_sys_seg:		.word 0x1000
kernel_version:		.word kernel_version_str - 0x200
type_of_loader:		.byte 0
loadflags:		.byte 0x01		/* LOADED_HIGH */
setup_move_size:	.word 0x8000
code32_start:		.long RZT_LOAD_ADDR
ramdisk_image:		.long 0
ramdisk_size:		.long 0
bootsect_kludge:	.long 0
heap_end_ptr:		.word 0
ext_loader_ver:		.byte 0
ext_loader_type:	.byte 0
cmd_line_ptr:		.long 0
initrd_addr_max:	.long 0x7fffffff
kernel_alignment:	.long RZT_KERNEL_ALIGN
relocatable_kernel:	.byte 0
min_alignment:		.byte 12
xloadflags:		.word 0x0001		/* XLF_KERNEL_64 */
cmdline_size:		.long RZT_CMDLINE_SIZE
hardware_subarch:	.long 0
hardware_subarch_data:	.quad 0
payload_offset:		.long 0
payload_length:		.long 0
setup_data:		.quad 0
pref_address:		.quad RZT_LOAD_ADDR
init_size:		.long rz_init_size	/* from the linker */
handover_offset:	.long 0

setup_code:
	cli
1:	hlt
	jmp 1b

kernel_version_str:
	.asciz "rz-test-guest (ringzero)"

	.org RZT_SETUP_SIZE
