/* Offsets into struct boot_params (the "zero page") and its setup header,
 * from the Linux x86 boot protocol (Documentation/arch/x86/boot.rst and
 * zero-page.rst). Byte offsets rather than a packed struct: everything is
 * read with the ld* helpers. */
#ifndef RZT_BOOTPARAMS_H
#define RZT_BOOTPARAMS_H

#define ZP_SIZE 0x1000
#define ZP_ACPI_RSDP_ADDR 0x070   /* u64 */
#define ZP_EXT_CMD_LINE_PTR 0x0c8 /* u32, bits 32..63 of cmd_line_ptr */
#define ZP_E820_ENTRIES 0x1e8     /* u8 */
#define ZP_SENTINEL 0x1ef         /* u8, a loader that zeroes the page leaves 0 */
#define ZP_SETUP_SECTS 0x1f1      /* u8 */
#define ZP_SYSSIZE 0x1f4          /* u32 */
#define ZP_BOOT_FLAG 0x1fe        /* u16, 0xaa55 */
#define ZP_HEADER 0x202           /* "HdrS" */
#define ZP_VERSION 0x206          /* u16 */
#define ZP_TYPE_OF_LOADER 0x210   /* u8 */
#define ZP_LOADFLAGS 0x211        /* u8 */
#define ZP_CODE32_START 0x214     /* u32 */
#define ZP_CMD_LINE_PTR 0x228     /* u32 */
#define ZP_KERNEL_ALIGNMENT 0x230 /* u32 */
#define ZP_RELOCATABLE 0x234      /* u8 */
#define ZP_XLOADFLAGS 0x236       /* u16 */
#define ZP_CMDLINE_SIZE 0x238     /* u32 */
#define ZP_PREF_ADDRESS 0x258     /* u64 */
#define ZP_INIT_SIZE 0x260        /* u32 */
#define ZP_E820_TABLE 0x2d0       /* 128 entries of 20 bytes */

#define ZP_E820_MAX 128
#define E820_ENTRY_SIZE 20
#define E820_RAM 1

#define LOADFLAGS_LOADED_HIGH 0x01
#define XLF_KERNEL_64 0x0001
#define BOOT_FLAG_MAGIC 0xaa55
#define HDRS_MAGIC 0x53726448u /* "HdrS" little-endian */

#endif
