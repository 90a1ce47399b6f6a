/* rz_kvm_floor: the smallest whole KVM program, the floor for ringzero's
 * start-up benchmark (bench/startup).
 *
 * It opens /dev/kvm, creates a VM with one 4 KiB memory slot and one vCPU,
 * and runs a few real-mode instructions that print a text on the COM1 data
 * port the way the test guest does (read the line status register until it
 * says "transmitter empty", then write the byte: two I/O exits per byte),
 * then writes to port 0xf4 (done). The text goes to stdout; exit status 0.
 *
 *   rz_kvm_floor [-t] [-i] [TEXT]
 *
 *   TEXT  what the guest prints (a newline is added); default: three lines,
 *         134 bytes, as many as ringzero's test guest prints in
 *         `rzt.mode=reset` with bench/startup's command line
 *   -t    per-phase times in microseconds on stderr
 *   -i    also create what ringzero's VMs always have and this floor does
 *         not need: the in-kernel IRQCHIP (PIC, IOAPIC, LAPIC) and PIT2
 *
 * Exit status: 0 when the guest is done, 1 on any error (named on stderr). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define GUEST_BASE 0x1000u /* guest physical address of the slot */
#define GUEST_SIZE 0x1000u
#define TEXT_OFFSET 0x100u /* the text, NUL-terminated, at GUEST_BASE + 0x100 */
#define TEXT_MAX (GUEST_SIZE - TEXT_OFFSET - 2)
#define COM1_DATA 0x3f8
#define COM1_LSR 0x3fd
#define DONE_PORT 0xf4
#define LSR_THR_EMPTY 0x60 /* THRE | TEMT: "send the next byte" */
#define MAX_EXITS 100000

/* 16-bit real-mode code at GUEST_BASE, entered with CS = 0, IP = GUEST_BASE,
 * DS = 0 (so DS:SI addresses the text directly):
 *
 *   00  be 00 11   mov  si, GUEST_BASE + TEXT_OFFSET
 *   03  ac         lodsb                    ; next byte
 *   04  84 c0      test al, al
 *   06  74 12      jz   1a                  ; NUL: done
 *   08  88 c4      mov  ah, al
 *   0a  ba fd 03   mov  dx, 0x3fd
 *   0d  ec         in   al, dx              ; LSR: I/O exit
 *   0e  a8 20      test al, 0x20
 *   10  74 fb      jz   0d                  ; until THR empty
 *   12  ba f8 03   mov  dx, 0x3f8
 *   15  88 e0      mov  al, ah
 *   17  ee         out  dx, al              ; data: I/O exit
 *   18  eb e9      jmp  03
 *   1a  ba f4 00   mov  dx, 0xf4
 *   1d  30 c0      xor  al, al
 *   1f  ee         out  dx, al              ; "done" (QEMU's isa-debug-exit port)
 *   20  f4         hlt                      ; not reached: the VMM stops at 0xf4
 *   21  eb fd      jmp  20
 *
 * The end is an OUT rather than HLT because with -i (in-kernel LAPIC) KVM
 * keeps a halted vCPU in the kernel instead of returning KVM_EXIT_HLT. */
static const uint8_t guest_code[] = {
    0xbe, 0x00, 0x11, 0xac, 0x84, 0xc0, 0x74, 0x12, 0x88, 0xc4,
    0xba, 0xfd, 0x03, 0xec, 0xa8, 0x20, 0x74, 0xfb, 0xba, 0xf8,
    0x03, 0x88, 0xe0, 0xee, 0xeb, 0xe9, 0xba, 0xf4, 0x00, 0x30,
    0xc0, 0xee, 0xf4, 0xeb, 0xfd};
_Static_assert(GUEST_BASE + TEXT_OFFSET == 0x1100, "the code loads SI with 0x1100");

/* 44 + 65 + 25 = 134 bytes: the byte count of the test guest's three lines
 * in bench/startup's reset row. */
static const char default_text[] =
    "kvm-floor: start, as long as the guest line\n"
    "kvm-floor: three lines, 134 bytes, as the test guest prints them\n"
    "kvm-floor: done, halting\n";
_Static_assert(sizeof default_text - 1 == 134, "default text length");

static int show_times;
static struct timespec t_last;

