#include "x86/cpu_setup.h"

#include <algorithm>

#include "util/error.h"
#include "x86/layout.h"

namespace rz::x86 {

namespace {

constexpr uint64_t kCr0Pe = 1ULL << 0;
constexpr uint64_t kCr0Et = 1ULL << 4;
constexpr uint64_t kCr0Pg = 1ULL << 31;
constexpr uint64_t kCr4Pae = 1ULL << 5;
constexpr uint64_t kEferLme = 1ULL << 8;
constexpr uint64_t kEferLma = 1ULL << 10;

constexpr uint16_t kCode64Flags = 0xa09b;  // G, L, P, DPL0, code exec/read accessed
constexpr uint16_t kCode32Flags = 0xc09b;  // G, D/B, P, code
constexpr uint16_t kDataFlags = 0xc093;    // G, D/B, P, data read/write accessed
constexpr uint16_t kTssFlags = 0x008b;     // P, busy 64/32-bit TSS

kvm_segment segment_from(uint64_t desc, uint16_t selector) {
  kvm_segment s{};
  s.base = ((desc >> 16) & 0xffffff) | (((desc >> 56) & 0xff) << 24);
  uint32_t limit = static_cast<uint32_t>((desc & 0xffff) | (((desc >> 48) & 0xf) << 16));
  s.g = (desc >> 55) & 1;
  s.limit = s.g ? (limit << 12) | 0xfff : limit;
  s.selector = selector;
  s.type = (desc >> 40) & 0xf;
  s.s = (desc >> 44) & 1;
  s.dpl = (desc >> 45) & 3;
  s.present = (desc >> 47) & 1;
  s.avl = (desc >> 52) & 1;
  s.l = (desc >> 53) & 1;
  s.db = (desc >> 54) & 1;
  s.unusable = s.present ? 0 : 1;
  return s;
}

std::vector<uint64_t> gdt(CpuMode mode) {
  return {0, 0, gdt_entry(mode == CpuMode::Long64 ? kCode64Flags : kCode32Flags, 0, 0xfffff),
          gdt_entry(kDataFlags, 0, 0xfffff), gdt_entry(kTssFlags, 0, 0x67)};
}

}  // namespace

uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t(base) & 0xff000000) << 32) | ((uint64_t(flags) & 0xf0ff) << 40) |
         ((uint64_t(limit) & 0xf0000) << 32) | ((uint64_t(base) & 0x00ffffff) << 16) |
         (uint64_t(limit) & 0xffff);
}

void write_boot_structures(const memory::GuestMemory& mem, CpuMode mode) {
  const auto g = gdt(mode);
  if (!mem.write(kGdtAddr, g.data(), g.size() * 8)) throw Error("guest memory too small for the GDT");
  if (mode != CpuMode::Long64) return;
  // PML4[0] -> PDPT; PDPT[0..3] -> four page directories of 2 MiB pages.
  std::vector<uint64_t> pml4(512, 0), pdpt(512, 0), pd(4 * 512, 0);
  pml4[0] = kPdptAddr | 0x3;  // present, writable
  for (uint64_t i = 0; i < 4; ++i) pdpt[i] = (kPdAddr + i * 0x1000) | 0x3;
  for (uint64_t i = 0; i < pd.size(); ++i) pd[i] = (i << 21) | 0x83;  // present, writable, 2 MiB
  if (!mem.write(kPml4Addr, pml4.data(), 4096) || !mem.write(kPdptAddr, pdpt.data(), 4096) ||
      !mem.write(kPdAddr, pd.data(), pd.size() * 8))
    throw Error("guest memory too small for the boot page tables");
}

void setup_sregs(kvm_sregs& s, CpuMode mode) {
  const auto g = gdt(mode);
  s.gdt.base = kGdtAddr;
  s.gdt.limit = static_cast<uint16_t>(g.size() * 8 - 1);
  s.idt.base = 0;
  s.idt.limit = 0;
  s.cs = segment_from(g[2], kBootCs);
  s.ds = s.es = s.fs = s.gs = s.ss = segment_from(g[3], kBootDs);
  s.tr = segment_from(g[4], kBootTss);
  s.cr0 = (s.cr0 | kCr0Pe | kCr0Et) & ~kCr0Pg;
  s.cr4 &= ~kCr4Pae;
  s.efer &= ~(kEferLme | kEferLma);
  if (mode == CpuMode::Long64) {
    s.cr3 = kPml4Addr;
    s.cr4 |= kCr4Pae;
    s.cr0 |= kCr0Pg;
    s.efer |= kEferLme | kEferLma;
  }
}

kvm_regs boot_regs(uint64_t entry, uint64_t rsi, uint64_t rbx) {
  kvm_regs r{};
  r.rflags = 0x2;
  r.rip = entry;
  r.rsi = rsi;
  r.rbx = rbx;
  r.rsp = kBootStackTop;
  r.rbp = 0;
  return r;
}

kvm_fpu boot_fpu() {
  kvm_fpu f{};
  f.fcw = 0x37f;
  f.mxcsr = 0x1f80;
  return f;
}

std::vector<std::pair<uint32_t, uint64_t>> boot_msrs(const std::vector<uint32_t>& supported) {
  const std::vector<std::pair<uint32_t, uint64_t>> wanted = {
      {0x174, 0},          // IA32_SYSENTER_CS
      {0x175, 0},          // IA32_SYSENTER_ESP
      {0x176, 0},          // IA32_SYSENTER_EIP
      {0xc0000081, 0},     // STAR
      {0xc0000082, 0},     // LSTAR
      {0xc0000083, 0},     // CSTAR
      {0xc0000084, 0},     // SYSCALL_MASK
      {0xc0000102, 0},     // KERNEL_GS_BASE
      {0x1a0, 1},          // IA32_MISC_ENABLE: fast strings
      {0x2ff, (1 << 11) | 6},  // MTRRdefType: MTRRs enabled, default write-back
  };
  std::vector<std::pair<uint32_t, uint64_t>> out;
  for (const auto& m : wanted)
    if (std::find(supported.begin(), supported.end(), m.first) != supported.end()) out.push_back(m);
  return out;
}

}  // namespace rz::x86
