/* A 64 KiB firmware image for QEMU (-bios): the QEMU rows of bench/startup.
 *
 * It does what bench/kvm_floor.c's guest does: print three lines, 134 bytes
 * (as many as ringzero's test guest prints in bench/startup's reset row) on
 * COM1, reading the line status register before each byte until it says
 * "transmitter empty" (two I/O exits per byte), then write 0 to the
 * isa-debug-exit port (0xf4), which ends QEMU with status (0 << 1) | 1 = 1.
 * Should that not happen, it halts with interrupts off.
 *
 * QEMU maps the image so that it ends at 4 GiB; the CPU resets in real mode
 * with CS base 0xffff0000 and IP 0xfff0, i.e. at the image's last 16 bytes.
 * All addressing goes through CS (whose hidden base reaches the image at the
 * top of 4 GiB), so nothing relies on a copy below 1 MiB. No stack is used.
 * Assembled with the host toolchain: gcc -m32 -c, objcopy -O binary. */
#define COM1_DATA 0x3f8
#define COM1_LSR 0x3fd
#define LSR_THR_EMPTY 0x20
#define DEBUG_EXIT_PORT 0xf4

        .code16
        .text
start:
        cli
        cld
        mov     $(message - start), %si
1:      cs lodsb
        test    %al, %al
        jz      3f
        mov     %al, %ah
        mov     $COM1_LSR, %dx
2:      in      %dx, %al
        test    $LSR_THR_EMPTY, %al
        jz      2b
        mov     $COM1_DATA, %dx
        mov     %ah, %al
        out     %al, %dx
        jmp     1b
3:      mov     $DEBUG_EXIT_PORT, %dx
        xor     %al, %al
        out     %al, %dx
4:      hlt
        jmp     4b

        /* 44 + 65 + 25 = 134 bytes, like bench/kvm_floor.c's default. */
message:
        .ascii  "qemu-bios: start, as long as the guest line\n"
        .ascii  "qemu-bios: three lines, 134 bytes, as the test guest prints them\n"
        .asciz  "qemu-bios: done, halting\n"
message_end:
        .if     message_end - message - 1 - 134
        .error  "the message must be 134 bytes"
        .endif

        /* The reset vector: CS:IP = 0xf000:0xfff0 (linear 0xfffffff0). */
        .org    0xfff0
        jmp     start
        .org    0x10000
