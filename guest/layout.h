/* Constants shared by the assembly, the linker script and the C code of the
 * ringzero test guest. Plain #defines so that gcc -E can feed them to all
 * three. */
#ifndef RZT_LAYOUT_H
#define RZT_LAYOUT_H

/* Where the protected-mode part is linked (and must be loaded: the image is
 * not relocatable). Also the header's code32_start and pref_address. */
#define RZT_LOAD_ADDR 0x100000
/* Real-mode part: the boot sector plus RZT_SETUP_SECTS sectors. */
#define RZT_SETUP_SECTS 1
#define RZT_SETUP_SIZE ((RZT_SETUP_SECTS + 1) * 512)
/* Offset of the 64-bit entry point from the load address (boot protocol). */
#define RZT_ENTRY64_OFFSET 0x200
/* Boot protocol version advertised (2.12: xloadflags is the newest field
 * the header fills in). */
#define RZT_BOOT_PROTOCOL 0x020c
#define RZT_KERNEL_ALIGN 0x100000
#define RZT_CMDLINE_SIZE 4095
#define RZT_STACK_SIZE 16384

#endif