static void phase(const char* what) {
  if (!show_times) return;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long us = (now.tv_sec - t_last.tv_sec) * 1000000L +
            (now.tv_nsec - t_last.tv_nsec) / 1000L;
  fprintf(stderr, "rz_kvm_floor: %-24s %8ld us\n", what, us);
  t_last = now;
}

static void die(const char* what) {
  fprintf(stderr, "rz_kvm_floor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void usage(void) {
  fprintf(stderr, "usage: rz_kvm_floor [-t] [-i] [TEXT]\n");
  exit(1);
}

int main(int argc, char** argv) {
  clock_gettime(CLOCK_MONOTONIC, &t_last);
  int irqchip = 0;
  const char* text = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-t") == 0) {
      show_times = 1;
    } else if (strcmp(argv[i], "-i") == 0) {
      irqchip = 1;
    } else if (argv[i][0] == '-' || text != NULL) {
      usage();
    } else {
      text = argv[i];
    }
  }

  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
    fprintf(stderr, "rz_kvm_floor: unexpected KVM API version\n");
    return 1;
  }
  phase("open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  phase("KVM_CREATE_VM");
  if (irqchip) {
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
    phase("KVM_CREATE_IRQCHIP");
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");
    phase("KVM_CREATE_PIT2");
  }

  uint8_t* mem = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) die("mmap guest memory");
  memcpy(mem, guest_code, sizeof guest_code);
  if (text != NULL) {
    size_t n = strlen(text);
    if (n > TEXT_MAX) {
      fprintf(stderr, "rz_kvm_floor: TEXT is longer than %u bytes\n", TEXT_MAX);
      return 1;
    }
    memcpy(mem + TEXT_OFFSET, text, n);
    mem[TEXT_OFFSET + n] = '\n';
    mem[TEXT_OFFSET + n + 1] = 0;
  } else {
    memcpy(mem + TEXT_OFFSET, default_text, sizeof default_text);
  }
  struct kvm_userspace_memory_region region = {
      .slot = 0,
      .guest_phys_addr = GUEST_BASE,
      .memory_size = GUEST_SIZE,
      .userspace_addr = (uint64_t)(uintptr_t)mem,
  };
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
    die("KVM_SET_USER_MEMORY_REGION");
  phase("memory slot");

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < (int)sizeof(struct kvm_run)) die("KVM_GET_VCPU_MMAP_SIZE");
  struct kvm_run* run =
      mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");
  phase("KVM_CREATE_VCPU");

  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = GUEST_BASE;
  regs.rflags = 0x2;
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");
  phase("registers");

  /* Output is collected and written once, at the end. */
  static char out[GUEST_SIZE];
  size_t out_len = 0;
  int exits = 0;
  for (;; exits++) {
    if (exits >= MAX_EXITS) {
      fprintf(stderr, "rz_kvm_floor: not done after %d exits\n", MAX_EXITS);
      return 1;
    }
    if (ioctl(vcpu, KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      die("KVM_RUN");
    }
    if (exits == 0) phase("first KVM_RUN");
    if (run->exit_reason == KVM_EXIT_IO && run->io.size == 1 && run->io.count == 1 &&
        run->io.data_offset < (uint64_t)run_size) {
      uint8_t* data = (uint8_t*)run + run->io.data_offset;
      if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == DONE_PORT) break;
      if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == COM1_DATA) {
        if (out_len < sizeof out) out[out_len++] = (char)*data;
        continue;
      }
      if (run->io.direction == KVM_EXIT_IO_IN && run->io.port == COM1_LSR) {
        *data = LSR_THR_EMPTY;
        continue;
      }
    }
    fprintf(stderr, "rz_kvm_floor: unexpected exit reason %u\n", run->exit_reason);
    return 1;
  }
  phase("rest of the run");
  if (out_len > 0 && write(STDOUT_FILENO, out, out_len) != (ssize_t)out_len)
    die("write stdout");

  munmap(run, (size_t)run_size);
  close(vcpu);
  close(vm);
  munmap(mem, GUEST_SIZE);
  close(kvm);
  phase("tear-down (close VM)");
  if (show_times) fprintf(stderr, "rz_kvm_floor: %d exits\n", exits + 1);
  return 0;
}
